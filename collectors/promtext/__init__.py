"""Prometheus-format telemetry: exposition text and API results -> series, series -> store batches.

- `series`: `Snapshot`, the columnar set of samples both pull paths produce
  (a direct `/metrics` scrape, or a Prometheus API query);
- `parse`: exposition text -> Snapshot, skipping bad lines with a reason;
- `counters`: counter deltas across gathers (resets, gaps) for rates and histograms;
- `pipeline`: one snapshot through the DCGM, fabric and latency mappers.
"""
