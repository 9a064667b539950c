"""Benchmark rows of the Denoising viewer (issue #4), run by ``scripts/benchmark.py``.

All rows are measured side by side in one run, with the bundled toy model:

* bare loop vs streaming loop: a diffusers-style loop (UNet + CFG + ``scheduler.step``, no
  records), :func:`pipelines.diffusion.loop.sample` and the tab's streaming generator (records,
  uint8 trajectory, throttled PNG frames), interleaved ABC ABC ..., medians;
* the same run streamed through ``python app.py`` to a client that downloads every frame, against
  the bare loop with the same torch threads and UNet forward: as shipped, with the eager UNet, with
  all cores in the compute thread, and without the compute thread;
* time to first frame after the click, through gradio_client against the launched app;
* bytes sent to the browser for a 50-step run (every streamed image file + the JSON);
* one 50-step DDIM + CFG sample, traced UNet vs eager (``DL_JIT=0``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import statistics
import time

import torch

from scripts import app_process

PROMPT = "a red circle on a navy background"


@contextlib.contextmanager
def _jit(value: str):
    """``DL_JIT`` set to ``value`` ("1": traced UNet, "0": eager; :mod:`pipelines.models.traced_unet`) inside
    the block, restored after. The traced forward reads it on every call."""
    own = os.environ.get("DL_JIT")
    os.environ["DL_JIT"] = value
    try:
        yield
    finally:
        if own is None:
            os.environ.pop("DL_JIT", None)
        else:
            os.environ["DL_JIT"] = own
STEPS = 50
W = 4.0


def _bare_loop(model, seed: int) -> torch.Tensor:
    """The minimal loop (StableDiffusionPipeline's, without records or hooks)."""
    sch = model.make_scheduler("DDIM")
    emb = torch.cat([model.encode_prompt([""]), model.encode_prompt([PROMPT])])
    sch.set_timesteps(STEPS)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((1, *model.sample_shape), generator=g) * sch.init_noise_sigma
    with torch.no_grad():
        for t in sch.timesteps:
            inp = sch.scale_model_input(torch.cat([x] * 2), t)
            u, c = model.unet(inp, t, encoder_hidden_states=emb).sample.chunk(2)
            x = sch.step(u + W * (c - u), t, x, generator=g).prev_sample
    return x.clamp(-1, 1)


def loop_rows(runtime, repeats: int = 11) -> list[tuple[str, str]]:
    """Bare loop vs ``loop.sample`` vs the viewer's streaming generator, interleaved.

    Two figures per loop: the wall-time median, and the median time spent *outside* the UNet's
    forward (scheduler, records, uint8 trajectory, PNG frames, filmstrip). On a shared 2-vCPU host
    the UNet alone varies by ±10% between identical runs, which swamps a 5% criterion in the
    totals; the extra work a loop adds is its outside-UNet time minus the bare loop's, so
    that difference over the bare loop's total is reported as the overhead."""
    from demos import denoising_viewer as dv
    from pipelines.diffusion import loop

    model = runtime.registry.diffusion()
    runs = {
        "bare diffusers-style loop": lambda s: _bare_loop(model, s),
        "loop.sample (records)": lambda s: loop.sample(
            model, PROMPT, sampler="DDIM", num_inference_steps=STEPS, guidance_scale=W,
            generator=torch.Generator().manual_seed(s)),
        "viewer streaming generator": lambda s: list(dv.run_viewer(
            runtime, model.name, PROMPT, "", "DDIM", STEPS, 0.0, s, W, False, None, 0.6)),
    }
    in_unet = [0.0]
    forward = model.unet.forward

    def timed_forward(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return forward(*args, **kwargs)
        finally:
            in_unet[0] += time.perf_counter() - t0

    model.unet.forward = timed_forward
    try:
        for fn in runs.values():  # warm-up
            fn(0)
        times: dict[str, list[float]] = {k: [] for k in runs}
        outside: dict[str, list[float]] = {k: [] for k in runs}
        for r in range(repeats):
            names = list(runs)
            names = names[r % len(names):] + names[:r % len(names)]  # rotated: no loop always goes first
            for name in names:  # interleaved, so load changes hit all alike
                fn = runs[name]
                in_unet[0] = 0.0
                t0 = time.perf_counter()
                fn(r)
                times[name].append(time.perf_counter() - t0)
                outside[name].append(times[name][-1] - in_unet[0])
    finally:
        model.unet.forward = forward  # back to the model's own forward (traced, pipelines.models.traced_unet)
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {k: statistics.median(v) for k, v in outside.items()}
    low = {k: min(v) for k, v in times.items()}
    bare = "bare diffusers-style loop"
    base, base_out, base_low = med[bare], out[bare], low[bare]
    return [(f"{STEPS}-step DDIM + CFG, {k}",
             f"median {v:.3f} s ({100 * (v / base - 1):+.1f}% vs bare), best {low[k]:.3f} s "
             f"({100 * (low[k] / base_low - 1):+.1f}%), of {repeats} · outside the UNet {out[k] * 1000:.0f} ms "
             f"(extra work {100 * (out[k] - base_out) / base:+.1f}% of the bare loop)")
            for k, v in med.items()]


NO_REPLAY = {"DL_REPLAY_MB": "0"}  # every timed run computes (the warm-up's seed recurs)


def _args(seed: int):
    from pipelines.models import DEFAULT_DIFFUSION_SPECS

    return (DEFAULT_DIFFUSION_SPECS[0].name, PROMPT, "", "DDIM", STEPS, 0.0, seed, W, False, None, 0.6)


def app_vs_bare_rows(runtime, trials: int = 5) -> list[tuple[str, str]]:
    """A 50-step run streamed through the app to a client that downloads every frame (as a browser
    does) against the bare loop in this process with the same torch thread count, interleaved
    (bare, app, bare, app, ...; the app is idle during the bare runs). Four servers: as shipped (traced
    UNet, :mod:`pipelines.models.traced_unet`; one compute thread with all cores but one,
    :mod:`pipelines.serving.compute_thread`), with the eager UNet (``DL_JIT=0``), with all cores in the compute
    thread (``DL_TORCH_THREADS``), and without the compute thread (``DL_COMPUTE_THREAD=0``: handlers in
    gradio's worker threads, all cores). Each bare loop uses its server's UNet forward and thread count."""
    from pipelines.serving import compute_thread

    model = runtime.registry.diffusion()
    out = []
    variants = [("as shipped (traced UNet, compute thread one frame ahead, %d torch thread%s)", {},
                 compute_thread.default_threads()),
                ("eager UNet (DL_JIT=0; compute thread, %d torch thread%s)", {"DL_JIT": "0"},
                 compute_thread.default_threads()),
                ("compute thread with all cores (DL_TORCH_THREADS=%d; traced UNet, %d torch thread%s)",
                 {"DL_TORCH_THREADS": str(torch.get_num_threads())}, torch.get_num_threads()),
                ("no compute thread (DL_COMPUTE_THREAD=0: gradio worker threads, %d torch thread%s)",
                 {"DL_COMPUTE_THREAD": "0"}, torch.get_num_threads())]
    for label, env, n_threads in variants:
        label = label % ((n_threads,) * label.count("%d") + ("" if n_threads == 1 else "s",))
        port = app_process.free_port()
        proc = app_process.launch(port, {**NO_REPLAY, **env})
        try:
            client = app_process.connect(proc, port)
            client.predict(*_args(0), api_name="/viewer_run")  # warm-up (model load)
            own = torch.get_num_threads()
            torch.set_num_threads(n_threads)
            bare, e2e, server = [], [], []
            try:
                with _jit(env.get("DL_JIT", "1")):  # the bare loop runs the same UNet forward as the app
                    _bare_loop(model, 0)
                    for k in range(trials):
                        t0 = time.perf_counter()
                        _bare_loop(model, k)
                        bare.append(time.perf_counter() - t0)
                        t0 = time.perf_counter()
                        final = client.submit(*_args(k), api_name="/viewer_run").result()
                        e2e.append(time.perf_counter() - t0)
                        server.append(float(re.search(r"done in ([\d.]+) s", final[3]).group(1)))
            finally:
                torch.set_num_threads(own)
        finally:
            app_process.stop(proc)
        ratios = [a / b for a, b in zip(server, bare)]
        client_ratios = [a / b for a, b in zip(e2e, bare)]
        out.append((f"{STEPS}-step run streamed through the app, {label}",
                    f"in the server (click to last frame sent, the tab's 'done in'): median {statistics.median(server):.2f} s "
                    f"vs bare loop {statistics.median(bare):.2f} s (same threads, interleaved) = "
                    f"**{statistics.median(ratios):.3f}x** median of {trials} pairs (range {min(ratios):.3f}-{max(ratios):.3f}x); "
                    f"at the client (gradio_client, downloading each frame in turn): {statistics.median(e2e):.2f} s = "
                    f"{statistics.median(client_ratios):.2f}x"))
    return out


def client_rows(runtime, trials: int = 5) -> list[tuple[str, str]]:
    """Launch the app in its own process (as in real use: the browser is another process), then
    time the first streamed frames and count the bytes of a 50-step run through gradio_client."""
    port = app_process.free_port()
    proc = app_process.launch(port, NO_REPLAY)
    try:
        client = app_process.connect(proc, port)
        client.predict(*_args(0), api_name="/viewer_run")  # warm-up (model load)
        firsts, steps1, totals, sizes, n_frames = [], [], [], [], []
        for k in range(trials):
            t0 = time.perf_counter()
            job = client.submit(*_args(k), api_name="/viewer_run")
            first = step1 = None
            while not job.done():
                outs = job.outputs()
                now = time.perf_counter() - t0
                if first is None and outs:
                    first = now
                if step1 is None and any("step 1 /" in str(o[3]) for o in outs):
                    step1 = now
                time.sleep(0.005)
            totals.append(time.perf_counter() - t0)
            outs = job.outputs()
            firsts.append(first if first is not None else totals[-1])
            steps1.append(step1 if step1 is not None else totals[-1])
            # what the browser then fetches: the scrubber and filmstrip (event chained on the run)
            slider, strip = client.predict(api_name="/viewer_filmstrip")
            files = set()
            for o in outs:
                files.update(p for p in o[:3] if isinstance(p, str) and os.path.exists(p))
            files.update(g["image"] for g in strip)
            payload = sum(os.path.getsize(p) for p in files)
            payload += sum(len(json.dumps(o, default=str)) for o in [*outs, slider, strip])  # the JSON, roughly
            sizes.append(payload)
            n_frames.append(len(outs))
    finally:
        app_process.stop(proc)
    ms = lambda v: f"{statistics.median(v) * 1000:.0f} ms median of {trials} (max {max(v) * 1000:.0f} ms)"  # noqa: E731
    return [
        ("time to first frame (x_T) after the click (gradio_client, app in its own process)", ms(firsts)),
        ("time to the first model step's frame (x_t, x̂0, ε̂ of step 1)", ms(steps1)),
        ("50-step run end to end through the app (client polling every 5 ms)", f"{statistics.median(totals):.2f} s median"),
        ("bytes sent for a 50-step run (images + JSON, filmstrip included)",
         f"{statistics.median(sizes) / 1e6:.3f} MB in {statistics.median(n_frames):.0f} messages"),
    ]


def sample_rows(runtime, repeats: int = 9) -> list[tuple[str, str]]:
    """One 50-step DDIM + CFG sample through :func:`pipelines.diffusion.loop.sample` (what the tabs and
    ``toyworld.evaluate`` run), traced UNet vs eager (``DL_JIT=0``, :mod:`pipelines.models.traced_unet`),
    interleaved, at this process's torch thread count (2 on 2 cores unless ``--threads``)."""
    from pipelines.diffusion import loop

    model = runtime.registry.diffusion()

    def run(jit: str, seed: int) -> float:
        with _jit(jit):
            t0 = time.perf_counter()
            loop.sample(model, "a blue star on a white background", sampler="DDIM", num_inference_steps=STEPS,
                            guidance_scale=5.0, generator=torch.Generator().manual_seed(seed))
            return time.perf_counter() - t0

    times: dict[str, list[float]] = {"1": [], "0": []}
    for jit in times:
        run(jit, 0)  # warm-up (the traced graph is built on its first call)
    for r in range(repeats):
        for jit in (("1", "0") if r % 2 == 0 else ("0", "1")):
            times[jit].append(run(jit, r))
    med = {k: statistics.median(v) for k, v in times.items()}
    label = {"1": "traced UNet (as shipped)", "0": "eager UNet (DL_JIT=0)"}
    return [(f"one {STEPS}-step DDIM + CFG sample, {label[k]}, {torch.get_num_threads()} torch threads",
             f"median {med[k]:.3f} s, best {min(v):.3f} s, of {repeats} interleaved"
             + (f" = **{med['0'] / med['1']:.2f}x** faster than eager (median)" if k == "1" else ""))
            for k, v in times.items()]


def rows(runtime) -> list[tuple[str, str]]:
    return sample_rows(runtime) + loop_rows(runtime) + app_vs_bare_rows(runtime) + client_rows(runtime)
