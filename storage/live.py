"""The newest sample of every GPU and slice, kept beside the store for the live views.

The writer appends samples as before; after each committed write it only keeps
a reference to the batch (no work per write). At most every `publish_s` it
folds the batches since into the previous snapshot, newest row per key, and
replaces `fleettui_live.<table>` in an in-memory catalog of the same DuckDB
instance, so the app in this process and the daemon's Quack clients read it
like any table. A live view then reads one row per GPU, not the stale window
of history (`storage/views/live.py`).

The snapshot is derived data, never persisted: on open it is filled from the
last `FILL_WINDOW_S` of history. `fleettui_live.snapshot` says what it covers:
per table, `since` (every key with a sample after it is there) and `through`
(its newest sample); a view uses it only for cursors it covers.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from datetime import timedelta

import duckdb
import pyarrow as pa

log = logging.getLogger("fleettui.live")

LIVE_CATALOG = "fleettui_live"

# sample table -> key columns of its newest-row snapshot
LIVE_KEYS: dict[str, tuple[str, ...]] = {
    "gpu_samples": ("gpu_uuid",),
    "slice_samples": ("slice_id",),
}
# sample table -> its snapshot's name in LIVE_CATALOG (not the same name: schema
# listings and `fleettui sql` users never mistake one for the other)
LIVE_NAMES = {"gpu_samples": "gpu_latest", "slice_samples": "slice_latest"}

# History read on open; a view whose stale window reaches further back reads history.
FILL_WINDOW_S = 120.0

# How often the writer folds new batches into the snapshot (wall seconds).
PUBLISH_S = 1.0


# Per row, the newest sample time of its group (a GPU's host, a slice's GPU): the
# views' "newest report" rule then needs no aggregate per refresh.
GROUP_TS = {"gpu_samples": ("host", "host_ts"), "slice_samples": ("gpu_uuid", "gpu_ts")}

# Tables the rack grid's layout is built from; a write to them may change it.
LAYOUT_TABLES = frozenset({"gpus", "hosts", "slices", "assignments"})
LAYOUT_FINGERPRINT_SQL = """
SELECT (SELECT count(*)::VARCHAR || ':' || coalesce(sum(hash(gpu_uuid, host, gpu_index, name,
            mig_mode, mem_total_bytes)), 0)::VARCHAR FROM main.gpus)
    || '/' || (SELECT count(*)::VARCHAR || ':' || coalesce(sum(hash(host, cluster, rack,
            rack_slot, model, nvlink_domain, first_seen)), 0)::VARCHAR FROM main.hosts)
    || '/' || (SELECT count(*)::VARCHAR || ':' || coalesce(sum(hash(slice_id, gpu_uuid)), 0)::VARCHAR
            FROM main.slices)
    || '/' || (SELECT count(*)::VARCHAR || ':' || coalesce(sum(hash(tenant, gpu_uuid, slice_id,
            fraction, valid_from, valid_to)), 0)::VARCHAR FROM main.assignments)
"""


def _newest_sql(table: str, source: str) -> str:
    keys = ", ".join(LIVE_KEYS[table])
    group, group_ts = GROUP_TS[table]
    return (
        f"SELECT *, max(ts) OVER (PARTITION BY {group}) AS {group_ts} FROM ("
        f"SELECT * FROM ({source}) "
        f"QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY ts DESC) = 1)"
    )


class LiveSnapshot:
    """Newest row per key of the sample tables, published in `fleettui_live`."""

    def __init__(self, con: duckdb.DuckDBPyConnection, *, publish_s: float = PUBLISH_S):
        self.publish_s = publish_s
        self._pending: dict[str, list[pa.Table]] = {t: [] for t in LIVE_KEYS}
        self._lock = threading.Lock()
        self._last_publish = 0.0
        self.publish_cpu_s = 0.0  # total CPU spent publishing (benchmarks)
        self._cur = con.cursor()
        self._cur.execute(f"ATTACH IF NOT EXISTS ':memory:' AS {LIVE_CATALOG}")
        self._cur.execute(
            f"CREATE OR REPLACE TABLE {LIVE_CATALOG}.snapshot "
            "(sample_table VARCHAR, since TIMESTAMP, through TIMESTAMP, layout_version VARCHAR)"
        )
        # a new token per snapshot: a layout cached from another store or run never matches
        self._token = uuid.uuid4().hex[:12]
        self._layout_n = 0
        self._layout_fp = None
        self._layout_dirty = True
        self._fill()
        self._check_layout()

    def _fill(self) -> None:
        """The newest row per key over the last FILL_WINDOW_S of stored history."""
        for table in LIVE_KEYS:
            newest = self._cur.execute(f"SELECT max(ts) FROM main.{table}").fetchone()[0]
            since = newest - timedelta(seconds=FILL_WINDOW_S) if newest is not None else None
            src = (
                f"SELECT * FROM main.{table} WHERE ts > $since"
                if since
                else (f"SELECT * FROM main.{table} WHERE false")
            )
            self._cur.execute(
                f"CREATE OR REPLACE TABLE {LIVE_CATALOG}.{LIVE_NAMES[table]} AS {_newest_sql(table, src)}",
                {"since": since} if since else {},
            )
            # With no history yet every key to come is covered from the beginning.
            self._set_meta(table, since)

    def _set_meta(self, table: str, since) -> None:
        self._cur.execute(f"DELETE FROM {LIVE_CATALOG}.snapshot WHERE sample_table = ?", [table])
        self._cur.execute(
            f"INSERT INTO {LIVE_CATALOG}.snapshot SELECT ?, ?, "
            f"(SELECT max(ts) FROM {LIVE_CATALOG}.{LIVE_NAMES[table]}), NULL",
            [table, since],
        )

    def _check_layout(self) -> None:
        """A new layout version when what the rack layout is built from changed."""
        if not self._layout_dirty:
            return
        self._layout_dirty = False
        fp = self._cur.execute(LAYOUT_FINGERPRINT_SQL).fetchone()[0]
        if fp != self._layout_fp:
            self._layout_fp = fp
            self._layout_n += 1
            self._cur.execute(
                f"UPDATE {LIVE_CATALOG}.snapshot SET layout_version = ?",
                [f"{self._token}-{self._layout_n}"],
            )

    def add(self, table: str, data: pa.Table) -> None:
        """A committed batch of `table` (cheap: a reference until the next publish)."""
        if table in LAYOUT_TABLES and not (
            table == "hosts" and set(data.column_names) <= {"host", "last_seen"}
        ):
            self._layout_dirty = True
        pending = self._pending.get(table)
        if pending is not None:
            with self._lock:
                pending.append(data)

    def maybe_publish(self) -> None:
        if time.monotonic() - self._last_publish >= self.publish_s:
            self.publish()

    def publish(self) -> None:
        """Fold pending batches into the snapshot tables."""
        c0 = time.process_time()
        self._last_publish = time.monotonic()
        with self._lock:
            todo = {t: b for t, b in self._pending.items() if b}
            for t in todo:
                self._pending[t] = []
        for table, batches in todo.items():
            cols = self._cur.execute(f"SELECT * FROM main.{table} LIMIT 0").to_arrow_table().schema
            # each batch to the snapshot's columns (a missing one: NULL, as the store has it)
            aligned = [
                pa.table(
                    {
                        f.name: b.column(f.name).cast(f.type)
                        if f.name in b.column_names
                        else pa.nulls(b.num_rows, f.type)
                        for f in cols
                    }
                )
                for b in batches
            ]
            self._cur.register("_live_new", pa.concat_tables(aligned))
            try:
                group_ts = GROUP_TS[table][1]
                src = (
                    f"SELECT * EXCLUDE ({group_ts}) FROM {LIVE_CATALOG}.{LIVE_NAMES[table]} "
                    "UNION ALL SELECT * FROM _live_new"
                )
                self._cur.execute("BEGIN TRANSACTION")
                self._cur.execute(
                    f"CREATE OR REPLACE TABLE {LIVE_CATALOG}.{LIVE_NAMES[table]} AS {_newest_sql(table, src)}"
                )
                self._cur.execute(
                    f"UPDATE {LIVE_CATALOG}.snapshot SET through = "
                    f"(SELECT max(ts) FROM {LIVE_CATALOG}.{LIVE_NAMES[table]}) WHERE sample_table = ?",
                    [table],
                )
                self._cur.execute("COMMIT")
            except BaseException:
                # a snapshot that missed batches must not be read: views fall back to history
                with contextlib.suppress(duckdb.Error):
                    self._cur.execute("ROLLBACK")
                    self._cur.execute(
                        f"DELETE FROM {LIVE_CATALOG}.snapshot WHERE sample_table = ?", [table]
                    )
                raise
            finally:
                self._cur.unregister("_live_new")
        self._check_layout()
        self.publish_cpu_s += time.process_time() - c0
