"""FleetTUI: terminal dashboard and telemetry store for GPU fleets."""

__version__ = "0.1.0"
