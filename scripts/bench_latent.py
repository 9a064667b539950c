"""Benchmark rows of toy-sd3 and the Latent space tab (issue 18), run by ``scripts/benchmark.py``.

Side by side in one run, interleaved (A B A B …), medians and bests:

* one 28-step toy-sd3 sample (FlowMatchEuler + CFG, batch 2 per call) *including* the toy-vae decode, through
  the one loop (:func:`pipelines.diffusion.loop.sample`), against toy-sd's 50-step DDIM + CFG sample (pixels);
* the same per step: one denoiser call with CFG, pixel (toy-sd, 32 px) vs latent (toy-sd3, 16×16×4 for 64 px),
  and the decode alone; the cheap linear preview against the decode.
Issue 18 asks ≤ 1.0 s for the toy-sd3 sample on 2 CPU cores.
"""

from __future__ import annotations

import statistics
import time

import torch

PROMPT = "a red circle on a white background"
SD3 = "toy-sd3 (bundled, 64 px, latent)"


def rows(runtime, repeats: int = 7) -> list[tuple[str, str]]:
    from pipelines import latent
    from pipelines.diffusion import loop

    reg = runtime.registry
    toy, sd3 = reg.diffusion(), reg.diffusion(SD3)
    runs = {
        "toy-sd: 50-step DDIM + CFG (pixels, 32 px)": lambda s: loop.sample(
            toy, PROMPT, sampler="DDIM", num_inference_steps=50, guidance_scale=4.0,
            generator=torch.Generator().manual_seed(s)),
        "toy-sd3: 28-step Euler + CFG + VAE decode (latents, 64 px)": lambda s: loop.sample(
            sd3, PROMPT, sampler="Euler", num_inference_steps=28, guidance_scale=3.0,
            generator=torch.Generator().manual_seed(s)),
    }
    for fn in runs.values():  # warm-up (and the traced UNet's first call)
        fn(0)
    times: dict[str, list[float]] = {k: [] for k in runs}
    for r in range(repeats):
        names = list(runs) if r % 2 == 0 else list(runs)[::-1]  # alternate who goes first
        for name in names:
            t0 = time.perf_counter()
            runs[name](r)
            times[name].append(time.perf_counter() - t0)
    out = []
    for name, v in times.items():
        target = " (issue 18: ≤ 1.0 s)" if name.startswith("toy-sd3") else ""
        out.append((name, f"median {statistics.median(v):.3f} s, best {min(v):.3f} s, of {repeats}{target}"))
    ratio = statistics.median(times[list(runs)[1]]) / statistics.median(times[list(runs)[0]])
    out.append(("toy-sd3 sample / toy-sd sample (medians)", f"{ratio:.2f}"))
    for r in latent.step_costs({toy.name: toy, sd3.name: sd3}, PROMPT, repeats=repeats * 3):
        dec = "" if r["decode_ms"] is None else f"; decode {r['decode_ms']:.1f} ms"
        out.append((f"one step with CFG, {r['model']}", f"{r['call_ms']:.1f} ms for {r['model_numbers']:,} numbers "
                                                         f"({r['image_numbers']:,} pixel values){dec}"))
    cheap, dec = [], []
    for st in latent.preview_vs_decode(sd3, PROMPT, steps=28, generator=torch.Generator().manual_seed(0)):
        cheap.append(st.preview_ms)
        dec.append(st.decode_ms)
    out.append(("toy-sd3 x_t per step: cheap linear preview vs VAE decode",
                f"{statistics.median(cheap):.2f} ms vs {statistics.median(dec):.1f} ms (medians of 28 steps)"))
    return out
