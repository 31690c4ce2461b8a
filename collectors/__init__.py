"""Telemetry sources. Each produces columnar `storage.batch.Batch`es and never
touches DuckDB; the daemon hands the batches to the store. Never imports Textual.
"""
