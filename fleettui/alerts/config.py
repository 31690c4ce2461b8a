"""The daemon's `[alerts]` config section and building the engine from it.

[alerts]
rules = ["site-rules.toml"]        # extra rule files, relative to the config file
default_rules = true               # also load the bundled pack
interval_s = 15.0
mqtt_host = "127.0.0.1"            # unset: no MQTT delivery
mqtt_tls = true                    # + mqtt_tls_ca / _cert / _key, mqtt_username, mqtt_password_env
alertmanager_url = "http://127.0.0.1:9093"   # unset: no Alertmanager delivery
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collectors.mqtt_source import check_tls_files, resolve_password, tls_parameters
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
    refresh_s: float = 60.0  # an open alert's value in the `alerts` table at most this old
    mqtt_host: str | None = None  # broker for alert messages; unset: no MQTT
    mqtt_port: int = 1883
    mqtt_topic: str = "fleettui/alerts/{severity}/{rule}"  # {rule} {severity} {scope} {state}
    mqtt_qos: int = 1
    mqtt_client_id: str = ""  # "" a random id
    # TLS and credentials, as the agent's and the mqtt source's keys
    mqtt_tls: bool = False
    mqtt_tls_ca: str = ""  # CA file; "" uses the system store
    mqtt_tls_cert: str = ""  # client certificate (with mqtt_tls_key)
    mqtt_tls_key: str = ""
    mqtt_username: str = ""
    mqtt_password: str = ""
    mqtt_password_env: str = ""  # name of an environment variable holding the password
    alertmanager_url: str | None = None  # e.g. http://127.0.0.1:9093; unset: none
    generator_url: str | None = None  # link sent as generatorURL (the app, a runbook)
    retry_backoff_s: float = 1.0  # first retry delay, doubled each time...
    retry_max_backoff_s: float = 30.0  # ...up to this; retried until the receiver confirms
    timeout_s: float = 5.0  # deadline of one delivery attempt (connect, send, answer)
    max_queued: int = 10_000  # per target; beyond it the oldest is dropped (counted, logged)

    def __post_init__(self) -> None:
        if self.interval_s <= 0:
            raise ValueError("interval_s must be > 0")
        if self.resend_s <= 0:
            raise ValueError("resend_s must be > 0")
        if not (math.isfinite(self.refresh_s) and self.refresh_s > 0):
            raise ValueError("refresh_s must be a number > 0")
        if not (math.isfinite(self.retry_backoff_s) and self.retry_backoff_s >= 0):
            raise ValueError("retry_backoff_s must be a number >= 0")
        if not (math.isfinite(self.retry_max_backoff_s) and self.retry_max_backoff_s > 0):
            raise ValueError("retry_max_backoff_s must be a number > 0")
        if not (math.isfinite(self.timeout_s) and self.timeout_s > 0):
            raise ValueError("timeout_s must be a number > 0")
        if self.max_queued < 1:
            raise ValueError("max_queued must be >= 1")
        check_tls_files(
            mqtt_tls_ca=self.mqtt_tls_ca,
            mqtt_tls_cert=self.mqtt_tls_cert,
            mqtt_tls_key=self.mqtt_tls_key,
        )
        if bool(self.mqtt_tls_cert) != bool(self.mqtt_tls_key):
            raise ValueError("mqtt_tls_cert and mqtt_tls_key go together")
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
                backoff_s=o.retry_backoff_s,
                max_backoff_s=o.retry_max_backoff_s,
                timeout_s=o.timeout_s,
                max_queued=o.max_queued,
                tls_params=tls_parameters(
                    o.mqtt_tls, o.mqtt_tls_ca, o.mqtt_tls_cert, o.mqtt_tls_key
                ),
                username=o.mqtt_username or None,
                password=resolve_password(o.mqtt_password, o.mqtt_password_env),
                client_id=o.mqtt_client_id,
            )
        )
    if o.alertmanager_url:
        targets.append(
            AlertmanagerDelivery(
                o.alertmanager_url,
                valid_s=4 * max(o.resend_s, o.interval_s),
                backoff_s=o.retry_backoff_s,
                max_backoff_s=o.retry_max_backoff_s,
                timeout_s=o.timeout_s,
                max_queued=o.max_queued,
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
        store,
        rules,
        interval_s=o.interval_s,
        resend_s=o.resend_s,
        refresh_s=o.refresh_s,
        delivery=build_delivery(o),
    )
