"""Bounded load test: N concurrent gradio_client clients on mixed tabs for a fixed time.

    .venv/bin/python scripts/load_test.py                       # 16 clients, 60 s, own server
    .venv/bin/python scripts/load_test.py --duration 20 --max-requests 4
    .venv/bin/python scripts/load_test.py --url http://127.0.0.1:7860/   # a running app (loopback only)

Each client loops over a mix of tabs (forward noising, schedules, guidance, CLIP guidance,
inpainting mask) with seeds from a small set, until the time is up or it has sent
``--max-requests``. Every image result is hashed; afterwards each (api, seed) is run once more
*serially* and must give the same pixels. Prints clients, requests, failures, mismatches and
p50/p95 latency; exits 1 on any failure or mismatch. Loopback only: it refuses other hosts.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import socket
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

MODEL = "toy-sd (bundled, 32 px)"
CLIP = "toy-clip (bundled)"
SEEDS = (0, 1, 2)


def jobs(samples: list[str]):
    """name -> (api_name, args(seed)). Small settings: this measures the server, not the models."""
    from gradio_client import handle_file

    def editor(path):
        return {"background": handle_file(path), "layers": [], "composite": None}

    return {
        "forward_load": ("/forward_load", lambda s: (handle_file(samples[s % len(samples)]), s, 128, "cosine", 300)),
        "schedules_table": ("/schedules_table",
                            lambda s: (["linear", "cosine"], 1000 + 10 * s, 1e-4, 0.02, True, False)),
        "guidance_generate": ("/guidance_generate",
                              lambda s: (MODEL, "a red circle on a white background", "", 5.0, 4, "DDIM", s)),
        "clip_guidance_run": ("/clip_guidance_run",
                              lambda s: (CLIP, MODEL, "a blue square", "unconditional (empty prompt)", "", 3.0, 2, 0.3,
                                         "sqrt_alpha_bar", 3, s)),
        "inpaint_mask": ("/inpaint_mask", lambda s: (editor(samples[s % len(samples)]),)),
    }


def signature(result) -> str:
    """sha256 over the pixels of every image file in a result (and the text of tables)."""
    from PIL import Image

    h = hashlib.sha256()

    def walk(x):
        if isinstance(x, str) and os.path.isfile(x):
            try:
                h.update(Image.open(x).convert("RGB").tobytes())
            except Exception:  # a plot or another non-image file: its bytes
                h.update(Path(x).read_bytes())
        elif isinstance(x, dict):
            if "data" in x and "headers" in x:  # a Dataframe
                h.update(repr(x["data"]).encode())
            for k in sorted(x):
                if k in ("image", "value", "path", "plot"):
                    walk(x[k])
        elif isinstance(x, (list, tuple)):
            for y in x:
                walk(y)

    walk(result)
    return h.hexdigest()


def check_loopback(url: str) -> None:
    host = urlparse(url).hostname or ""
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"load_test.py runs against loopback only, not {host!r}")


def start_app() -> tuple[object, str]:
    import app
    from pipelines.runtime import Runtime

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo = app.build_app(Runtime.create("cpu"))
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                max_file_size=app.MAX_FILE_SIZE)
    return demo, demo.local_url


def percentile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q / 100 * (len(xs) - 1))))]


def run(url: str, clients: int, duration: float, max_requests: int, mix: list[str]) -> int:
    from gradio_client import Client

    from demos.common import sample_paths

    table = jobs(sample_paths())
    names = [n for n in mix if n in table] or list(table)
    latencies: list[float] = []
    per_api: Counter = Counter()
    failures: list[str] = []
    sigs: dict[tuple[str, int], set[str]] = defaultdict(set)
    lock = threading.Lock()
    deadline = time.monotonic() + duration

    def worker(i: int) -> None:
        c = Client(url, verbose=False, download_files=True)
        n = 0
        while n < max_requests and time.monotonic() < deadline:
            name = names[(i + n) % len(names)]
            seed = SEEDS[(i * 7 + n) % len(SEEDS)]
            api, args = table[name]
            t0 = time.monotonic()
            try:
                out = c.predict(*args(seed), api_name=api)
                sig = signature(out)
                with lock:
                    latencies.append(time.monotonic() - t0)
                    per_api[name] += 1
                    sigs[(name, seed)].add(sig)
            except Exception as e:  # noqa: BLE001 - every failure is counted and printed
                with lock:
                    failures.append(f"client {i} {name} seed {seed}: {type(e).__name__}: {e}")
            n += 1

    print(f"load test: {clients} clients x up to {max_requests} requests, {duration:g} s, mix {names}, {url}",
          flush=True)
    t0 = time.monotonic()
    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0

    # Serial reference: each (api, seed) seen once more, alone, on a fresh session.
    serial = Client(url, verbose=False, download_files=True)
    mismatches = []
    for (name, seed), got in sorted(sigs.items()):
        api, args = table[name]
        ref = signature(serial.predict(*args(seed), api_name=api))
        if got != {ref}:
            mismatches.append(f"{name} seed {seed}: {len(got)} distinct concurrent result(s), serial differs"
                              if ref not in got else f"{name} seed {seed}: {len(got)} distinct concurrent results")

    n_req = len(latencies) + len(failures)
    print(f"clients        {clients}")
    print(f"wall time      {wall:.1f} s")
    print(f"requests       {n_req}  ({', '.join(f'{k} {v}' for k, v in sorted(per_api.items()))})")
    print(f"failures       {len(failures)}")
    print(f"mismatches     {len(mismatches)}  (vs a serial run, {len(sigs)} (api, seed) pairs checked)")
    print(f"latency p50    {percentile(latencies, 50):.2f} s")
    print(f"latency p95    {percentile(latencies, 95):.2f} s")
    print(f"throughput     {len(latencies) / wall:.2f} req/s")
    for f in failures[:20] + mismatches[:20]:
        print("  !", f)
    return 1 if failures or mismatches else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", help="a running app on loopback (default: start one in this process)")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--duration", type=float, default=60.0, help="seconds during which clients send requests")
    p.add_argument("--max-requests", type=int, default=20, help="per client (bounds the total)")
    p.add_argument("--mix", default="forward_load,schedules_table,guidance_generate,clip_guidance_run,inpaint_mask")
    a = p.parse_args(argv)
    demo = None
    if a.url:
        url = a.url
    else:
        demo, url = start_app()
    check_loopback(url)
    try:
        return run(url, a.clients, a.duration, a.max_requests, a.mix.split(","))
    finally:
        if demo is not None:
            demo.close()


if __name__ == "__main__":
    sys.exit(main())
