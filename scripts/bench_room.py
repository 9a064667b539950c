"""Lecture-room figures (issue 20): the UNet's cost per image against the batch size (the batching curve), how
much a sample's floats depend on the company it is computed in (batch invariance), and a simulated room.

    .venv/bin/python scripts/benchmark.py --only room
    .venv/bin/python scripts/bench_room.py [--students 16 32] [--skip-curve]   # the room part alone

Timings interleave the batch sizes (medians of ``REPEATS`` rounds), so load from other programs hits every size
alike; the ratios are what count.

The room (:func:`room_rows`): ``python app.py`` in its own process, once with the step scheduler (stacked UNet
calls, replay cache) and once without (``DL_STEP_BATCHING=0 DL_REPLAY_MB=0``: round robin, every call alone);
in each, a lone 30-step viewer run (median of 3), then N students (one gradio_client each, own session) pressing
Denoise at once with their own seeds, and with one preset (same prompt and seed). Times to the first streamed
frame and to the last, p50/p95, and p95 over the lone run of the same server; the final images of the batched
room against the same seeds computed without stacking (levels of 255).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

BATCHES = (1, 2, 4, 8, 16, 32, 64)
REPEATS = 5


def _inputs(model, b: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((b, *model.sample_shape), generator=g)
    emb = model.encode_prompt(["a red circle on a navy background"] * b)
    t = torch.full((b,), 500, dtype=torch.long)
    return x, t, emb


def rows(runtime, room: bool = True):
    model = runtime.registry.diffusion()
    out = []
    with torch.no_grad():
        data = {b: _inputs(model, b) for b in BATCHES}
        for b in BATCHES:  # warm-up: one traced graph per shape
            model._unet(*data[b])
        times = {b: [] for b in BATCHES}
        for _ in range(REPEATS):
            for b in BATCHES:
                t0 = time.perf_counter()
                model._unet(*data[b])
                times[b].append(time.perf_counter() - t0)
        base = statistics.median(times[1])
        for b in BATCHES:
            per = statistics.median(times[b]) / b
            out.append((f"UNet cost per image at batch {b}", f"{per * 1e3:.2f} ms ({per / base:.2f}x batch 1)"))
        # invariance: row 0 computed alone vs in a batch of b (the other rows differ)
        x1, t1, e1 = _inputs(model, 1, seed=1)
        alone = model._unet(x1, t1, e1)
        for b in BATCHES[1:]:
            x, t, e = _inputs(model, b, seed=2)
            x[0], t[0], e[0] = x1[0], t1[0], e1[0]
            got = model._unet(x, t, e)[:1]
            out.append((f"max |diff| of one sample's UNet output, alone vs in a batch of {b}",
                        f"{float((got - alone).abs().max()):.2e}"))
        # the oversize call split into micro-batches (DiffusionModel.predict) vs one call, after a 30-step run
        from pipelines.diffusion import loop
        from pipelines.serving import compute_thread

        def run(micro):
            import os
            os.environ["DL_MICRO_BATCH"] = str(micro)
            g = torch.Generator().manual_seed(0)
            return loop.sample(model, ["a red circle on a navy background"] * 8, num_inference_steps=30,
                               guidance_scale=4.0, generator=g)

        whole, split = run(64), run(compute_thread.DEFAULT_MICRO_BATCH)
        import os
        os.environ.pop("DL_MICRO_BATCH", None)
        diff = float((whole - split).abs().max()) / 2 * 255  # [-1, 1] -> 0..255 levels
        out.append(("8 samples x 30 steps (CFG, 16 images per call): one call vs micro-batches of "
                    f"{compute_thread.DEFAULT_MICRO_BATCH}, final image max |diff|", f"{diff:.4f} / 255"))
    return out + (room_rows() if room else [])


STEPS = 30
ROOM_PROMPT = "a red circle on a navy background"
MODES = [("scheduler on (stacked UNet calls + replay)", {}),
         ("scheduler off (DL_STEP_BATCHING=0 DL_REPLAY_MB=0: round robin, each call alone)",
          {"DL_STEP_BATCHING": "0", "DL_REPLAY_MB": "0"})]
ROOM_ENV = {"DL_MAX_JOBS_PER_IP": "200", "DL_ROOM_RUNS": "64"}  # every simulated student comes from 127.0.0.1


def _viewer_args(seed: int, steps: int = STEPS):
    from pipelines.models import DEFAULT_DIFFUSION_SPECS

    return (DEFAULT_DIFFUSION_SPECS[0].name, ROOM_PROMPT, "", "DDIM", steps, 0.0, seed, 4.0, False, None, 0.6)


def _one(client, seed: int, t0: float, out: dict, steps: int = STEPS) -> None:
    """One student's run: time to the first streamed message and to the end, and the final x_t panel."""
    job = client.submit(*_viewer_args(seed, steps), api_name="/viewer_run")
    first = None
    while not job.done():
        if first is None and job.outputs():
            first = time.perf_counter() - t0
        time.sleep(0.01)
    final = job.result()
    done = time.perf_counter() - t0
    out.update(first=first if first is not None else done, done=done, final=final[0])


def _room(clients, seeds, steps: int = STEPS) -> list[dict]:
    """Everyone presses at once (a barrier); -> per student {first, done, final}."""
    results = [dict() for _ in clients]
    barrier = threading.Barrier(len(clients) + 1)
    t0 = [0.0]

    def student(i):
        barrier.wait()
        _one(clients[i], seeds[i], t0[0], results[i], steps)

    threads = [threading.Thread(target=student, args=(i,)) for i in range(len(clients))]
    for t in threads:
        t.start()
    t0[0] = time.perf_counter()
    barrier.wait()
    for t in threads:
        t.join(1800)
    return results


def _pct(v, q):
    return float(np.percentile(v, q))


def _levels(a_path, b_path) -> int:
    from PIL import Image

    a = np.asarray(Image.open(a_path).convert("RGB"), dtype=np.int16)
    b = np.asarray(Image.open(b_path).convert("RGB"), dtype=np.int16)
    return int(np.abs(a - b).max())


def room_rows(students=(16, 32)) -> list[tuple[str, str]]:
    """Both servers (scheduler on, off) are started first; then each scenario runs on one and then the other,
    so the pair sees about the same load from other programs."""
    from gradio_client import Client

    from scripts import app_process

    out, finals, procs, servers = [], {}, [], []
    try:
        for label, env in MODES:
            port = app_process.free_port()
            while any(port == p for _, p in servers):  # the first server may not have bound its port yet
                port = app_process.free_port()
            procs.append(app_process.launch(port, {**ROOM_ENV, **env}, log=os.environ.get("DL_BENCH_APP_LOG")))
            servers.append((label, port))
        rooms = []
        for (label, port), proc in zip(servers, procs):
            app_process.connect(proc, port, timeout=1800)
            clients = [Client(f"http://127.0.0.1:{port}/", verbose=False) for _ in range(max(students))]
            for n in (1, 2, 4, 8):  # warm-up: model load, a traced graph per stacked shape
                _room(clients[:n], list(range(900 + 10 * n, 900 + 11 * n)), steps=3)
            rooms.append(clients)
        base = {}
        for (label, _), clients in zip(servers, rooms):
            lone = []
            for k in range(3):
                r = {}
                _one(clients[0], 100 + k, time.perf_counter(), r)
                lone.append(r["done"])
            base[label] = statistics.median(lone)
            out.append((f"{label}: a lone {STEPS}-step viewer run (click to last frame, gradio_client)",
                        f"{base[label]:.2f} s median of 3 (load avg {os.getloadavg()[0]:.1f})"))
            print(f"| {out[-1][0]} | {out[-1][1]} |", file=sys.stderr, flush=True)
        for n in students:
            for kind, seeds in (("own seeds", [1000 * n + i for i in range(n)]), ("one preset", [n + 7] * n)):
                for (label, _), clients in zip(servers, rooms):
                    res = _room(clients[:n], seeds)
                    first, done = [r["first"] for r in res], [r["done"] for r in res]
                    finals[(label, n, kind)] = [r["final"] for r in res]
                    out.append((f"{label}: {n} students at once, {kind}",
                                f"first frame p50 {_pct(first, 50):.2f} s / p95 {_pct(first, 95):.2f} s; done p50 "
                                f"{_pct(done, 50):.2f} s / p95 {_pct(done, 95):.2f} s = **{_pct(done, 95) / base[label]:.1f}x** "
                                f"the lone run (load avg {os.getloadavg()[0]:.1f})"))
                    print(f"| {out[-1][0]} | {out[-1][1]} |", file=sys.stderr, flush=True)
                on, off = (finals[(lbl, n, kind)] for lbl, _ in servers)
                diffs = [_levels(a, b) for a, b in zip(on, off)]
                out.append((f"{n} students, {kind}: final image, scheduler on vs each run alone (off), max |diff|",
                            f"{max(diffs)} / 255 (over {len(diffs)} runs; {sum(d > 0 for d in diffs)} differ at all)"))
                print(f"| {out[-1][0]} | {out[-1][1]} |", file=sys.stderr, flush=True)
    finally:
        for proc in procs:
            app_process.stop(proc)
    return out


def handler_rows(students=(16,)) -> list[tuple[str, str]]:
    """The room without HTTP: N threads (as gradio's workers) each stream the viewer's Denoise handler
    (``run_viewer``: replay cache, compute thread, PNG frames) in this process, pressing at once; each scenario
    with the scheduler on and then off, in one process, so the pair sees about the same load. For a machine too
    loaded for :func:`room_rows` (gradio's launch gives up when its own HEAD request takes over 3 s)."""
    from demos import denoising_viewer as dv
    from pipelines.runtime import Runtime
    from pipelines.serving import compute_thread
    from pipelines.serving.replay import ReplayCache

    compute_thread.keep_this_thread_serial()
    runtime = Runtime.create("cpu")

    def one(seed, t0, out, steps=STEPS):
        first = None
        for msg in dv.run_viewer(runtime, *_viewer_args(seed, steps)[:]):
            if first is None:
                first = time.perf_counter() - t0
        out.update(first=first, done=time.perf_counter() - t0, final=msg[0])

    def room(seeds, steps=STEPS):
        res = [dict() for _ in seeds]
        barrier, t0 = threading.Barrier(len(seeds) + 1), [0.0]

        def student(i):
            barrier.wait()
            one(seeds[i], t0[0], res[i], steps)

        threads = [threading.Thread(target=student, args=(i,)) for i in range(len(seeds))]
        for t in threads:
            t.start()
        t0[0] = time.perf_counter()
        barrier.wait()
        for t in threads:
            t.join(3600)
        return res

    def mode(on: bool):
        os.environ["DL_STEP_BATCHING"] = "1" if on else "0"
        runtime.replay = ReplayCache() if on else ReplayCache(0)

    labels = {True: "scheduler on (stacked UNet calls + replay)", False: "scheduler off (round robin, each call alone)"}
    for n in (1, 2, 4, 8, 16):  # warm-up: model load, a traced graph per stacked shape
        mode(True)
        room(list(range(900 + 10 * n, 900 + 11 * n)), steps=3)
    out, base = [], {}
    for on in (True, False):
        mode(on)
        lone = []
        for k in range(3):
            r = {}
            one(100 + k + (0 if on else 10), time.perf_counter(), r)
            lone.append(r["done"])
        base[on] = statistics.median(lone)
        out.append((f"in-process handler, {labels[on]}: a lone {STEPS}-step run", f"{base[on]:.2f} s median of 3 "
                    f"(load avg {os.getloadavg()[0]:.1f})"))
        print(f"| {out[-1][0]} | {out[-1][1]} |", file=sys.stderr, flush=True)
    for n in students:
        for kind, seeds in (("own seeds", [1000 * n + i for i in range(n)]), ("one preset", [n + 7] * n)):
            finals = {}
            for on in (True, False):
                mode(on)
                res = room(seeds)
                first, done = [r["first"] for r in res], [r["done"] for r in res]
                finals[on] = [r["final"] for r in res]
                out.append((f"in-process handler, {labels[on]}: {n} students at once, {kind}",
                            f"first frame p50 {_pct(first, 50):.2f} s / p95 {_pct(first, 95):.2f} s; done p50 "
                            f"{_pct(done, 50):.2f} s / p95 {_pct(done, 95):.2f} s = **{_pct(done, 95) / base[on]:.1f}x** "
                            f"the lone run (load avg {os.getloadavg()[0]:.1f})"))
                print(f"| {out[-1][0]} | {out[-1][1]} |", file=sys.stderr, flush=True)
            diffs = [_levels(a, b) for a, b in zip(finals[True], finals[False])]
            out.append((f"{n} students, {kind}: final image (PNG), scheduler on vs each run alone, max |diff|",
                        f"{max(diffs)} / 255 over {len(diffs)} runs ({sum(d > 0 for d in diffs)} differ at all)"))
            print(f"| {out[-1][0]} | {out[-1][1]} |", file=sys.stderr, flush=True)
    os.environ.pop("DL_STEP_BATCHING", None)
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--students", type=int, nargs="+", default=[16, 32])
    p.add_argument("--skip-curve", action="store_true", help="only the simulated room")
    p.add_argument("--in-process", action="store_true", help="the room without HTTP (handler_rows): for a loaded machine")
    args = p.parse_args(argv)
    print(f"# lecture room ({os.cpu_count()} CPUs, load avg {os.getloadavg()[0]:.1f})\n\n| what | figure |\n|---|---|")
    if not args.skip_curve:
        from pipelines.runtime import Runtime

        for what, fig in rows(Runtime.create("cpu"), room=False):
            print(f"| {what} | {fig} |", flush=True)
    for what, fig in (handler_rows if args.in_process else room_rows)(tuple(args.students)):
        print(f"| {what} | {fig} |", flush=True)


if __name__ == "__main__":
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
