"""Who holds a GPU or slice, as `assignments` rows written only when it changes.

Shared by the sources that guess tenancy from what they see each time (dcgm-exporter's
pod labels, the agent's per-process cgroups): an assignment opens when a (GPU, slice)
first shows a tenant, closes when a later observation no longer shows it (or shows
another tenant), and is not repeated in between.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Key = tuple[str, str | None]  # (gpu_uuid, slice_id or None for the whole GPU)
# tenant, gpu_uuid, slice_id, fraction, valid_from, valid_to (None: still open)
Row = tuple[str, str, str | None, Any, Any, Any]


def step_assignments(
    held: dict[Key, tuple[str, Any, Any]],
    seen: dict[Key, tuple[str, Any]],
    at: Any,
    closable: Callable[[Key], bool] = lambda key: True,
) -> list[Row]:
    """Rows for what changed from `held` (key -> tenant, since, fraction) to `seen`
    (key -> tenant, fraction) at `at`; updates `held`. A held key missing from `seen`
    closes only where `closable(key)` (e.g. its GPU was observed this time)."""
    rows: list[Row] = []
    for key, (tenant, frac) in seen.items():
        cur = held.get(key)
        if cur and cur[0] == tenant:
            continue
        if cur:
            rows.append((cur[0], key[0], key[1], cur[2], cur[1], at))
        held[key] = (tenant, at, frac)
        rows.append((tenant, key[0], key[1], frac, at, None))
    for key in [k for k in held if k not in seen and closable(k)]:
        tenant, since, frac = held.pop(key)
        rows.append((tenant, key[0], key[1], frac, since, at))
    return rows
