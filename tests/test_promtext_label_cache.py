"""Label blocks are parsed once per process, not once per scrape: a warm cache
gives exactly what a cold parse gives, on the simulated fleet and on every real
sample file; a bad block is reported on every scrape (never cached)."""

from __future__ import annotations

import numpy as np

from collectors.promtext import parse
from collectors.promtext.parse import parse_exposition
from collectors.sim.exporters import SimExporters
from collectors.sim.model import SimModel
from tests.upstream_samples import scrapes_in, upstream_dir


def same(a, b) -> None:
    assert a.names == b.names
    assert [dict(x) for x in a.labels] == [dict(x) for x in b.labels]
    assert np.array_equal(a.values, b.values) and np.array_equal(a.ts, b.ts)
    assert a.skipped == b.skipped


def cold_and_warm(text: str, **kw):
    parse._LABELS_CACHE.clear()
    cold = parse_exposition(text, "t", now=1.0e9, **kw)
    warm = parse_exposition(text, "t", now=1.0e9, **kw)
    return cold, warm


def test_simulated_and_real_bodies_parse_the_same_cold_and_warm():
    exp = SimExporters(SimModel(start=1_790_000_000.0))
    exp.advance(1_790_000_005)
    bodies = [(exp.render(t.path), t.labels) for t in exp.targets()]
    base = upstream_dir()
    assert base is not None, "shared/upstream sample data not found"
    files = [p for p in base.rglob("*") if p.suffix in (".prom", ".txt")]
    assert len(files) >= 8
    bodies += [(text, {"instance": "x:1"}) for p in files for text in scrapes_in(p)]
    for text, labels in bodies:
        cold, warm = cold_and_warm(text, extra_labels=labels)
        same(cold, warm)
    assert len(parse._LABELS_CACHE) > 0


def test_a_bad_label_block_is_reported_on_every_scrape():
    text = 'a{x="1"} 1\nb{x="1\\"} 2\n'
    for _ in range(2):
        snap = parse_exposition(text, "t", now=1.0)
        assert snap.names == ["a"]
        assert len(snap.skipped) == 1 and "line 2: bad labels" in snap.skipped[0]


def test_the_cache_is_bounded():
    parse._LABELS_CACHE.clear()
    old = parse._LABELS_CACHE_MAX
    parse._LABELS_CACHE_MAX = 10
    try:
        text = "".join(f'a{{x="{i}"}} {i}\n' for i in range(25))
        snap = parse_exposition(text, "t", now=1.0)
        assert len(snap) == 25 and len(parse._LABELS_CACHE) <= 10
    finally:
        parse._LABELS_CACHE_MAX = old
