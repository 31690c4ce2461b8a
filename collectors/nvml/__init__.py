"""NVML telemetry: the collector, its library factory (real pynvml or the fake), and the
versioned per-host report the agent publishes over MQTT."""
