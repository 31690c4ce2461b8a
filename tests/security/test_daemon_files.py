"""A real `fleettui daemon --sim`: private files, tokens a command line takes, the
registry that lets `fleettui sql` find it without --db, and the guard in place."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fleettui.paths import write_private_json


@pytest.fixture
def named_daemon(tmp_path, fleettui):
    """A daemon on a database that is not the default one (`--db elsewhere/x.duckdb`)."""
    db = tmp_path / "elsewhere" / "x.duckdb"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fleettui.cli", "daemon", "--sim", "--db", str(db)],
        env=fleettui.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    info = db.with_name(db.name + ".daemon.json")
    try:
        deadline = time.monotonic() + 30
        while not info.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None and info.exists(), proc.stderr.read() if proc.poll() else ""
        # the first batch is written within a few seconds
        while time.monotonic() < deadline and not db.with_name(db.name + ".wal").exists():
            time.sleep(0.2)
        yield db, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_daemon_files_are_private_and_found_without_db(tmp_path, fleettui, named_daemon):
    db, proc = named_daemon
    info = json.loads(db.with_name(db.name + ".daemon.json").read_text())
    assert _mode(db.parent) == 0o700  # created by the daemon
    for p in (
        db,
        db.with_name(db.name + ".wal"),
        db.with_name(db.name + ".daemon.json"),
        db.with_name(db.name + ".operator.json"),
    ):
        assert _mode(p) == 0o600, p
    registry = tmp_path / "run" / "fleettui" / "daemons"
    entry = registry / f"{proc.pid}.json"
    assert _mode(entry) == 0o600 and _mode(registry) == 0o700
    assert info["token"] not in entry.read_text()  # the registry names the database only
    # a stale entry of a dead pid is ignored
    (registry / "999999.json").write_text(json.dumps({"pid": 999999, "db": "/nowhere.duckdb"}))
    # `fleettui sql` without --db: the default database has no daemon; it finds this one
    res = fleettui("sql", "SELECT count(*) > 0 AS ok FROM hosts", check_rc=0)
    assert "true" in res.stdout.lower()
    assert f"using the daemon for {db}" in res.stderr and f"pid {proc.pid}" in res.stderr
    assert not (registry / "999999.json").exists()
    # a token starting with '-' is a value, both ways of writing it
    for args in (["--token", "-abc"], ["--token=-abc"]):
        res = fleettui("sql", "--connect", info["endpoint"], *args, "SELECT 1")
        assert res.returncode == 1 and "authentication failed" in res.stderr, res.stderr
        assert "expected one argument" not in res.stderr
    # the viewer token reads, and the daemon refuses what the client check would pass
    res = fleettui(
        "sql",
        "--connect",
        info["endpoint"],
        "--token",
        info["token"],
        "SELECT * FROM read_text('/etc/passwd')",
    )
    assert res.returncode == 1 and "daemon refused" in res.stderr
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    assert info["token"] not in res.stderr + res.stdout
    proc.terminate()
    proc.wait(timeout=30)
    assert not entry.exists() and not db.with_name(db.name + ".operator.json").exists()


def test_private_json_never_writes_through_a_planted_link(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    target = tmp_path / "fleet.duckdb.daemon.json"
    # the old code's fixed temporary name, planted as a link to another file
    (tmp_path / "fleet.duckdb.daemon.json.tmp").symlink_to(victim)
    write_private_json(target, {"token": "t"})
    assert victim.read_text() == "precious"
    assert json.loads(target.read_text()) == {"token": "t"} and _mode(target) == 0o600
    assert not target.is_symlink()
    # a link planted at the target itself is replaced, not followed
    target.unlink()
    target.symlink_to(victim)
    write_private_json(target, {"token": "u"})
    assert victim.read_text() == "precious" and not target.is_symlink()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp") and not p.is_symlink()]


def test_tokens_never_start_with_a_dash():
    from storage.quack import new_token

    tokens = {new_token() for _ in range(2000)}
    assert len(tokens) == 2000
    assert all(len(t) == 64 and not t.startswith("-") and t.isalnum() for t in tokens)


def test_store_files_private_under_any_umask(tmp_path):
    from storage.batch import make_batch
    from storage.store import Store

    old = os.umask(0o022)
    try:
        store = Store.open(tmp_path / "d" / "s.duckdb")
        store.write([make_batch("tenants", {"tenant": ["t"]})])
        assert _mode(tmp_path / "d") == 0o700 and _mode(tmp_path / "d" / "s.duckdb") == 0o600
        store.close()
    finally:
        os.umask(old)
