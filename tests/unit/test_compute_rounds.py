"""pipelines.serving.compute_thread as a round-robin scheduler: long work steps aside at checkpoints, so a
short request that arrives later finishes first; grad mode stays per request; the compute cap stops a request
with a clear message. No timing thresholds: the order of events is asserted."""

from __future__ import annotations

import threading

import pytest
import torch

from pipelines.serving import compute_thread


def _long(log: list, started: threading.Event, go_on: threading.Event, steps: int = 50):
    def body():
        started.set()
        go_on.wait(30)  # the short request is queued by now
        for i in range(steps):
            compute_thread.checkpoint()
            log.append(("long", i))
        return "long done"
    return body


def test_a_short_request_runs_between_the_steps_of_a_long_one():
    log, started, go_on = [], threading.Event(), threading.Event()
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("long", compute_thread.call(_long(log, started, go_on))))
    t.start()
    assert started.wait(30)
    short = threading.Thread(target=lambda: out.setdefault("short", compute_thread.call(lambda: log.append(("short",)))))
    short.start()
    while compute_thread.waiting() == 0:  # the short request is in line behind the running long one
        threading.Event().wait(0.01)
    go_on.set()
    t.join(60), short.join(60)
    assert out == {"long": "long done", "short": None}
    i = log.index(("short",))
    # it arrived during the long request's first turn, so it runs at that turn's end (the long one's first
    # checkpoint), not a turn later: requests that arrive during a turn go before the one that steps aside
    assert i == 0, log
    assert [e for e in log if e[0] == "long"] == [("long", k) for k in range(50)]  # its own order kept


def test_grad_mode_is_kept_per_request_across_switches():
    seen, started, go_on = {}, threading.Event(), threading.Event()

    def no_grad_job():
        with torch.no_grad():
            started.set()
            go_on.wait(30)
            for _ in range(5):
                compute_thread.checkpoint()
                seen.setdefault("no_grad", []).append(torch.is_grad_enabled())

    def grad_job():
        seen["grad"] = torch.is_grad_enabled()  # a fresh request starts in torch's default mode
        x = torch.ones(2, requires_grad=True)
        (x * 3).sum().backward()
        seen["g"] = x.grad.tolist()

    a = threading.Thread(target=compute_thread.call, args=(no_grad_job,))
    a.start()
    assert started.wait(30)
    b = threading.Thread(target=compute_thread.call, args=(grad_job,))
    b.start()
    while compute_thread.waiting() == 0:
        threading.Event().wait(0.01)
    go_on.set()
    a.join(60), b.join(60)
    assert seen["grad"] is True and seen["g"] == [3.0, 3.0]
    assert seen["no_grad"] == [False] * 5


def test_the_compute_cap_stops_a_request_with_a_clear_message(monkeypatch):
    monkeypatch.setenv("DL_MAX_REQUEST_SECONDS", "0")

    def forever():
        while True:
            torch.ones(1000).sum()
            compute_thread.checkpoint()

    with pytest.raises(compute_thread.ComputeLimitExceeded, match=r"more than 0 s of compute.*fewer steps"):
        compute_thread.call(forever)
    assert isinstance(compute_thread.ComputeLimitExceeded("x"), ValueError)  # shown to the user by user_errors
    monkeypatch.delenv("DL_MAX_REQUEST_SECONDS")
    assert compute_thread.call(lambda: 5) == 5  # the thread serves on


def test_a_stream_shares_one_budget(monkeypatch):
    monkeypatch.setenv("DL_MAX_REQUEST_SECONDS", "0")

    def gen():
        for i in range(1000):
            torch.ones(1000).sum()
            compute_thread.checkpoint()
            yield i

    got = []
    with pytest.raises(compute_thread.ComputeLimitExceeded):
        for i in compute_thread.iterate(gen()):
            got.append(i)
    assert len(got) < 1000
