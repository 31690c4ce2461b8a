"""Arrow types of every store column, for building batches without a database.

Must match the SQL migrations; `tests/test_store.py`
(`test_columns_module_matches_migrated_schema`) checks it against a migrated
database so the two cannot drift apart.
"""

from __future__ import annotations

import pyarrow as pa

TS = pa.timestamp("us")
S, F, I, B, I32 = pa.string(), pa.float64(), pa.int64(), pa.bool_(), pa.int32()

TABLE_COLUMNS: dict[str, dict[str, pa.DataType]] = {
    "hosts": {
        "host": S,
        "cluster": S,
        "rack": S,
        "rack_slot": I32,
        "nvlink_domain": S,
        "model": S,
        "driver_version": S,
        "first_seen": TS,
        "last_seen": TS,
    },
    "gpus": {
        "gpu_uuid": S,
        "host": S,
        "gpu_index": I32,
        "name": S,
        "pci_bus_id": S,
        "mig_mode": B,
        "mem_total_bytes": I,
    },
    "slices": {
        "slice_id": S,
        "gpu_uuid": S,
        "kind": S,
        "profile": S,
        "fraction": F,
        "mem_total_bytes": I,
    },
    "tenants": {"tenant": S, "display_name": S, "tier": S},
    "assignments": {
        "tenant": S,
        "gpu_uuid": S,
        "slice_id": S,
        "fraction": F,
        "valid_from": TS,
        "valid_to": TS,
        "source": S,
    },
    "endpoints": {
        "endpoint": S,
        "tenant": S,
        "model": S,
        "itl_target_ms": F,
        "ttft_target_ms": F,
    },
    "gpu_samples": {
        "ts": TS,
        "host": S,
        "gpu_uuid": S,
        "util_pct": F,
        "mem_util_pct": F,
        "mem_used_bytes": I,
        "mem_total_bytes": I,
        "power_w": F,
        "energy_j": F,
        "temp_c": F,
        "mem_temp_c": F,
        "sm_clock_mhz": F,
        "mem_clock_mhz": F,
        "pcie_tx_bytes_per_s": F,
        "pcie_rx_bytes_per_s": F,
        "ecc_sbe_total": I,
        "ecc_dbe_total": I,
        "throttle_reasons": I,
        "source": S,
    },
    "slice_samples": {
        "ts": TS,
        "slice_id": S,
        "gpu_uuid": S,
        "util_pct": F,
        "mem_used_bytes": I,
        "mem_total_bytes": I,
        "source": S,
    },
    "link_samples": {
        "ts": TS,
        "host": S,
        "kind": S,
        "port": S,
        "gpu_uuid": S,
        "tx_bytes_per_s": F,
        "rx_bytes_per_s": F,
        "line_rate_bytes_per_s": F,
        "errors": I,
        "link_up": B,
        "source": S,
    },
    "latency_samples": {
        "ts": TS,
        "tenant": S,
        "endpoint": S,
        "model": S,
        "itl_p50_ms": F,
        "itl_p99_ms": F,
        "ttft_p50_ms": F,
        "ttft_p99_ms": F,
        "e2e_p50_ms": F,
        "e2e_p99_ms": F,
        "requests_per_s": F,
        "source": S,
    },
    "events": {
        "ts": TS,
        "host": S,
        "gpu_uuid": S,
        "kind": S,
        "code": I,
        "detail": S,
        "source": S,
    },
    "collector_runs": {
        "ts": TS,
        "collector": S,
        "duration_ms": F,
        "ok": B,
        "rows": I,
        "error": S,
        "skipped": I,
        "interval_s": F,
        # 0005_real_fleets.sql
        "dropped": I,
        "dropped_reasons": S,
    },
    # 0002_mqtt.sql (NVML agent over MQTT)
    "rejects": {
        "ts": TS,
        "source": S,
        "topic": S,
        "host": S,
        "reason": S,
        "payload_excerpt": S,
    },
    "host_status": {"host": S, "state": S, "since": TS, "boot": S, "updated_at": TS},
    "report_seqs": {"ts": TS, "host": S, "boot": S, "seq": I},
    "processes": {
        "ts": TS,
        "host": S,
        "gpu_uuid": S,
        "slice_id": S,
        "pid": I,
        "used_mem_bytes": I,
        "container": S,
        "cgroup": S,
        "tenant_guess": S,
        "source": S,
    },
    "gpu_mem_samples": {
        "ts": TS,
        "host": S,
        "gpu_uuid": S,
        "mem_reserved_bytes": I,
        "remapped_rows_correctable": I,
        "remapped_rows_uncorrectable": I,
        "remap_pending": B,
        "remap_failed": B,
        "source": S,
    },
    # 0004_alerts.sql (alert engine)
    "alerts": {
        "alert_id": S,
        "rule": S,
        "scope": S,
        "scope_key": S,
        "severity": S,
        "state": S,
        "started_at": TS,
        "fired_at": TS,
        "resolved_at": TS,
        "last_active_at": TS,
        "evaluated_at": TS,
        "peak_value": F,
        "last_value": F,
        "threshold": F,
        "labels": S,
        "annotations": S,
    },
    "silences": {
        "silence_id": S,
        "kind": S,
        "rule": S,
        "scope_key": S,
        "alert_id": S,
        "created_by": S,
        "created_at": TS,
        "starts_at": TS,
        "ends_at": TS,
        "comment": S,
    },
}

# Dimension tables are merged on their key (latest wins, first_seen kept);
# every other table is append-only.
UPSERT_KEYS: dict[str, tuple[str, ...]] = {
    "hosts": ("host",),
    "gpus": ("gpu_uuid",),
    "slices": ("slice_id",),
    "tenants": ("tenant",),
    "endpoints": ("endpoint",),
    "assignments": ("tenant", "gpu_uuid", "slice_id", "valid_from"),
    "host_status": ("host",),
    # alert instances and silences change state in place
    "alerts": ("alert_id",),
    "silences": ("silence_id",),
}

# Row order within one write that DuckDB compresses best (issue 13). DuckDB
# compresses each column segment on its own (RLE, bit-packing, ALP, dictionary),
# so rows of one kind together give long runs: a port's line rate is the same
# for every port of its kind, and rates of one kind lie in a narrower range.
# A stable sort on these columns keeps the sources' order within each group.
# Only low-cardinality keys: the sort runs on every write (numpy, microseconds).
COMPRESSION_ORDER: dict[str, tuple[str, ...]] = {
    "link_samples": ("ts", "kind"),
}
