"""Benchmark rows for issue 17 (Inside the model): a sampling run with every cross-attention map
recorded against a plain run (the traced UNet), and an eager plain run (what the recording run gives up
by leaving the traced graph), interleaved in one run on the bundled toy-sd; the memory a 50-step
run's maps take."""

from __future__ import annotations

import statistics
import time


def rows(runtime, steps: int = 50, rounds: int = 5) -> list[tuple[str, str]]:
    import torch

    from pipelines import attention as A
    from pipelines.diffusion import maths
    from pipelines.diffusion.loop import sample
    from pipelines.models import traced_unet

    model = runtime.registry.diffusion()
    prompt = "a red circle on a navy background"
    lat = maths.randn((1, *model.sample_shape), torch.Generator().manual_seed(0), model.device, model.unet.dtype)

    def plain():
        sample(model, prompt, num_inference_steps=steps, guidance_scale=4.0, latents=lat,
               generator=torch.Generator().manual_seed(0))

    def eager():
        with traced_unet.eager():
            plain()

    runs = {}

    def maps():
        runs["last"] = A.run(model, prompt, seed=0, steps=steps, guidance_scale=4.0, latents=lat)

    calls = {"plain": plain, "plain, eager UNet": eager, "maps recorded": maps}
    secs: dict[str, list[float]] = {k: [] for k in calls}
    for f in calls.values():  # warm-up: traced graphs, caches
        f()
    for _ in range(rounds):
        for k, f in calls.items():
            t0 = time.perf_counter()
            f()
            secs[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in secs.items()}
    rec = runs["last"].record
    per_step = rec.nbytes / steps
    return [
        (f"{steps}-step DDIM + CFG run with every cross-attention map recorded ÷ plain run",
         f"{med['maps recorded']:.2f} / {med['plain']:.2f} s = {med['maps recorded'] / med['plain']:.2f}x "
         f"(median of {rounds}, interleaved)"),
        ("… of which leaving the traced UNet (eager plain ÷ plain)",
         f"{med['plain, eager UNet']:.2f} / {med['plain']:.2f} s = {med['plain, eager UNet'] / med['plain']:.2f}x"),
        (f"memory of a {steps}-step run's maps (float16, {len(rec.layers)} layers, all heads, {rec.tokens} tokens)",
         f"{rec.nbytes / 1e6:.1f} MB ({per_step / 1e3:.0f} kB per step)"),
    ]
