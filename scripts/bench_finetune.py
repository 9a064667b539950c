"""Benchmark rows for issue 21 (fine-tuning toy-sd on a new shape), run by ``scripts/benchmark.py --only finetune``.

Budgets are CPU seconds of one torch thread (``time.process_time``, as scripts/bench_train.py), so the rows
mean the same on a shared, overloaded machine: 300 CPU s of one thread is what the app's compute thread
gets in 5 minutes of wall time on one idle core, less than 2 idle cores give it.

* the bundled toy-sd, then a fine-tune with and without prior preservation, judged at ``CHECKPOINTS``
  (CPU seconds of training; judging is not counted) by the rendering judge on ``N`` seeds each:
  heart prompts (colour and background drawn per seed) judged hearts; "a red heart on a white
  background" judged a heart; old-shape prompts judged right in shape and colour (absolute, and as a
  share of the bundled model's figure on the same prompts and seeds: the forgetting figure); roughness
  (mean |Laplacian|) of the heart samples beside rendered hearts';
* fairness: a forward-noising update from a second gradio_client session while a fine-tune runs in the
  app, against the same update with nothing running (``python app.py`` in a subprocess).
"""

from __future__ import annotations

import tempfile
import time

import torch

CHECKPOINTS = (60.0, 150.0, 300.0)
N = 20
JUDGE_STEPS = 20  # DDIM steps of every judged sample (the app's preview uses the same)


def _train_for(tuner, seconds: float, chunk: int = 5) -> float:
    """Train in chunks until ``seconds`` of this process's CPU time have passed; returns it."""
    c0 = time.process_time()
    while time.process_time() - c0 < seconds:
        tuner.run(chunk)
    return time.process_time() - c0


def _fmt(r: dict, base: dict) -> str:
    keep = r["old"] / base["old"] if base["old"] else float("nan")
    return (f"hearts {r['heart']:.0%}, red-heart prompt {r['red_heart']:.0%}, old prompts right {r['old']:.0%} "
            f"({keep:.0%} of the base's), roughness {r['roughness']:.3f}")


def rows_finetune(n: int = N, checkpoints=CHECKPOINTS, priors=(0.5, 0.0), base_row: bool = True, log=None,
                  **cfg) -> list[tuple[str, str]]:
    from diffusers import DDPMScheduler, UNet2DConditionModel

    from pipelines.models import TOY_CLIP_DIR, TOY_SD_DIR, load_toy_clip, load_toy_diffusion
    from pipelines.training.finetune import FineTuneConfig, FineTuner, judge_rates

    cpu = torch.device("cpu")
    clip = load_toy_clip(TOY_CLIP_DIR / "open_clip_model.safetensors", TOY_CLIP_DIR / "toy-clip.json", cpu)
    base = judge_rates(load_toy_diffusion(TOY_SD_DIR, TOY_CLIP_DIR, cpu, clip=clip), n, steps=JUDGE_STEPS) \
        if base_row else {"old": 0.0}
    out = [(f"bundled toy-sd (n={n} seeds per prompt set, {JUDGE_STEPS} DDIM steps, CFG 4)", _fmt(base, base))] \
        if base_row else []
    if out and log:
        log(*out[-1])
    for prior in priors:
        c = FineTuneConfig(**{**cfg, "prior": prior})
        tuner = FineTuner(UNet2DConditionModel.from_pretrained(TOY_SD_DIR / "unet"), clip,
                          DDPMScheduler.from_pretrained(TOY_SD_DIR / "scheduler"), c)
        trained = 0.0
        for cp in checkpoints:
            trained += _train_for(tuner, cp - trained)
            with tempfile.TemporaryDirectory() as d:
                r = judge_rates(load_toy_diffusion(tuner.save(d), TOY_CLIP_DIR, cpu, clip=clip), n, steps=JUDGE_STEPS)
            out.append((f"fine-tune, prior {prior} (lr {c.lr:g}, batch {c.batch}, {c.train}): "
                        f"{trained:.0f} CPU s, {tuner.step} steps", _fmt(r, base)))
            if log:  # a row as soon as it is measured (the probe's runs are long)
                log(*out[-1])
    return out


def rows_interleave() -> list[tuple[str, str]]:
    from pipelines.training.finetune import RED_HEART
    from scripts.bench_train import interleave_rows

    return interleave_rows(lambda a: a.submit(RED_HEART, "a green square on a black background", True, 0.5, 400,
                                              120, 0, 2e-4, "all", api_name="/finetune_train"),
                           "same, while another session fine-tunes toy-sd")


def rows(runtime=None) -> list[tuple[str, str]]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the budgets are CPU seconds of one thread, see _train_for
    try:
        out = rows_finetune()
    finally:
        torch.set_num_threads(threads)
    return out + rows_interleave()


if __name__ == "__main__":  # a recipe probe: python -m scripts.bench_finetune priors=0 base=0 lr=5e-4 checkpoints=60,300
    import sys

    torch.set_num_threads(1)
    kw = dict(a.split("=", 1) for a in sys.argv[1:])
    n, cps = int(kw.pop("n", N)), tuple(map(float, kw.pop("checkpoints", "60,150,300").split(",")))
    priors, base_row = tuple(map(float, kw.pop("priors", "0.5,0").split(","))), kw.pop("base", "1") == "1"
    kw = {k: (v if k == "train" else float(v) if "." in v or "e" in v else int(v)) for k, v in kw.items()}
    rows_finetune(n, cps, priors, base_row, lambda what, fig: print(f"| {what} | {fig} |", flush=True), **kw)
