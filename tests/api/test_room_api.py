"""The lecture room through the app (issue 20): the viewer's Denoise goes through the replay cache, so a run
already done is replayed with identical frames, and two students pressing the same preset at once share one
computation and see the same frames. Counters are read from the app's runtime; no timing asserts."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from PIL import Image

import app
from tests.conftest import free_port

pytestmark = pytest.mark.api

MODEL = "toy-sd (bundled, 32 px)"


def _args(seed: int, steps: int = 12, prompt: str = "a blue square on a white background"):
    return (MODEL, prompt, "", "DDIM", steps, 0.0, seed, 4.0, False, None, 0.6)


@pytest.fixture(scope="module")
def room():
    from pipelines.runtime import Runtime

    runtime = Runtime.create("cpu")
    demo = app.build_app(runtime)
    demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                **app.launch_kwargs(demo))
    yield demo.local_url, runtime
    demo.close()


def _pixels(messages) -> list[np.ndarray]:
    """The x_t panel of every streamed message, as pixels."""
    return [np.asarray(Image.open(m[0]).convert("RGB")) for m in messages]


def _stream(client, args) -> list:
    job = client.submit(*args, api_name="/viewer_run")
    job.result()
    return job.outputs()


def test_a_run_done_before_is_replayed_with_identical_frames(room):
    from gradio_client import Client

    url, runtime = room
    cache = runtime.replay
    first = _stream(Client(url, verbose=False), _args(seed=41))
    misses, hits = cache.misses, cache.hits
    again = _stream(Client(url, verbose=False), _args(seed=41))  # another student, same inputs
    assert (cache.misses, cache.hits) == (misses, hits + 1)
    a, b = _pixels(first), _pixels(again)
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
    other = _stream(Client(url, verbose=False), _args(seed=42))  # another seed is another run
    assert cache.misses == misses + 1 and not np.array_equal(_pixels(other)[-1], a[-1])
    assert 0 < cache.bytes <= cache.max_bytes


def test_two_students_on_one_preset_share_one_run_and_see_the_same_frames(room):
    from gradio_client import Client

    url, runtime = room
    cache = runtime.replay
    clients = [Client(url, verbose=False) for _ in range(2)]
    before = (cache.misses, cache.coalesced, cache.hits)
    out, barrier = {}, threading.Barrier(2)

    def student(i):
        barrier.wait()
        out[i] = _stream(clients[i], _args(seed=77, steps=40))

    from pipelines.serving import compute_thread

    held, release = threading.Event(), threading.Event()  # hold the compute thread: both runs are in flight
    gate = threading.Thread(target=lambda: compute_thread.call(lambda: (held.set(), release.wait(120))))
    gate.start()
    assert held.wait(120)
    threads = [threading.Thread(target=student, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for _ in range(12000):
        if cache.coalesced > before[1]:
            break
        threading.Event().wait(0.01)
    release.set()
    for t in threads + [gate]:
        t.join(600)
    assert (cache.misses, cache.coalesced, cache.hits) == (before[0] + 1, before[1] + 1, before[2])  # computed once
    a, b = _pixels(out[0]), _pixels(out[1])
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
    assert "step 40 / 40" in out[0][-1][4] and "step 40 / 40" in out[1][-1][4]
