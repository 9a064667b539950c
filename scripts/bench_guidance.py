"""Benchmark rows for issue #5 (guidance): a batched CFG step and a CLIP-guided step, each
divided by a plain step (one UNet pass), measured interleaved in one run on the bundled models; and a whole
CLIP-guided run at the tab's default and at one pass per guided step, beside an unguided run (issue 15).

The measurement itself is :func:`pipelines.guidance_eval.bench_guidance_steps`
(also printed by ``python -m pipelines.guidance_eval --bench-only``).
"""

from __future__ import annotations


def unet_rows(model, rounds: int = 40) -> list[tuple[str, str]]:
    """The UNet alone, interleaved: batch 1 vs batch 2 (the floor under a batched CFG step's ratio)
    in the loaded memory format (channels_last, see ``pipelines.models.load_toy_diffusion``), and
    batch 2 in a contiguous (NCHW) copy of the same weights."""
    import copy
    import statistics
    import time

    import torch

    unet = model.unet
    nchw = copy.deepcopy(unet).to(memory_format=torch.contiguous_format)
    t = torch.tensor(500)
    x = torch.randn(2, *model.sample_shape)
    emb = torch.cat([model.encode_prompt([""]), model.encode_prompt(["a red circle"])])
    calls = {
        "batch 1": lambda: unet(x[:1], t, encoder_hidden_states=emb[:1]),
        "batch 2": lambda: unet(x, t, encoder_hidden_states=emb),
        "batch 2, NCHW": lambda: nchw(x, t, encoder_hidden_states=emb),
    }
    ms: dict[str, list[float]] = {k: [] for k in calls}
    with torch.no_grad():
        for f in calls.values():
            f()
        for _ in range(rounds):
            for k, f in calls.items():
                t0 = time.perf_counter()
                f()
                ms[k].append((time.perf_counter() - t0) * 1000)
    med = {k: statistics.median(v) for k, v in ms.items()}
    return [
        ("UNet alone, batch 2 ÷ batch 1 (channels_last, as loaded)",
         f"{med['batch 2']:.1f} / {med['batch 1']:.1f} ms = {med['batch 2'] / med['batch 1']:.2f}x "
         f"(median of {rounds}, interleaved)"),
        ("UNet alone, batch 2: contiguous NCHW ÷ channels_last",
         f"{med['batch 2, NCHW']:.1f} / {med['batch 2']:.1f} ms = {med['batch 2, NCHW'] / med['batch 2']:.2f}x"),
    ]


def clip_preset_rows(model, clip, steps: int = 30, rounds: int = 2) -> list[tuple[str, str]]:
    """One CLIP-guided run (unconditional base, DDIM) at the tab's default (time travel, 4 passes) and at
    one_pass, beside an unguided run; interleaved, median of ``rounds``."""
    import statistics
    import time

    import torch

    from pipelines import loss_guidance as LG
    from pipelines.diffusion.loop import sample

    def run(name):
        kw = dict(LG.CLIP_PRESETS[name]) if name else None
        hook = None
        if kw:
            scale, _ = kw.pop("scale"), kw.pop("clip")
            hook = LG.clip_guidance(clip, "a red circle on a white background", scale,
                                    generator=torch.Generator().manual_seed(0), **kw)
        sample(model, "", guidance_scale=1.0, num_inference_steps=steps, cond_fn=hook, sampler="DDIM",
               generator=torch.Generator().manual_seed(0))

    names = {"unguided": None, "one_pass": "one_pass", "default (time travel)": "default"}
    secs: dict[str, list[float]] = {k: [] for k in names}
    run("default")  # traced graphs and CLIP loaded: not measured
    for _ in range(rounds):
        for k, name in names.items():
            t0 = time.perf_counter()
            run(name)
            secs[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in secs.items()}
    return [(f"CLIP guidance {steps} steps, {k}", f"{med[k]:.2f} s = {med[k] / med['unguided']:.1f}x unguided")
            for k in names]


def rows(runtime) -> list[tuple[str, str]]:
    from pipelines.guidance_eval import bench_guidance_steps

    reg = runtime.registry
    out = []
    for r in bench_guidance_steps(reg.diffusion(), reg.clip()):
        out.append((r["name"], f"{r['seconds'] * 1000:.1f} ms/step = {r['ratio']:.2f}x plain"))
    return out + unet_rows(reg.diffusion()) + clip_preset_rows(reg.diffusion(), reg.clip("toy-clip-natural (bundled)"))
