"""The daemon's MQTT source under fleet load: simulated agents -> Mosquitto -> store.

`--gpus 10000` GPUs on 8-GPU hosts at 1 Hz is 1,250 host reports per second. The
reports are real v1 payloads made by the collector on the fake NVML (HGX H100
hosts, 18 NVLinks per GPU, no process list: the common report), renamed per
simulated host; a separate publisher process sends them with QoS 1 through a
real Mosquitto started on a free 127.0.0.1 port. Three phases, one run:

1. ceiling: the publisher sends `--burst` reports as fast as it can to a plain
   `mosquitto_sub -q 1`; the broker's delivery rate to it is the ceiling;
2. sustained: the publisher paces `hosts x rate` reports per second for
   `--seconds`, spread over each second like unsynchronised agents; the MQTT
   source decodes, validates, batches and writes them to a DuckDB file. Prints
   the stored rate, the backlog at the end, and report-time -> commit lag
   (p50/p99/max over the GPU rows; the commit is `Store.write` returning in the
   runtime's writer thread: the source runs under `fleettui.runtime.Runtime`,
   as in the daemon);
3. burst into the source: `--burst` reports as fast as possible, the rate at
   which they are committed, as a ratio of the ceiling measured in phase 1.

Each phase prints the CPU per report of the broker (/proc), the publishers and
`mosquitto_sub` (or the daemons), and how busy the machine was; phase 3 checks that
every report sent was stored exactly once ((GPU, report time) rows counted and counted
distinct). `--daemons N` runs phase 3 with N daemon processes on one `shared_group`
subscription, each writing its own file store (warmed first with every host twice).
For v2 the run ends with the bound: the CPU per report of the least any daemon storing
every value must do (decode to checked columns, a plain DuckDB Arrow insert of the same
rows) and, from the CPU the ceiling's processes had, the highest burst ÷ ceiling such a
daemon could reach on this machine.

`--report-versions 1,2` runs the three phases for each report version in one run
(v1 JSON, v2 binary frames: collectors/nvml/report_v2.py), each version with its own
pre-encoded payloads, its own ceiling and a fresh store.

    python benchmarks/bench_mqtt_ingest.py [--gpus 10000] [--seconds 30] [--burst 15000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collectors.mqtt_source import MqttOptions, MqttSource  # noqa: E402
from collectors.nvml.collector import NvmlCollector, Poll  # noqa: E402
from collectors.nvml.fake import SimStates  # noqa: E402
from collectors.nvml.library import open_library  # noqa: E402
from collectors.nvml.report import encode  # noqa: E402
from collectors.nvml.report_v2 import encode_v2  # noqa: E402
from collectors.sim.model import SimModel  # noqa: E402
from fleettui.runtime import Runtime  # noqa: E402
from storage.store import Store  # noqa: E402
from tests.services.mosquitto import Broker  # noqa: E402

V2_SEQ_AT, V2_TS_AT = 24, 40  # byte offsets of seq and ts in a v2 frame's header


def templates(hosts: int, links: int) -> list[tuple[str, str, str, str, bytes]]:
    """Per simulated host: (name, head, mid, tail, v2); a v1 payload is
    head+seq+mid+ts+tail, a v2 payload is the `v2` frame with seq and ts written in
    (`payload`)."""
    model = SimModel(start=time.time() - 10, faults=())
    states = SimStates(model)
    sources = [h for h in model.fleet.host if h.startswith("hgx-")]
    bodies = []
    for src_host in sources:
        t = [time.time()]
        lib = open_library("fake", host=src_host, states=states, clock=lambda t=t: t[0])
        col = NvmlCollector(lib, clock=lambda t=t: t[0], events=False, processes_every=10**9)
        col.poll()
        t[0] += 1
        poll = col.poll()
        col.close()
        obj = json.loads(
            encode(poll, host=src_host, boot="x", seq=0, interval_s=1.0, driver=col.driver_version)
        )
        for k in ("nvlink_tx_bytes_per_s", "nvlink_rx_bytes_per_s", "nvlink_errors", "nvlink_up"):
            obj["gpu"][k] = [v[:links] if v else v for v in obj["gpu"][k]]
        bodies.append(obj)
    out = []
    for i in range(hosts):
        obj = json.loads(json.dumps(bodies[i % len(bodies)]))
        name = f"bench-h{i:05d}"
        obj["gpu"]["uuid"] = [f"GPU-bench-{i:05d}-{g}" for g in range(len(obj["gpu"]["uuid"]))]
        rest = {k: v for k, v in obj.items() if k not in ("v", "host", "boot", "seq", "ts")}
        head = json.dumps({"v": 1, "host": name, "boot": "bench"}, separators=(",", ":"))[:-1]
        poll = Poll(
            ts=obj["ts"],
            gpu=obj["gpu"],
            slice=obj.get("slice", {}),
            proc=obj.get("proc"),
            xid=obj.get("xid", {"ts": [], "gpu_uuid": [], "code": []}),
            lost=obj.get("lost", []),
        )
        v2 = encode_v2(
            poll,
            host=name,
            boot="bench",
            seq=0,
            interval_s=obj.get("interval_s"),
            driver=obj.get("driver"),
        )
        out.append(
            (
                name,
                head + ',"seq":',
                ',"ts":',
                "," + json.dumps(rest, separators=(",", ":"))[1:],
                v2,
            )
        )
    return out


def payload(t: tuple, version: int, seq: int, ts: float) -> bytes:
    """Template `t` as a report of `version` with this seq and ts."""
    if version == 1:
        return f"{t[1]}{seq}{t[2]}{ts:.6f}{t[3]}".encode()
    b = bytearray(t[4])
    struct.pack_into("<q", b, V2_SEQ_AT, seq)
    struct.pack_into("<d", b, V2_TS_AT, round(ts, 6))
    return bytes(b)


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n % 128, n // 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _mqtt_str(s: str) -> bytes:
    b = s.encode()
    return len(b).to_bytes(2, "big") + b


class RawPublisher:
    """A minimal MQTT 3.1.1 QoS 1 publisher, like `mosquitto_pub` fed a file: it writes
    many PUBLISH packets per send and reads PUBACKs in bulk, so one process offers
    thousands of reports per second (paho's Python loop offered ~650/s here)."""

    WINDOW = 4000  # PUBLISHes in flight (unacknowledged)

    def __init__(self, address: str, client_id: str):
        import socket

        host, port = address.split(":")
        self.sock = socket.create_connection((host, int(port)))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        var = _mqtt_str("MQTT") + bytes([4, 0x02]) + (0).to_bytes(2, "big")
        body = var + _mqtt_str(client_id)
        self.sock.sendall(b"\x10" + _remaining_length(len(body)) + body)
        ack = self._read(4)
        if ack[0] != 0x20 or ack[3] != 0:
            raise RuntimeError(f"CONNACK refused: {ack!r}")
        self.mid = 0
        self.inflight = 0
        self.acked = 0
        self._buf = bytearray()
        self._out: list[bytes] = []

    def _read(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("broker closed the connection")
            data += chunk
        return data

    def publish(self, topic: bytes, payload: bytes) -> None:
        self.mid = self.mid % 65535 + 1
        body = topic + self.mid.to_bytes(2, "big") + payload
        self._out.append(b"\x32" + _remaining_length(len(body)) + body)
        self.inflight += 1
        if len(self._out) >= 64:
            self.send()

    def send(self) -> None:
        if self._out:
            self.sock.sendall(b"".join(self._out))
            self._out = []
        self._acks(block=self.inflight > self.WINDOW)

    def _acks(self, block: bool) -> None:
        """Count the PUBACKs that have come (4 bytes each); wait while the window is full."""
        self.sock.setblocking(block)
        try:
            while True:
                try:
                    chunk = self.sock.recv(65536)
                except BlockingIOError:
                    return
                if not chunk:
                    raise ConnectionError("broker closed the connection")
                self._buf += chunk
                n = len(self._buf) // 4
                del self._buf[: n * 4]
                self.inflight -= n
                self.acked += n
                if block and self.inflight <= self.WINDOW:
                    return
        finally:
            self.sock.setblocking(True)

    def finish(self) -> None:
        """Send what is queued and wait for every PUBACK; then disconnect."""
        self.send()
        while self.inflight > 0:
            self.sock.setblocking(True)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("broker closed the connection")
            self._buf += chunk
            n = len(self._buf) // 4
            del self._buf[: n * 4]
            self.inflight -= n
            self.acked += n
        self.sock.sendall(b"\xe0\x00")
        self.sock.close()


def publisher(
    address: str,
    prefix: str,
    tpl: list,
    mode: str,
    count: int,
    rate: float,
    seconds: float,
    out: mp.Queue,
    part: int = 0,
    parts: int = 1,
    version: int = 1,
    seq0: int = 0,
) -> None:
    """Runs in its own process: hosts `part::parts` of the fleet over one connection,
    QoS 1, like many agents sharing one link; payloads pre-encoded per host."""
    mine = tpl[part::parts]
    pub = RawPublisher(address, f"bench-pub-{mode}-{part}")
    enc = [
        (_mqtt_str(f"{prefix}/{t[0]}/report"), t[1].encode(), t[2].encode(), t[3].encode())
        for t in mine
    ]
    frames = [bytearray(t[4]) for t in mine]
    pack_seq, pack_ts = struct.Struct("<q").pack_into, struct.Struct("<d").pack_into
    seqs = [seq0] * len(enc)
    sent = 0

    def one(i: int) -> None:
        nonlocal sent
        topic, head, mid, tail = enc[i]
        if version == 1:
            body = b"".join((head, b"%d" % seqs[i], mid, b"%.6f" % time.time(), tail))
        else:  # pre-encoded frame: seq and ts written in place
            f = frames[i]
            pack_seq(f, V2_SEQ_AT, seqs[i])
            pack_ts(f, V2_TS_AT, round(time.time(), 6))
            body = bytes(f)
        pub.publish(topic, body)
        seqs[i] += 1
        sent += 1

    cpu0 = time.process_time()
    t_first = time.time()
    if mode == "burst":
        for k in range(count // parts + (part < count % parts)):
            one(k % len(enc))
    else:  # paced: every host once per 1/rate s, spread over 20 slots per period
        period, slots = 1.0 / rate, 20
        n = len(enc)
        t0 = time.monotonic()
        k = 0
        while time.monotonic() - t0 < seconds:
            target = t0 + k * period / slots
            delay = target - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            lo, hi = (k % slots) * n // slots, (k % slots + 1) * n // slots
            for i in range(lo, hi):
                one(i)
            pub.send()  # this slot's reports leave now, not when 64 have queued
            k += 1
    t_sent = time.time()
    pub.finish()
    out.put(
        {
            "sent": sent,
            "t_first": t_first,
            "t_sent": t_sent,
            "t_acked": time.time(),
            "cpu_s": time.process_time() - cpu0,
            "bytes": sum(len(t[1]) + len(t[3]) + 30 if version == 1 else len(t[4]) for t in mine)
            / max(len(mine), 1),
        }
    )


class Publishers:
    """`parts` publisher processes; `result()` sums what they sent."""

    def __init__(self, ctx, broker: Broker, prefix: str, tpl, mode: str, parts: int, **kw):
        self.q = ctx.Queue()
        self.procs = [
            ctx.Process(
                target=publisher,
                args=(
                    broker.address,
                    prefix,
                    tpl,
                    mode,
                    kw.get("count", 0),
                    kw.get("rate", 1.0),
                    kw.get("seconds", 0.0),
                    self.q,
                    k,
                    parts,
                    kw.get("version", 1),
                    kw.get("seq0", 0),
                ),
            )
            for k in range(parts)
        ]
        for p in self.procs:
            p.start()

    def result(self, timeout: float = 600) -> dict:
        res = [self.q.get(timeout=timeout) for _ in self.procs]
        for p in self.procs:
            p.join()
        return {
            "sent": sum(r["sent"] for r in res),
            "t_first": min(r["t_first"] for r in res),
            "t_sent": max(r["t_sent"] for r in res),
            "t_acked": max(r["t_acked"] for r in res),
            "cpu_s": sum(r["cpu_s"] for r in res),
            "bytes": sum(r["bytes"] for r in res) / len(res),
        }


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a live process so far (/proc/<pid>/stat), seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu_s() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, all cores (/proc/stat)."""
    vals = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = vals[3] + vals[4]  # idle + iowait
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(vals[:8]) - idle) / tick, sum(vals[:8]) / tick


def cpu_note(n: int, wall: float, parts: dict[str, float], busy: float) -> str:
    """µs of CPU per report of each process group, and the machine's busy cores."""
    each = ", ".join(f"{k} {v / n * 1e6:,.1f}" for k, v in parts.items())
    return f"CPU per report (µs): {each}; machine busy {busy / wall:.2f} of {os.cpu_count()} cores"


def ceiling(ctx, broker: Broker, tpl, n: int, parts: int, version: int = 1) -> dict:
    """The broker -> `mosquitto_sub` rate, and the CPU each process spent on it."""
    sub = subprocess.Popen(
        [
            shutil.which("mosquitto_sub") or "mosquitto_sub",
            "-h",
            broker.host,
            "-p",
            str(broker.port),
            "-q",
            "1",
            "-t",
            "ceil/+/report",
            "-C",
            str(n),
        ],
        stdout=subprocess.DEVNULL,
    )
    time.sleep(1.0)  # subscribed
    assert broker.proc is not None
    broker0, sub0, machine0 = proc_cpu_s(broker.proc.pid), proc_cpu_s(sub.pid), machine_cpu_s()
    t_m0 = time.time()
    pubs = Publishers(ctx, broker, "ceil", tpl, "burst", parts, count=n, version=version)
    _, status, usage = os.wait4(sub.pid, 0)  # its whole CPU, read as it is reaped
    sub.returncode = os.waitstatus_to_exitcode(status)
    t_done = time.time()
    broker_s, machine1 = proc_cpu_s(broker.proc.pid) - broker0, machine_cpu_s()
    res = pubs.result(timeout=60)
    wall = t_done - res["t_first"]
    rate = n / wall
    cpu = {
        "broker": broker_s,
        "publishers": res["cpu_s"],
        "mosquitto_sub": usage.ru_utime + usage.ru_stime - sub0,
    }
    busy = (machine1[0] - machine0[0]) / (t_done - t_m0) * wall  # busy core-s over `wall`
    print(
        f"1. ceiling (v{version}): broker -> mosquitto_sub (QoS 1): {n} reports of "
        f"~{res['bytes'] / 1024:.1f}"
        f" KiB in {wall:.2f} s = {rate:,.0f} reports/s "
        f"({rate * res['bytes'] / 2**20:.1f} MiB/s)"
    )
    print(f"   {cpu_note(n, wall, cpu, busy)}")
    return {"rate": rate, "n": n, "wall": wall, "cpu": cpu, "busy": busy}


class CommitClock:
    """Wraps the store: after each committed write, report time -> now for every GPU row."""

    def __init__(self, store: Store):
        self.store = store
        self.lag_s: list[np.ndarray] = []
        self.writes = 0  # Store.write calls (a write may hold several source flushes)
        self.write_thread_s = 0.0  # writer-thread CPU inside them

    def write(self, batches) -> int:
        c0 = time.thread_time()
        rows = self.store.write(batches)
        self.write_thread_s += time.thread_time() - c0
        self.writes += 1
        now_us = time.time() * 1e6
        for b in batches:
            if b.table == "gpu_samples":
                ts = b.data.column("ts").cast("int64").to_numpy()
                self.lag_s.append((now_us - ts) / 1e6)
        return rows

    def __getattr__(self, name):
        return getattr(self.store, name)


async def ingest(
    ctx,
    broker: Broker,
    store: Store,
    tpl,
    mode: str,
    *,
    count: int = 0,
    rate: float = 1.0,
    seconds: float = 0.0,
    flush_s: float = 0.25,
    nvlink_rows: str = "per_link",
    parts: int = 2,
    version: int = 1,
) -> dict:
    prefix = f"src{mode}v{version}"
    hosts = len(tpl)
    src = MqttSource(
        MqttOptions(
            broker=broker.address,
            topic_prefix=prefix,
            flush_interval_s=flush_s,
            persistent_session=False,
            client_id=f"bench-daemon-{mode}-v{version}",
            nvlink_rows=nvlink_rows,
            max_new_hosts_per_min=max(1000, hosts),  # the whole simulated fleet is expected
        )
    )
    timed = CommitClock(store)
    stop = asyncio.Event()
    runtime = Runtime(timed, [src])  # the daemon's path: source -> queue -> one writer
    task = asyncio.create_task(runtime.run(stop))
    await asyncio.wait_for(src.connected.wait(), 10)
    cpu0 = time.process_time()
    assert broker.proc is not None
    broker0, machine0, t_m0 = proc_cpu_s(broker.proc.pid), machine_cpu_s(), time.time()
    live0 = _live_cpu(store)
    writes0, write_s0 = timed.writes, timed.write_thread_s
    pubs = Publishers(
        ctx,
        broker,
        prefix,
        tpl,
        mode,
        parts,
        count=count,
        rate=rate,
        seconds=seconds,
        version=version,
    )
    res = await asyncio.to_thread(pubs.result)
    t_pub_end = time.time()
    gpus = len(json.loads("{" + tpl[0][3][1:])["gpu"]["uuid"])  # GPU rows per report

    def committed() -> int:
        return sum(len(a) for a in timed.lag_s) // gpus

    stored_at_end = committed()
    deadline = time.time() + 120
    while (
        committed() + src.stats.rejected + src.stats.duplicates < res["sent"]
        and time.time() < deadline
    ):
        await asyncio.sleep(0.05)
    t_done = time.time()
    cpu = time.process_time() - cpu0
    broker_s, machine1 = proc_cpu_s(broker.proc.pid) - broker0, machine_cpu_s()
    live1 = _live_cpu(store)
    writes, write_s = timed.writes - writes0, timed.write_thread_s - write_s0
    stop.set()
    await task
    lag = np.concatenate(timed.lag_s) if timed.lag_s else np.zeros(1)
    return {
        "sent": res["sent"],
        "t_first": res["t_first"],
        "t_sent": res["t_sent"],
        "t_pub_end": t_pub_end,
        "t_done": t_done,
        "stored": committed(),
        "rejected": src.stats.rejected,
        "stored_at_pub_end": stored_at_end,
        "cpu_s": cpu,
        "broker_s": broker_s,
        "publishers_s": res["cpu_s"],
        "busy_s": (machine1[0] - machine0[0]) / (t_done - t_m0) * (t_done - res["t_first"]),
        "lag": lag,
        "write_errors": runtime.stats.batches_refused,
        "flushes": src.stats.flushes,
        "writes": writes,
        "write_s": write_s,
        "live_share": (live1[0] - live0[0]) / max(live1[1] - live0[1], 1e-9),
    }


class CountingClock(CommitClock):
    """A daemon process's store wrapper: also adds its committed GPU rows to a counter
    the benchmark's process reads."""

    def __init__(self, store: Store, counter):
        super().__init__(store)
        self.counter = counter

    def write(self, batches) -> int:
        rows = super().write(batches)
        n = sum(b.data.num_rows for b in batches if b.table == "gpu_samples")
        with self.counter.get_lock():
            self.counter.value += n
        return rows


def daemon_process(
    address: str,
    prefix: str,
    idx: int,
    path: str,
    threads: int,
    opts: dict,
    ready,
    mark,
    stop,
    counter,
    out,
) -> None:
    """One daemon of a `shared_group` subscription, in its own process (spawned): the
    source under `Runtime` into its own file store, until `stop`; puts its CPU from
    `mark` to `stop`."""

    async def run() -> dict:
        store = Store.open(Path(path), threads=threads or None)
        src = MqttSource(
            MqttOptions(
                broker=address,
                topic_prefix=prefix,
                persistent_session=False,
                client_id=f"bench-daemon-{prefix}-{idx}",
                shared_group="bench",
                **opts,
            )
        )
        timed = CountingClock(store, counter)
        halt = asyncio.Event()
        runtime = Runtime(timed, [src])
        task = asyncio.create_task(runtime.run(halt))
        try:
            await asyncio.wait_for(src.connected.wait(), 20)
            ready.set()
            while not mark.is_set():
                await asyncio.sleep(0.02)
            cpu0 = time.process_time()
            while not stop.is_set():
                await asyncio.sleep(0.02)
            cpu = time.process_time() - cpu0
            halt.set()
            await task
        finally:
            store.close()
        return {
            "cpu_s": cpu,
            "rejected": src.stats.rejected,
            "duplicates": src.stats.duplicates,
            "flushes": src.stats.flushes,
            "writes": timed.writes,
            "write_s": timed.write_thread_s,
            "refused": runtime.stats.batches_refused,
        }

    out.put((idx, asyncio.run(run())))


def burst_daemons(
    ctx,
    broker: Broker,
    tpl,
    work: Path,
    daemons: int,
    count: int,
    parts: int,
    version: int,
    threads: int,
    **opts,
) -> dict:
    """Phase 3 with `daemons` daemon processes on one `shared_group` subscription, each
    writing its own file store (the lake's daemons write one DuckLake: docs/lake.md; a
    file store per daemon is what each of them would write at least, without the
    catalog's commits). Returns the same figures as `ingest` and the store paths."""
    spawn = mp.get_context("spawn")  # a fresh interpreter each: no forked DuckDB state
    prefix = f"srcburstv{version}d{daemons}"
    counter, mark, stop, out = spawn.Value("q", 0), spawn.Event(), spawn.Event(), spawn.Queue()
    readies = [spawn.Event() for _ in range(daemons)]
    paths = [str(work / f"{prefix}-{k}.duckdb") for k in range(daemons)]
    procs = [
        spawn.Process(
            target=daemon_process,
            args=(
                broker.address,
                prefix,
                k,
                paths[k],
                threads,
                opts,
                readies[k],
                mark,
                stop,
                counter,
                out,
            ),
        )
        for k in range(daemons)
    ]
    for pr in procs:
        pr.start()
    for ev in readies:
        if not ev.wait(60):
            stop.set()
            raise SystemExit("a daemon process did not connect within 60 s")
    # warm-up, not timed: every host twice, so each daemon has seen the fleet's hosts
    # (the broker hands each report to any member) as phase 2 warmed the one daemon
    gpus = len(json.loads("{" + tpl[0][3][1:])["gpu"]["uuid"])  # GPU rows per report
    warm = Publishers(ctx, broker, prefix, tpl, "burst", parts, count=2 * len(tpl), version=version)
    warm_sent = warm.result()["sent"]
    deadline = time.time() + 120
    while counter.value < warm_sent * gpus and time.time() < deadline:
        time.sleep(0.02)
    mark.set()
    time.sleep(0.1)
    counted = counter.value
    assert broker.proc is not None
    broker0, machine0, t_m0 = proc_cpu_s(broker.proc.pid), machine_cpu_s(), time.time()
    pubs = Publishers(
        ctx, broker, prefix, tpl, "burst", parts, count=count, version=version, seq0=2
    )
    res = pubs.result()
    deadline = time.time() + 120
    while counter.value - counted < res["sent"] * gpus and time.time() < deadline:
        time.sleep(0.02)
    t_done = time.time()
    broker_s, machine1 = proc_cpu_s(broker.proc.pid) - broker0, machine_cpu_s()
    stop.set()
    each = dict(out.get(timeout=120) for _ in procs)
    for pr in procs:
        pr.join(60)
    return {
        "sent": res["sent"],
        "t_first": res["t_first"],
        "t_done": t_done,
        "stored": (counter.value - counted) // gpus,
        "warm_sent": warm_sent,
        "rejected": sum(e["rejected"] for e in each.values()),
        "cpu_s": sum(e["cpu_s"] for e in each.values()),
        "cpu_each": [each[k]["cpu_s"] for k in sorted(each)],
        "broker_s": broker_s,
        "publishers_s": res["cpu_s"],
        "busy_s": (machine1[0] - machine0[0]) / (t_done - t_m0) * (t_done - res["t_first"]),
        "write_errors": sum(e["refused"] for e in each.values()),
        "flushes": sum(e["flushes"] for e in each.values()),
        "writes": sum(e["writes"] for e in each.values()),
        "write_s": sum(e["write_s"] for e in each.values()),
        "live_share": float("nan"),  # each daemon's own: not collected
        "paths": paths,
    }


def gpu_rows(store: Store) -> int:
    cur = store.con.cursor()
    try:
        return cur.execute("SELECT count(*) FROM gpu_samples").fetchone()[0]
    finally:
        cur.close()


def stored_once(paths: list[str], before: int, expected: int, store: Store) -> str:
    """Every burst report's GPU rows stored exactly once across the daemons' stores
    (`paths`, fresh files; or the open `store`, which held `before` rows): (GPU, report
    time) rows counted and counted distinct; the new rows must be `expected`."""
    import duckdb

    con = duckdb.connect() if paths else store.con.cursor()
    parts = []
    for k, path in enumerate(paths):
        con.execute(f"ATTACH '{path}' AS s{k} (READ_ONLY)")
        parts.append(f"SELECT gpu_uuid, ts FROM s{k}.main.gpu_samples")
    sql = " UNION ALL ".join(parts) or "SELECT gpu_uuid, ts FROM gpu_samples"
    rows, distinct = con.execute(
        f"SELECT count(*), count(DISTINCT (gpu_uuid, ts)) FROM ({sql})"
    ).fetchone()
    con.close()
    if not (rows == distinct and rows - before == expected):
        print(f"   exactly once FAILED: {rows:,} rows, {distinct:,} distinct, {expected:,} sent")
        raise SystemExit("the burst's reports were not stored exactly once")
    return f"{rows - before:,} GPU rows of {expected:,} sent, each once"


def floors(tpl, count: int, flush: int, repeats: int, now: float, work: Path) -> dict:
    """CPU per report, in this process, of the least any daemon storing every value must
    do with the burst's v2 reports: `parse` alone; parse + checks + columns
    (`FrameColumns`); and a plain DuckDB Arrow insert of those columns' sample rows
    (a fresh DuckDB file, tables without keys, one transaction per `flush` reports, then a
    checkpoint; DuckDB's default threads and one thread: the cheaper counts)."""
    import duckdb

    from collectors.nvml.report_v2 import FrameColumns, parse
    from storage.batch import make_batch

    hosts = len(tpl)
    frames = [payload(tpl[k % hosts], 2, k // hosts, now + k // hosts) for k in range(count)]
    chunks = [frames[i : i + flush] for i in range(0, count, flush)]

    def cpu_us(fn) -> float:
        runs = []
        for _ in range(repeats):
            t0 = time.process_time()
            fn()
            runs.append((time.process_time() - t0) / count * 1e6)
        return float(np.median(runs))

    parse_us = cpu_us(lambda: [parse(f, now=now) for f in frames])

    def columns() -> list:
        out = []
        for c in chunks:
            cols = FrameColumns([parse(f, now=now) for f in c])
            if cols.problems(True):
                raise SystemExit("v2 frames refused: the benchmark is broken")
            out.append(cols.batches(True, "nvml"))
        return out

    columns_us = cpu_us(columns)
    tables = [
        {t: make_batch(t, cols).data for t, cols in flush_cols.items()} for flush_cols in columns()
    ]
    runs: dict[str, list[float]] = {"default": [], "1": []}
    for k in range(repeats):
        for threads, out in runs.items():
            path = work / f"floor-{k}-{threads}.duckdb"
            con = duckdb.connect(str(path))
            if threads != "default":
                con.execute(f"SET threads = {threads}")
            for t, data in tables[0].items():
                con.register("e", data.slice(0, 0))
                con.execute(f"CREATE TABLE {t} AS SELECT * FROM e")
            t0 = time.process_time()
            for flush_tables in tables:
                con.execute("BEGIN")
                for t, data in flush_tables.items():
                    con.register("b", data)
                    con.execute(f"INSERT INTO {t} SELECT * FROM b")
                con.execute("COMMIT")
            con.execute("CHECKPOINT")  # every row in the file (WAL replayed), as a daemon's
            out.append((time.process_time() - t0) / count * 1e6)
            con.close()
            path.unlink()
    rows = {t: sum(ft[t].num_rows for ft in tables) for t in tables[0]}
    return {
        "parse": parse_us,
        "columns": columns_us,
        "insert_default": float(np.median(runs["default"])),
        "insert_1": float(np.median(runs["1"])),
        "insert": min(float(np.median(r)) for r in runs.values()),
        "rows": rows,
    }


def _live_cpu(store: Store) -> tuple[float, float]:
    """(writer-thread CPU publishing the live snapshot, in writes) so far."""
    live = getattr(store, "live", None)
    if live is None or not hasattr(live, "publish_thread_s"):
        return 0.0, 0.0
    return live.publish_thread_s, live.write_thread_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpus", type=int, default=10_000)
    ap.add_argument("--gpus-per-host", type=int, default=8, choices=(8,))
    ap.add_argument("--rate", type=float, default=1.0, help="reports per host per second")
    ap.add_argument("--seconds", type=float, default=30.0, help="sustained phase length")
    ap.add_argument("--burst", type=int, default=15_000, help="reports in phases 1 and 3")
    ap.add_argument("--links", type=int, default=18, help="NVLinks per GPU in each report")
    ap.add_argument("--flush", type=float, default=0.25, help="source flush interval, s")
    ap.add_argument(
        "--nvlink-rows",
        choices=("per_link", "per_gpu"),
        default="per_link",
        help="the source's nvlink_rows option",
    )
    ap.add_argument(
        "--publishers",
        type=int,
        default=2,
        help="publisher processes (each a raw MQTT connection sending pre-encoded reports)",
    )
    ap.add_argument(
        "--phases",
        default="ceiling,sustained,burst",
        help="comma-separated subset of ceiling,sustained,burst (burst needs ceiling)",
    )
    ap.add_argument(
        "--report-versions",
        default="1,2",
        help="report versions to measure in this run, in order (1 JSON, 2 binary)",
    )
    ap.add_argument(
        "--daemons",
        type=int,
        default=1,
        help="phase 3 with this many daemon processes on one shared_group subscription "
        "(each its own file store; 1: the daemon in this process, as in phase 2)",
    )
    ap.add_argument(
        "--duckdb-threads",
        type=int,
        default=0,
        help="DuckDB worker threads of the daemons' stores (0: DuckDB's default, as the "
        "daemon opens its store)",
    )
    args = ap.parse_args()
    hosts = args.gpus // args.gpus_per_host
    ctx = mp.get_context("fork")
    t_start = time.time()
    load = os.getloadavg()[0]
    print(
        f"machine: {os.cpu_count()} CPUs, load average {load:.1f} at start (shared machines "
        "make every figure below move; compare within one run)"
    )
    print(
        f"{args.gpus:,} GPUs = {hosts:,} hosts x {args.gpus_per_host} GPUs at {args.rate:g} Hz "
        f"= {hosts * args.rate:,.0f} host reports/s; {args.links} NVLinks per GPU per report"
    )
    tpl = templates(hosts, args.links)
    versions = [int(v) for v in args.report_versions.split(",")]
    work = Path(tempfile.mkdtemp(prefix="bench-mqtt-"))
    broker = Broker(work / "broker")
    broker.start()
    summary = []
    try:
        for version in versions:
            print(f"-- report version {version}")
            path = work / f"bench-v{version}.duckdb"
            store = Store.open(path, threads=args.duckdb_threads or None)
            try:
                summary.append((version, run_version(ctx, broker, store, tpl, args, version, work)))
            finally:
                store.close()
        print(
            "summary (same run): version | ceiling/s | burst/s (x ceiling, us/report) | "
            "sustained stored/offered, p99 lag, us/report"
        )
        for version, r in summary:
            print(
                f"  v{version} | {r.get('ceiling', 0):,.0f} | {r.get('burst', 0):,.0f} "
                f"({r.get('burst_x', 0):.2f}x, {r.get('burst_us', 0):,.0f} us) | "
                f"{r.get('stored_x', 0):.2f}, {r.get('p99_s', 0):.1f} s, "
                f"{r.get('sustained_us', 0):,.0f} us"
                + (f" | bound {r['bound']['max_x']:.2f}x" if "bound" in r else "")
            )
        print(f"benchmark wall time {time.time() - t_start:.0f} s")
    finally:
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)


def run_version(ctx, broker: Broker, store: Store, tpl, args, version: int, work: Path) -> dict:
    """The three phases for one report version; returns the figures for the summary."""
    phases = set(args.phases.split(","))
    hosts = len(tpl)
    out: dict = {}
    c = (
        ceiling(ctx, broker, tpl, args.burst, args.publishers, version)
        if "ceiling" in phases
        else None
    )
    ceil = c["rate"] if c else 0
    out["ceiling"] = ceil
    target = hosts * args.rate
    if "sustained" in phases:
        r = asyncio.run(
            ingest(
                ctx,
                broker,
                store,
                tpl,
                "paced",
                rate=args.rate,
                seconds=args.seconds,
                flush_s=args.flush,
                nvlink_rows=args.nvlink_rows,
                parts=args.publishers,
                version=version,
            )
        )
        wall = r["t_pub_end"] - r["t_first"]
        offered = r["sent"] / (r["t_sent"] - r["t_first"])
        rate = r["stored_at_pub_end"] / wall
        lag = r["lag"] * 1e3
        per_link = args.links if args.nvlink_rows == "per_link" else 1
        print(
            f"2. sustained: offered {r['sent']:,} reports in {r['t_sent'] - r['t_first']:.1f}"
            f" s ({offered:,.0f}/s, target {target:,.0f}/s, {args.publishers} publisher "
            f"processes); stored {rate:,.0f} reports/s = {rate / offered:.2f} x offered "
            f"({rate * args.gpus_per_host:,.0f} GPU rows/s, "
            f"{rate * args.gpus_per_host * per_link:,.0f}"
            f" NVLink rows/s, {args.nvlink_rows}) while offered"
        )
        print(
            f"   backlog when the publisher stopped: {r['sent'] - r['stored_at_pub_end']:,} "
            f"reports, drained {r['t_done'] - r['t_pub_end']:.2f} s later; "
            f"stored {r['stored']:,}, rejected {r['rejected']}, batches refused "
            f"{r['write_errors']}, {r['flushes']} source flushes"
        )
        print(
            f"   report time -> commit lag: p50 {np.percentile(lag, 50):,.0f} ms, "
            f"p99 {np.percentile(lag, 99):,.0f} ms, max {lag.max():,.0f} ms; daemon CPU "
            f"{r['cpu_s'] / (r['t_done'] - r['t_first']) * 100:.0f}% of one core, "
            f"{r['cpu_s'] / max(r['stored'], 1) * 1e6:,.0f} us per report; live snapshot "
            f"+{r['live_share'] * 100:.0f}% of the writer's CPU in writes"
        )
        out.update(
            stored_x=rate / offered,
            p99_s=np.percentile(lag, 99) / 1e3,
            sustained_us=r["cpu_s"] / max(r["stored"], 1) * 1e6,
        )
    if "burst" not in phases or not ceil:
        return out
    before = 0 if args.daemons > 1 else gpu_rows(store)  # the daemons' stores are fresh
    if args.daemons > 1:
        b = burst_daemons(
            ctx,
            broker,
            tpl,
            work,
            args.daemons,
            args.burst,
            args.publishers,
            version,
            args.duckdb_threads,
            flush_interval_s=args.flush,
            nvlink_rows=args.nvlink_rows,
            max_new_hosts_per_min=max(1000, hosts),
        )
        paths = b["paths"]
    else:
        b = asyncio.run(
            ingest(
                ctx,
                broker,
                store,
                tpl,
                "burst",
                count=args.burst,
                flush_s=args.flush,
                nvlink_rows=args.nvlink_rows,
                parts=args.publishers,
                version=version,
            )
        )
        paths = []
    brate = b["stored"] / (b["t_done"] - b["t_first"])
    bwall = b["t_done"] - b["t_first"]
    print(
        f"3. burst into the source: {b['stored']:,} reports committed in "
        f"{b['t_done'] - b['t_first']:.2f} s = {brate:,.0f} reports/s = "
        f"{brate / ceil:.2f} x the mosquitto_sub ceiling ({ceil:,.0f}/s), "
        f"{brate / target:.2f} x the {target:,.0f}/s target; daemon CPU "
        f"{b['cpu_s'] / max(b['stored'], 1) * 1e6:,.0f} us per report; live snapshot "
        f"+{b['live_share'] * 100:.0f}% of the writer's CPU in writes"
    )
    print(
        f"   {b['flushes']} source flushes in {b['writes']} store writes; writer thread "
        f"{b['write_s'] / max(b['stored'], 1) * 1e6:,.0f} us per report in Store.write"
    )
    if args.daemons > 1:
        print(
            f"   {args.daemons} daemon processes on one shared_group subscription, "
            f"each its own file store; CPU each: " + ", ".join(f"{c:.2f} s" for c in b["cpu_each"])
        )
    n = max(b["stored"], 1)
    cpu = {"daemons": b["cpu_s"], "broker": b["broker_s"], "publishers": b["publishers_s"]}
    print(f"   {cpu_note(n, bwall, cpu, b['busy_s'])}")
    gpus = len(json.loads("{" + tpl[0][3][1:])["gpu"]["uuid"])
    sent = b["sent"] + b.get("warm_sent", 0)
    print(f"   exactly once: {stored_once(paths, before, sent * gpus, store)}")
    out.update(burst=brate, burst_x=brate / ceil, burst_us=b["cpu_s"] / n * 1e6)
    if version == 2 and c is not None:
        out["bound"] = bound(c, b, tpl, args, work)
    return out


def bound(c: dict, b: dict, tpl, args, work: Path) -> dict:
    """The highest burst ÷ ceiling any daemon that stores every value in DuckDB could
    reach on this machine, from this run's CPU figures (printed with the arithmetic)."""
    f = floors(tpl, args.burst, 2000, 3, time.time(), work)
    n = c["n"]
    cores = os.cpu_count() or 1
    broker, pubs, sub = (c["cpu"][k] / n * 1e6 for k in ("broker", "publishers", "mosquitto_sub"))
    # The least a daemon storing every value does per report: receive and acknowledge it
    # (as `mosquitto_sub` does, in C), decode it to checked columns, insert the rows.
    store_min = f["columns"] + f["insert"]
    daemon_min = sub + store_min
    # The CPU the benchmark's processes had at the ceiling: what its three used, plus the
    # cores left idle. A burst gets no more: at rate R the broker, the publishers and the
    # daemon need R x (their µs per report) of it, and the broker is one thread.
    idle = max(cores - c["busy"] / c["wall"], 0.0)
    # (at most the machine's cores: the publishers' CPU includes their last PUBACKs, read
    # after the ceiling's window)
    had = min(c["rate"] * (broker + pubs + sub) / 1e6 + idle, float(cores))
    r_cpu = had * 1e6 / (broker + pubs + daemon_min)
    r_max = min(r_cpu, 1e6 / broker)
    r_free = min(had * 1e6 / (broker + pubs + store_min), 1e6 / broker)  # receiving free
    rows = ", ".join(f"{t} {v:,}" for t, v in f["rows"].items())
    print(
        f"bound (v2, this run): decode alone: parse {f['parse']:.1f} µs per report, parse + "
        f"checks + columns {f['columns']:.1f}; plain DuckDB Arrow insert of the same "
        f"reports' rows ({rows}; flushes of 2,000 reports into a fresh file, checkpointed) "
        f"{f['insert_default']:.1f} (DuckDB's default threads), {f['insert_1']:.1f} (1 thread)"
    )
    print(
        f"   at the ceiling ({c['rate']:,.0f}/s; machine busy {c['busy'] / c['wall']:.2f} of "
        f"{cores} cores): broker {broker:.1f} + publishers {pubs:.1f} + mosquitto_sub "
        f"{sub:.1f} µs per report = {c['rate'] * (broker + pubs + sub) / 1e6:.2f} cores, "
        f"+ {idle:.2f} idle = {had:.2f} cores for this benchmark"
    )
    print(
        f"   a daemon that receives as mosquitto_sub does, decodes and inserts (the cheaper "
        f"insert): {sub:.1f} + {f['columns']:.1f} + {f['insert']:.1f} = {daemon_min:.1f} µs; "
        f"{had:.2f} x 1e6 / ({broker:.1f} + {pubs:.1f} + {daemon_min:.1f}) = {r_cpu:,.0f}/s "
        f"(the broker alone: 1e6 / {broker:.1f} = {1e6 / broker:,.0f}/s) -> at most "
        f"{r_max / c['rate']:.2f} x the ceiling ({r_free / c['rate']:.2f} x if receiving cost "
        f"nothing); 0.5 x needs a daemon of at most "
        f"{had * 1e6 / (0.5 * c['rate']) - broker - pubs:.1f} µs per report in all"
    )
    return {
        "broker": broker,
        "publishers": pubs,
        "sub": sub,
        "parse": f["parse"],
        "columns": f["columns"],
        "insert": f["insert"],
        "insert_default": f["insert_default"],
        "insert_1": f["insert_1"],
        "had": had,
        "max_x": r_max / c["rate"],
        "free_x": r_free / c["rate"],
    }


if __name__ == "__main__":
    main()
