"""One thread runs every request's torch work on CPU, with its own thread count.

Why: a web server calls handlers from a pool of worker threads. PyTorch's CPU wheels use GNU OpenMP;
every thread that runs a parallel op gets its own pool, and once the pools hold more threads than there
are cores, libgomp puts its workers to sleep after every op (small ops became 4-6x slower on 2 cores);
a team spanning every core also stalls whenever one of its threads is preempted by the web server.
So handlers hand their body to :func:`call` / :func:`iterate`, which run it on one long-lived thread
with :func:`default_threads` (all cores but one), and the main thread gives up its own pool with
:func:`keep_this_thread_serial`. Figures: ``docs/measurements.md`` and ``scripts/benchmark.py --only viewer``.

Generators are advanced one item ahead of the consumer (:func:`iterate`), so a streaming run and another
user's quick request interleave step by step. Calls made from the compute thread itself run inline. The
request's ``contextvars`` travel with each call. The thread starts on first use, not at import.

A process resource (like the model cache), not per-user state. :func:`enable` (``False``) runs handlers in
the caller's thread instead (GPU serving).
"""

from __future__ import annotations

import contextvars
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterator

import torch


def default_threads() -> int:
    """Torch threads for the compute thread: ``DL_TORCH_THREADS``, else all cores but one (the spare
    core serves the web page)."""
    env = os.environ.get("DL_TORCH_THREADS", "").strip()
    if env:
        return max(1, int(env))
    return max(1, torch.get_num_threads() - 1)


_state: dict[str, Any] = {"enabled": True, "thread": None, "executor": None}
_start_lock = threading.Lock()
_DONE = object()


def enable(on: bool) -> None:
    """Route handlers through the compute thread (``True``, the default) or run them inline."""
    _state["enabled"] = bool(on)


def _start(threads: int) -> None:
    """On the compute thread: set its torch thread count and run one parallel op, so PyTorch's lazy
    per-thread set-up happens here (it copies the *global* count, which the main thread lowers later)."""
    _state["thread"] = threading.current_thread()
    torch.set_num_threads(threads)
    torch.zeros(1 << 17).add_(1.0)  # above ATen's grain size (32768): a parallel region, the pool starts


def _executor() -> ThreadPoolExecutor:
    """The compute thread's executor, started on first use."""
    with _start_lock:
        if _state["executor"] is None:
            ex = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dl-compute")
            ex.submit(_start, default_threads()).result()
            _state["executor"] = ex
        return _state["executor"]


def keep_this_thread_serial() -> None:
    """Run the calling thread's torch ops on one core (no OpenMP pool of its own).

    Call it on the main thread of a server before it touches torch (``app.main`` does). The compute
    thread is started first, so it keeps its own count."""
    _executor()
    if threading.current_thread() is not _state["thread"]:
        torch.set_num_threads(1)


def _inline() -> bool:
    return not _state["enabled"] or threading.current_thread() is _state["thread"]


def call(fn: Callable[..., Any], *args, **kwargs) -> Any:
    """``fn(*args, **kwargs)`` on the compute thread (in a copy of the caller's context)."""
    if _inline():
        return fn(*args, **kwargs)
    ctx = contextvars.copy_context()
    return _executor().submit(ctx.run, fn, *args, **kwargs).result()


def _next(gen: Iterator) -> Any:
    try:
        return next(gen)
    except StopIteration:
        return _DONE


def iterate(gen: Iterator) -> Iterator:
    """Yield ``gen``'s items, each one computed on the compute thread, one item ahead.

    The next item is submitted *before* this one is handed over, so the model keeps working while gradio
    sends (items are still computed one at a time, in order). So a generator must not change an object it
    has already yielded. Closing this iterator waits for the item in flight, drops it, and closes ``gen``
    on the compute thread."""
    if _inline():
        yield from gen
        return
    ctx = contextvars.copy_context()  # one context for the whole stream, entered once per item

    def submit():
        return _executor().submit(ctx.run, _next, gen)

    pending = submit()
    try:
        while True:
            fut, pending = pending, None
            item = fut.result()  # re-raises the generator's error here
            if item is _DONE:
                return
            pending = submit()  # compute the next item while the caller sends this one
            yield item
    finally:
        if pending is not None:  # the consumer stopped early: let the item in flight finish, drop it
            pending.exception()
        _executor().submit(ctx.run, gen.close).result()
