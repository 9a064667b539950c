"""Shared machinery of the training views ("Train your own" and its fine-tuning sub-tab): work in bounded
chunks on the compute thread (:mod:`pipelines.serving.compute_thread`), so other users' requests interleave
between chunks, and a first-come line for the global training slots (:mod:`pipelines.training.slots`)."""

from __future__ import annotations

import functools
import inspect
import time

import gradio as gr

from pipelines.serving import compute_thread
from pipelines.training.slots import SLOTS, ordinal

CHUNK_SECONDS = 0.4  # work per compute-thread call: another tab's request waits at most about this long


def compute(fn, *args, **kwargs):
    """``fn`` on the compute thread; a pipelines ``ValueError`` becomes a message for the user."""
    try:
        return compute_thread.call(fn, *args, **kwargs)
    except ValueError as e:
        raise gr.Error(str(e)) from e


def user_errors(fn):
    """Turn a ``ValueError`` (bad input, raised by pipelines.validation) into a ``gr.Error``. Unlike
    ``demos.common.user_errors`` the handler itself stays on gradio's worker thread (it waits for a
    training slot and paces the stream); only its chunks of work go to the compute thread."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen(*args):
            try:
                yield from fn(*args)
            except ValueError as e:
                raise gr.Error(str(e)) from e
        return gen

    @functools.wraps(fn)
    def plain(*args):
        try:
            return fn(*args)
        except ValueError as e:
            raise gr.Error(str(e)) from e
    return plain


def take_slot(ticket: int, n_outputs: int):
    """Yield "busy, you are n-th" updates (the message in the last of ``n_outputs``) until ``ticket`` may train."""
    while (pos := SLOTS.position(ticket)) > 0:
        msg = f"⏳ Training slots busy ({SLOTS.capacity} trainings running): you are {ordinal(pos)} in line."
        yield (gr.skip(),) * (n_outputs - 1) + (msg,)
        time.sleep(1.0)


def train_chunk(ticket: int, trainer, seconds: float, max_steps: int) -> None:
    """One chunk of training on the compute thread, then renew the training slot's lease."""
    compute(_train_for, trainer, seconds, max_steps)
    SLOTS.touch(ticket)


def _train_for(trainer, seconds: float, max_steps: int) -> None:
    """On the compute thread: train one step at a time for about ``seconds`` (at least one step)."""
    t0 = time.monotonic()
    while max_steps > 0:
        trainer.train(1)
        max_steps -= 1
        if time.monotonic() - t0 > seconds:
            break
