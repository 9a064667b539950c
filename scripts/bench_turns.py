"""The longest turn each heavy request holds the compute thread (issue 19): the time between two of its
checkpoints (or its start / its end), where another request waiting for the thread would have to wait.

    .venv/bin/python scripts/bench_turns.py                 # every heavy request of scripts/abuse.py
    .venv/bin/python scripts/bench_turns.py --heavy CLIP    # those whose name contains a word

The app runs in this process (no HTTP timing involved); ``compute_thread.checkpoint`` and the job body are
wrapped to time each stretch, and the code line where the longest one ended is printed. The machine may be
shared: the load average is printed with each row; ``--digest`` also prints a hash of each answer (the
same answer before and after a change to the turns).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _where(stack) -> str:
    """The innermost frames of the project (not torch, not this script) in a stack."""
    ours = [f for f in stack if str(ROOT) in f.filename and "bench_turns" not in f.filename
            and ".venv" not in f.filename]
    return " < ".join(f"{Path(f.filename).name}:{f.lineno}" for f in ours[-1:-4:-1]) or "?"


def instrument():
    """Wrap checkpoint and the job body; returns the per-job list of (seconds, where it ended)."""
    import greenlet

    from pipelines.serving import compute_thread as ct

    turns: dict = {}
    last: dict = {}
    checkpoint, run_job = ct.checkpoint, ct._run_job

    def timed_checkpoint():
        g = greenlet.getcurrent()
        if g in last:
            turns.setdefault(g, []).append((time.perf_counter() - last[g], _where(traceback.extract_stack())))
        checkpoint()
        last[g] = time.perf_counter()

    def timed_run_job(job):
        g = greenlet.getcurrent()
        last[g] = time.perf_counter()
        try:
            run_job(job)
        finally:
            turns.setdefault(g, []).append((time.perf_counter() - last.pop(g), "end of the request"))
            done.append(turns.pop(g))

    done: list = []
    ct.checkpoint, ct._run_job = timed_checkpoint, timed_run_job
    return done


def digest(result) -> str:
    """A hash of an answer's images (files read back) and text."""
    h = hashlib.sha256()

    def walk(x):
        if isinstance(x, (list, tuple)):
            for y in x:
                walk(y)
        elif isinstance(x, dict):
            for k in sorted(x):
                walk(x[k])
        elif isinstance(x, str) and os.path.isfile(x) and x.endswith((".png", ".jpg", ".jpeg", ".webp")):
            from PIL import Image
            import numpy as np

            h.update(np.asarray(Image.open(x).convert("RGB")).tobytes())
        elif isinstance(x, (str, int, float)) and not (isinstance(x, str) and os.path.isfile(x)):
            h.update(repr(x).encode())

    walk(result)
    return h.hexdigest()[:12]


def _quick_race(a):
    return [*a[:4], *[v if not isinstance(v, int) or isinstance(v, bool) else 4 for v in a[4:]]]


QUICK = {  # api -> the heavy request's arguments at a few steps (same shapes)
    "/guidance_tradeoff": lambda a: [*a[:3], 3, *a[4:]],
    "/three_ways": lambda a: [a[0], a[1], 40, *a[3:]],
    "/sampler_race": _quick_race,
    "/clip_guidance_run": lambda a: [*a[:9], 6, *a[10:]],
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--heavy", default="", help="comma-separated words: only the heavy requests matching one")
    ap.add_argument("--digest", action="store_true", help="print a hash of each answer")
    ap.add_argument("--quick", action="store_true",
                    help="the same batch shapes at a few steps (a turn is one step: its length does not change)")
    args = ap.parse_args(argv)
    import app
    from gradio_client import Client, handle_file

    from demos.common import sample_paths
    from pipelines.runtime import Runtime
    from scripts import abuse
    from scripts.app_process import free_port

    from pipelines.serving import compute_thread

    from gradio import networking

    networking.url_ok = lambda url: True  # its 3 s probe fails on an overloaded machine; the server is up
    compute_thread.keep_this_thread_serial()
    demo = app.build_app(Runtime.create("cpu"))
    demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                **app.launch_kwargs(demo))
    c = Client(demo.local_url, verbose=False, download_files=True, httpx_kwargs={"timeout": 900})
    only = [w for w in args.heavy.split(",") if w]
    if not args.quick:
        abuse.warm_up(c)
    done = instrument()
    print(f"| heavy request | its time | turns | longest turn | where it ended | median turn | load average |"
          "\n|---|---|---|---|---|---|---|")
    for name, (api, call_args) in abuse.HEAVY.items():
        if only and not any(o in name for o in only):
            continue
        if call_args is None:
            call_args = (abuse.MODEL, handle_file(sample_paths()[0]), 999, 1, abuse.P, 1.0, 0)
        if args.quick:
            call_args = QUICK.get(api, lambda a: a)(list(call_args))
        if args.quick:  # its own warm-up: the same shapes once (models load, traced graphs are built)
            c.predict(*call_args, api_name=api)
        done.clear()
        t0 = time.perf_counter()
        out = c.predict(*call_args, api_name=api)
        took = time.perf_counter() - t0
        turns = sorted(t for job in done for t in job) or [(float("nan"), "?")]  # a stream: one job per item
        done.clear()
        longest = turns[-1]
        median = turns[len(turns) // 2][0]
        extra = f" digest {digest(out)}" if args.digest else ""
        name += " (--quick)" if args.quick else ""
        print(f"| {name} | {took:.1f} s | {len(turns)} | {longest[0]:.3f} s | {longest[1]} | {median:.3f} s "
              f"| {abuse.load_note().split('average ')[1]} |{extra}", flush=True)
    demo.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
