"""Every probe of tests/security/probes.py against a real `fleettui daemon --sim` of
the code at REPO (default: this checkout; pass another checkout, e.g. an older
commit's worktree, to measure "before"), through `fleettui sql`, a raw DuckDB client
holding the viewer token (quack_query, no client-side check), and the app's SQL
console (run_query on a QuackReader). Prints JSON {probe: {channel: result}}:
"RAN (...)" or "refused: <first line>", plus files written and URLs fetched.
Destructive probes run last; a fresh daemon serves each channel.

    python scripts/security_probes.py [REPO] > probes.json
"""

from __future__ import annotations

import http.server
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
DESTRUCTIVE_LAST = [
    "DELETE",
    "UPDATE",
    "INSERT",
    "TRUNCATE",
    "ALTER TABLE",
    "EXPLAIN ANALYZE DELETE",
    "DROP TABLE",
    "EXPLAIN ANALYZE DROP",
    "DETACH",
    "CALL quack_stop",
]


def _load_probes():
    spec = importlib.util.spec_from_file_location(
        "probes", HERE / "tests" / "security" / "probes.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.PROBES, mod.fill


class _Hits(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:  # noqa: N802
        _Hits.hits.append(self.path)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"internal\n")

    def log_message(self, *_a) -> None:
        pass


class Run:
    def __init__(self, repo: str):
        self.tmp = Path(tempfile.mkdtemp(prefix="probe-"))
        self.env = {
            **os.environ,
            "PYTHONPATH": repo,
            "FLEETTUI_DB": str(self.tmp / "fleet.duckdb"),
            "XDG_RUNTIME_DIR": str(self.tmp / "run"),
        }
        self.other = self.tmp / "other.duckdb.daemon.json"
        self.other.write_text(
            json.dumps({"pid": 1, "endpoint": "quack:127.0.0.1:1", "token": "other-token"})
        )
        self.http = http.server.HTTPServer(("127.0.0.1", 0), _Hits)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def start_daemon(self) -> tuple[subprocess.Popen, dict]:
        for f in self.tmp.glob("fleet.duckdb*"):
            f.unlink()
        proc = subprocess.Popen(
            [sys.executable, "-m", "fleettui.cli", "daemon", "--sim"],
            env=self.env,
            cwd=self.tmp,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        info = self.tmp / "fleet.duckdb.daemon.json"
        for _ in range(150):
            if info.exists():
                break
            time.sleep(0.2)
        time.sleep(2)
        return proc, json.loads(info.read_text())

    def classify(self, fn) -> str:
        files = {str(p.relative_to(self.tmp)) for p in self.tmp.rglob("*")}
        try:
            r = fn()
            res = f"RAN ({r})"
        except Exception as e:  # noqa: BLE001 - any refusal is a result here
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            res = "refused: " + msg[:90]
        new = sorted(
            str(p.relative_to(self.tmp))
            for p in self.tmp.rglob("*")
            if str(p.relative_to(self.tmp)) not in files
            and not p.name.startswith("fleet.duckdb")
            and "run" not in p.parts
        )
        if new:
            res += "; wrote " + ",".join(new)
        if _Hits.hits:
            res += f"; fetched URL x{len(_Hits.hits)}"
            _Hits.hits.clear()
        return res


def main(repo: str) -> dict:
    sys.path.insert(0, repo)
    import duckdb

    from storage import quack

    probes, fill = _load_probes()
    order = [p for p in probes if p[0] not in DESTRUCTIVE_LAST] + [
        p for n in DESTRUCTIVE_LAST for p in probes if p[0] == n
    ]
    run = Run(repo)
    results: dict[str, dict[str, str]] = {}
    for channel in ("sql", "raw", "app"):
        proc, info = run.start_daemon()
        where = {
            "tmp": str(run.tmp),
            "endpoint": info["endpoint"],
            "other_info": str(run.other),
            "url": f"http://127.0.0.1:{run.http.server_port}/internal",
        }
        con = reader = None
        if channel == "raw":
            con = duckdb.connect()
            quack.load_extensions(con)
        elif channel == "app":
            from fleettui.tui.screens.sql import run_query
            from storage.reader import QuackReader

            reader = QuackReader(info["endpoint"], info["token"])

        def attempt(sql: str, channel=channel, info=info, con=con, reader=reader) -> str:
            if channel == "sql":
                r = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "fleettui.cli",
                        "sql",
                        "--connect",
                        info["endpoint"],
                        "--token",
                        info["token"],
                        "--format",
                        "csv",
                        sql,
                    ],
                    env=run.env,
                    cwd=run.tmp,
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                if r.returncode:
                    err = r.stderr.strip()
                    raise RuntimeError(err.splitlines()[-1] if err else f"rc {r.returncode}")
                return f"{len(r.stdout.splitlines())} lines"
            if channel == "raw":
                rows = con.execute(
                    "SELECT * FROM quack_query(?, ?, token := ?)",
                    [info["endpoint"], sql, info["token"]],
                ).fetchall()
                return f"{len(rows)} rows"
            return f"{run_query(reader, sql).total_rows} rows"

        for name, sql in order:
            text = fill(sql, **where)
            results.setdefault(name, {})[channel] = run.classify(lambda t=text: attempt(t))
        for c in (con, reader):
            if c is not None:
                c.close()
        alive = proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        results.setdefault("_daemon_after_probes", {})[channel] = "alive" if alive else "dead"
    return results


if __name__ == "__main__":
    out = main(sys.argv[1] if len(sys.argv) > 1 else str(HERE))
    print(json.dumps(out, indent=1))
    sys.stdout.flush()
    os._exit(0)  # Quack's server threads of the app channel's client
