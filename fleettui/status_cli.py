"""`fleettui status`: the daemon's health for a person, read from its own /metrics.

Finds the daemon through `<db>.daemon.json` (or `--metrics HOST:PORT`), takes
two scrapes `--interval` seconds apart for the rates, and prints one screen:
uptime, store size now and at the configured retention, write rate, queue and
lag, each source healthy / failing / silent with its last error, rejects, mqtt
intake, alerts and their delivery. No daemon: one line, exit 1.
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.error
import urllib.request
from collections import defaultdict
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[str, list[tuple[dict[str, str], float]]]


class StatusError(Exception):
    pass


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "status",
        help="is the daemon healthy? sources, write rate, queue, store size, alerts",
        description="Show the running daemon's health, read from its own /metrics: sources "
        "healthy or failing (with the last error), rows/s, write queue and lag, rejects, store "
        "size on disk and at the configured retention, alerts. Exits 1 when no daemon runs.",
    )
    p.add_argument(
        "--db",
        metavar="FILE",
        help="the daemon's database (default: $FLEETTUI_DB or "
        "~/.local/share/fleettui/fleet.duckdb)",
    )
    p.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        help="the daemon's metrics_listen address "
        "(when its info file is not readable, e.g. another user's daemon)",
    )
    p.add_argument(
        "--interval",
        type=float,
        default=1.0,
        metavar="S",
        help="seconds between the two scrapes the rates come from (default 1; "
        "0: one scrape, no rates)",
    )
    p.set_defaults(func=main)


def scrape(address: str, timeout_s: float = 3.0) -> Samples:
    url = f"http://{address}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:
            text = r.read(16 * 1024 * 1024).decode("utf-8", errors="replace")
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise StatusError(f"no answer from the daemon's metrics at {url}: {reason}") from None
    out: Samples = defaultdict(list)
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[s.name].append((dict(s.labels), float(s.value)))
    return out


def main(args: argparse.Namespace) -> int:
    try:
        print(report(args))
        return 0
    except StatusError as exc:
        print(f"fleettui status: error: {exc}", file=sys.stderr)
        return 1


def report(args: argparse.Namespace) -> str:
    from fleettui.paths import default_db_path, info_path, read_daemon_info

    head = []
    address = args.metrics
    if not address:
        db = Path(args.db).expanduser() if args.db else default_db_path()
        info = read_daemon_info(db)
        if info is None:
            why = "no info file" if not info_path(db).exists() else "stale or unreadable info file"
            raise StatusError(
                f"no daemon running for {db} ({why} {info_path(db).name}); "
                "start one with `fleettui daemon`"
            )
        if not info.metrics:
            raise StatusError(
                f"daemon pid {info.pid} on {db} has its metrics off "
                '([daemon] metrics_listen = ""); nothing to read'
            )
        address = info.metrics
        head.append(f"daemon    pid {info.pid}, store {clean(str(db))}, serving {info.endpoint}")
    if not (args.interval >= 0 and args.interval < 3600):
        raise StatusError("--interval must be in [0, 3600) seconds")
    first = scrape(address)
    if args.interval == 0:  # no rates
        return render(first, first, 0.0, address, head, time.time())
    t0 = time.monotonic()
    time.sleep(args.interval)
    second = scrape(address)
    return render(first, second, time.monotonic() - t0, address, head, time.time())


def one(m: Samples, name: str, default: float = 0.0, **labels: str) -> float:
    for lab, v in m.get(name, []):
        if all(lab.get(k) == val for k, val in labels.items()):
            return v
    return default


def by(m: Samples, name: str, key: str) -> dict[str, float]:
    return {lab.get(key, ""): v for lab, v in m.get(name, [])}


def clean(text: str) -> str:
    """Fleet data never reaches the terminal as control characters."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:.1f}"


def ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s ago" if seconds < 10 else f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def duration(seconds: float) -> str:
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return (f"{d}d " if d else "") + (f"{h}h " if d or h else "") + f"{m}m {s:02d}s"


def render(a: Samples, b: Samples, dt: float, address: str, head: list[str], now: float) -> str:
    lines = list(head)
    version = next((lab.get("version", "?") for lab, _ in b.get("fleettui_build_info", [])), "?")
    started = one(b, "fleettui_start_time_seconds")
    lines.append(
        f"up        {duration(now - started)} (fleettui {clean(version)}); "
        f"metrics http://{address}/metrics"
    )
    # store
    file_b, used_b = one(b, "fleettui_store_file_bytes"), one(b, "fleettui_store_used_bytes")
    proj, keep_h = (
        one(b, "fleettui_store_projected_bytes"),
        one(b, "fleettui_store_retention_hours"),
    )
    rate_b = one(b, "fleettui_store_growth_bytes_per_hour")
    ok = "ok" if one(b, "fleettui_store_up", 1.0) else "FAILING (writes held and retried)"
    if "fleettui_store_projected_bytes" in b:
        basis = (
            ""
            if one(b, "fleettui_store_growth_from_checkpoints")
            else " (from the WAL so far: high until two checkpoints)"
        )
        tiers = (
            f" (rollups {size(one(b, 'fleettui_store_projected_rollup_bytes'))})"
            if one(b, "fleettui_store_projected_rollup_bytes")
            else " (rollups: measuring)"
        )
        growth = (
            f"growing {size(rate_b)}/h -> about {size(proj)} at the {keep_h:g} h retention"
            f"{tiers}{basis}"
        )
    else:
        growth = f"growth at the {keep_h:g} h retention: measuring (a reading a minute)"
    lines.append(
        f"store     {size(file_b)} on disk ({size(used_b)} in checkpointed blocks), {ok}; {growth}"
    )
    # writes
    rows_a, rows_b = (
        by(a, "fleettui_rows_written_total", "table"),
        by(b, "fleettui_rows_written_total", "table"),
    )

    def per_s(delta: float) -> str:
        return f"{delta / dt:,.0f}" if dt > 0 else "-"

    total_rate = per_s(sum(rows_b.values()) - sum(rows_a.values()))
    depth, cap = one(b, "fleettui_write_queue_depth"), one(b, "fleettui_write_queue_capacity")
    queue = f"queue {depth:.0f}/{cap:.0f}"
    if "fleettui_write_queue_oldest_seconds" in b:
        queue += f" (oldest {one(b, 'fleettui_write_queue_oldest_seconds'):.1f} s)"
    if "fleettui_write_lag_seconds" in b:
        queue += f"; last write lag {one(b, 'fleettui_write_lag_seconds'):.2f} s"
    lines.append(
        f"writes    {total_rate} rows/s; {queue}; refused batches "
        f"{one(b, 'fleettui_batches_refused_total'):.0f}, dropped rows "
        f"{one(b, 'fleettui_rows_dropped_total'):.0f}"
    )
    busiest = sorted(rows_b.items(), key=lambda kv: -(kv[1] - rows_a.get(kv[0], 0.0)))[:6]
    if busiest and dt > 0:
        lines.append(
            "rows/s    "
            + ", ".join(f"{clean(t)} {per_s(n - rows_a.get(t, 0.0))}" for t, n in busiest)
        )
    # sources
    runs = by(b, "fleettui_source_runs_total", "source")
    if runs:
        lines.append(
            "sources   " + f"{'NAME':<16} {'STATE':<8} {'LAST OK':<12} {'RUNS':>7} "
            f"{'FAILED':>6} {'LAST RUN':>9}  LAST ERROR"
        )
        errors = {
            lab["source"]: (lab.get("error", ""), v)
            for lab, v in b.get("fleettui_source_last_error_info", [])
        }
        for name in sorted(runs):
            last_ok = one(b, "fleettui_source_last_success_time_seconds", source=name)
            interval = one(b, "fleettui_source_interval_seconds", 0.0, source=name)
            err, err_at = errors.get(name, ("", 0.0))
            silent_after = 3 * interval if interval else 45.0
            if err and err_at >= last_ok:
                state = "failing"
            elif not last_ok or now - last_ok > max(silent_after, 15.0):
                state = "silent"
            else:
                state = "healthy"
            last = ago(now - last_ok) if last_ok else "never"
            dur_ms = 1000 * one(b, "fleettui_source_last_run_duration_seconds", source=name)
            shown = clean(err)[:90] if err else ""
            if shown and state == "healthy":
                shown = f"(earlier, {ago(now - err_at)}) {shown}"
            lines.append(
                f"          {clean(name):<16} {state:<8} {last:<12} "
                f"{runs[name]:>7,.0f} "
                f"{one(b, 'fleettui_source_run_failures_total', source=name):>6,.0f} "
                f"{dur_ms:>6.0f} ms  {shown}"
            )
    rejects = b.get("fleettui_rejects_total", [])
    if rejects:
        lines.append(
            "rejects   "
            + ", ".join(
                f"{clean(lab['source'])}/{clean(lab['reason'])} {v:,.0f}"
                for lab, v in sorted(rejects, key=lambda x: -x[1])[:8]
            )
        )
    for lab, received in b.get("fleettui_mqtt_reports_received_total", []):
        src = lab["source"]
        before = one(a, "fleettui_mqtt_reports_received_total", source=src)
        p50 = one(b, "fleettui_mqtt_ingest_lag_seconds", source=src, quantile="0.5")
        p99 = one(b, "fleettui_mqtt_ingest_lag_seconds", source=src, quantile="0.99")
        lines.append(
            f"mqtt      {clean(src)}: {per_s(received - before)} reports/s; "
            f"{received:,.0f} received, "
            f"{one(b, 'fleettui_mqtt_reports_stored_total', source=src):,.0f} stored, "
            f"{one(b, 'fleettui_mqtt_messages_rejected_total', source=src):,.0f} rejected, "
            f"{one(b, 'fleettui_mqtt_reports_duplicate_total', source=src):,.0f} duplicates, "
            f"{one(b, 'fleettui_mqtt_agent_dropped_total', source=src):,.0f} dropped by agents"
            + (f"; lag p50 {p50:.2f} s p99 {p99:.2f} s" if p99 else "")
        )
    if "fleettui_alerts" in b:
        counts: dict[str, list[str]] = defaultdict(list)
        for lab, v in b["fleettui_alerts"]:
            if v:
                counts[lab["state"]].append(f"{v:.0f} {lab['severity']}")
        summary = "; ".join(f"{st} {', '.join(c)}" for st, c in counts.items()) or "none open"
        lines.append(f"alerts    {summary}")
        targets = sorted(
            {lab["target"] for lab, _ in b.get("fleettui_alert_notifications_total", [])}
        )
        for t in targets:

            def n(outcome: str, t: str = t) -> float:
                return one(b, "fleettui_alert_notifications_total", target=t, outcome=outcome)

            lines.append(
                f"delivery  {clean(t)}: {n('confirmed'):,.0f} confirmed, "
                f"{one(b, 'fleettui_alert_notifications_queued', target=t):,.0f} waiting, "
                f"{n('failed_attempt'):,.0f} failed attempts, {n('dropped'):,.0f} dropped"
            )
    return "\n".join(lines)
