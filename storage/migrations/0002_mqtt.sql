-- FleetTUI schema version 2: NVML agent telemetry over MQTT (issue 3).
-- Timestamps are UTC, TIMESTAMP (microseconds). NULL means "the source cannot say".

-- Reports the MQTT source refused, with why (never silently dropped).
CREATE TABLE rejects (
    ts              TIMESTAMP NOT NULL,   -- when the daemon received it
    source          VARCHAR NOT NULL,     -- source name from the config
    topic           VARCHAR,
    host            VARCHAR,              -- from the topic, when it names one
    reason          VARCHAR NOT NULL,     -- one line: what is wrong, where
    payload_excerpt VARCHAR               -- first bytes of the payload, undecodable bytes replaced
);

-- Agent presence from the retained birth ("online") and Will ("offline") messages.
CREATE TABLE host_status (
    host        VARCHAR PRIMARY KEY,
    state       VARCHAR NOT NULL CHECK (state IN ('online', 'offline')),
    since       TIMESTAMP,               -- when the agent said so
    boot        VARCHAR,                 -- agent run id (its seq numbers restart per boot)
    updated_at  TIMESTAMP                -- when the daemon learned it
);

-- Processes on a GPU or MIG instance, with the cgroup they run in for tenant attribution.
CREATE TABLE processes (
    ts              TIMESTAMP NOT NULL,
    host            VARCHAR NOT NULL,
    gpu_uuid        VARCHAR NOT NULL,
    slice_id        VARCHAR,             -- <gpu_uuid>/gi<N> when listed through a MIG device
    pid             BIGINT NOT NULL,
    used_mem_bytes  BIGINT,
    container       VARCHAR,             -- container id parsed from the cgroup path
    cgroup          VARCHAR,
    tenant_guess    VARCHAR,             -- from a "tenant-<name>" cgroup component, else NULL
    source          VARCHAR
);

-- NVML memory details that gpu_samples has no columns for.
CREATE TABLE gpu_mem_samples (
    ts                          TIMESTAMP NOT NULL,
    host                        VARCHAR NOT NULL,
    gpu_uuid                    VARCHAR NOT NULL,
    mem_reserved_bytes          BIGINT,
    remapped_rows_correctable   BIGINT,
    remapped_rows_uncorrectable BIGINT,
    remap_pending               BOOLEAN,
    remap_failed                BOOLEAN,
    source                      VARCHAR
);
