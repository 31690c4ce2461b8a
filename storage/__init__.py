"""Telemetry store: DuckDB schema, migrations, the batch writer and the shared queries.

Never imports Textual: the daemon and `fleettui sql` use this package headless.
"""
