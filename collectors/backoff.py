"""One reconnect/retry policy for every loop that talks to a service that may be away
(the MQTT source and the agent's broker connection, alert delivery, the runtime
restarting a push source).

Exponential backoff with *full jitter* (the delay is uniform in [0, cap], the cap
doubling per failure up to `max_s`): many agents that lost one broker come back
spread out instead of in waves. A run that stayed up for `healthy_after_s`
counts as healthy, so the next failure starts again from the smallest delay;
a connection that drops straight after connecting keeps backing off.

A retry loop must also let a stop through: see `stop_requested`.

Lives in `collectors/` (no fleettui imports) so collectors and fleettui share it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Backoff:
    base_s: float = 0.5  # the first delay's cap
    max_s: float = 30.0  # the largest cap
    healthy_after_s: float = 10.0  # a run at least this long resets the backoff
    rng: random.Random = field(default_factory=random.Random)
    clock: Callable[[], float] = time.monotonic
    failures: int = 0  # consecutive failures since the last healthy run
    _started_at: float | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.base_s <= self.max_s:
            raise ValueError("backoff: need 0 < base_s <= max_s")
        if self.healthy_after_s < 0:
            raise ValueError("backoff: healthy_after_s must be >= 0")

    @classmethod
    def capped(cls, base_s: float, max_s: float, **kw) -> Backoff:
        """From configured seconds, whatever they are: a base above the cap starts at the
        cap, and a zero base (retry at once) becomes 10 ms."""
        top = max(max_s, 0.01)
        return cls(base_s=min(max(base_s, 0.01), top), max_s=top, **kw)

    def started(self) -> None:
        """A connection (or run) has started; its length decides whether it was healthy."""
        self._started_at = self.clock()

    def succeeded(self) -> None:
        """A call succeeded outright: the next failure starts from the smallest delay."""
        self.failures = 0
        self._started_at = None

    def cap_s(self) -> float:
        """The largest delay the next failure may wait."""
        return min(self.max_s, self.base_s * 2.0 ** min(self.failures, 62))

    def next_delay(self) -> float:
        """A failure happened: the seconds to wait before trying again."""
        if self._started_at is not None and self.clock() - self._started_at >= self.healthy_after_s:
            self.failures = 0
        self._started_at = None
        cap = self.cap_s()
        self.failures += 1
        return self.rng.uniform(0.0, cap)

    async def wait(self, stop: asyncio.Event | None = None) -> float:
        """Sleep the next delay (returns it), or less when `stop` is set meanwhile."""
        delay = self.next_delay()
        if stop is None:
            await asyncio.sleep(delay)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
        return delay


def stop_requested() -> bool:
    """True once the running task has been cancelled (asked to stop).

    A retry loop that catches a client's errors checks this before retrying. When a
    task is cancelled inside `async with client:`, the client's exit may still raise
    its own error (aiomqtt raises MqttError when the broker's side of the disconnect
    fails or times out, seen on TLS connections): that error replaces the
    CancelledError, the loop took it for a lost connection and reconnected, and
    whoever awaited the stop waited for ever."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
