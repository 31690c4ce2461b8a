"""Telemetry store: DuckDB schema, migrations, the batch writer and the shared queries.

Never imports Textual: the daemon and `fleettui sql` use this package headless.
"""

import importlib.abc
import importlib.util
import sys
from collections.abc import Sequence
from types import ModuleType


class _Absent(importlib.abc.MetaPathFinder):
    """Fails `import pandas` at once where pandas is not installed.

    DuckDB's Python client tries `import pandas` three times for every query with
    parameters; pandas is not a dependency, and each failed import walks sys.path
    (~40 µs, ~120 of a parameterised query's ~250 µs). The import still raises
    ModuleNotFoundError, as it would without this finder (pyarrow's pandas shim
    needs exactly that: a `None` in sys.modules breaks it).
    """

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> None:
        if fullname == "pandas":
            raise ModuleNotFoundError("No module named 'pandas'", name="pandas")
        return None


if importlib.util.find_spec("pandas") is None:
    sys.meta_path.insert(0, _Absent())
