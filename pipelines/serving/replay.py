"""Replay instead of recompute (issue 20): a bounded per-process cache of finished runs' frames, and
coalescing of identical runs in flight.

A run is keyed by everything that determines its frames (:func:`key`: model, sampler, steps, prompts, w,
seed, η, a start image's hash, ...). :meth:`ReplayCache.stream` yields the recorded frames of a finished run
at once; when the same key is being computed by another request, it follows that run's frames as they
come (computed once, streamed to all); otherwise it runs ``produce()`` and records its frames. Bounded in
bytes (least recently used first out); a run larger than the bound is streamed but not kept. Hits, misses
and coalesced followers are counted and logged. Frames must not be changed after they are yielded.

Followers wait on a condition in *their own* thread (gradio's worker thread, not the compute thread, where
a blocked greenlet would stall every request): call :meth:`ReplayCache.stream` outside the compute thread,
with a ``produce`` that hands its work there (``compute_thread.iterate``). If the first asker closes its tab
mid-run, a follower computes the run itself. ``DL_REPLAY_MB`` bounds the bytes (0: off).

A process resource (like the model cache), not per-user state; frames hold no user data beyond the inputs
that keyed them.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import os
import threading
from typing import Any, Callable, Iterator

import numpy as np

log = logging.getLogger(__name__)
DEFAULT_MAX_BYTES = 64 * 2**20  # ~200 viewer runs of 30 steps with the toy model (~0.3 MB each)


def bound_from_env() -> int:
    """The process's replay bound: ``DL_REPLAY_MB`` megabytes (0: keep nothing, coalesce nothing), else 64."""
    env = os.environ.get("DL_REPLAY_MB", "").strip()
    return int(float(env) * 2**20) if env else DEFAULT_MAX_BYTES


def key(**parts: Any) -> str:
    """A stable key from the named parts (arrays and bytes are hashed by content)."""
    h = hashlib.sha256()
    for name in sorted(parts):
        v = parts[name]
        if isinstance(v, np.ndarray):
            v = hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest() + str(v.shape)
        elif isinstance(v, (bytes, bytearray)):
            v = hashlib.sha256(v).hexdigest()
        h.update(f"{name}={v!r};".encode())
    return h.hexdigest()


def nbytes(frame: Any) -> int:
    """Bytes a frame holds: numpy arrays (also inside tuples, lists and dicts) counted, the rest 64."""
    if isinstance(frame, np.ndarray):
        return frame.nbytes
    if isinstance(frame, (tuple, list)):
        return sum(nbytes(f) for f in frame)
    if isinstance(frame, dict):
        return sum(nbytes(f) for f in frame.values())
    return 64


class _LeaderStopped(RuntimeError):
    """The request computing a run was closed before the end (its tab closed): its followers go on alone."""


class _Flight:
    """A run being computed: its frames so far, whether it ended, its error."""

    def __init__(self) -> None:
        self.frames: list = []
        self.done = False
        self.error: BaseException | None = None
        self.cond = threading.Condition()


class ReplayCache:
    """LRU cache of finished runs' frames, bounded by ``max_bytes``, with in-flight coalescing."""

    def __init__(self, max_bytes: int | None = None) -> None:
        self.max_bytes = int(bound_from_env() if max_bytes is None else max_bytes)
        self._runs: collections.OrderedDict[str, tuple[list, int]] = collections.OrderedDict()
        self._flights: dict[str, _Flight] = {}
        self._lock = threading.Lock()
        self.bytes = 0
        self.hits = self.misses = self.coalesced = 0

    def stream(self, k: str, produce: Callable[[], Iterator]) -> Iterator:
        """The frames of run ``k``: replayed, followed (another request computes it), or produced here.
        With a bound of 0 bytes (or ``k`` None) every request computes its own run."""
        if self.max_bytes <= 0 or k is None:
            yield from produce()
            return
        with self._lock:
            if k in self._runs:
                self._runs.move_to_end(k)
                frames = self._runs[k][0]
                self.hits += 1
                log.info("replay hit (hits %d, misses %d, coalesced %d)", self.hits, self.misses, self.coalesced)
                flight = None
            elif k in self._flights:
                flight, frames = self._flights[k], None
                self.coalesced += 1
                log.info("replay coalesced (hits %d, misses %d, coalesced %d)", self.hits, self.misses,
                         self.coalesced)
            else:
                flight, frames = None, None
                own = self._flights[k] = _Flight()
                self.misses += 1
                log.info("replay miss (hits %d, misses %d, coalesced %d)", self.hits, self.misses, self.coalesced)
        if frames is not None:
            yield from frames
            return
        if flight is not None:
            try:
                yield from self._follow(flight)
                return
            except _LeaderStopped:  # the first asker left: compute it here (from the start: frames are throttled)
                log.info("replay: the run followed was stopped by its first asker; computing it again")
            yield from self.stream(k, produce)
            return
        yield from self._produce(k, own, produce)

    def _follow(self, flight: _Flight) -> Iterator:
        i = 0
        while True:
            with flight.cond:
                while i >= len(flight.frames) and not flight.done:
                    flight.cond.wait()
                new, done, err = flight.frames[i:], flight.done, flight.error
            yield from new
            i += len(new)
            if done and i >= len(flight.frames):
                if err is not None:
                    raise err
                return

    def _produce(self, k: str, own: _Flight, produce: Callable[[], Iterator]) -> Iterator:
        ok = False
        try:
            for frame in produce():
                with own.cond:
                    own.frames.append(frame)
                    own.cond.notify_all()
                yield frame
            ok = True
        except BaseException as e:  # noqa: BLE001 - followers get the same error
            own.error = e if isinstance(e, Exception) else RuntimeError("the run was stopped")
            raise
        finally:
            if not ok and own.error is None:  # closed early (tab closed): followers see it stopped
                own.error = _LeaderStopped("the run this request followed was stopped")
            with own.cond:
                own.done = True
                own.cond.notify_all()
            with self._lock:
                self._flights.pop(k, None)
                if ok:
                    self._keep(k, own.frames)

    def _keep(self, k: str, frames: list) -> None:
        size = sum(nbytes(f) for f in frames)
        if size > self.max_bytes:
            return
        self._runs[k] = (frames, size)
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, (_, s) = self._runs.popitem(last=False)
            self.bytes -= s
