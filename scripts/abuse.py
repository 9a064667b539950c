"""Load-and-abuse: what a hostile client can do to a running Diffusion Lab, in figures (issue 19).

    .venv/bin/python scripts/abuse.py                      # everything, against its own app.py process
    .venv/bin/python scripts/abuse.py --only sessions,decode
    .venv/bin/python scripts/abuse.py --only latency --quick    # the heavy requests at a few steps, same shapes
    .venv/bin/python scripts/abuse.py --url http://127.0.0.1:7860/ --pid 1234   # a running app (loopback)

Sections (each prints a table; RSS is the app process's resident memory, sampled every 5 ms):
* ``sessions``: N fresh sessions (default 150) each load a 512 px image on the Forward tab -> RSS growth.
* ``decode``: one small-file 8000x5000 RGBA PNG (~150 kB) through every image input, the editor's
  background, layer and composite included -> peak RSS above the level before the call, and the answer.
* ``blobs``: the image editor's blob endpoint with nonsense (index 1e8, -1, "abc", no file, two files,
  a bomb header, 40 unused uploads) -> HTTP status of each, RSS growth.
* ``latency``: each heavy request inside the UI's ranges (guidance trade-off 8x100 steps, three ways
  at stride 1, sampler race 4x200, CLIP guidance 100 steps x 32 cutouts) runs while another client
  drags the Forward slider (/forward_mix every 0.25 s) -> worst and median answer time of the slider.
  Each heavy request is first run once at 2 steps (models loaded, traced graphs built: a one-off per process).
* ``http``: security headers, a private endpoint by name, a 3-file upload, one client flooding the queue.

Training jobs may share the machine: the load average is printed with each table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

MODEL = "toy-sd (bundled, 32 px)"
CLIP = "toy-clip (bundled)"
TOY_CLIP_NATURAL = "toy-clip-natural (bundled)"
CLIP_THROUGH_UNET = "plain CLIP on x̂0, gradient through the UNet (x̂0 re-predicted with autograd; ~2–3x the cost)"
P = "a red circle on a white background"
MB = 1e6


class RSS:
    """Samples a process's RSS in the background; ``peak_during(fn)`` -> (result, peak - before, after - before)."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.proc = psutil.Process(pid)

    def now(self) -> int:
        return self.proc.memory_info().rss

    def peak_during(self, fn):
        before, peak, stop = self.now(), [0], threading.Event()

        def watch():
            while not stop.is_set():
                peak[0] = max(peak[0], self.now())
                time.sleep(0.005)

        t = threading.Thread(target=watch, daemon=True)
        t.start()
        try:
            result = fn()
        except Exception as e:  # noqa: BLE001 - the answer is part of the figures
            result = e
        stop.set()
        t.join()
        return result, (max(peak[0], self.now()) - before) / MB, (self.now() - before) / MB


def load_note() -> str:
    return "load average %.1f %.1f %.1f" % os.getloadavg()


def answer(result) -> str:
    if isinstance(result, Exception):
        return f"error: {str(result).splitlines()[0][:90]}" if str(result) else type(result).__name__
    return "ok"


def client(url: str):
    from gradio_client import Client

    return Client(url, verbose=False, download_files=False)


def sessions(url: str, rss: RSS, n: int) -> None:
    from gradio_client import handle_file

    from demos.common import sample_paths

    img = handle_file(sample_paths()[0])
    client(url).predict(img, 0, 512, "linear", 10, api_name="/forward_load")  # warm-up: caches, first JPEGs
    start = rss.now()
    t0 = time.perf_counter()
    for i in range(n):
        client(url).predict(img, i, 512, "linear", 10, api_name="/forward_load")
    took = time.perf_counter() - t0
    print(f"\n## {n} fresh sessions, each loading a 512 px image on the Forward tab ({load_note()})")
    print(f"RSS growth: {(rss.now() - start) / MB:.0f} MB ({took:.0f} s for the {n} sessions)")


def _editor(bg=None, layer=None, composite=None):
    from gradio_client import handle_file

    return {"background": handle_file(bg) if bg else None, "layers": [handle_file(layer)] if layer else [],
            "composite": handle_file(composite) if composite else None}


def decode(url: str, rss: RSS, big: str, small: str) -> None:
    from gradio_client import handle_file

    calls = {
        "/forward_load (file)": ((handle_file(big), 0, 512, "linear", 10), "/forward_load"),
        "/schedules_update (file)": ((handle_file(big), ["linear"], 1000, 1e-4, 0.02, False, False, 0.5, 0),
                                     "/schedules_update"),
        "/viewer_run (image)": ((MODEL, P, "", "DDIM", 4, 0.0, 0, 3.0, True, handle_file(big), 0.6), "/viewer_run"),
        "/three_ways (image)": ((MODEL, handle_file(big), 400, 200, P, 1.0, 0), "/three_ways"),
        "/oracle (image)": ((MODEL, handle_file(big), 0.5, "DDIM", 3, P, 1.0, 0), "/oracle"),
        "/inpaint_mask (editor background)": ((_editor(big),), "/inpaint_mask"),
        "/inpaint (background + layer)": ((MODEL, _editor(big, big), P, "", 5.0, 3, "DDIM", 0, 1, 2), "/inpaint"),
        "/inpaint (layer only big)": ((MODEL, _editor(small, big), P, "", 5.0, 3, "DDIM", 0, 1, 2), "/inpaint"),
        "/sketch (composite)": ((MODEL, _editor(big, composite=big), P, 0.6, 5.0, 3, 0), "/sketch"),
        "/sketch_strip (composite)": ((MODEL, _editor(small, composite=big), P, 5.0, 3, 0), "/sketch_strip"),
    }
    c = client(url)
    c.predict(MODEL, P, "", 5.0, 2, "DDIM", 0, api_name="/guidance_generate")  # model loaded before measuring
    print(f"\n## one small-file 8000x5000 RGBA PNG ({Path(big).stat().st_size / 1e3:.0f} kB) per image input "
          f"({load_note()})")
    print("| input | peak RSS above before | RSS after | answer |\n|---|---|---|---|")
    for name, (args, api) in calls.items():
        res, peak, after = rss.peak_during(lambda: c.predict(*args, api_name=api))
        print(f"| {name} | +{peak:.0f} MB | {after:+.0f} MB | {answer(res)} |")


def _editor_id(url: str) -> int:
    import httpx

    cfg = httpx.get(f"{url}config", timeout=30).json()
    return next(c["id"] for c in cfg["components"] if c.get("props", {}).get("elem_id") == "inpaint-editor")


def blobs(url: str, rss: RSS, small: str, bomb: str) -> None:
    import httpx

    cid = _editor_id(url)
    png = Path(small).read_bytes()

    def post(fields: dict, files: list | None = None):
        data = {"component_id": str(cid), "session_hash": "abuse", "fn_name": "accept_blobs", **fields}
        r = httpx.post(f"{url}gradio_api/component_server", data=data,
                       files=files if files is not None else [("file", ("blob", png, "image/png"))], timeout=60)
        return r.status_code

    cases = {
        "layer index 100,000,000": lambda: post({"type": "layer", "index": "100000000", "id": "a"}),
        "layer index -1": lambda: post({"type": "layer", "index": "-1", "id": "a"}),
        "layer index 'abc'": lambda: post({"type": "layer", "index": "abc", "id": "a"}),
        "type 'nonsense'": lambda: post({"type": "nonsense", "index": "0", "id": "a"}),
        "no file": lambda: post({"type": "background", "index": "null", "id": "a"}, files=[]),
        "two files": lambda: post({"type": "background", "index": "null", "id": "a"},
                                  files=[("f1", ("a", png, "image/png")), ("f2", ("b", png, "image/png"))]),
        "not an image": lambda: post({"type": "background", "index": "null", "id": "a"},
                                     files=[("file", ("blob", b"<html>", "text/html"))]),
        "bomb header (144 MP)": lambda: post({"type": "background", "index": "null", "id": "a"},
                                             files=[("file", ("blob", Path(bomb).read_bytes(), "image/png"))]),
        "JSON body": lambda: httpx.post(f"{url}gradio_api/component_server", json={
            "component_id": cid, "session_hash": "x", "fn_name": "accept_blobs", "data": {"index": 1e9}},
            timeout=60).status_code,
        "valid layer 0 (control)": lambda: post({"type": "layer", "index": "0", "id": "ok"}),
    }
    print(f"\n## the editor's blob endpoint ({load_note()})")
    print("| request | HTTP status | peak RSS | RSS after |\n|---|---|---|---|")
    start = rss.now()
    for name, fn in cases.items():
        res, peak, after = rss.peak_during(fn)
        print(f"| {name} | {res} | +{peak:.0f} MB | {after:+.0f} MB |")
    big = Path(tempfile.mkdtemp()) / "noise.png"
    import numpy as np
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (1400, 1400, 3), np.uint8)).save(big)  # ~5.9 MB
    data = big.read_bytes()
    res, peak, after = rss.peak_during(lambda: [post({"type": "background", "index": "null", "id": f"u{i}"},
                                                     files=[("file", ("blob", data, "image/png"))]) for i in range(40)])
    print(f"| 40 unused uploads of {len(data) / MB:.1f} MB | {sorted(set(res)) if isinstance(res, list) else res} "
          f"| +{peak:.0f} MB | {after:+.0f} MB |")
    print(f"RSS growth over the blob section: {(rss.now() - start) / MB:+.0f} MB")


HEAVY = {
    "guidance trade-off 8 x 100 steps": ("/guidance_tradeoff", (MODEL, P, "", 100, "DDIM", 0, 8)),
    "three ways, stride 1 from t = 999": ("/three_ways", None),
    "sampler race 4 x 200 steps": ("/sampler_race", (MODEL, P, 3.0, 0, True, "DDIM", 200, True, "DDPM", 200,
                                                     True, "Euler", 200, True, "DPM-Solver++", 200)),
    # the heaviest CLIP turn inside the UI's ranges: 32 cutouts, the gradient through the UNet, every step guided;
    # one pass per guided step (more passes make the run longer, not its turns, and keep rounds comparable)
    "CLIP guidance 100 steps x 32 cutouts": ("/clip_guidance_run", (CLIP, MODEL, P, "unconditional (empty prompt)", "",
                                                                    3.0, 32, 3.0, "sqrt_alpha_bar", 100, 0,
                                                                    CLIP_THROUGH_UNET, True, 1.0, 1, 1)),
    # the tab's default (time travel) at its most passes and 60 steps: the longest CLIP run of the default shape
    "CLIP guidance default, 60 steps x 8 passes": ("/clip_guidance_run", (TOY_CLIP_NATURAL, MODEL, P,
                                                                          "unconditional (empty prompt)", "", 3.0, 8,
                                                                          0.2, "none", 60, 0, CLIP_THROUGH_UNET, True,
                                                                          0.5, 4, 8)),
}


def warm_up(warm) -> None:
    """Each heavy request once at few steps, same batch shapes: models load and the UNet's traced graph for
    each batch shape is built once per process (pipelines/models/traced_unet.py); not what is measured."""
    from gradio_client import handle_file

    from demos.common import sample_paths

    warm.predict(MODEL, P, "", 2, "DDIM", 0, 8, api_name="/guidance_tradeoff")
    warm.predict(MODEL, handle_file(sample_paths()[0]), 999, 200, P, 1.0, 0, api_name="/three_ways")
    warm.predict(*HEAVY["sampler race 4 x 200 steps"][1][:4], True, "DDIM", 2, True, "DDPM", 2, True, "Euler", 2,
                 True, "DPM-Solver++", 2, api_name="/sampler_race")
    clip_args = list(HEAVY["CLIP guidance 100 steps x 32 cutouts"][1])
    clip_args[9] = 2  # steps
    warm.predict(*clip_args, api_name="/clip_guidance_run")


def latency(url: str, only: list[str] | None = None, quick: bool = False) -> None:
    from gradio_client import handle_file

    from demos.common import sample_paths

    slider = client(url)
    slider.predict("linear", 10, api_name="/forward_mix")
    warm_up(client(url))

    def alone(n: int = 10) -> list[float]:
        out = []
        for t in range(n):
            t0 = time.perf_counter()
            slider.predict("linear", 100 + t, api_name="/forward_mix")
            out.append(time.perf_counter() - t0)
        return out

    print(f"\n## a Forward slider update (/forward_mix) while one heavy request runs ({load_note()})")
    print("Each row: the slider alone just before (10 updates, nothing else running in the app), then during the "
          "heavy request; the ratio is worst during / median alone.")
    print("| heavy request | its time | slider alone: median | updates during | median | worst | worst / alone "
          "| load average |\n|---|---|---|---|---|---|---|---|")
    for name, (api, args) in HEAVY.items():
        if only and not any(o in name for o in only):
            continue
        if args is None:
            args = (MODEL, handle_file(sample_paths()[0]), 999, 1, P, 1.0, 0)
        if quick:  # same batch shapes, a few steps: the longest turn, hence the worst wait, is the same
            from scripts.bench_turns import QUICK

            args, name = QUICK[api](list(args)), f"{name} (--quick: a few steps)"
        quiet = statistics.median(alone())
        heavy, done, out = client(url), threading.Event(), {}

        def run():
            t0 = time.perf_counter()
            try:
                heavy.predict(*args, api_name=api)
                out["answer"] = "ok"
            except Exception as e:  # noqa: BLE001
                out["answer"] = str(e)[:80]
            out["took"] = time.perf_counter() - t0
            done.set()

        threading.Thread(target=run, daemon=True).start()
        time.sleep(1.0)  # the heavy request is running
        lat, k, loads = [], 0, []
        while not done.is_set():
            t0 = time.perf_counter()
            slider.predict("linear", 200 + k % 700, api_name="/forward_mix")
            lat.append(time.perf_counter() - t0)
            loads.append(os.getloadavg()[0])
            k += 1
            time.sleep(0.25)
        if not lat:
            lat, loads = [float("nan")], [float("nan")]
        print(f"| {name} | {out['took']:.1f} s ({out['answer']}) | {quiet:.3f} s | {len(lat)} | "
              f"{statistics.median(lat):.3f} s | {max(lat):.3f} s | {max(lat) / quiet:.1f}x "
              f"| {min(loads):.0f}-{max(loads):.0f} |", flush=True)


def http(url: str, small: str) -> None:
    import httpx

    r = httpx.get(url, timeout=30)
    print(f"\n## HTTP ({load_note()})")
    print("| check | answer |\n|---|---|")
    print(f"| headers of / | X-Content-Type-Options: {r.headers.get('x-content-type-options')}; "
          f"CSP: {r.headers.get('content-security-policy')} |")
    r = httpx.post(f"{url}gradio_api/call/lecture_restore", json={"data": []}, timeout=30)
    print(f"| POST /gradio_api/call/lecture_restore (private) | {r.status_code} |")
    png = Path(small).read_bytes()
    pad = b"\0" * (8 * 2**20)
    r = httpx.post(f"{url}gradio_api/upload", files=[("files", (f"f{i}.png", png + pad, "image/png")) for i in range(3)],
                   timeout=120)
    print(f"| 3 files of 8 MB in one upload | {r.status_code} {r.text[:80]} |")
    r = httpx.post(f"{url}gradio_api/upload", files=[("files", ("f.png", png, "image/png"))], timeout=60)
    print(f"| 1 small file (control) | {r.status_code} |")
    # one client (one session) joins the queue 12 times at once with a slow request
    body = {"data": [MODEL, P, "", 100, "DDIM", 0, 8], "event_data": None, "fn_index": _fn_index(url, "guidance_tradeoff"),
            "session_hash": "flooder", "trigger_id": None}
    codes = [httpx.post(f"{url}gradio_api/queue/join", json=body, timeout=30).status_code for _ in range(12)]
    other = httpx.post(f"{url}gradio_api/queue/join", json={**body, "session_hash": "someone-else"}, timeout=30)
    print(f"| one session joins the queue 12 times | {codes} |")
    print(f"| another session then | {other.status_code} |")
    httpx.post(f"{url}gradio_api/queue/reset", timeout=30)  # drop nothing; the flood times out on its own


def _fn_index(url: str, api_name: str) -> int:
    import httpx

    cfg = httpx.get(f"{url}config", timeout=30).json()
    return next(i for i, d in enumerate(cfg["dependencies"]) if d.get("api_name") == api_name)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", help="a running app (loopback only); default: start app.py")
    ap.add_argument("--pid", type=int, help="its process id (for RSS)")
    ap.add_argument("--only", default="sessions,decode,blobs,latency,http")
    ap.add_argument("--sessions", type=int, default=150)
    ap.add_argument("--heavy", default="", help="comma-separated words: run only the heavy requests matching one")
    ap.add_argument("--quick", action="store_true", help="latency: the heavy requests at a few steps (same shapes)")
    args = ap.parse_args(argv)
    from scripts import app_process
    from tests.images_helpers import small_file_png
    from tests.api.test_hostile import real_png_bomb

    tmp = Path(tempfile.mkdtemp(prefix="abuse-"))
    big = str(small_file_png(tmp / "big.png", 8000, 5000, 6))
    bomb = str(real_png_bomb(tmp / "bomb.png"))
    from PIL import Image

    Image.new("RGBA", (256, 256), (250, 250, 250, 255)).save(tmp / "small.png")
    small = str(tmp / "small.png")
    proc = None
    if args.url:
        url, pid = args.url.rstrip("/") + "/", args.pid
        if "127.0.0.1" not in url and "localhost" not in url:
            raise SystemExit("loopback only")
    else:
        port = app_process.free_port()
        proc = app_process.launch(port)
        try:
            app_process.connect(proc, port, timeout=1200.0)  # an overloaded machine takes minutes to start it
        except BaseException:
            app_process.stop(proc)
            raise
        url, pid = f"http://127.0.0.1:{port}/", proc.pid
    rss = RSS(pid)
    print(f"app pid {pid}, RSS at start {rss.now() / MB:.0f} MB; {load_note()}")
    try:
        only = args.only.split(",")
        if "sessions" in only:
            sessions(url, rss, args.sessions)
        if "decode" in only:
            decode(url, rss, big, small)
        if "blobs" in only:
            blobs(url, rss, small, bomb)
        if "latency" in only:
            latency(url, [h for h in args.heavy.split(",") if h], args.quick)
        if "http" in only:
            http(url, small)
        print(f"\nRSS at the end {rss.now() / MB:.0f} MB; {load_note()}")
    finally:
        if proc is not None:
            app_process.stop(proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
