"""Through a running daemon (Quack), the live views read the daemon's snapshot
(`fleettui_live`, storage/live.py) and return what the history path returns at
the same cursor."""

from __future__ import annotations

import time

import pytest

from collectors.sim.topology import build_fleet
from fleettui.sql_cli import open_reader
from storage import views
from storage.reader import QuackReader
from storage.views.live import snapshot_state
from tests.test_views_live import _close

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TABLES = ("gpu_samples", "slice_samples")


def test_live_views_through_the_daemon_equal_history(sim_daemon):
    reader = open_reader(str(sim_daemon.db), None, None)
    assert isinstance(reader, QuackReader)
    n_gpus = build_fleet().n_gpus
    try:
        deadline = time.monotonic() + 60
        compared = 0
        while time.monotonic() < deadline and compared < 2:
            row = reader.arrow(
                "SELECT max(through) AS t FROM fleettui_live.snapshot"
                " WHERE sample_table = 'gpu_samples'"
            ).to_pylist()[0]
            at = row["t"]
            if at is None or snapshot_state(reader, at, 30.0, *TABLES) is None:
                time.sleep(0.3)  # nothing published yet, or a newer publish: ask again
                continue
            live = views.rack_grid(reader, at)
            hist = views.rack_grid(reader, at, live=False)
            if snapshot_state(reader, at, 30.0, *TABLES) is None:
                continue  # published again meanwhile: not the same data any more
            assert live.num_rows == n_gpus
            assert live.schema == hist.schema
            _close(live.to_pylist(), hist.to_pylist())
            host = live.column("host")[0].as_py()
            assert (
                views.host_gpus(reader, host, at).to_pylist()
                == views.host_gpus(reader, host, at, live=False).to_pylist()
            )
            compared += 1
            time.sleep(1.5)  # the next comparison on a newer snapshot
        assert compared == 2, "the daemon's live snapshot was never readable over Quack"
    finally:
        reader.close()
