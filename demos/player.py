"""Replay a recorded run in the big panels: ▶ Play, Pause, one step back or forward, at 2–20 steps/s.

Server side and model-free: Play is a generator event over frames a run already recorded in a
``gr.State`` (no recomputation); Pause cancels it. Frames are shown by the tab's own ``show(state, k)``
(1-based step ``k``), and the tab's scrubber follows, so scrubber, text and panels agree.
Used by the Denoising viewer, Inpainting and CLIP guidance tabs (UI only).
"""

from __future__ import annotations

import time
from typing import Callable

import gradio as gr

from pipelines import validation

MIN_FPS, MAX_FPS, DEFAULT_FPS = 2, 20, 8


def frames(show: Callable, count: Callable, state, speed, current):
    """Generator: ``show(state, k)`` for k = current+1 … n (from 1 when at the end), one per 1/speed s,
    each followed by k for the scrubber. ValueError before any run (no recorded frames)."""
    n = count(state)
    if not n:
        raise ValueError("Run it first: there is nothing recorded to play yet.")
    fps = validation.number("speed (steps per second)", speed, MIN_FPS, MAX_FPS)
    k = validation.integer("step", current if current is not None else n, 0, 10**6)
    start = 1 if k >= n or k < 1 else k + 1
    next_at = time.monotonic()
    for i in range(start, n + 1):
        yield (*show(state, i), i)
        next_at += 1.0 / fps  # a steady rate: the time spent sending counts towards the wait
        time.sleep(max(0.0, next_at - time.monotonic()))


def step_by(show: Callable, count: Callable, state, current, delta: int):
    """One step back (delta = -1) or forward (+1) from ``current``, clamped to 1 … n."""
    n = count(state)
    if not n:
        raise ValueError("Run it first: there is nothing recorded to play yet.")
    k = validation.integer("step", current if current is not None else n, 0, 10**6)
    k = min(max(k + delta, 1), n)
    return (*show(state, k), k)


def errors(fn):
    """ValueError -> gr.Error, in gradio's worker thread. Not via demos.common.user_errors: replaying runs no
    torch, so it must not sleep on the shared compute thread (and a handler that streams through the replay
    cache, whose followers wait, hands its own torch work there). gradio sees ``fn``'s hints (its request)."""
    import functools
    import inspect

    from demos.common import with_hints

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen(*a, **k):
            try:
                yield from fn(*a, **k)
            except ValueError as e:
                raise gr.Error(str(e)) from e
        return with_hints(gen, fn)

    @functools.wraps(fn)
    def plain(*a, **k):
        try:
            return fn(*a, **k)
        except ValueError as e:
            raise gr.Error(str(e)) from e
    return plain


def controls(prefix: str) -> dict:
    """The player's row (inside the caller's layout): buttons and the speed slider."""
    with gr.Row(elem_classes=["dl-player"], equal_height=False):
        play = gr.Button("▶ Play", size="sm", elem_id=f"{prefix}-play", min_width=80)
        pause = gr.Button("Pause", size="sm", elem_id=f"{prefix}-pause", min_width=70)
        back = gr.Button("◀ Step", size="sm", elem_id=f"{prefix}-back", min_width=70)
        fwd = gr.Button("Step ▶", size="sm", elem_id=f"{prefix}-fwd", min_width=70)
        speed = gr.Slider(MIN_FPS, MAX_FPS, value=DEFAULT_FPS, step=1, label="speed (steps/s)", container=False,
                          show_label=True,
                          elem_id=f"{prefix}-speed", min_width=160, buttons=[])
    return {"play": play, "pause": pause, "back": back, "fwd": fwd, "speed": speed}


def wire(c: dict, prefix: str, show: Callable, count: Callable, state, scrubber, outputs: list) -> None:
    """Events of the player ``c``: ``outputs`` are what ``show`` returns, then the scrubber."""
    import functools

    outs = [*outputs, scrubber]
    ev = c["play"].click(errors(functools.partial(frames, show, count)), [state, c["speed"], scrubber], outs,
                         api_name=f"{prefix}_play", show_progress="hidden", concurrency_limit=None)
    c["pause"].click(None, None, None, cancels=[ev], api_visibility="private")
    for btn, d in ((c["back"], -1), (c["fwd"], 1)):
        btn.click(errors(functools.partial(step_by, show, count, delta=d)), [state, scrubber], outs,
                  cancels=[ev], api_visibility="private", show_progress="hidden", concurrency_limit=None)
