"""Lecture-room figures (issue 20): the UNet's cost per image against the batch size (the batching curve), and
how much a sample's floats depend on the company it is computed in (batch invariance).

    .venv/bin/python scripts/benchmark.py --only room

Timings interleave the batch sizes (medians of ``REPEATS`` rounds), so load from other programs hits every size
alike; the ratios are what count.
"""

from __future__ import annotations

import statistics
import time

import torch

BATCHES = (1, 2, 4, 8, 16, 32, 64)
REPEATS = 5


def _inputs(model, b: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((b, *model.sample_shape), generator=g)
    emb = model.encode_prompt(["a red circle on a navy background"] * b)
    t = torch.full((b,), 500, dtype=torch.long)
    return x, t, emb


def rows(runtime):
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
    return out
