"""A hostile client against the serving layer (issue 19): many sessions, huge decodes through every image
input (the editor's background, layers and composite included), the editor's blob endpoint, the queue,
uploads, private endpoints and headers. API level; memory bounds are asserted on this process's RSS (the
app runs in it), no timing thresholds.

Stated bounds (the figures behind them: ``scripts/abuse.py``, README "Hardening"):
* SESSIONS fresh sessions loading a 512 px image on the Forward tab raise RSS by <= SESSIONS_RSS_BOUND;
* one small-file 8000x5000 RGBA PNG through any image input peaks <= DECODE_PEAK_BOUND above the level
  before the call (one full decode holds 160 MB; the old path made several full-size copies: +1.3 GB);
* blob abuse answers 4xx and grows RSS by <= BLOB_RSS_BOUND.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from tests.images_helpers import small_file_png
from tests.api.test_hostile import raw_call, real_png_bomb, uploaded

pytestmark = pytest.mark.api

MODEL = "toy-sd (bundled, 32 px)"
P = "a red circle on a white background"
MB = 1e6
SESSIONS, SESSIONS_RSS_BOUND = 150, 300 * MB
DECODE_PEAK_BOUND = 500 * MB
BLOB_RSS_BOUND = 200 * MB


def _rss() -> int:
    return psutil.Process().memory_info().rss


def _settle() -> int:
    from pipelines.serving import heap

    heap.trim()
    return _rss()


def _peak_during(fn) -> tuple[object, float]:
    """(fn's result or exception, peak RSS above the level before), RSS sampled every 5 ms."""
    before, peak, stop = _settle(), [0], threading.Event()

    def watch():
        while not stop.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.005)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    try:
        out = fn()
    except Exception as e:  # noqa: BLE001 - a clear refusal is fine here; the memory is what is measured
        out = e
    stop.set()
    t.join()
    return out, max(peak[0], _rss()) - before


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("serving")
    Image.new("RGBA", (256, 256), (250, 250, 250, 255)).save(d / "small.png")
    return {"big": str(small_file_png(d / "big.png", 8000, 5000, 6)), "small": str(d / "small.png"),
            "bomb": str(real_png_bomb(d / "bomb.png"))}


def _editor(bg=None, layer=None, composite=None) -> dict:
    return {"background": handle_file(bg) if bg else None, "layers": [handle_file(layer)] if layer else [],
            "composite": handle_file(composite) if composite else None}


def test_many_fresh_sessions_keep_memory_bounded(app_url):
    """Each ``/gradio_api/call`` is a fresh session (its own gr.State), as a script opening new sessions.
    (gradio's own session record held every component's config, ~1.2 MB each: demos/guard.compact_session_state.)"""
    from demos.common import sample_paths

    img = uploaded(app_url, sample_paths()[0])
    assert "event: complete" in raw_call(app_url, "forward_load", [img, 0, 512, "linear", 10])  # warm-up
    start = _settle()
    for i in range(SESSIONS):
        text = raw_call(app_url, "forward_load", [img, i, 512, "linear", 10])
        assert "event: complete" in text, text[-300:]
    growth = _settle() - start
    print(f"\n{SESSIONS} fresh sessions grew RSS by {growth / MB:.0f} MB (bound {SESSIONS_RSS_BOUND / MB:.0f} MB)")
    assert growth <= SESSIONS_RSS_BOUND, f"{SESSIONS} sessions grew RSS by {growth / MB:.0f} MB"


def test_forward_state_is_compact(app_url):
    from demos import forward_noising

    st = forward_noising.initial_state(512, 3)
    assert st["x0"].dtype.name == "uint8" and st["x0"].nbytes == 512 * 512 * 3  # 0.8 MB at the largest size
    assert forward_noising.STATE_TTL <= 900


@pytest.mark.parametrize("case", ["forward", "schedules", "viewer", "three_ways", "oracle", "editor_background",
                                  "editor_layer", "editor_composite"])
def test_a_small_file_huge_png_decodes_within_the_bound(app_url, big, case):
    c = Client(app_url, verbose=False, download_files=False)
    b, s = big["big"], big["small"]
    calls = {
        "forward": lambda: c.predict(handle_file(b), 0, 512, "linear", 10, api_name="/forward_load"),
        "schedules": lambda: c.predict(handle_file(b), ["linear"], 1000, 1e-4, 0.02, False, False, 0.5, 0,
                                       api_name="/schedules_update"),
        "viewer": lambda: c.predict(MODEL, P, "", "DDIM", 2, 0.0, 0, 3.0, True, handle_file(b), 0.6,
                                    api_name="/viewer_run"),
        "three_ways": lambda: c.predict(MODEL, handle_file(b), 400, 200, P, 1.0, 0, api_name="/three_ways"),
        "oracle": lambda: c.predict(MODEL, handle_file(b), 0.5, "DDIM", 2, P, 1.0, 0, api_name="/oracle"),
        "editor_background": lambda: c.predict(_editor(b), api_name="/inpaint_mask"),
        "editor_layer": lambda: c.predict(MODEL, _editor(s, b), P, "", 5.0, 2, "DDIM", 0, 1, 2, api_name="/inpaint"),
        "editor_composite": lambda: c.predict(MODEL, _editor(s, composite=b), P, 0.6, 5.0, 2, 0, api_name="/sketch"),
    }
    out, peak = _peak_during(calls[case])
    assert not isinstance(out, Exception) or isinstance(out, AppError), out  # an answer, not a crash
    assert peak <= DECODE_PEAK_BOUND, f"{case}: peak +{peak / MB:.0f} MB"
    # the server still serves
    assert c.predict("linear", 10, api_name="/forward_mix")


def _editor_id(app_url: str) -> int:
    cfg = httpx.get(f"{app_url}config", timeout=30).json()
    return next(c["id"] for c in cfg["components"] if c.get("props", {}).get("elem_id") == "inpaint-editor")


def test_blob_abuse_is_answered_with_4xx_and_bounded_memory(app_url, big):
    cid, png = _editor_id(app_url), Path(big["small"]).read_bytes()

    def post(fields, files=None):
        data = {"component_id": str(cid), "session_hash": "hostile", "fn_name": "accept_blobs", **fields}
        return httpx.post(f"{app_url}gradio_api/component_server", data=data, timeout=60,
                          files=files if files is not None else [("file", ("blob", png, "image/png"))])

    start = _settle()
    bad = {
        "huge index": ({"type": "layer", "index": "100000000", "id": "a"}, None),
        "negative index": ({"type": "layer", "index": "-1", "id": "a"}, None),
        "text index": ({"type": "layer", "index": "abc", "id": "a"}, None),
        "unknown type": ({"type": "nonsense", "index": "0", "id": "a"}, None),
        "long id": ({"type": "background", "index": "null", "id": "x" * 500}, None),
        "no file": ({"type": "background", "index": "null", "id": "a"}, []),
        "two files": ({"type": "background", "index": "null", "id": "a"},
                      [("f1", ("a", png, "image/png")), ("f2", ("b", png, "image/png"))]),
        "not an image": ({"type": "background", "index": "null", "id": "a"}, [("file", ("b", b"<html>", "text/html"))]),
        "bomb header": ({"type": "background", "index": "null", "id": "a"},
                        [("file", ("b", Path(big["bomb"]).read_bytes(), "image/png"))]),
    }
    for name, (fields, files) in bad.items():
        r = post(fields, files)
        assert 400 <= r.status_code < 500, (name, r.status_code, r.text[:200])
    r = httpx.post(f"{app_url}gradio_api/component_server", timeout=30,
                   json={"component_id": cid, "session_hash": "x", "fn_name": "accept_blobs", "data": {"index": 1e9}})
    assert 400 <= r.status_code < 500, r.text[:200]
    assert post({"type": "layer", "index": "0", "id": "fine"}).status_code == 200  # the real canvas still works
    # many uploads that no event ever uses: the store stays within its byte bound
    noise = Image.effect_noise((1200, 1200), 80).convert("RGB")
    path = Path(big["small"]).with_name("noise.png")
    noise.save(path)
    data = path.read_bytes()
    for i in range(30):
        assert post({"type": "background", "index": "null", "id": f"unused{i}"},
                    [("file", ("b", data, "image/png"))]).status_code == 200
    growth = _settle() - start
    assert growth <= BLOB_RSS_BOUND, f"blob abuse grew RSS by {growth / MB:.0f} MB"


def test_the_blob_store_is_bounded_by_age_and_bytes(monkeypatch):
    from gradio.components.image_editor import EditorDataBlobs

    from demos import components

    monkeypatch.setattr(components, "BLOB_STORE_BYTES", 3000)
    now = time.monotonic()
    blob = lambda n: EditorDataBlobs(background=b"x" * n, layers=[b"y" * n], composite=None)  # noqa: E731
    store = {"old": (now - components.BLOB_TTL - 1, blob(10)), "a": (now - 3, blob(1000)), "b": (now - 2, blob(500)),
             "c": (now - 1, blob(500))}
    components._expire_blobs(store)
    assert "old" not in store  # past its time to live
    assert "a" not in store and set(store) == {"b", "c"}  # oldest dropped until <= 3000 bytes
    assert sum(components._blob_bytes(v) for v in store.values()) <= 3000


def test_security_headers_and_private_endpoints(app_url):
    r = httpx.get(app_url, timeout=30)
    assert r.headers["x-content-type-options"] == "nosniff"
    csp = r.headers["content-security-policy"]
    assert "frame-ancestors 'self' https://huggingface.co" in csp
    for api in ("lecture_restore", "lecture_link", "forward_pick_sample", "inpaint_example"):
        r = httpx.post(f"{app_url}gradio_api/call/{api}", json={"data": []}, timeout=30)
        assert r.status_code == 404, (api, r.status_code)
    assert httpx.post(f"{app_url}gradio_api/call/forward_mix", json={"data": ["linear", 5]},
                      timeout=30).status_code == 200  # public ones still answer


def test_one_upload_request_carries_at_most_the_total_cap(app_url, big):
    from demos import guard

    png = Path(big["small"]).read_bytes() + b"\0" * (8 * 2**20)
    r = httpx.post(f"{app_url}gradio_api/upload", timeout=120,
                   files=[("files", (f"f{i}.png", png, "image/png")) for i in range(3)])  # 3 x 8 MB
    assert r.status_code == 413 and f"{guard.MAX_REQUEST_BYTES // 2**20} MB" in r.text
    assert httpx.post(f"{app_url}gradio_api/upload", files=[("files", ("f.png", png, "image/png"))],
                      timeout=60).status_code == 200

    def chunks():  # no Content-Length: read up to the bound, then refused
        for _ in range(guard.MAX_REQUEST_BYTES // 2**20 + 2):
            yield b"\0" * 2**20

    try:
        r = httpx.post(f"{app_url}gradio_api/upload", content=chunks(), timeout=120,
                       headers={"content-type": "multipart/form-data; boundary=x"})
        assert r.status_code == 413
    except (httpx.RemoteProtocolError, httpx.WriteError):
        pass  # the server answered 413 and closed while the client was still sending: refused too


def test_one_session_cannot_fill_the_queue(app_url):
    cfg = httpx.get(f"{app_url}config", timeout=30).json()
    fn = next(i for i, d in enumerate(cfg["dependencies"]) if d.get("api_name") == "forward_compare")
    body = {"data": [None, "linear", 999, 64, 0], "fn_index": fn, "session_hash": "flooder", "event_data": None,
            "trigger_id": None}
    codes = [httpx.post(f"{app_url}gradio_api/queue/join", json=body, timeout=30) for _ in range(10)]
    refused = [r for r in codes if r.status_code == 503]
    assert refused and "per session" in refused[0].text
    other = httpx.post(f"{app_url}gradio_api/queue/join", json={**body, "session_hash": "someone-else"}, timeout=30)
    assert other.status_code == 200  # another user still gets in
