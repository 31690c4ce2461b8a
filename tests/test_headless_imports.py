"""collectors/, storage/ and the daemon never load Textual (or Rich).

Two checks: the daemon's path run in a fresh interpreter loads none of the
app's modules, and the import-linter contracts (pyproject.toml,
`[tool.importlinter]`) hold over every import in the code, run or not.
"""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CODE = """
import sys, asyncio
from datetime import datetime
import collectors.registry, storage.store, storage.reader, fleettui.daemon, fleettui.cli
from collectors.sim.source import SimSource
from storage.store import Store
from fleettui.runtime import Runtime
store = Store.open(":memory:")
src = SimSource(interval_s=0.05)
async def go():
    stop = asyncio.Event()
    task = asyncio.create_task(Runtime(store, [src]).run(stop))
    await asyncio.sleep(0.3)
    stop.set()
    await task
asyncio.run(go())
assert store.con.execute("SELECT count(*) FROM gpu_samples").fetchone()[0] > 0
# the CLI's app options come from fleettui.tui.launch, kept light on purpose (no Textual)
LIGHT = ("fleettui.tui", "fleettui.tui.launch")
def app_module(m):
    return m.split(".")[0] in ("textual", "rich") or (m.startswith("fleettui.tui.") and m not in LIGHT)
assert app_module("fleettui.tui.app") and app_module("textual.widgets") and not app_module("fleettui.daemon")
print(",".join(sorted(m for m in sys.modules if app_module(m))))
"""


def test_daemon_path_never_imports_textual():
    res = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == ""


def test_the_check_sees_an_app_module_when_one_is_loaded():
    """The same check, with the app imported: it must name it (a check that cannot fail
    proves nothing)."""
    code = CODE.replace("import sys, asyncio", "import sys, asyncio, fleettui.tui.app")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "fleettui.tui.app" in res.stdout and "textual" in res.stdout


def test_import_contracts_hold():
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint, "import-linter is a dev dependency: pip install -e '.[dev]'"
    res = subprocess.run([lint], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert res.returncode == 0, res.stdout[-2000:]
    assert "3 kept, 0 broken" in res.stdout


PANDAS_ABSENT = """
import importlib.util, sys
assert importlib.util.find_spec("pandas") is None, "pandas installed: nothing to check"
import storage
import duckdb, pyarrow as pa
try:
    import pandas
except ModuleNotFoundError as e:
    assert e.name == "pandas", e.name
else:
    raise AssertionError("import pandas succeeded")
# pyarrow's pandas shim and DuckDB's parameter binding both try pandas: they must
# still see it missing the ordinary way
assert pa.table({"a": pa.array([], pa.string())}).num_rows == 0
assert duckdb.connect().execute("SELECT $x + 1", {"x": 1}).fetchall() == [(2,)]
print("ok")
"""


def test_storage_fails_the_pandas_import_fast_and_the_ordinary_way():
    """storage/__init__ short-cuts DuckDB's per-query `import pandas` where pandas is absent."""
    out = subprocess.run(
        [sys.executable, "-c", PANDAS_ABSENT], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
