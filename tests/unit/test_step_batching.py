"""Step-level batching on the compute thread (issue 20): waiting runs' UNet calls are stacked into one forward,
each run gets what it gets alone (within the stated 1/255 bound), round robin and cancellation keep working.
The order of events is asserted, never a duration."""

from __future__ import annotations

import threading

import pytest
import torch

from pipelines.diffusion import loop
from pipelines.models import ModelRegistry
from pipelines.serving import compute_thread

PROMPTS = ["a red circle on a navy background", "a large yellow star on a black background",
           "a small cyan triangle on a white background", "a pink cross on a gray background"]


@pytest.fixture(scope="module")
def model():
    return ModelRegistry().diffusion()


def _sample(model, prompt: str, seed: int, steps: int = 8, log: list | None = None, name: str = ""):
    def body():
        out = None
        for rec in loop.sample_steps(model, prompt, num_inference_steps=steps, guidance_scale=4.0,
                                     generator=torch.Generator().manual_seed(seed), preview="none"):
            if log is not None:
                log.append((name, rec.index))
            out = rec.image
        if log is not None:
            log.append((name, "done"))
        return out
    return body


def _gate():
    """Hold the compute thread until released, so that the runs submitted meanwhile all wait together."""
    held, release = threading.Event(), threading.Event()
    t = threading.Thread(target=lambda: compute_thread.call(lambda: (held.set(), release.wait(60))))
    t.start()
    assert held.wait(60)
    return t, release


def _wait_for(n: int) -> None:
    for _ in range(6000):
        if compute_thread.waiting() >= n:
            return
        threading.Event().wait(0.01)
    raise AssertionError("the runs never queued")


def _spy_forward(monkeypatch) -> list:
    sizes, real = [], compute_thread._forward

    def spy(run, x, t, emb):
        sizes.append(x.shape[0])
        return real(run, x, t, emb)

    monkeypatch.setattr(compute_thread, "_forward", spy)
    return sizes


def test_stacked_runs_get_each_what_they_get_alone(model, monkeypatch):
    alone = [_sample(model, p, seed)() for seed, p in enumerate(PROMPTS)]
    sizes = _spy_forward(monkeypatch)
    gate, release = _gate()
    out = {}
    threads = [threading.Thread(target=lambda i=i, p=p: out.setdefault(i, compute_thread.call(_sample(model, p, i))))
               for i, p in enumerate(PROMPTS)]
    for t in threads:
        t.start()
    _wait_for(len(PROMPTS))
    release.set()
    for t in threads + [gate]:
        t.join(120)
    assert max(sizes) == 2 * len(PROMPTS)  # the four CFG pairs went through one forward
    for i, ref in enumerate(alone):
        levels = float((out[i] - ref).abs().max()) / 2 * 255  # [-1, 1] -> 0..255
        assert levels <= 1.0, (i, levels)  # README "Determinism": within 1/255 of the run alone
        assert not torch.equal(out[i], alone[(i + 1) % len(alone)])  # and each got its own slice


def test_with_batching_off_every_call_runs_alone(model, monkeypatch):
    monkeypatch.setenv("DL_STEP_BATCHING", "0")
    sizes = _spy_forward(monkeypatch)
    gate, release = _gate()
    threads = [threading.Thread(target=lambda p=p: compute_thread.call(_sample(model, p, 0, steps=3))) for p in PROMPTS[:2]]
    for t in threads:
        t.start()
    _wait_for(2)
    release.set()
    for t in threads + [gate]:
        t.join(120)
    assert sizes == []


def test_the_global_cap_bounds_the_batch(model, monkeypatch):
    monkeypatch.setenv("DL_MAX_BATCH", "4")
    sizes = _spy_forward(monkeypatch)
    gate, release = _gate()
    threads = [threading.Thread(target=lambda i=i, p=p: compute_thread.call(_sample(model, p, i, steps=3)))
               for i, p in enumerate(PROMPTS)]
    for t in threads:
        t.start()
    _wait_for(len(PROMPTS))
    release.set()
    for t in threads + [gate]:
        t.join(120)
    assert sizes and max(sizes) == 4


def test_a_short_run_finishes_before_a_long_one_that_started_earlier(model):
    log = []
    long = threading.Thread(target=lambda: compute_thread.call(_sample(model, PROMPTS[0], 0, 40, log, "long")))
    long.start()
    for _ in range(6000):  # the long run is under way
        if ("long", 2) in log:
            break
        threading.Event().wait(0.01)
    short = threading.Thread(target=lambda: compute_thread.call(_sample(model, PROMPTS[1], 1, 3, log, "short")))
    short.start()
    long.join(120), short.join(120)
    assert log.index(("short", "done")) < log.index(("long", "done")), log
    shorts = [i for i, e in enumerate(log) if e[0] == "short"]
    assert any(e[0] == "long" for e in log[shorts[0]:shorts[-1]])  # interleaved step by step, not run to the end


def test_a_closed_stream_frees_its_slot_and_the_other_runs_go_on(model):
    closed, closed_on = threading.Event(), []

    def stream(prompt, seed):
        try:
            for rec in loop.sample_steps(model, prompt, num_inference_steps=30, guidance_scale=4.0,
                                         generator=torch.Generator().manual_seed(seed), preview="none"):
                yield rec.index
        finally:
            closed_on.append(threading.current_thread().name)
            closed.set()

    other = {}
    b = threading.Thread(target=lambda: other.setdefault("b", compute_thread.call(_sample(model, PROMPTS[1], 1, 20))))
    a = compute_thread.iterate(stream(PROMPTS[0], 0))
    b.start()
    assert next(a) == 0
    a.close()  # the tab closed
    assert closed.is_set() and closed_on[0].startswith("dl-compute")  # closed there at once, not by the GC here
    b.join(120)
    assert other["b"].shape == (1, 3, 32, 32)
    for _ in range(500):
        if compute_thread.waiting() == 0:
            break
        threading.Event().wait(0.01)
    assert compute_thread.waiting() == 0  # nothing of the closed run is left in line
    assert compute_thread.call(lambda: 5) == 5


def test_an_error_in_a_stacked_forward_reaches_every_run_of_it_and_the_thread_goes_on(model, monkeypatch):
    def broken(run, x, t, emb):
        raise RuntimeError("out of memory (simulated)")

    monkeypatch.setattr(compute_thread, "_forward", broken)
    gate, release = _gate()
    errors = {}

    def run(i):
        try:
            compute_thread.call(_sample(model, PROMPTS[i], i, steps=3))
        except RuntimeError as e:
            errors[i] = str(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    _wait_for(2)
    release.set()
    for t in threads + [gate]:
        t.join(120)
    assert errors == {0: "out of memory (simulated)", 1: "out of memory (simulated)"}
    monkeypatch.undo()
    assert compute_thread.call(_sample(model, PROMPTS[0], 0, steps=2)).shape == (1, 3, 32, 32)
