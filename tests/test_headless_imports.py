"""collectors/, storage/ and the daemon never load Textual (or Rich)."""

import subprocess
import sys

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
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("textual", "rich", "fleettui.tui"))
print(",".join(loaded))
"""


def test_daemon_path_never_imports_textual():
    res = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == ""
