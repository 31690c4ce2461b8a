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
