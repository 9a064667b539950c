"""One thread runs every request's torch work on CPU, with its own thread count.

Why. A web server calls handlers from a pool of worker threads, and that costs PyTorch on CPU
twice over:

* PyTorch's CPU wheels use GNU OpenMP (libgomp). Every thread that runs a parallel torch op gets its
  own OpenMP pool, and once the pools together hold more threads than there are cores, libgomp stops
  spinning between parallel regions ("throttled" spin) and puts its workers to sleep after every op.
  On 2 cores that made small ops (group norm, a 512x64 matmul, GELU) 4-6x slower in a worker thread
  as soon as the main thread (which builds the UI) had run one parallel op. ``OMP_WAIT_POLICY=ACTIVE``
  does not lift it.
* An OpenMP team that spans every core stalls at each barrier when one of its threads is preempted,
  and a streaming app always has other work on those cores: gradio's event loop, the file requests
  for each streamed frame and, on a laptop, the browser.

So handlers hand their body to :func:`call` / :func:`iterate`, which run it on one long-lived thread
and block until it returns. That thread uses :func:`default_threads` (all cores but one; 1 on a
2-core Space) and the app's main thread gives up its own pool with :func:`keep_this_thread_serial`
before it builds the UI. ``scripts/benchmark.py --only viewer`` measures a streamed run through the
app both ways (``DL_COMPUTE_THREAD=0`` is the old behaviour) against a bare loop.

Generators are advanced one item at a time, one item ahead of the consumer (:func:`iterate`), so a
streaming run and another user's quick request interleave step by step. Calls made from the compute
thread itself run inline (no deadlock when a handler calls another). The request's ``contextvars``
(gradio's request and progress tracking)
travel with each call.

This is a process resource (like the model cache), not per-user state: it holds no request data
between calls. Turn it off with :func:`enable` (``False``) where threads do not share CPU cores
(GPU serving), and the handlers run in the caller's thread as before.
"""

from __future__ import annotations

import contextvars
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterator

import torch


def default_threads() -> int:
    """Torch threads for the compute thread: ``DL_TORCH_THREADS``, else all cores but one.

    The spare core serves the web page (see the module docstring). On 2 cores, a 50-step run streamed
    to a client that fetches every frame spent 2.9-4.1 s in the UNet with 2 threads and 2.1-2.4 s
    with 1 (one-off runs of the same seed; the benchmark has the side-by-side rows). It still holds
    with the traced UNet, whose forward runs without the GIL: a streamed 50-step run took 1.85 s in
    the app with 2 threads vs 1.64 s with 1, although a bare loop on an idle machine is faster with 2
    (1.11 vs 1.59 s): ``scripts/benchmark.py --only viewer``, rows "streamed through the app"."""
    env = os.environ.get("DL_TORCH_THREADS", "").strip()
    if env:
        return max(1, int(env))
    return max(1, torch.get_num_threads() - 1)


_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dl-compute")
_state = {"enabled": True, "thread": None, "threads": default_threads()}
_DONE = object()


def threads() -> int:
    """The compute thread's torch thread count."""
    return _state["threads"]


def enable(on: bool) -> None:
    """Route handlers through the compute thread (``True``, the default) or run them inline."""
    _state["enabled"] = bool(on)


def _start() -> None:
    """On the compute thread: set its torch thread count now, and run one parallel op so
    PyTorch's lazy per-thread set-up happens here and then (it copies the *global* count, which
    :func:`keep_this_thread_serial` later lowers to 1 for the main thread)."""
    _state["thread"] = threading.current_thread()
    torch.set_num_threads(_state["threads"])
    torch.zeros(1 << 17).add_(1.0)  # above ATen's grain size (32768): a parallel region, the pool starts


def keep_this_thread_serial() -> None:
    """Run the calling thread's torch ops on one core (no OpenMP pool of its own).

    Call it on the main thread of a server before it touches torch (``app.main`` does), so that the
    compute thread's pool is the only one and stays fast. The compute thread keeps its own count."""
    if threading.current_thread() is not _state["thread"]:
        torch.set_num_threads(1)


_executor.submit(_start).result()


def _inline() -> bool:
    return not _state["enabled"] or threading.current_thread() is _state["thread"]


def call(fn: Callable[..., Any], *args, **kwargs) -> Any:
    """``fn(*args, **kwargs)`` on the compute thread (in a copy of the caller's context)."""
    if _inline():
        return fn(*args, **kwargs)
    ctx = contextvars.copy_context()
    return _executor.submit(ctx.run, fn, *args, **kwargs).result()


def _next(gen: Iterator) -> Any:
    try:
        return next(gen)
    except StopIteration:
        return _DONE


def iterate(gen: Iterator) -> Iterator:
    """Yield ``gen``'s items, each one computed on the compute thread, one item ahead.

    Gradio drives a streaming handler as "get the next item, post-process and send it, then ask
    again", so with items computed only on demand the compute thread sat idle while every message
    went out (the PNG hand-off, the JSON, the event loop's turn). Here the next item is submitted
    *before* this one is handed over, so the model keeps working while gradio sends. Measured
    with ``scripts/benchmark.py --only viewer`` (row "streamed through the app"). The look-ahead is
    one item: items are still computed one at a time and in order, and another request's work
    queues behind at most one of them. Because the next item is computed while this one is being
    sent, a generator must not change an object it has already yielded (the tabs yield fresh
    paths, strings, lists and figures).

    Closing this iterator (the client left, the user pressed Stop) waits for the item in flight,
    drops it, and closes ``gen`` on the compute thread."""
    if _inline():
        yield from gen
        return
    ctx = contextvars.copy_context()  # one context for the whole stream, entered once per item

    def submit():
        return _executor.submit(ctx.run, _next, gen)

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
        _executor.submit(ctx.run, gen.close).result()
