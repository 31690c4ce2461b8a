"""A keyed table's ids looked up in the writer, not joined in SQL (storage/keyed.py).

Each write of a keyed table joins its batch to the dimension on the whole key. For
per-link NVLink rows that is 144 rows a report joined on five strings to every link
of the fleet: about a third of the daemon's CPU per report. The writer is the only
process that adds keys to its file (a lake has several writers and never uses this),
so it can keep every key's id itself: the batch's ids come from arrays, and the rows
go in with their ids, in the same (ts, id) order.

A key is split into a group (for links: kind, host, GPU, source) and a member (the
port). Rows of one group come together (one GPU's links), so only each run's first
row is hashed, as one string; members are few. Group and member codes make one
integer per key, found in a sorted array of those the dimension holds.

The cache follows the dimension: at every write it compares the dimension's row count
and highest id with its own; ids appended by the write before (new keys take the next
ids, storage/keyed.py) are read then, anything else reloads the whole dimension.
Retention's prune can delete the highest ids and let them be handed out again with
the same count: it calls `reset`, as does a write that fails. A key the cache does not
hold (a new link, a value with the separator characters, a NULL) sends the batch to
the join, as before.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from storage.keyed import Keyed

_SEP = "\x1f"  # between a group's columns in its one string
_NULL = "\x1e"  # a NULL column there
_RESERVED = "[\x1e\x1f]"  # a value holding either goes to the join (its string is ambiguous)
MEMBER_BITS = 20  # member codes below 2**20; more distinct members: the join


class RunKeys:
    """Keys of `group_cols` plus `member` -> an integer, found for a whole table at once.
    Rows of one group come together, so only each run's first row is hashed."""

    def __init__(self, group_cols: tuple[str, ...], member: str) -> None:
        self.group_cols = group_cols
        self.member = member
        self.clear()

    def clear(self) -> None:
        self.groups = pa.array([], pa.string())  # a group's code is its position
        self.members = pa.array([], pa.string())
        self.codes = np.array([], np.int64)  # group << MEMBER_BITS | member, sorted
        self.values = np.array([], np.int64)  # the value of each code

    def add(self, t: pa.Table, values: np.ndarray) -> None:
        """Keep the keys of `t`'s rows with their `values` (keys not held yet: a key
        added twice would be found with either value). A row whose key holds a NULL
        member or a separator character is not kept: no row is found for it."""
        if t.num_rows == 0:
            return
        member = _column(t, self.member)
        keep = pc.and_(pc.invert(_reserved(t, self.group_cols)), pc.is_valid(member))
        if not pc.all(keep).as_py():  # never matched by a row `find` looks up
            t, member, values = t.filter(keep), member.filter(keep), values[_np(keep)]
        group = self._group_strings(t, None)
        self.groups = _extend(self.groups, group)
        self.members = _extend(self.members, member)
        g = pc.index_in(group, value_set=self.groups).to_numpy(zero_copy_only=False)
        m = pc.index_in(member, value_set=self.members).to_numpy(zero_copy_only=False)
        codes = np.concatenate([self.codes, (g.astype(np.int64) << MEMBER_BITS) | m])
        vals = np.concatenate([self.values, np.asarray(values, np.int64)])
        order = np.argsort(codes, kind="stable")
        self.codes, self.values = codes[order], vals[order]

    def _group_strings(self, t: pa.Table, rows: pa.Array | None) -> pa.Array:
        cols = []
        for c in self.group_cols:
            a = _column(t, c)
            cols.append(a if rows is None else a.take(rows))
        joined = pc.binary_join_element_wise(
            *cols, _SEP, null_handling="replace", null_replacement=_NULL
        )
        return joined.combine_chunks() if isinstance(joined, pa.ChunkedArray) else joined

    def find(self, data: pa.Table) -> np.ndarray | None:
        """The value of every row's key, or None when some row's key is not held."""
        batches = data.to_batches()
        if len(batches) > 1:  # batch by batch: no copy of the key columns
            found = []
            for b in batches:
                if not b.num_rows:
                    continue
                rows = self._find(pa.Table.from_batches([b]))
                if rows is None:
                    return None
                found.append(rows)
            return np.concatenate(found) if found else None
        return self._find(data)

    def _find(self, data: pa.Table) -> np.ndarray | None:
        n = data.num_rows
        if n == 0 or len(self.members) >= 1 << MEMBER_BITS:
            return None
        names = data.column_names
        if any(
            c in names and not pa.types.is_string(data.schema.field(c).type)
            for c in (*self.group_cols, self.member)
        ):
            return None
        m = pc.index_in(_column(data, self.member), value_set=self.members)
        if m.null_count:
            return None
        # runs of rows with the same group: one string each
        change = np.zeros(n, bool)
        change[0] = True
        for c in self.group_cols:
            a = _column(data, c)
            prev, nxt = a.slice(0, n - 1), a.slice(1)
            differ = pc.or_(
                pc.fill_null(pc.not_equal(prev, nxt), False),
                pc.xor(pc.is_null(prev), pc.is_null(nxt)),
            )
            change[1:] |= _np(differ)
        starts = np.flatnonzero(change)
        first = pa.array(starts)
        if pc.any(_reserved(data, self.group_cols, first)).as_py():
            return None
        g = pc.index_in(self._group_strings(data, first), value_set=self.groups)
        if g.null_count:
            return None
        run = np.diff(np.append(starts, n))
        codes = (np.repeat(g.to_numpy().astype(np.int64), run) << MEMBER_BITS) | m.to_numpy()
        at = np.searchsorted(self.codes, codes)
        at[at == len(self.codes)] = 0
        if not len(self.codes) or not np.array_equal(self.codes[at], codes):
            return None
        return self.values[at]


class KeyIds:
    """Key -> id of one keyed table, as its dimension holds them."""

    def __init__(self, keyed: Keyed, member: str) -> None:
        if member not in keyed.not_null:
            raise ValueError(f"{keyed.dim}: the member column {member} must be NOT NULL")
        self.keyed = keyed
        self.keys = RunKeys(tuple(c for c in keyed.key if c != member), member)
        self.reset()

    def reset(self) -> None:
        """Forget every id: the next write reads the whole dimension."""
        self.rows = 0  # the dimension's row count and highest id when last read
        self.top = 0
        self.keys.clear()

    def sync(self, cur) -> None:  # noqa: ANN001 - a DuckDB cursor
        """Catch up with the dimension as the open transaction sees it."""
        k = self.keyed
        row = cur.execute(f"SELECT count(*), coalesce(max({k.id_col}), 0) FROM {k.dim}").fetchone()
        rows, top = (int(row[0]), int(row[1])) if row else (0, 0)
        if (rows, top) == (self.rows, self.top):
            return
        appended = rows > self.rows and rows - self.rows == top - self.top
        if not appended:
            self.reset()
        keys = ", ".join(k.key)
        dim = cur.execute(
            f"SELECT {k.id_col}, {keys} FROM {k.dim} WHERE {k.id_col} > {int(self.top)}"
        ).to_arrow_table()
        self.keys.add(dim, dim.column(k.id_col).to_numpy())
        self.rows, self.top = rows, top

    def lookup(self, cur, data: pa.Table) -> pa.Array | None:  # noqa: ANN001
        """The id of every row of `data`, or None when some row's key has none here
        (the caller joins then)."""
        self.sync(cur)
        ids = self.keys.find(data)
        return None if ids is None else pa.array(ids)


def _column(t: pa.Table, name: str) -> pa.Array:
    if name not in t.column_names:
        return pa.nulls(t.num_rows, pa.string())
    col = t.column(name)
    # one chunk as it is: combine_chunks copies even that (11 ms per 900,000 strings)
    return col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()


def _np(a: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return a.to_numpy(zero_copy_only=False)


def _reserved(t: pa.Table, cols: tuple[str, ...], rows: pa.Array | None = None) -> pa.Array:
    """Rows with a separator character in one of `cols`."""
    out = None
    for c in cols:
        a = _column(t, c)
        if rows is not None:
            a = a.take(rows)
        hit = pc.fill_null(pc.match_substring_regex(a, _RESERVED), False)
        out = hit if out is None else pc.or_(out, hit)
    assert out is not None
    return out


def _extend(vocab: pa.Array, values: pa.Array) -> pa.Array:
    """`vocab` with the distinct `values` it lacks appended (codes stay put)."""
    new = pc.unique(values.filter(pc.invert(pc.is_in(values, value_set=vocab))))
    new = new.drop_null()
    return pa.concat_arrays([vocab, new.cast(pa.string())]) if len(new) else vocab
