"""A full queue answers at once with a clear "Queue is full", never a hang; the app recovers.

The 16-client load test itself is ``scripts/load_test.py`` (too slow for CI on 2 cores); here
its pieces are checked cheaply: the queue bound, and the script's own bookkeeping on a tiny run.
"""

from __future__ import annotations

import json

import httpx
import pytest

import app
from tests.conftest import free_port

pytestmark = pytest.mark.api

MODEL = "toy-sd (bundled, 32 px)"
SLOW = [MODEL, "a red circle on a white background", "", 5.0, 100, "DDIM", 0]  # 100 steps: seconds each


@pytest.fixture(scope="module")
def tiny_queue_url():
    from pipelines.runtime import Runtime

    demo = app.build_app(Runtime.create("cpu"), queue_max_size=1)
    demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                max_file_size=app.MAX_FILE_SIZE)
    yield demo.local_url
    demo.close()


def test_full_queue_is_refused_with_a_clear_message_not_a_hang(tiny_queue_url):
    from gradio_client import Client

    base = tiny_queue_url.rstrip("/") + "/gradio_api/call/guidance_generate"
    accepted, refused = [], []
    with httpx.Client(timeout=30) as h:
        for _ in range(4):  # one runs, one waits (max_size=1), the rest must be refused at once
            r = h.post(base, content=json.dumps({"data": SLOW}), headers={"content-type": "application/json"})
            (accepted if r.status_code == 200 else refused).append(r)
    assert refused, "a queue of size 1 accepted 4 slow jobs"
    for r in refused:
        assert r.status_code == 503 and "Queue is full" in r.json()["detail"], r.text
    # gradio_client users get the same clear message (QueueError), while the line is still full
    client = Client(tiny_queue_url, verbose=False)
    with pytest.raises(Exception, match="[Qq]ueue is full"):
        client.predict(*SLOW, api_name="/guidance_generate")
    # the accepted jobs complete, and afterwards the server serves normally
    for r in accepted:
        text = httpx.get(f"{base}/{r.json()['event_id']}", timeout=600).text
        assert "event: complete" in text, text[-300:]
    img, md = client.predict(MODEL, "a red circle", "", 5.0, 2, "DDIM", 0, api_name="/guidance_generate")
    assert "Done" in md


def test_load_script_small_run_has_no_failures_and_matches_serial(app_url, capsys):
    """Two clients, two requests each, through the real script (bookkeeping, serial comparison)."""
    from scripts import load_test

    rc = load_test.run(app_url, clients=2, duration=600, max_requests=2,
                       mix=["forward_load", "guidance_generate"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "failures       0" in out and "mismatches     0" in out and "requests       4" in out
    assert "latency p95" in out


def test_load_script_refuses_non_loopback():
    from scripts import load_test

    with pytest.raises(SystemExit, match="loopback"):
        load_test.check_loopback("http://example.com:7860/")
    load_test.check_loopback("http://127.0.0.1:7860/")
