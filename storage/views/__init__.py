"""The queries behind every view of the app, shared with `fleettui sql`.

Each view is a function `(cursor, at=None, ...) -> pyarrow.Table`: the SQL
aggregates over the whole fleet and hands back columns, never Python rows per
GPU. `at` is the time cursor (UTC, naive): the fleet as it was at that moment,
or now when None. The SQL text of each view is a module constant beside its
function (`TOTALS_SQL` in `fleet.py`, `HOST_GPUS_SQL` in `drilldown.py`, ...) so
`fleettui sql` users can read and adapt it.
"""

from storage.views.alerts import alert_list, alerts_available, firing_by_host
from storage.views.drilldown import (
    gpu_history,
    host_events,
    host_gpus,
    host_processes,
    host_slices,
)
from storage.views.fabric import Fabric, fabric, fabric_links, fabric_racks
from storage.views.fleet import fleet_totals
from storage.views.rack import RackFilter, rack_grid
from storage.views.tenants import tenant_history, tenant_summary
from storage.views.when import resolve_at

__all__ = [
    "Fabric",
    "RackFilter",
    "fabric",
    "alert_list",
    "alerts_available",
    "fabric_links",
    "fabric_racks",
    "firing_by_host",
    "fleet_totals",
    "gpu_history",
    "host_events",
    "host_gpus",
    "host_processes",
    "host_slices",
    "rack_grid",
    "resolve_at",
    "tenant_history",
    "tenant_summary",
]
