"""Columnar batches: what collectors hand to the store.

A batch is one Arrow table bound for one store table. Collectors build batches
from column arrays (numpy or lists) with `make_batch`, which casts every column
to the store's Arrow type, so a wrong type fails at the collector, not deep in
DuckDB. This module imports pyarrow only: collectors never touch DuckDB.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from storage.columns import COMPRESSION_ORDER, TABLE_COLUMNS


class BatchError(ValueError):
    """A batch does not fit its table (unknown table or column, uncastable values)."""


@dataclass(frozen=True, slots=True)
class Batch:
    table: str
    data: pa.Table
    # For a table merged on its key: the writer says no key of this batch is in the
    # table yet, so the store may insert the rows instead of merging them (a key that
    # is there after all makes it merge; storage/store.py).
    new_keys: bool = False

    @property
    def rows(self) -> int:
        return self.data.num_rows


def storable_text(text: str) -> str:
    """`text` (a reason, a topic: words about fleet data, not the data) with what Arrow
    and the store refuse replaced: a lone surrogate (JSON's "\\ud800") by "?", a NUL by
    U+FFFD. Sample strings are checked where they enter instead, never altered."""
    if text.isascii():
        return text.replace("\x00", "\ufffd") if "\x00" in text else text
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")


def make_batch(table: str, columns: Mapping[str, Any]) -> Batch:
    """Build a typed batch for `table` from column arrays; absent columns stay NULL."""
    spec = TABLE_COLUMNS.get(table)
    if spec is None:
        raise BatchError(f"unknown table {table!r}")
    arrays, fields = [], []
    for name, values in columns.items():
        typ = spec.get(name)
        if typ is None:
            raise BatchError(f"table {table!r} has no column {name!r}")
        try:
            arr = values if isinstance(values, pa.Array | pa.ChunkedArray) else pa.array(values)
            arrays.append(arr.cast(typ) if arr.type != typ else arr)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
            raise BatchError(f"{table}.{name}: {exc}") from exc
        fields.append(pa.field(name, typ))
    return Batch(table, pa.Table.from_arrays(arrays, schema=pa.schema(fields)))


def concat_batches(
    batches: list[Batch], keep_separate: frozenset[str] = frozenset()
) -> list[Batch]:
    """Merge batches bound for the same table so the store does one insert per table.

    Tables in `keep_separate` (merged on a key, where order and the set of
    columns matter) keep their batches as they came, in order.
    """
    by_table: dict[str, list[pa.Table]] = {}
    out = []
    for b in batches:
        if not b.rows:
            continue
        if b.table in keep_separate:
            out.append(b)
        else:
            by_table.setdefault(b.table, []).append(b.data)
    for table, parts in by_table.items():
        data = parts[0] if len(parts) == 1 else pa.concat_tables(parts, promote_options="default")
        out.append(Batch(table, compression_ordered(table, data)))
    return out


def _group_codes(column: pa.ChunkedArray) -> np.ndarray:
    """An integer per row, equal for equal values (NULLs together), for sorting."""
    if pa.types.is_timestamp(column.type) or pa.types.is_integer(column.type):
        return column.cast(pa.int64()).fill_null(np.iinfo(np.int64).min).to_numpy()
    codes = pc.dictionary_encode(column.combine_chunks()).indices
    return codes.fill_null(-1).to_numpy(zero_copy_only=False)


MIN_RUN = 16


def compression_ordered(table: str, data: pa.Table) -> pa.Table:
    """`data` in the row order DuckDB compresses best (`COMPRESSION_ORDER`): a stable
    sort on low-cardinality keys, so rows of one group keep their order."""
    keys = COMPRESSION_ORDER.get(table)
    if not keys or data.num_rows < 2 or not all(k in data.column_names for k in keys):
        return data
    codes = [_group_codes(data.column(k)) for k in keys]
    changes = np.zeros(data.num_rows - 1, dtype=bool)
    for c in codes:
        changes |= c[1:] != c[:-1]
    # already in runs of MIN_RUN rows or more (e.g. one host's ports of a kind
    # together, as agents report them): RLE does well, spare the copy
    if int(changes.sum()) * MIN_RUN < data.num_rows:
        return data
    order = np.lexsort(codes[::-1])  # sorts by its last key first; stable
    return data.take(pa.array(order))
