"""Colour scales and number formats shared by the views."""

from __future__ import annotations

import math

import numpy as np
from rich.style import Style
from rich.text import Text

# Metrics the rack view cycles through: key, label, unit.
METRICS: tuple[tuple[str, str], ...] = (
    ("util", "utilisation %"),
    ("memory", "memory %"),
    ("power", "power % of TDP"),
    ("temp", "temperature °C"),
    ("errors", "errors (Xid/ECC, 1 h)"),
)

# Board power limits by GPU name fragment (W), for power as a share of TDP.
TDP_W = (
    ("GB300", 1400.0),
    ("GB200", 1200.0),
    ("B200", 1000.0),
    ("H200", 700.0),
    ("H100", 700.0),
    ("A100", 400.0),
    ("RTX PRO 6000", 600.0),
    ("L40", 350.0),
)
DEFAULT_TDP_W = 700.0

# Ten steps from cool to hot (viridis-like, then warm): legible on dark and light.
HEAT = (
    "#1f3b73",
    "#23568a",
    "#21708f",
    "#1f8a8a",
    "#2aa278",
    "#5fb75a",
    "#a3c23a",
    "#d8b82c",
    "#e8892b",
    "#e0452b",
)
STALE_BG = "#4a4a4a"
MISSING = Style(color="#ffffff", bgcolor="#8b0000", bold=True)
STALE = Style(color="#8a8a8a", bgcolor=STALE_BG)
# black text on the light steps, white on the dark ones (legible values in wide cells)
HEAT_STYLES = tuple(
    Style(color="#ffffff" if i < 4 else "#000000", bgcolor=c) for i, c in enumerate(HEAT)
)


def tdp_for(names: list[str]) -> np.ndarray:
    out = np.full(len(names), DEFAULT_TDP_W)
    cache: dict[str, float] = {}
    for i, name in enumerate(names):
        if name not in cache:
            cache[name] = next((w for frag, w in TDP_W if frag in (name or "")), DEFAULT_TDP_W)
        out[i] = cache[name]
    return out


def heat_index(metric: str, values: np.ndarray) -> np.ndarray:
    """Map metric values to 0..9 (heat step); NaN -> -1."""
    if metric == "temp":
        norm = (values - 30.0) / 60.0
    elif metric == "errors":
        norm = np.where(values > 0, 0.95, 0.0)
    else:
        norm = values / 100.0
    idx = np.clip(np.floor(norm * 10.0), 0, 9)
    return np.where(np.isnan(values), -1, idx).astype(np.int64)


def fmt_num(v: float | None, digits: int = 0, unit: str = "") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:,.{digits}f}{unit}"


def fmt_bytes(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    v = float(v)
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(v) < 1000 or unit == "PB":
            return f"{v:,.0f} {unit}" if unit == "B" else f"{v:,.1f} {unit}"
        v /= 1000.0
    return "–"


def fmt_rate(v: float | None) -> str:
    s = fmt_bytes(v)
    return s if s == "–" else s + "/s"


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


def pct_text(v: float | None, hot: float = 90.0, cold: float = 5.0) -> Text:
    """A percentage coloured: dim when cold, red when hot."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return Text("–", style="dim")
    style = "bold red" if v >= hot else ("dim" if v < cold else "")
    return Text(f"{v:5.1f}", style=style, justify="right")
