-- FleetTUI schema version 19: GPU samples as a dimension (issue 13, store size), as 0018
-- did for processes and links: (host, gpu_uuid, source) once in `gpu_series`, each
-- sample (ts, series_id, values) in `gpu_values`. `gpu_samples` becomes a view with
-- the old columns and types; the rollups, views and alert rules read it as before.
-- Energy is kept as whole mJ where that gives back the very double (NVML and DCGM count
-- mJ), else as it came (storage/keyed.py, GPUS).

CREATE TABLE gpu_series (
    series_id  BIGINT PRIMARY KEY,   -- 1, 2, ... in order of first sample
    host       VARCHAR NOT NULL,
    gpu_uuid   VARCHAR NOT NULL,
    source     VARCHAR
);

CREATE TABLE gpu_values (
    ts                   TIMESTAMP NOT NULL,
    series_id            BIGINT NOT NULL,   -- gpu_series.series_id
    util_pct             DOUBLE,
    mem_util_pct         DOUBLE,
    mem_used_bytes       BIGINT,
    mem_total_bytes      BIGINT,
    power_w              DOUBLE,
    energy_mj            BIGINT,   -- energy_j * 1000 where energy_mj / 1000 is energy_j exactly
    energy_j_raw         DOUBLE,   -- energy_j where it is not (then energy_mj is NULL)
    temp_c               DOUBLE,
    mem_temp_c           DOUBLE,
    sm_clock_mhz         DOUBLE,
    mem_clock_mhz        DOUBLE,
    pcie_tx_bytes_per_s  DOUBLE,
    pcie_rx_bytes_per_s  DOUBLE,
    ecc_sbe_total        BIGINT,
    ecc_dbe_total        BIGINT,
    throttle_reasons     BIGINT
);

INSERT INTO gpu_series
SELECT row_number() OVER (ORDER BY first_ts, host, gpu_uuid, source), host, gpu_uuid, source
FROM (SELECT host, gpu_uuid, source, min(ts) AS first_ts FROM gpu_samples GROUP BY ALL);

INSERT INTO gpu_values
SELECT g.ts, k.series_id, g.util_pct, g.mem_util_pct, g.mem_used_bytes, g.mem_total_bytes, g.power_w,
  CASE WHEN isfinite(g.energy_j) AND NOT signbit(g.energy_j) AND g.energy_j < 9e12 AND round(g.energy_j * 1000) / 1000 = g.energy_j THEN round(g.energy_j * 1000)::BIGINT END,
  CASE WHEN NOT coalesce(isfinite(g.energy_j) AND NOT signbit(g.energy_j) AND g.energy_j < 9e12 AND round(g.energy_j * 1000) / 1000 = g.energy_j, false) THEN g.energy_j END,
  g.temp_c, g.mem_temp_c, g.sm_clock_mhz, g.mem_clock_mhz, g.pcie_tx_bytes_per_s, g.pcie_rx_bytes_per_s, g.ecc_sbe_total, g.ecc_dbe_total, g.throttle_reasons
FROM gpu_samples g JOIN gpu_series k
  ON k.host = g.host AND k.gpu_uuid = g.gpu_uuid AND k.source IS NOT DISTINCT FROM g.source
ORDER BY g.ts, k.series_id;

DROP TABLE gpu_samples;

CREATE VIEW gpu_samples AS
SELECT v.ts, k.host, k.gpu_uuid, v.util_pct, v.mem_util_pct, v.mem_used_bytes, v.mem_total_bytes, v.power_w,
  coalesce(v.energy_j_raw, v.energy_mj::DOUBLE / 1000) AS energy_j, v.temp_c, v.mem_temp_c, v.sm_clock_mhz, v.mem_clock_mhz, v.pcie_tx_bytes_per_s, v.pcie_rx_bytes_per_s, v.ecc_sbe_total, v.ecc_dbe_total, v.throttle_reasons, k.source
FROM gpu_values v JOIN gpu_series k ON k.series_id = v.series_id;

-- Slices the same way: at 100,000 GPUs the slice ids and their GPUs' UUIDs no longer fit
-- a dictionary per segment either (0.48 of 2.85 bytes per value). (slice_id, gpu_uuid,
-- source) once in `slice_series`, each sample (ts, slice_series_id, values) in
-- `slice_values`; `slice_samples` becomes a view with the old columns and types.

CREATE TABLE slice_series (
    slice_series_id  BIGINT PRIMARY KEY,   -- 1, 2, ... in order of first sample
    slice_id         VARCHAR NOT NULL,
    gpu_uuid         VARCHAR,
    source           VARCHAR
);

CREATE TABLE slice_values (
    ts               TIMESTAMP NOT NULL,
    slice_series_id  BIGINT NOT NULL,   -- slice_series.slice_series_id
    util_pct         DOUBLE,
    mem_used_bytes   BIGINT,
    mem_total_bytes  BIGINT
);

INSERT INTO slice_series
SELECT row_number() OVER (ORDER BY first_ts, slice_id, gpu_uuid, source), slice_id, gpu_uuid, source
FROM (SELECT slice_id, gpu_uuid, source, min(ts) AS first_ts FROM slice_samples GROUP BY ALL);

INSERT INTO slice_values
SELECT s.ts, k.slice_series_id, s.util_pct, s.mem_used_bytes, s.mem_total_bytes
FROM slice_samples s JOIN slice_series k
  ON k.slice_id = s.slice_id AND k.gpu_uuid IS NOT DISTINCT FROM s.gpu_uuid
  AND k.source IS NOT DISTINCT FROM s.source
ORDER BY s.ts, k.slice_series_id;

DROP TABLE slice_samples;

CREATE VIEW slice_samples AS
SELECT v.ts, k.slice_id, k.gpu_uuid, v.util_pct, v.mem_used_bytes, v.mem_total_bytes, k.source
FROM slice_values v JOIN slice_series k ON k.slice_series_id = v.slice_series_id;
