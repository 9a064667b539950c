"""Benchmark rows for issue 21 (fine-tuning on a new shape): fine-tune the bundled toy-sd on hearts for a
wall-clock budget, with and without prior preservation, and judge (rendering judge) the heart rate and the
old-prompt adherence; wall and CPU seconds side by side (the machine may be loaded)."""

from __future__ import annotations

import tempfile
import time


def rows(runtime=None, seconds: float = 300.0, n: int = 32, chunk: int = 10) -> list[tuple[str, str]]:
    import torch
    from diffusers import DDPMScheduler, UNet2DConditionModel

    from pipelines.models import TOY_CLIP_DIR, TOY_SD_DIR, load_toy_clip, load_toy_diffusion
    from pipelines.training.finetune import FineTuneConfig, FineTuner, judge_rates

    cpu = torch.device("cpu")
    clip = load_toy_clip(TOY_CLIP_DIR / "open_clip_model.safetensors", TOY_CLIP_DIR / "toy-clip.json", cpu)
    base = load_toy_diffusion(TOY_SD_DIR, TOY_CLIP_DIR, cpu, clip=clip)
    before = judge_rates(base, n)
    out = [(f"base toy-sd: prompts judged hearts / old prompts right (n={n})",
            f"{before['heart']:.0%} / {before['old']:.0%}")]
    for prior in (0.5, 0.0):
        tuner = FineTuner(UNet2DConditionModel.from_pretrained(TOY_SD_DIR / "unet"), clip,
                          DDPMScheduler.from_pretrained(TOY_SD_DIR / "scheduler"), FineTuneConfig(prior=prior))
        w0, c0 = time.perf_counter(), time.process_time()
        while time.perf_counter() - w0 < seconds:
            tuner.run(chunk)
        wall, cpu_s = time.perf_counter() - w0, time.process_time() - c0
        with tempfile.TemporaryDirectory() as d:
            rates = judge_rates(load_toy_diffusion(tuner.save(d), TOY_CLIP_DIR, cpu, clip=clip), n)
        out.append((f"fine-tune {wall:.0f} s wall ({cpu_s:.0f} CPU s, {tuner.step} steps), prior {prior}: "
                    f"hearts / old prompts right", f"{rates['heart']:.0%} / {rates['old']:.0%}"))
    return out
