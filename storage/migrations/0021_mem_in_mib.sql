-- FleetTUI schema version 21: framebuffer bytes in whole MiB where they are whole MiB
-- (issue 13, store size). DCGM reports framebuffer use and size in MiB
-- (`DCGM_FI_DEV_FB_USED`, `_FB_TOTAL`; the mapper multiplies by 2^20), and DuckDB's
-- bit-packing keeps the 20 zero bits of such a byte count. A new row keeps a whole-MiB
-- value in `*_mib` (INTEGER), any other value as it came in `*_bytes_raw` (renamed from
-- `*_bytes`: rows written before keep theirs there, their `*_mib` NULL). The views give
-- back the old columns and types (storage/keyed.py, GPUS and SLICES).

ALTER TABLE gpu_values RENAME COLUMN mem_used_bytes TO mem_used_bytes_raw;
ALTER TABLE gpu_values RENAME COLUMN mem_total_bytes TO mem_total_bytes_raw;
ALTER TABLE gpu_values ADD COLUMN mem_used_mib INTEGER;
ALTER TABLE gpu_values ADD COLUMN mem_total_mib INTEGER;
ALTER TABLE slice_values RENAME COLUMN mem_used_bytes TO mem_used_bytes_raw;
ALTER TABLE slice_values RENAME COLUMN mem_total_bytes TO mem_total_bytes_raw;
ALTER TABLE slice_values ADD COLUMN mem_used_mib INTEGER;
ALTER TABLE slice_values ADD COLUMN mem_total_mib INTEGER;

DROP VIEW gpu_samples;
CREATE VIEW gpu_samples AS
SELECT v.ts, k.host, k.gpu_uuid, v.util_pct, v.mem_util_pct,
  coalesce(v.mem_used_bytes_raw, v.mem_used_mib::BIGINT * 1048576) AS mem_used_bytes,
  coalesce(v.mem_total_bytes_raw, v.mem_total_mib::BIGINT * 1048576) AS mem_total_bytes, v.power_w,
  coalesce(v.energy_j_raw, v.energy_mj::DOUBLE / 1000) AS energy_j, v.temp_c, v.mem_temp_c, v.sm_clock_mhz, v.mem_clock_mhz, v.pcie_tx_bytes_per_s, v.pcie_rx_bytes_per_s, v.ecc_sbe_total, v.ecc_dbe_total, v.throttle_reasons, k.source
FROM gpu_values v JOIN gpu_series k ON k.series_id = v.series_id;

DROP VIEW slice_samples;
CREATE VIEW slice_samples AS
SELECT v.ts, k.slice_id, k.gpu_uuid, v.util_pct,
  coalesce(v.mem_used_bytes_raw, v.mem_used_mib::BIGINT * 1048576) AS mem_used_bytes,
  coalesce(v.mem_total_bytes_raw, v.mem_total_mib::BIGINT * 1048576) AS mem_total_bytes, k.source
FROM slice_values v JOIN slice_series k ON k.slice_series_id = v.slice_series_id;

-- The four dimensions whose ids the writer hands out (storage/keyed.py: one writer, in
-- its transaction, max + row_number) lose their PRIMARY KEY: its ART index took a block
-- of its own in every file (4 of 181 blocks of a 120 s, 3,040-GPU file) and no reader
-- looks ids up through it (joins hash). DuckDB cannot drop a constraint: each table is
-- copied without it.
CREATE TABLE gpu_series_0021 (
    series_id  BIGINT NOT NULL,   -- 1, 2, ... in order of first sample
    host       VARCHAR NOT NULL,
    gpu_uuid   VARCHAR NOT NULL,
    source     VARCHAR
);
INSERT INTO gpu_series_0021 SELECT series_id, host, gpu_uuid, source FROM gpu_series ORDER BY series_id;
DROP TABLE gpu_series;
ALTER TABLE gpu_series_0021 RENAME TO gpu_series;

CREATE TABLE slice_series_0021 (
    slice_series_id  BIGINT NOT NULL,   -- 1, 2, ... in order of first sample
    slice_id         VARCHAR NOT NULL,
    gpu_uuid         VARCHAR,
    source           VARCHAR
);
INSERT INTO slice_series_0021 SELECT slice_series_id, slice_id, gpu_uuid, source FROM slice_series ORDER BY slice_series_id;
DROP TABLE slice_series;
ALTER TABLE slice_series_0021 RENAME TO slice_series;

CREATE TABLE link_info_0021 (
    link_id   BIGINT NOT NULL,   -- 1, 2, ... in order of first sample
    kind      VARCHAR NOT NULL CHECK (kind IN ('nvlink', 'ib', 'efa', 'roce', 'iwarp')),
    host      VARCHAR NOT NULL,
    port      VARCHAR NOT NULL,
    gpu_uuid  VARCHAR,
    source    VARCHAR
);
INSERT INTO link_info_0021 SELECT link_id, kind, host, port, gpu_uuid, source FROM link_info ORDER BY link_id;
DROP TABLE link_info;
ALTER TABLE link_info_0021 RENAME TO link_info;

CREATE TABLE process_info_0021 (
    process_id    BIGINT NOT NULL,   -- 1, 2, ... in order of first listing
    host          VARCHAR NOT NULL,
    gpu_uuid      VARCHAR NOT NULL,
    slice_id      VARCHAR,
    pid           BIGINT NOT NULL,
    container     VARCHAR,
    cgroup        VARCHAR,
    tenant_guess  VARCHAR,
    source        VARCHAR
);
INSERT INTO process_info_0021 SELECT process_id, host, gpu_uuid, slice_id, pid, container, cgroup, tenant_guess, source FROM process_info ORDER BY process_id;
DROP TABLE process_info;
ALTER TABLE process_info_0021 RENAME TO process_info;
