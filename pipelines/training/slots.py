"""A global cap on concurrent trainings, with a first-come line.

A process resource (like the compute thread), not per-user state: it holds only opaque tickets of the
trainings running or waiting now. Trainings run in chunks on the one compute thread, so each running
training slows the others (and every other tab) down; the cap keeps that bounded.

    ticket = SLOTS.join()            # take a place in line
    while (pos := SLOTS.position(ticket)) > 0:  # 0: running
        tell_user(f"you are {pos}-th in line"); sleep(1)
    ...train, calling SLOTS.touch(ticket) after every chunk...
    SLOTS.leave(ticket)              # finally:

A ticket not touched for ``lease`` seconds is dropped: when a user presses Stop or leaves, gradio stops
iterating the handler's generator but keeps it suspended (its ``finally`` runs only when it is closed or
collected), so without the lease an abandoned training would hold its slot for good.
"""

from __future__ import annotations

import itertools
import os
import threading
import time


class TrainingSlots:
    def __init__(self, capacity: int, lease: float = 20.0):
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity, self.lease = capacity, lease
        self._lock = threading.Lock()
        self._line: list[int] = []  # running first (the first `capacity`), then waiting, in order of arrival
        self._seen: dict[int, float] = {}  # ticket -> last touch (monotonic seconds)
        self._ids = itertools.count(1)

    def _expire(self) -> None:
        """Drop tickets untouched for ``lease`` seconds (call with the lock held)."""
        now = time.monotonic()
        for t in [t for t in self._line if now - self._seen[t] > self.lease]:
            self._line.remove(t)
            del self._seen[t]

    def join(self) -> int:
        with self._lock:
            ticket = next(self._ids)
            self._line.append(ticket)
            self._seen[ticket] = time.monotonic()
            return ticket

    def touch(self, ticket: int) -> None:
        """Renew the lease (a ticket dropped meanwhile, after a very long chunk, lines up again)."""
        with self._lock:
            if ticket not in self._seen:
                self._line.append(ticket)
            self._seen[ticket] = time.monotonic()

    def position(self, ticket: int) -> int:
        """0 if ``ticket`` may train now, else its place among those waiting (1 = next). Renews the lease."""
        self.touch(ticket)
        with self._lock:
            self._expire()
            i = self._line.index(ticket)
            return 0 if i < self.capacity else i - self.capacity + 1

    def leave(self, ticket: int) -> None:
        with self._lock:
            if ticket in self._line:
                self._line.remove(ticket)
            self._seen.pop(ticket, None)

    def busy(self) -> tuple[int, int]:
        """(running, waiting) now."""
        with self._lock:
            self._expire()
            n = len(self._line)
            return min(n, self.capacity), max(0, n - self.capacity)


SLOTS = TrainingSlots(int(os.environ.get("DL_MAX_TRAININGS", "2")))


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
