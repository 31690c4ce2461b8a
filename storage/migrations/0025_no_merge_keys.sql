-- FleetTUI schema version 25: no PRIMARY KEY on the tables the writer merges on their
-- key (issue 13, store size). Every write to them is a MERGE on the key, which
-- deduplicates the batch and joins it to the table (storage/store.py `_insert_sql`,
-- storage/rollups.py, storage/migrate.py's one row per version): no write needs the
-- key's ART index, no reader looks a key up through it (joins hash), and each index
-- took a 128 KiB block of its own in every file (8 of 164 blocks of a 120 s,
-- 3,040-GPU file). The key still has one row: the one writer merges on it, as it
-- does on DuckLake, which has no keys at all. `alerts` and `silences` keep theirs:
-- a batch of new alert ids is inserted, and their key refuses one that is there
-- (`Batch.new_keys`). DuckDB cannot drop a constraint: each table is copied without
-- it, its key column NOT NULL as the key made it.

CREATE TABLE hosts_0025 (
    host            VARCHAR NOT NULL,
    cluster         VARCHAR,
    rack            VARCHAR,
    rack_slot       INTEGER,
    nvlink_domain   VARCHAR,
    model           VARCHAR,
    driver_version  VARCHAR,
    first_seen      TIMESTAMP,
    last_seen       TIMESTAMP
);
INSERT INTO hosts_0025 SELECT host, cluster, rack, rack_slot, nvlink_domain, model, driver_version, first_seen, last_seen FROM hosts ORDER BY host;
DROP TABLE hosts;
ALTER TABLE hosts_0025 RENAME TO hosts;

CREATE TABLE gpus_0025 (
    gpu_uuid         VARCHAR NOT NULL,
    host             VARCHAR NOT NULL,
    gpu_index        INTEGER,
    name             VARCHAR,
    pci_bus_id       VARCHAR,
    mig_mode         BOOLEAN,
    mem_total_bytes  BIGINT
);
INSERT INTO gpus_0025 SELECT gpu_uuid, host, gpu_index, name, pci_bus_id, mig_mode, mem_total_bytes FROM gpus ORDER BY host, gpu_index, gpu_uuid;
DROP TABLE gpus;
ALTER TABLE gpus_0025 RENAME TO gpus;

CREATE TABLE slices_0025 (
    slice_id         VARCHAR NOT NULL,
    gpu_uuid         VARCHAR NOT NULL,
    kind             VARCHAR NOT NULL CHECK (kind IN ('mig', 'fraction')),
    profile          VARCHAR,
    fraction         DOUBLE,
    mem_total_bytes  BIGINT
);
INSERT INTO slices_0025 SELECT slice_id, gpu_uuid, kind, profile, fraction, mem_total_bytes FROM slices ORDER BY slice_id;
DROP TABLE slices;
ALTER TABLE slices_0025 RENAME TO slices;

CREATE TABLE tenants_0025 (
    tenant        VARCHAR NOT NULL,
    display_name  VARCHAR,
    tier          VARCHAR
);
INSERT INTO tenants_0025 SELECT tenant, display_name, tier FROM tenants ORDER BY tenant;
DROP TABLE tenants;
ALTER TABLE tenants_0025 RENAME TO tenants;

CREATE TABLE endpoints_0025 (
    endpoint        VARCHAR NOT NULL,
    tenant          VARCHAR,
    model           VARCHAR,
    itl_target_ms   DOUBLE,
    ttft_target_ms  DOUBLE
);
INSERT INTO endpoints_0025 SELECT endpoint, tenant, model, itl_target_ms, ttft_target_ms FROM endpoints ORDER BY endpoint;
DROP TABLE endpoints;
ALTER TABLE endpoints_0025 RENAME TO endpoints;

CREATE TABLE host_status_0025 (
    host        VARCHAR NOT NULL,
    state       VARCHAR NOT NULL CHECK (state IN ('online', 'offline')),
    since       TIMESTAMP,
    boot        VARCHAR,
    updated_at  TIMESTAMP
);
INSERT INTO host_status_0025 SELECT host, state, since, boot, updated_at FROM host_status ORDER BY host;
DROP TABLE host_status;
ALTER TABLE host_status_0025 RENAME TO host_status;

CREATE TABLE rollup_state_0025 (
    rollup      VARCHAR NOT NULL,
    done_until  TIMESTAMP NOT NULL,
    updated_at  TIMESTAMP NOT NULL
);
INSERT INTO rollup_state_0025 SELECT rollup, done_until, updated_at FROM rollup_state ORDER BY rollup;
DROP TABLE rollup_state;
ALTER TABLE rollup_state_0025 RENAME TO rollup_state;

CREATE TABLE schema_version_0025 (
    version     INTEGER NOT NULL,
    name        VARCHAR NOT NULL,
    applied_at  TIMESTAMP NOT NULL
);
INSERT INTO schema_version_0025 SELECT version, name, applied_at FROM schema_version ORDER BY version;
DROP TABLE schema_version;
ALTER TABLE schema_version_0025 RENAME TO schema_version;
