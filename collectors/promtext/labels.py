"""Label conventions shared by the DCGM, fabric and latency mappers."""

from __future__ import annotations

import re
from collections.abc import Mapping

_PORT = re.compile(r":\d+$")


def hostname_label(labels: Mapping[str, str]) -> str | None:
    """`Hostname` (dcgm-exporter <= 4.x) or `hostname` (its main branch): any case."""
    for key in ("Hostname", "hostname"):
        v = labels.get(key)
        if v:
            return v
    for key, v in labels.items():
        if key.lower() == "hostname" and v:
            return v
    return None


def host_of(labels: Mapping[str, str]) -> str | None:
    """The host a series describes: its hostname label, else the scrape instance
    without its port (so dcgm-exporter :9400 and node_exporter :9100 on one
    node name the same host)."""
    h = hostname_label(labels)
    if h:
        return h
    inst = labels.get("instance")
    if inst:
        return _PORT.sub("", inst) if not inst.startswith("[") else inst
    return None


def series_key(name: str, labels: Mapping[str, str], drop: tuple[str, ...] = ()) -> tuple:
    """A hashable identity for a series (name + labels, minus `drop`)."""
    return (name, tuple(sorted((k, v) for k, v in labels.items() if k not in drop)))
