"""The daemon's `[alerts]` config section and building the engine from it.

[alerts]
rules = ["site-rules.toml"]        # extra rule files, relative to the config file
default_rules = true               # also load the bundled pack
interval_s = 15.0
mqtt_host = "127.0.0.1"            # unset: no MQTT delivery
alertmanager_url = "http://127.0.0.1:9093"   # unset: no Alertmanager delivery
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collectors.options import parse_options
from fleettui.alerts.delivery import TOPIC_FIELDS, AlertmanagerDelivery, FanOut, MqttDelivery
from fleettui.alerts.engine import AlertEngine
from fleettui.alerts.rules import load_rule_files
from storage.store import Store


@dataclass(frozen=True)
class AlertsOptions:
    """Keys of the `[alerts]` table, with their defaults."""

    enabled: bool = True  # evaluate rules at all
    rules: list[str] = field(default_factory=list)  # extra rule files (TOML)
    default_rules: bool = True  # load the bundled default pack too
    interval_s: float = 15.0  # seconds between evaluations
    resend_s: float = 60.0  # re-send firing alerts to Alertmanager this often
    mqtt_host: str | None = None  # broker for alert messages; unset: no MQTT
    mqtt_port: int = 1883
    mqtt_topic: str = "fleettui/alerts/{severity}/{rule}"  # {rule} {severity} {scope} {state}
    mqtt_qos: int = 1
    alertmanager_url: str | None = None  # e.g. http://127.0.0.1:9093; unset: none
    generator_url: str | None = None  # link sent as generatorURL (the app, a runbook)
    retries: int = 3  # delivery retries after the first attempt
    retry_backoff_s: float = 1.0  # first retry delay, doubled each time
    timeout_s: float = 5.0  # per delivery attempt

    def __post_init__(self) -> None:
        if self.interval_s <= 0:
            raise ValueError("interval_s must be > 0")
        if self.resend_s <= 0:
            raise ValueError("resend_s must be > 0")
        if self.retries < 0 or self.retry_backoff_s < 0 or self.timeout_s <= 0:
            raise ValueError("retries and retry_backoff_s must be >= 0, timeout_s > 0")
        if self.mqtt_qos not in (0, 1, 2):
            raise ValueError("mqtt_qos must be 0, 1 or 2")
        if not 0 < self.mqtt_port < 65536:
            raise ValueError("mqtt_port must be a TCP port")
        try:
            self.mqtt_topic.format(**{f: "x" for f in TOPIC_FIELDS})
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"mqtt_topic {self.mqtt_topic!r}: placeholders are "
                f"{', '.join('{' + f + '}' for f in TOPIC_FIELDS)} ({exc})"
            ) from None
        if self.alertmanager_url and not self.alertmanager_url.startswith(("http://", "https://")):
            raise ValueError(
                f"alertmanager_url must start with http:// or https://, "
                f"got {self.alertmanager_url!r}"
            )


def alerts_options(raw: Mapping[str, Any], where: str) -> AlertsOptions:
    """Validate an `[alerts]` table; raises OptionsError naming the key and `where`."""
    return parse_options(AlertsOptions, raw, where)


def build_delivery(o: AlertsOptions) -> FanOut | None:
    targets: list[Any] = []
    if o.mqtt_host:
        targets.append(
            MqttDelivery(
                o.mqtt_host,
                o.mqtt_port,
                topic=o.mqtt_topic,
                qos=o.mqtt_qos,
                retries=o.retries,
                backoff_s=o.retry_backoff_s,
                timeout_s=o.timeout_s,
            )
        )
    if o.alertmanager_url:
        targets.append(
            AlertmanagerDelivery(
                o.alertmanager_url,
                valid_s=4 * max(o.resend_s, o.interval_s),
                retries=o.retries,
                backoff_s=o.retry_backoff_s,
                timeout_s=o.timeout_s,
                generator_url=o.generator_url,
            )
        )
    return FanOut(targets) if targets else None


def build_engine(store: Store, o: AlertsOptions, base_dir: str | Path = ".") -> AlertEngine | None:
    """The runtime task for `[alerts]`, or None when disabled; raises RuleError on bad rules."""
    if not o.enabled:
        return None
    paths = [Path(base_dir) / p for p in o.rules]
    rules = load_rule_files(paths, default_pack=o.default_rules)
    return AlertEngine(
        store, rules, interval_s=o.interval_s, resend_s=o.resend_s, delivery=build_delivery(o)
    )
