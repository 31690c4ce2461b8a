-- FleetTUI schema version 26: GPU UUIDs, cgroup paths and container ids stored with
-- ZSTD in the tables that hold each once (issue 13, store size). These strings are
-- random hex, all distinct: DuckDB's default (a dictionary of FSST strings) keeps them
-- near their full length, ~40 bytes a UUID, and in a 120 s, 3,040-GPU file each such
-- column took a 128 KiB block of its own; ZSTD keeps ~24 bytes a UUID and 11 a cgroup
-- path (`gpus`, `gpu_series`, `link_info` 2 -> 1 block, `process_info` 4 -> 2:
-- benchmarks/README.md, "Store size"). Only these tables: they are written once per
-- new GPU, link or process and read whole by joins; the sample rows hold integer ids.
-- The compression is a column setting DuckDB keeps in the catalog (it cannot be
-- altered): each table is copied with it, in the order it had.

CREATE TABLE gpus_0026 (
    gpu_uuid         VARCHAR USING COMPRESSION zstd NOT NULL,
    host             VARCHAR NOT NULL,
    gpu_index        INTEGER,
    name             VARCHAR,
    pci_bus_id       VARCHAR,
    mig_mode         BOOLEAN,
    mem_total_bytes  BIGINT
);
INSERT INTO gpus_0026 SELECT gpu_uuid, host, gpu_index, name, pci_bus_id, mig_mode, mem_total_bytes FROM gpus ORDER BY host, gpu_index, gpu_uuid;
DROP TABLE gpus;
ALTER TABLE gpus_0026 RENAME TO gpus;

CREATE TABLE gpu_series_0026 (
    series_id  BIGINT NOT NULL,   -- 1, 2, ... in order of first sample
    host       VARCHAR NOT NULL,
    gpu_uuid   VARCHAR USING COMPRESSION zstd NOT NULL,
    source     VARCHAR
);
INSERT INTO gpu_series_0026 SELECT series_id, host, gpu_uuid, source FROM gpu_series ORDER BY series_id;
DROP TABLE gpu_series;
ALTER TABLE gpu_series_0026 RENAME TO gpu_series;

CREATE TABLE link_info_0026 (
    link_id   BIGINT NOT NULL,   -- 1, 2, ... in order of first sample
    kind      VARCHAR NOT NULL CHECK (kind IN ('nvlink', 'ib', 'efa', 'roce', 'iwarp')),
    host      VARCHAR NOT NULL,
    port      VARCHAR NOT NULL,
    gpu_uuid  VARCHAR USING COMPRESSION zstd,
    source    VARCHAR
);
INSERT INTO link_info_0026 SELECT link_id, kind, host, port, gpu_uuid, source FROM link_info ORDER BY link_id;
DROP TABLE link_info;
ALTER TABLE link_info_0026 RENAME TO link_info;

CREATE TABLE process_info_0026 (
    process_id    BIGINT NOT NULL,   -- 1, 2, ... in order of first listing
    host          VARCHAR NOT NULL,
    gpu_uuid      VARCHAR USING COMPRESSION zstd NOT NULL,
    slice_id      VARCHAR,
    pid           BIGINT NOT NULL,
    container     VARCHAR USING COMPRESSION zstd,
    cgroup        VARCHAR USING COMPRESSION zstd,
    tenant_guess  VARCHAR,
    source        VARCHAR
);
INSERT INTO process_info_0026 SELECT process_id, host, gpu_uuid, slice_id, pid, container, cgroup, tenant_guess, source FROM process_info ORDER BY process_id;
DROP TABLE process_info;
ALTER TABLE process_info_0026 RENAME TO process_info;
