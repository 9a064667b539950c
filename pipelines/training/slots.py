"""A global cap on concurrent trainings, with a first-come line.

A process resource (like the compute thread), not per-user state: it holds only opaque tickets of the
trainings running or waiting now. Trainings run in chunks on the one compute thread, so each running
training slows the others (and every other tab) down; the cap keeps that bounded.

    ticket = SLOTS.join()            # take a place in line
    while (pos := SLOTS.position(ticket)) > 0:  # 0: running
        tell_user(f"you are {pos}-th in line"); sleep(1)
    ...train...
    SLOTS.leave(ticket)              # always (finally:), also when the user stops or leaves
"""

from __future__ import annotations

import itertools
import os
import threading


class TrainingSlots:
    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._lock = threading.Lock()
        self._line: list[int] = []  # running first (the first `capacity`), then waiting, in order of arrival
        self._ids = itertools.count(1)

    def join(self) -> int:
        with self._lock:
            ticket = next(self._ids)
            self._line.append(ticket)
            return ticket

    def position(self, ticket: int) -> int:
        """0 if ``ticket`` may train now, else its place among those waiting (1 = next)."""
        with self._lock:
            i = self._line.index(ticket)
            return 0 if i < self.capacity else i - self.capacity + 1

    def leave(self, ticket: int) -> None:
        with self._lock:
            if ticket in self._line:
                self._line.remove(ticket)

    def busy(self) -> tuple[int, int]:
        """(running, waiting) now."""
        with self._lock:
            n = len(self._line)
            return min(n, self.capacity), max(0, n - self.capacity)


SLOTS = TrainingSlots(int(os.environ.get("DL_MAX_TRAININGS", "2")))


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
