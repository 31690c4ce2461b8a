"""The alert engine: TOML rules compiled to SQL over the store, a per-instance state
machine persisted in the `alerts` table, delivery to MQTT and Alertmanager, and
silences. Never imports textual: the daemon runs it headless."""
