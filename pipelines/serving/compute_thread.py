"""One thread runs every request's torch work on CPU, round robin between requests, step by step.

Why one thread: a web server calls handlers from a pool of worker threads. PyTorch's CPU wheels use GNU
OpenMP; every thread that runs a parallel op gets its own pool, and once the pools hold more threads than
there are cores, libgomp puts its workers to sleep after every op (small ops became 4-6x slower on 2
cores); a team spanning every core also stalls whenever one of its threads is preempted by the web server.
So handlers hand their body to :func:`call` / :func:`iterate`, which run it on one long-lived thread with
:func:`default_threads` (all cores but one), and the main thread gives up its own pool with
:func:`keep_this_thread_serial`. Figures: ``docs/measurements.md`` and ``scripts/benchmark.py --only viewer``.

Why round robin: one long request (eight samples of 100 steps) must not hold that thread for minutes while
a 0.1 s slider update waits. Each request runs in its own greenlet (a coroutine with its own stack, on the
compute thread), and long work calls :func:`checkpoint` between steps (``DiffusionModel.predict`` does, once
per UNet call): when other requests are waiting, the request steps aside and the scheduler resumes the next
one, first come first served, so every request advances one step per turn. No code has to be rewritten as
a generator for this; the grad mode (thread-local in torch) is saved and restored around each switch.

Limits: a request may use at most :func:`max_request_seconds` of compute: the process's CPU seconds while
it had its turns (not time it waited, and not inflated when other programs load the machine; a stream's
items share one budget). Past it, its next checkpoint raises :class:`ComputeLimitExceeded` (a ValueError,
so the user sees the message).

Generators are advanced one item ahead of the consumer (:func:`iterate`), so a streaming run and another
user's quick request interleave step by step. Calls made from the compute thread itself run inline. The
request's ``contextvars`` travel with each call. The thread starts on first use, not at import.

Step-level batching (the lecture room, issue 20): a no-grad model call goes through :func:`batched` instead
of a plain checkpoint. When other requests are waiting, the request parks there with its inputs; when the
first parked request of a *group* (same model, same kind of call, same per-sample shapes) comes to the head
of the line, the thread stacks the inputs of every request parked in that group (up to :func:`max_batch`
images; per-sample timesteps and text features, CFG pairs included), runs one forward and hands each request
its slice; each then resumes in its own turn, so round robin is kept. Calls that need gradients, other
models and attention recording run alone in their turn. The forward runs in chunks padded to a power of
two (at most :func:`batch_chunk` images): a handful of fixed shapes, one traced graph each. A sample's
output depends on its company only through float rounding (max |diff| ~1e-6 per call; the final image of a
30-step run within 1/255 of the same run alone: README "Determinism"). ``DL_STEP_BATCHING=0`` turns the
stacking off (every call alone in its turn), for comparison.

A process resource (like the model cache), not per-user state. :func:`enable` (``False``) runs handlers in
the caller's thread instead (GPU serving).
"""

from __future__ import annotations

import collections
import contextvars
import functools
import os
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable, Iterator

import greenlet
import torch

DEFAULT_MAX_REQUEST_SECONDS = 300.0
DEFAULT_MICRO_BATCH = 8
DEFAULT_MAX_BATCH = 32  # images in one stacked forward: 16 CFG runs, ~0.5 s on one core (a turn stays short)
DEFAULT_BATCH_CHUNK = 16  # images per padded chunk of a stacked forward (scripts/bench_room.py: the curve is flat past 8)


class ComputeLimitExceeded(ValueError):
    """A request used more compute time than :func:`max_request_seconds` allows."""


def default_threads() -> int:
    """Torch threads for the compute thread: ``DL_TORCH_THREADS``, else all cores but one (the spare
    core serves the web page)."""
    env = os.environ.get("DL_TORCH_THREADS", "").strip()
    if env:
        return max(1, int(env))
    return max(1, torch.get_num_threads() - 1)


_WHOLE_BATCHES: contextvars.ContextVar[bool] = contextvars.ContextVar("dl_whole_batches", default=False)


def micro_batch() -> int:
    """Images per UNet call between two turns: ``DL_MICRO_BATCH``, else 8. Larger calls are split
    (``DiffusionModel.predict``), so one turn of a heavy request stays short; not inside :func:`whole_batches`."""
    if _WHOLE_BATCHES.get():
        return 1 << 30
    env = os.environ.get("DL_MICRO_BATCH", "").strip()
    return max(1, int(env)) if env else DEFAULT_MICRO_BATCH


class whole_batches:
    """``with whole_batches():`` UNet calls in this context are not split into micro-batches. Attention
    recording and editing (:mod:`pipelines.attention.maps`) need each call's whole [uncond, cond] batch."""

    def __enter__(self):
        self._token = _WHOLE_BATCHES.set(True)

    def __exit__(self, *exc):
        _WHOLE_BATCHES.reset(self._token)


def max_request_seconds() -> float:
    """CPU seconds one request may use: ``DL_MAX_REQUEST_SECONDS``, else 300 (the heaviest request inside
    the UI's ranges, the guidance trade-off at 8 x 100 steps, needs about a third of that on 2 cores)."""
    env = os.environ.get("DL_MAX_REQUEST_SECONDS", "").strip()
    return float(env) if env else DEFAULT_MAX_REQUEST_SECONDS


def batching_enabled() -> bool:
    """Whether waiting requests' model calls are stacked (``DL_STEP_BATCHING``, default on)."""
    return os.environ.get("DL_STEP_BATCHING", "1").strip() != "0"


def max_batch() -> int:
    """Images in one stacked forward at most (``DL_MAX_BATCH``, default 32): the global cap on batch size; the
    requests beyond it are stacked in the next forward."""
    env = os.environ.get("DL_MAX_BATCH", "").strip()
    return max(1, int(env)) if env else DEFAULT_MAX_BATCH


def batch_chunk() -> int:
    """Images per chunk of a stacked forward (``DL_BATCH_CHUNK``, default 16); a power of two."""
    env = os.environ.get("DL_BATCH_CHUNK", "").strip()
    n = max(1, int(env)) if env else DEFAULT_BATCH_CHUNK
    return 1 << (n.bit_length() - 1)


class _Budget:
    """Compute seconds used by one request (the items of a stream share one)."""

    def __init__(self) -> None:
        self.used = 0.0
        self.cap = max_request_seconds()


class _Call:
    """A model call parked by :func:`batched`: its group, inputs, the function, and (once run) its output."""

    __slots__ = ("group", "x", "t", "emb", "run", "out", "error", "done")

    def __init__(self, group: tuple, x: torch.Tensor, t: torch.Tensor, emb: torch.Tensor, run: Callable) -> None:
        self.group, self.x, self.t, self.emb, self.run = group, x, t, emb, run
        self.out: torch.Tensor | None = None
        self.error: BaseException | None = None
        self.done = False


class _Job:
    __slots__ = ("fn", "ctx", "future", "budget", "glet", "t_in", "call")

    def __init__(self, fn: Callable[[], Any], ctx: contextvars.Context, budget: _Budget) -> None:
        self.fn, self.ctx, self.budget = fn, ctx, budget
        self.future: Future = Future()
        self.glet: greenlet.greenlet | None = None
        self.t_in = 0.0
        self.call: _Call | None = None  # parked at a model call (batched), waiting for the stacked forward


_state: dict[str, Any] = {"enabled": True, "thread": None, "hub": None, "current": None}
_start_lock = threading.Lock()
_cond = threading.Condition()
_incoming: collections.deque[_Job] = collections.deque()  # submitted, not yet seen by the scheduler
_ready: collections.deque[_Job] = collections.deque()  # started or not, waiting for their turn
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


def _run_job(job: _Job) -> None:
    """A job's greenlet body: run it in its context, hand the result or the error to its future."""
    torch.set_grad_enabled(True)  # a fresh request starts in torch's default mode, whatever ran before
    try:
        result = job.ctx.run(job.fn)
    except BaseException as e:  # noqa: BLE001 - delivered to the waiting caller
        job.future.set_exception(e)
    else:
        job.future.set_result(result)


def _scheduler(threads: int, started: threading.Event) -> None:
    """The compute thread: run jobs round robin, each until it finishes or steps aside at a checkpoint."""
    _start(threads)
    hub = _state["hub"] = greenlet.getcurrent()
    started.set()
    while True:
        with _cond:
            while not _incoming and not _ready:
                _cond.wait()
            _ready.extend(_incoming)
            _incoming.clear()
        job = _ready.popleft()
        if job.call is not None and not job.call.done:
            _run_group(job)
        if job.glet is None:
            job.glet = greenlet.greenlet(functools.partial(_run_job, job), parent=hub)
        _state["current"] = job
        job.t_in = time.process_time()
        job.glet.switch()
        job.budget.used += time.process_time() - job.t_in
        _state["current"] = None
        if not job.glet.dead:
            with _cond:  # requests that arrived during its turn are waiting now too: they go first
                _ready.extend(_incoming)
                _incoming.clear()
            _ready.append(job)  # its next turn comes after everyone waiting now


def _pad_rows(x: torch.Tensor, n: int) -> torch.Tensor:
    """``x`` ``[b, ...]`` -> ``[n, ...]`` with its last row repeated (rows are independent samples)."""
    return x if x.shape[0] == n else torch.cat([x, x[-1:].expand(n - x.shape[0], *x.shape[1:])])


def _forward(run: Callable, x: torch.Tensor, t: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
    """``run`` on ``[B, ...]`` inputs in chunks of at most :func:`batch_chunk` rows, each padded up to a power
    of two (a few fixed shapes: one traced graph each, and fewer distinct kernels' blockings)."""
    size, outs = batch_chunk(), []
    for i in range(0, x.shape[0], size):
        xs, ts, es = x[i:i + size], t[i:i + size], emb[i:i + size]
        b = xs.shape[0]
        n = min(size, 1 << (b - 1).bit_length())
        outs.append(run(_pad_rows(xs, n), _pad_rows(ts, n), _pad_rows(es, n))[:b])
    return outs[0] if len(outs) == 1 else torch.cat(outs)


def _run_group(head: _Job) -> None:
    """On the compute thread: one stacked forward for ``head``'s parked call and every waiting call of its group
    (in line order, up to :func:`max_batch` images); each call gets its slice, or the error. The CPU time is
    charged to the requests' budgets in proportion to their images."""
    group, cap = head.call.group, max_batch()
    members, images = [head.call], head.call.x.shape[0]
    for j in _ready:
        c = j.call
        if c is not None and not c.done and c.group == group and images + c.x.shape[0] <= cap:
            members.append(c)
            images += c.x.shape[0]
    sizes = [c.x.shape[0] for c in members]
    t0 = time.process_time()
    try:
        with torch.no_grad():
            out = _forward(head.call.run, torch.cat([c.x for c in members]),
                           torch.cat([c.t.expand(c.x.shape[0]) for c in members]),
                           torch.cat([c.emb for c in members]))
        for c, part in zip(members, out.split(sizes)):
            c.out = part
    except Exception as e:  # noqa: BLE001 - every request of the batch sees it at its call
        for c in members:
            c.error = e
    dt = time.process_time() - t0
    by_call = {id(j.call): j for j in (head, *_ready) if j.call is not None}
    for c, b in zip(members, sizes):
        c.done = True
        by_call[id(c)].budget.used += dt * b / images


def _ensure_started() -> None:
    with _start_lock:
        if _state["hub"] is None:
            started = threading.Event()
            threading.Thread(target=_scheduler, args=(default_threads(), started), name="dl-compute-0",
                             daemon=True).start()
            started.wait()


def keep_this_thread_serial() -> None:
    """Run the calling thread's torch ops on one core (no OpenMP pool of its own).

    Call it on the main thread of a server before it touches torch (``app.main`` does). The compute
    thread is started first, so it keeps its own count."""
    _ensure_started()
    if threading.current_thread() is not _state["thread"]:
        torch.set_num_threads(1)


def _inline() -> bool:
    return not _state["enabled"] or threading.current_thread() is _state["thread"]


def _submit(fn: Callable[[], Any], ctx: contextvars.Context, budget: _Budget) -> Future:
    _ensure_started()
    job = _Job(fn, ctx, budget)
    with _cond:
        _incoming.append(job)
        _cond.notify()
    return job.future


def checkpoint() -> None:
    """Between two steps of long work: let the other waiting requests run one step each, then continue.

    Raises :class:`ComputeLimitExceeded` once this request has used more than its compute budget.
    A no-op outside a scheduled request (inline mode, other threads, tests)."""
    job = _scheduled_job()
    if job is None or not (_incoming or _ready):
        return
    _step_aside()


def _scheduled_job() -> _Job | None:
    """The request running now, when called from its own greenlet on the compute thread (budget checked)."""
    job = _state["current"]
    if job is None or threading.current_thread() is not _state["thread"] or greenlet.getcurrent() is not job.glet:
        return None
    used = job.budget.used + time.process_time() - job.t_in
    if used > job.budget.cap:
        raise ComputeLimitExceeded(
            f"This request used more than {job.budget.cap:.0f} s of compute and was stopped so that others get "
            f"their turn; try fewer steps or samples.")
    return job


def _step_aside() -> None:
    """Give the turn back to the scheduler; resume here (in this request's grad mode) on the next turn."""
    grad = torch.is_grad_enabled()
    _state["hub"].switch()
    torch.set_grad_enabled(grad)


def batched(group: Any, run: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor,
            t: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
    """A no-grad model call that may be stacked with other requests' calls of the same ``group``.

    ``run(x, t, emb)``: the model on ``x`` ``[B, ...]``, timesteps ``t`` ``[B]`` and text features ``emb``
    ``[B, L, D]`` -> ``[B, ...]``, row by row independent. ``t`` may be 0-d (one timestep for the call).
    When no other request waits (or outside a scheduled request, or with ``DL_STEP_BATCHING=0``) it is a
    :func:`checkpoint` and ``run`` on this call's inputs alone; else the request parks here and gets its rows of
    the next stacked forward of its group (module docstring). Raises the forward's error, or
    :class:`ComputeLimitExceeded`."""
    job = _scheduled_job()
    if job is None or not (_incoming or _ready) or not batching_enabled():
        checkpoint()
        return run(x, t, emb)
    key = (group, tuple(x.shape[1:]), x.dtype, tuple(emb.shape[1:]), emb.dtype, t.dtype)
    job.call = call = _Call(key, x, t.reshape(-1) if t.dim() else t.reshape(1), emb, run)
    try:
        _step_aside()
    finally:
        job.call = None
    if not call.done:  # only the scheduler resumes a parked request, after its forward
        raise RuntimeError("a parked model call was resumed before its forward ran")
    if call.error is not None:
        raise call.error
    return call.out


def waiting() -> int:
    """Requests waiting for a turn on the compute thread (for logs and tests)."""
    return len(_incoming) + len(_ready)


def call(fn: Callable[..., Any], *args, **kwargs) -> Any:
    """``fn(*args, **kwargs)`` on the compute thread (in a copy of the caller's context)."""
    if _inline():
        return fn(*args, **kwargs)
    ctx = contextvars.copy_context()
    return _submit(functools.partial(fn, *args, **kwargs), ctx, _Budget()).result()


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
    on the compute thread. All items share one compute budget."""
    if _inline():
        yield from gen
        return
    ctx = contextvars.copy_context()  # one context for the whole stream, entered once per item
    budget = _Budget()

    def submit():
        return _submit(functools.partial(_next, gen), ctx, budget)

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
        _submit(gen.close, ctx, budget).result()
