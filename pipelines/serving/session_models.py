"""Models that belong to one browser session: the digits model a user trained in "Train your own" and sent on
to the viewer and the guidance tab (tabs cannot import each other, and a ``gr.State`` is one tab's).

The store is an instance held by the :class:`~pipelines.runtime.Runtime` (no module global), keyed by gradio's
session hash, bounded in entries (the oldest is dropped first) and in time (an entry expires ``ttl`` seconds
after it was last stored or read), so that a closed browser tab frees its model. Thread-safe.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

MAX_SESSIONS = 16  # a digits UNet is ~2.5 MB: 16 of them ~40 MB
TTL_SECONDS = 1800.0


class SessionModels:
    """session id -> one model; bounded (``max_sessions``) and expiring (``ttl`` seconds since the last use)."""

    def __init__(self, max_sessions: int = MAX_SESSIONS, ttl: float = TTL_SECONDS, clock=time.monotonic):
        if max_sessions < 1 or ttl <= 0:
            raise ValueError("a session store needs room for at least one session and a positive time to live")
        self.max_sessions, self.ttl, self._clock = int(max_sessions), float(ttl), clock
        self._items: OrderedDict[str, tuple[float, object]] = OrderedDict()  # oldest use first
        self._lock = threading.Lock()

    def _expire(self, now: float) -> None:
        while self._items and now - next(iter(self._items.values()))[0] > self.ttl:
            self._items.popitem(last=False)

    def put(self, session: str | None, model) -> None:
        """Keep ``model`` for ``session`` (replacing its previous one)."""
        if not session:
            raise ValueError("no browser session to keep the model in (gradio gave no session id)")
        with self._lock:
            now = self._clock()
            self._expire(now)
            self._items.pop(session, None)
            self._items[session] = (now, model)
            while len(self._items) > self.max_sessions:
                self._items.popitem(last=False)

    def get(self, session: str | None, what: str = "model"):
        """``session``'s model (its clock restarts); ValueError with what to do when there is none."""
        with self._lock:
            now = self._clock()
            self._expire(now)
            if not session or session not in self._items:
                raise ValueError(f"no {what} in this session yet: train one (or press Skip ahead) in the "
                                 f"'Train your own' tab, then press 'Send to the viewer and guidance tabs'. "
                                 f"A sent model is kept {self.ttl / 60:.0f} minutes after its last use.")
            _, model = self._items.pop(session)
            self._items[session] = (now, model)
            return model

    def __len__(self) -> int:
        with self._lock:
            self._expire(self._clock())
            return len(self._items)
