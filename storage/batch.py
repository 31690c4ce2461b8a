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

import pyarrow as pa

from storage.columns import TABLE_COLUMNS


class BatchError(ValueError):
    """A batch does not fit its table (unknown table or column, uncastable values)."""


@dataclass(frozen=True, slots=True)
class Batch:
    table: str
    data: pa.Table

    @property
    def rows(self) -> int:
        return self.data.num_rows


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
        out.append(Batch(table, data))
    return out
