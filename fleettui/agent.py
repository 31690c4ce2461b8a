"""`fleettui agent`: poll NVML on a GPU host and publish one report per interval over MQTT.

- one compact, versioned report per host per interval (collectors/nvml/report.py),
  QoS 1, on `<prefix>/<host>/report`, with a per-boot sequence number;
- a retained "online" birth on `<prefix>/<host>/status` after each connect and a
  retained "offline" Will (sent by the broker if the agent vanishes; the agent
  sends it itself when it stops cleanly);
- reconnects with exponential backoff and jitter; while the broker is away reports
  wait in a bounded buffer and are replayed in order, each removed only once the
  broker acknowledged it; when the bound is hit the oldest are dropped, counted in
  every later report (`dropped`, cumulative per boot) and logged.

Run with `fleettui agent --broker HOST[:PORT]` (or `python -m fleettui.agent`);
`--nvml fake --fake-hosts all` plays the whole simulated fleet from one process.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiomqtt

from collectors.backoff import Backoff, stop_requested
from collectors.mqtt_source import (
    check_tls_files,
    parse_broker,
    resolve_password,
    tls_parameters,
)
from collectors.nvml.collector import NvmlCollector
from collectors.nvml.library import NvmlUnavailable, open_library
from collectors.nvml.report import (
    HOST_RE,
    MAX_PLACE_STR,
    STATE_OFFLINE,
    STATE_ONLINE,
    encode,
    encode_status,
)
from collectors.nvml.report_v2 import encode_v2
from fleettui.safe_text import log_to_stderr

log = logging.getLogger("fleettui.agent")


@dataclass
class AgentOptions:
    broker: str = "127.0.0.1:1883"  # HOST[:PORT]
    host: str = ""  # name in topics and rows; "" -> this machine's short host name
    interval_s: float = 1.0
    topic_prefix: str = "fleettui"
    qos: int = 1
    client_id: str = ""  # "" -> fleettui-agent-<host>
    tls: bool = False
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    username: str = ""
    password: str = ""
    password_env: str = ""  # environment variable holding the password
    buffer_reports: int = 600  # reports kept while the broker is away (10 min at 1 s)
    processes_every: int = 5  # list processes every N polls (milliseconds per call)
    inventory_every: int = 60  # include the inventory every N reports (and after connect)
    max_backoff_s: float = 30.0
    publish_timeout_s: float = 10.0
    nvml: str = "real"  # "real" (pynvml) or "fake" (the simulated fleet)
    fake_hosts: list[str] = field(default_factory=list)  # simulated hosts to play; ["all"]
    fake_seed: int = 7
    fake_scale: int = 1
    # where this host lives, carried in every report (a topology file on the daemon wins)
    cluster: str = ""
    rack: str = ""
    rack_slot: int | None = None
    nvlink_domain: str = ""
    # report format: 1 JSON (readable, every daemon reads it) or 2 binary frames
    # (docs/report-v2.md: about a tenth of the daemon's decoding; needs a daemon that reads v2)
    report_version: int = 1

    @property
    def place(self) -> dict[str, Any] | None:
        p = {
            "cluster": self.cluster,
            "rack": self.rack,
            "rack_slot": self.rack_slot,
            "nvlink_domain": self.nvlink_domain,
        }
        return {k: v for k, v in p.items() if v not in ("", None)} or None

    def __post_init__(self) -> None:
        parse_broker(self.broker, self.tls)
        check_tls_files(tls_ca=self.tls_ca, tls_cert=self.tls_cert, tls_key=self.tls_key)
        if self.interval_s <= 0:
            raise ValueError("interval_s must be > 0")
        if self.buffer_reports < 1:
            raise ValueError("buffer_reports must be >= 1")
        if self.qos not in (0, 1, 2):
            raise ValueError("qos must be 0, 1 or 2")
        if self.host and not HOST_RE.match(self.host):
            raise ValueError(f"host {self.host!r} cannot be used in a topic")
        for key in ("cluster", "rack", "nvlink_domain"):
            if len(getattr(self, key)) > MAX_PLACE_STR:
                raise ValueError(f"{key}: longer than {MAX_PLACE_STR} chars")
        if self.rack_slot is not None and not 0 <= self.rack_slot <= 1_000_000:
            raise ValueError("rack_slot must be 0-1000000")
        if self.report_version not in (1, 2):
            raise ValueError("report_version must be 1 (JSON) or 2 (binary)")


def new_boot() -> str:
    """A run id: the seq numbers restart at 0 per boot, so (host, boot, seq) is unique."""
    return f"{int(time.time()):x}-{secrets.token_hex(3)}"


class Agent:
    """One host's agent: a poll loop feeding a bounded buffer, a publish loop draining it."""

    def __init__(
        self,
        options: AgentOptions,
        collector: NvmlCollector,
        *,
        host: str,
        clock: Callable[[], float] = time.time,
        boot: str | None = None,
    ):
        self.o = options
        self.collector = collector
        self.host = host
        self.clock = clock
        self.boot = boot or new_boot()
        self.seq = 0
        self.buffer: deque[tuple[int, bytes]] = deque()
        self.dropped = 0  # reports dropped because the buffer was full (this boot)
        self._dropped_logged = 0
        self.sent = 0
        self.connects = 0
        self.connected = asyncio.Event()
        self.client: aiomqtt.Client | None = None  # the live connection, while there is one
        self._wakeup = asyncio.Event()
        self._need_inventory = True
        prefix = options.topic_prefix
        self.report_topic = f"{prefix}/{host}/report"
        self.status_topic = f"{prefix}/{host}/status"
        self.poll_s: deque[float] = deque(maxlen=3600)  # seconds per poll, for the benchmarks

    # -- polling --------------------------------------------------------------------------
    def poll_once(self) -> bytes:
        """Poll NVML and encode the next report (runs in a worker thread)."""
        t0 = time.perf_counter()
        poll = self.collector.poll()
        inv = None
        if self._need_inventory or self.seq % self.o.inventory_every == 0:
            self._need_inventory = False
            inv = self.collector.inventory()
        payload = (encode_v2 if self.o.report_version == 2 else encode)(
            poll,
            host=self.host,
            boot=self.boot,
            seq=self.seq,
            interval_s=self.o.interval_s,
            dropped=self.dropped,
            driver=self.collector.driver_version,
            inventory=inv,
            place=self.o.place,
        )
        self.poll_s.append(time.perf_counter() - t0)
        return payload

    def enqueue(self, payload: bytes) -> None:
        if len(self.buffer) >= self.o.buffer_reports:
            self.buffer.popleft()
            self.dropped += 1
        self.buffer.append((self.seq, payload))
        self.seq += 1
        self._wakeup.set()

    async def _poll_loop(self) -> None:
        period = self.o.interval_s
        start = time.monotonic()
        k = 0
        while True:
            try:
                payload = await asyncio.to_thread(self.poll_once)
                self.enqueue(payload)
            except Exception:  # a collector bug must not stop the agent
                log.exception("%s: poll failed", self.host)
            k += 1
            delay = start + k * period - time.monotonic()
            if delay < 0:  # fell behind: skip the missed ticks rather than burst
                k += int(-delay // period) + 1
                delay = start + k * period - time.monotonic()
            await asyncio.sleep(delay)

    # -- publishing ------------------------------------------------------------------------
    def _client(self) -> aiomqtt.Client:
        o = self.o
        host, port = parse_broker(o.broker, o.tls)
        will = aiomqtt.Will(
            self.status_topic,
            encode_status(STATE_OFFLINE, ts=self.clock(), boot=self.boot),
            qos=1,
            retain=True,
        )
        return aiomqtt.Client(
            host,
            port,
            identifier=o.client_id or f"fleettui-agent-{self.host}"[:64],
            username=o.username or None,
            password=resolve_password(o.password, o.password_env),
            tls_params=tls_parameters(o.tls, o.tls_ca, o.tls_cert, o.tls_key),
            will=will,
            clean_session=True,
            keepalive=max(5, int(o.interval_s * 10)),
            timeout=10,
        )

    async def _publish_loop(self) -> None:
        backoff = Backoff.capped(0.5, self.o.max_backoff_s)
        while True:
            try:
                async with self._client() as client:
                    self.client = client
                    try:
                        await client.publish(
                            self.status_topic,
                            encode_status(STATE_ONLINE, ts=self.clock(), boot=self.boot),
                            qos=1,
                            retain=True,
                            timeout=self.o.publish_timeout_s,
                        )
                        self.connects += 1
                        self._need_inventory = True
                        self.connected.set()
                        backoff.started()  # reset only if this connection stays up
                        if self.buffer and self.connects > 1:
                            log.info(
                                "%s: connected to %s; replaying %d buffered reports",
                                self.host,
                                self.o.broker,
                                len(self.buffer),
                            )
                        if self.dropped > self._dropped_logged:
                            log.warning(
                                "%s: buffer full while the broker was away: dropped %d "
                                "oldest reports (bound %d)",
                                self.host,
                                self.dropped - self._dropped_logged,
                                self.o.buffer_reports,
                            )
                            self._dropped_logged = self.dropped
                        await self._drain(client)
                    except asyncio.CancelledError:
                        await self._say_offline(client)
                        raise
            except aiomqtt.MqttError as exc:
                self.connected.clear()
                self.client = None
                if stop_requested():  # the disconnect failed while stopping: still stop
                    raise asyncio.CancelledError from exc
                wait = backoff.next_delay()
                log.warning(
                    "%s: broker %s: %s; retrying in %.1f s (%d reports buffered)",
                    self.host,
                    self.o.broker,
                    exc,
                    wait,
                    len(self.buffer),
                )
                await asyncio.sleep(wait)

    async def _drain(self, client: aiomqtt.Client) -> None:
        """Publish buffered reports oldest first; each leaves the buffer once acknowledged."""
        while True:
            if not self.buffer:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            seq, payload = self.buffer[0]
            await client.publish(
                self.report_topic, payload, qos=self.o.qos, timeout=self.o.publish_timeout_s
            )
            if self.buffer and self.buffer[0][0] == seq:
                self.buffer.popleft()
            self.sent += 1

    async def _say_offline(self, client: aiomqtt.Client) -> None:
        try:
            await client.publish(
                self.status_topic,
                encode_status(STATE_OFFLINE, ts=self.clock(), boot=self.boot),
                qos=1,
                retain=True,
                timeout=2,
            )
        except (aiomqtt.MqttError, asyncio.CancelledError, TimeoutError):
            pass

    async def run(self, stop: asyncio.Event, *, drain_s: float = 2.0) -> None:
        """Poll and publish until `stop` is set; then try `drain_s` to empty the buffer."""
        poller = asyncio.create_task(self._poll_loop(), name=f"poll {self.host}")
        publisher = asyncio.create_task(self._publish_loop(), name=f"publish {self.host}")
        try:
            await stop.wait()
        finally:
            poller.cancel()
            await asyncio.gather(poller, return_exceptions=True)
            deadline = time.monotonic() + drain_s
            while self.buffer and self.connected.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            publisher.cancel()
            await asyncio.gather(publisher, return_exceptions=True)
            await asyncio.to_thread(self.collector.close)


# -- entry points ---------------------------------------------------------------------------
def build_agents(o: AgentOptions) -> list[Agent]:
    """One agent for this host's real NVML, or one per simulated host with the fake."""
    if o.nvml == "real":
        lib = open_library("real")
        host = o.host or socket.gethostname().split(".")[0]
        col = NvmlCollector(lib, processes_every=o.processes_every)
        return [Agent(o, col, host=host)]
    if o.nvml != "fake":
        raise ValueError(f"--nvml must be real or fake, not {o.nvml!r}")
    from collectors.nvml.fake import SimStates
    from collectors.sim.model import SimModel

    states = SimStates(SimModel(seed=o.fake_seed, scale=o.fake_scale, start=time.time()))
    hosts = o.fake_hosts or [states.model.fleet.host[0]]
    if hosts == ["all"]:
        hosts = list(states.model.fleet.host)
    agents = []
    for h in hosts:
        lib = open_library("fake", host=h, states=states)
        col = NvmlCollector(lib, processes_every=o.processes_every)
        agents.append(Agent(o, col, host=h))
    return agents


async def run_agent(options: AgentOptions, stop: asyncio.Event | None = None) -> int:
    """Run until SIGINT/SIGTERM (or `stop`); returns a process exit code."""
    try:
        agents = build_agents(options)
    except (NvmlUnavailable, ValueError) as exc:
        print(f"fleettui agent: {exc}", file=sys.stderr)
        return 2
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    log.info(
        "agent: %d host(s) -> %s every %.1f s", len(agents), options.broker, options.interval_s
    )
    await asyncio.gather(*(a.run(stop) for a in agents))
    return 0


def add_agent_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `agent` on the CLI's subparsers; sets `func` to run it from parsed args."""
    p = subparsers.add_parser(
        "agent",
        help="publish this host's NVML telemetry over MQTT",
        description=__doc__.split("\n\n")[0],
    )
    _add_arguments(p)
    p.set_defaults(func=main_from_args)
    return p


# fleettui/cli.py plugs subcommands in by module name: each module has `add_parser(sub)`.
add_parser = add_agent_parser


def _add_arguments(p: argparse.ArgumentParser) -> None:
    d = AgentOptions()
    p.add_argument("--broker", required=True, help="MQTT broker HOST[:PORT] (1883, 8883 with TLS)")
    p.add_argument("--host", default="", help="host name in topics (default: this machine's)")
    p.add_argument(
        "--interval",
        type=float,
        default=d.interval_s,
        dest="interval_s",
        help=f"seconds between reports (default {d.interval_s})",
    )
    p.add_argument("--topic-prefix", default=d.topic_prefix)
    p.add_argument("--qos", type=int, default=d.qos, choices=(0, 1, 2))
    p.add_argument("--client-id", default="")
    p.add_argument("--tls", action="store_true", help="connect with TLS")
    p.add_argument("--tls-ca", default="", help="CA file (default: the system's)")
    p.add_argument("--tls-cert", default="", help="client certificate file")
    p.add_argument("--tls-key", default="", help="client key file")
    p.add_argument("--username", default="")
    p.add_argument(
        "--password-env",
        default="",
        help="environment variable holding the password (kept off the command line)",
    )
    p.add_argument(
        "--buffer",
        type=int,
        default=d.buffer_reports,
        dest="buffer_reports",
        help=f"reports kept while the broker is away (default {d.buffer_reports})",
    )
    p.add_argument("--processes-every", type=int, default=d.processes_every)
    p.add_argument("--inventory-every", type=int, default=d.inventory_every)
    p.add_argument(
        "--nvml",
        choices=("real", "fake"),
        default="real",
        help="NVIDIA's library, or the simulated fleet (demo, tests)",
    )
    p.add_argument(
        "--fake-hosts",
        default="",
        help="comma-separated simulated hosts to play, or 'all' (with --nvml fake)",
    )
    p.add_argument("--fake-seed", type=int, default=d.fake_seed)
    p.add_argument("--fake-scale", type=int, default=d.fake_scale)
    p.add_argument("--cluster", default="", help="cluster this host belongs to (in every report)")
    p.add_argument("--rack", default="", help="rack this host sits in")
    p.add_argument("--rack-slot", type=int, default=None, help="position in the rack")
    p.add_argument("--nvlink-domain", default="", help="NVLink domain (NVL72 rack, HGX board)")
    p.add_argument(
        "--report-version",
        type=int,
        choices=(1, 2),
        default=d.report_version,
        help="1: JSON reports (default); 2: binary frames, cheaper for the daemon "
        "(docs/report-v2.md)",
    )


def options_from_args(a: argparse.Namespace) -> AgentOptions:
    return AgentOptions(
        broker=a.broker,
        host=a.host,
        interval_s=a.interval_s,
        topic_prefix=a.topic_prefix,
        qos=a.qos,
        client_id=a.client_id,
        tls=a.tls,
        tls_ca=a.tls_ca,
        tls_cert=a.tls_cert,
        tls_key=a.tls_key,
        username=a.username,
        password_env=a.password_env,
        buffer_reports=a.buffer_reports,
        processes_every=a.processes_every,
        inventory_every=a.inventory_every,
        nvml=a.nvml,
        fake_hosts=[h for h in a.fake_hosts.split(",") if h],
        fake_seed=a.fake_seed,
        fake_scale=a.fake_scale,
        cluster=a.cluster,
        rack=a.rack,
        rack_slot=a.rack_slot,
        nvlink_domain=a.nvlink_domain,
        report_version=a.report_version,
    )


def main_from_args(a: argparse.Namespace) -> int:
    log_to_stderr(
        logging.INFO if getattr(a, "verbose", False) else logging.WARNING,
        "%(asctime)s %(levelname)s %(message)s",
    )
    try:
        options = options_from_args(a)
    except ValueError as exc:
        print(f"fleettui agent: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(run_agent(options))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fleettui agent", description=__doc__.split("\n\n")[0])
    _add_arguments(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help="log more (to stderr)")
    return main_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
