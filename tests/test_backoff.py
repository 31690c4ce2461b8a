"""The shared reconnect policy: full jitter under a doubling cap, reset after a healthy run."""

from __future__ import annotations

import asyncio
import random
import statistics
import time

import pytest

from collectors.backoff import Backoff


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_caps_double_to_the_maximum_and_delays_stay_under_them():
    b = Backoff(base_s=0.5, max_s=8.0, rng=random.Random(1))
    caps = []
    for _ in range(8):
        cap = b.cap_s()
        d = b.next_delay()
        assert 0.0 <= d <= cap
        caps.append(cap)
    assert caps == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0]


def test_full_jitter_spreads_delays_over_zero_to_cap():
    delays = []
    for seed in range(2000):
        b = Backoff(base_s=4.0, max_s=4.0, rng=random.Random(seed))
        delays.append(b.next_delay())
    assert min(delays) < 0.2 and max(delays) > 3.8  # the whole range, not +-20 % of 4 s
    assert statistics.mean(delays) == pytest.approx(2.0, abs=0.15)


def test_a_healthy_run_resets_a_short_one_does_not():
    clock = Clock()
    b = Backoff(base_s=1.0, max_s=60.0, healthy_after_s=10.0, clock=clock, rng=random.Random(0))
    for _ in range(4):
        b.started()
        clock.t += 1.0  # dropped straight after connecting
        b.next_delay()
    assert b.failures == 4 and b.cap_s() == 16.0
    b.started()
    clock.t += 30.0  # stayed up: healthy
    b.next_delay()
    assert b.failures == 1 and b.cap_s() == 2.0
    b.succeeded()
    assert b.cap_s() == 1.0


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        Backoff(base_s=0)
    with pytest.raises(ValueError):
        Backoff(base_s=5, max_s=1)


async def test_wait_returns_early_when_stopped():
    b = Backoff(base_s=30.0, max_s=30.0, rng=random.Random(3))  # a delay of ~7 s
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, stop.set)
    t0 = time.monotonic()
    delay = await b.wait(stop)
    assert delay > 1.0 and time.monotonic() - t0 < 1.0


def test_capped_accepts_whatever_the_config_says():
    assert Backoff.capped(0.5, 0.3).cap_s() == 0.3  # a base over the cap starts at the cap
    b = Backoff.capped(0.0, 30.0)  # "retry at once" still waits a little, then grows
    assert b.cap_s() == 0.01 and b.max_s == 30.0
