-- FleetTUI core schema, version 1. Column docs: SCHEMA.md.
-- Timestamps are UTC, TIMESTAMP (microseconds). NULL means "the source cannot say".

CREATE TABLE hosts (
    host            VARCHAR PRIMARY KEY,
    cluster         VARCHAR,
    rack            VARCHAR,
    rack_slot       INTEGER,
    nvlink_domain   VARCHAR,
    model           VARCHAR,
    driver_version  VARCHAR,
    first_seen      TIMESTAMP,
    last_seen       TIMESTAMP
);

CREATE TABLE gpus (
    gpu_uuid         VARCHAR PRIMARY KEY,
    host             VARCHAR NOT NULL,
    gpu_index        INTEGER,
    name             VARCHAR,
    pci_bus_id       VARCHAR,
    mig_mode         BOOLEAN,
    mem_total_bytes  BIGINT
);

CREATE TABLE slices (
    slice_id         VARCHAR PRIMARY KEY,
    gpu_uuid         VARCHAR NOT NULL,
    kind             VARCHAR NOT NULL CHECK (kind IN ('mig', 'fraction')),
    profile          VARCHAR,
    fraction         DOUBLE,
    mem_total_bytes  BIGINT
);

CREATE TABLE tenants (
    tenant        VARCHAR PRIMARY KEY,
    display_name  VARCHAR,
    tier          VARCHAR
);

CREATE TABLE assignments (
    tenant      VARCHAR NOT NULL,
    gpu_uuid    VARCHAR NOT NULL,
    slice_id    VARCHAR,
    fraction    DOUBLE NOT NULL,
    valid_from  TIMESTAMP NOT NULL,
    valid_to    TIMESTAMP
);

CREATE TABLE endpoints (
    endpoint        VARCHAR PRIMARY KEY,
    tenant          VARCHAR,
    model           VARCHAR,
    itl_target_ms   DOUBLE,
    ttft_target_ms  DOUBLE
);

CREATE TABLE gpu_samples (
    ts                  TIMESTAMP NOT NULL,
    host                VARCHAR NOT NULL,
    gpu_uuid            VARCHAR NOT NULL,
    util_pct            DOUBLE,
    mem_util_pct        DOUBLE,
    mem_used_bytes      BIGINT,
    mem_total_bytes     BIGINT,
    power_w             DOUBLE,
    energy_j            DOUBLE,
    temp_c              DOUBLE,
    mem_temp_c          DOUBLE,
    sm_clock_mhz        DOUBLE,
    mem_clock_mhz       DOUBLE,
    pcie_tx_bytes_per_s DOUBLE,
    pcie_rx_bytes_per_s DOUBLE,
    ecc_sbe_total       BIGINT,
    ecc_dbe_total       BIGINT,
    throttle_reasons    BIGINT,
    source              VARCHAR
);

CREATE TABLE slice_samples (
    ts              TIMESTAMP NOT NULL,
    slice_id        VARCHAR NOT NULL,
    gpu_uuid        VARCHAR,
    util_pct        DOUBLE,
    mem_used_bytes  BIGINT,
    mem_total_bytes BIGINT,
    source          VARCHAR
);

CREATE TABLE link_samples (
    ts               TIMESTAMP NOT NULL,
    host             VARCHAR NOT NULL,
    kind             VARCHAR NOT NULL CHECK (kind IN ('nvlink', 'ib', 'efa', 'roce')),
    port             VARCHAR NOT NULL,
    gpu_uuid         VARCHAR,
    tx_bytes_per_s   DOUBLE,
    rx_bytes_per_s   DOUBLE,
    line_rate_bytes_per_s DOUBLE,
    errors           BIGINT,
    link_up          BOOLEAN,
    source           VARCHAR
);

CREATE TABLE latency_samples (
    ts             TIMESTAMP NOT NULL,
    tenant         VARCHAR,
    endpoint       VARCHAR NOT NULL,
    model          VARCHAR,
    itl_p50_ms     DOUBLE,
    itl_p99_ms     DOUBLE,
    ttft_p50_ms    DOUBLE,
    ttft_p99_ms    DOUBLE,
    e2e_p50_ms     DOUBLE,
    e2e_p99_ms     DOUBLE,
    requests_per_s DOUBLE,
    source         VARCHAR
);

CREATE TABLE events (
    ts        TIMESTAMP NOT NULL,
    host      VARCHAR,
    gpu_uuid  VARCHAR,
    kind      VARCHAR NOT NULL,
    code      BIGINT,
    detail    VARCHAR,
    source    VARCHAR
);

CREATE TABLE collector_runs (
    ts           TIMESTAMP NOT NULL,
    collector    VARCHAR NOT NULL,
    duration_ms  DOUBLE NOT NULL,
    ok           BOOLEAN NOT NULL,
    rows         BIGINT NOT NULL,
    error        VARCHAR,
    skipped      BIGINT DEFAULT 0,
    interval_s   DOUBLE
);
