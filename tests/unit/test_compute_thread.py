"""pipelines.serving.compute_thread: handlers' torch work runs on one thread, generators step by step there."""

from __future__ import annotations

import contextvars
import threading

import pytest
import torch

from pipelines.serving import compute_thread

REQUEST = contextvars.ContextVar("request", default=None)


def test_call_runs_on_the_compute_thread_with_the_callers_context_and_errors():
    token = REQUEST.set("user-42")
    try:
        name, seen = compute_thread.call(lambda: (threading.current_thread().name, REQUEST.get()))
    finally:
        REQUEST.reset(token)
    assert name.startswith("dl-compute") and name != threading.current_thread().name
    assert seen == "user-42"  # gradio's request / progress context travels with the call
    with pytest.raises(ValueError, match="bad input"):
        compute_thread.call(lambda: (_ for _ in ()).throw(ValueError("bad input")))
    # a handler that calls another handler runs it inline instead of waiting on itself
    assert compute_thread.call(lambda: compute_thread.call(lambda: 7)) == 7


def test_iterate_advances_the_generator_there_and_closes_it():
    threads, closed = [], threading.Event()

    def gen():
        try:
            for i in range(5):
                threads.append(threading.current_thread().name)
                yield i
        finally:
            closed.set()

    assert list(compute_thread.iterate(gen())) == list(range(5))
    assert all(n.startswith("dl-compute") for n in threads)
    threads.clear()
    closed.clear()
    stream = compute_thread.iterate(gen())
    assert next(stream) == 0 and next(stream) == 1
    stream.close()  # the client left: the sampling generator is closed, on the compute thread
    assert closed.is_set() and len(threads) == 3  # two consumed, one computed ahead and dropped


def test_iterate_computes_the_next_item_while_the_consumer_holds_this_one():
    started = [threading.Event() for _ in range(3)]

    def gen():
        for i in range(3):
            started[i].set()
            yield i

    stream = compute_thread.iterate(gen())
    assert next(stream) == 0
    # gradio is now post-processing and sending item 0; item 1 is already being computed
    assert started[1].wait(timeout=30)
    assert not started[2].is_set()  # one item ahead, no more
    assert list(stream) == [1, 2]


def test_iterate_raises_a_mid_stream_error_after_the_items_before_it():
    def gen():
        yield 0
        yield 1
        raise ValueError("bad step")

    got = []
    with pytest.raises(ValueError, match="bad step"):
        for item in compute_thread.iterate(gen()):
            got.append(item)
    assert got == [0, 1]


def test_thread_counts(monkeypatch):
    n0 = compute_thread.call(torch.get_num_threads)
    assert n0 >= 1
    monkeypatch.setenv("DL_TORCH_THREADS", "3")
    assert compute_thread.default_threads() == 3
    monkeypatch.delenv("DL_TORCH_THREADS")
    assert compute_thread.default_threads() == max(1, torch.get_num_threads() - 1)

    before = torch.get_num_threads()

    def serial_then_count():
        compute_thread.keep_this_thread_serial()
        n = torch.get_num_threads()
        torch.set_num_threads(before)  # set_num_threads also sets the default of threads started later
        return n

    worker = []
    t = threading.Thread(target=lambda: worker.append(serial_then_count()))
    t.start()
    t.join()
    assert worker == [1]  # that thread gave up its cores...
    assert compute_thread.call(torch.get_num_threads) == n0  # ...the compute thread did not


def test_disabled_runs_inline():
    compute_thread.enable(False)
    try:
        assert compute_thread.call(lambda: threading.current_thread()) is threading.current_thread()
        assert list(compute_thread.iterate(iter([threading.current_thread()]))) == [threading.current_thread()]
    finally:
        compute_thread.enable(True)
