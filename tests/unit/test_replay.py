"""The replay cache (issue 20): identical frames, a byte bound, one computation for identical runs in flight."""

from __future__ import annotations

import threading
import time

import numpy as np

from pipelines.serving.replay import ReplayCache, key


def _run(calls: list, n: int = 3, gate: threading.Event | None = None):
    def produce():
        calls.append(1)
        for i in range(n):
            if gate is not None:
                gate.wait()
            yield np.full((4, 4, 3), i, np.uint8)
    return produce


def _wait(cond, limit: float = 20.0) -> None:
    """Poll until ``cond()`` (bounded, so a broken cache fails instead of hanging)."""
    end = time.monotonic() + limit
    while not cond() and time.monotonic() < end:
        time.sleep(0.01)


def test_a_hit_returns_the_recorded_frames_without_computing():
    cache, calls = ReplayCache(), []
    k = key(model="toy-sd", seed=0, prompt="a red circle", steps=3)
    first = list(cache.stream(k, _run(calls)))
    again = list(cache.stream(k, _run(calls)))
    assert len(calls) == 1 and (cache.hits, cache.misses) == (1, 1)
    assert all(np.array_equal(a, b) for a, b in zip(first, again)) and len(again) == 3
    assert key(model="toy-sd", seed=1, prompt="a red circle", steps=3) != k


def test_the_byte_bound_evicts_the_least_recently_used():
    cache, calls = ReplayCache(max_bytes=2 * 3 * 48), []  # room for two runs of 3 frames of 48 bytes
    for s in range(3):
        list(cache.stream(key(seed=s), _run(calls)))
    assert cache.bytes <= cache.max_bytes and len(cache._runs) == 2
    list(cache.stream(key(seed=0), _run(calls)))  # evicted: computed again
    assert len(calls) == 4


def test_identical_runs_in_flight_are_computed_once():
    cache, calls, gate = ReplayCache(), [], threading.Event()
    k = key(seed=7)
    out = {}

    def student(i):
        out[i] = list(cache.stream(k, _run(calls, gate=gate)))

    threads = [threading.Thread(target=student, args=(i,)) for i in range(4)]
    threads[0].start()
    _wait(lambda: cache._flights)  # the first run is in flight
    for t in threads[1:]:
        t.start()
    _wait(lambda: cache.coalesced + cache.misses >= 4)
    gate.set()
    for t in threads:
        t.join(30)
    assert len(calls) == 1 and cache.coalesced == 3
    assert all(len(v) == 3 for v in out.values())
