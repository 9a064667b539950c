"""Evaluate guidance on the bundled models, and benchmark its cost per step.

    python -m pipelines.guidance_eval                 # full report (several minutes on 2 cores)
    python -m pipelines.guidance_eval --quick         # fewer prompts and steps
    python -m pipelines.guidance_eval --bench-only    # only the step-cost ratios

Prints:

1. **CFG**: prompt adherence against the guidance scale w, from a small batch per scale with the
   same seeds at every scale: the fraction of samples whose tiny-CLIP zero-shot attributes
   (shape and colour, and background) match the prompt, the mean tiny-CLIP cosine score, and
   diversity (mean pairwise 1 − cos between samples of one prompt). Expected: adherence rises
   with w to a peak, diversity falls.
2. **CLIP guidance**: final CLIP loss (whole image, no cutouts, 2·arcsin(‖a−b‖/2)²) with and
   without guidance, same initial noise per seed, on 20 seeds (4 prompts × 5 seeds): how many
   seeds it lowers (goal ≥ 80%).
3. **Colour guidance**: distance of the mean colour to the target, with and without, per target.
4. **Benchmark**: a batched CFG step and a CLIP-guided step, each ÷ a plain step (one UNet
   pass), measured interleaved in one run (goal ≤ 1.3× and ≤ 3×).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from pipelines import loss_guidance as LG
from pipelines import guidance as G
from pipelines.diffusion.loop import sample, sample_steps

CFG_SCALES = (0.0, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0)
CFG_PROMPTS = [
    "a red circle on a white background", "a blue square on a black background",
    "a yellow star on a navy background", "a green cross on a gray background",
    "a purple triangle on a white background", "a cyan circle on a navy background",
    "a orange square on a gray background", "a pink star on a black background",
    "a red triangle on a gray background", "a blue cross on a white background",
    "a yellow circle on a black background", "a green square on a navy background",
]
CLIP_PROMPTS = ["a red circle on a white background", "a blue square on a black background",
                "a yellow star on a navy background", "a green cross on a gray background"]
COLOUR_TARGETS = {"cyan #00c8ff": "#00c8ff", "magenta #ff00ff": "#ff00ff", "green #00ff00": "#00ff00"}


def _latents(model, seeds) -> torch.Tensor:
    """One x_T per seed, each from its own generator: ``[len(seeds), C, H, W]``."""
    return torch.cat([torch.randn((1, *model.sample_shape), generator=torch.Generator().manual_seed(s))
                      for s in seeds])


def eval_cfg(model, clip, prompts, samples: int, steps: int, seed: int = 0) -> list[dict]:
    print(f"\n1. CFG: {len(prompts)} prompts x {samples} samples per scale, DDIM {steps} steps, same seeds")
    print(f"{'w':>6} {'match':>7} {'CLIP score':>11} {'diversity':>10}", flush=True)
    rows = []
    for w in CFG_SCALES:  # one scale at a time, so rows print as they finish
        r = G.adherence_diversity(model, clip, prompts, [w], samples=samples, seed=seed,
                                  num_inference_steps=steps, sampler="DDIM")[0]
        rows.append(r)
        print(f"{r['scale']:>6.1f} {r['match']:>7.1%} {r['clip_score']:>11.4f} {r['diversity']:>10.4f}", flush=True)
    best = max(rows, key=lambda r: r["match"])
    print(f"   peak adherence {best['match']:.1%} at w = {best['scale']:g} "
          f"(w = 0: {rows[0]['match']:.1%}, w = 1: {rows[1]['match']:.1%}, w = {rows[-1]['scale']:g}: "
          f"{rows[-1]['match']:.1%})")
    return rows


def eval_clip(model, clip, steps: int, scale: float, n_cutouts: int, seeds_per_prompt: int = 5,
              scaling: str = "sqrt_alpha_bar") -> tuple[int, int]:
    print(f"\n2. CLIP guidance: unconditional base (empty prompt), DDIM {steps} steps, scale {scale:g}, "
          f"{n_cutouts} cutouts, factor {LG.SCALINGS[scaling]}")
    wins = total = 0
    deltas = []
    for p_i, prompt in enumerate(CLIP_PROMPTS):
        seeds = [100 * p_i + s for s in range(seeds_per_prompt)]
        x_T = _latents(model, seeds)
        kw = dict(guidance_scale=1.0, num_inference_steps=steps, sampler="DDIM", latents=x_T)
        with torch.no_grad():
            plain = sample(model, [""] * len(seeds), **kw)
        hook = LG.clip_guidance(clip, prompt, scale, n_cutouts=n_cutouts, scaling=scaling,
                               generator=torch.Generator().manual_seed(p_i))
        guided = sample(model, [""] * len(seeds), cond_fn=hook, **kw)
        before = LG.final_clip_loss(clip, plain, prompt)
        after = LG.final_clip_loss(clip, guided, prompt)
        w = int((after < before).sum())
        wins, total = wins + w, total + len(seeds)
        deltas += (after - before).tolist()
        print(f"   {prompt!r:42} loss without {before.mean():.4f}  with {after.mean():.4f}  lower on {w}/{len(seeds)}",
              flush=True)
    print(f"   CLIP guidance lowers the final CLIP loss on {wins}/{total} seeds ({wins / total:.0%}); "
          f"mean change {statistics.mean(deltas):+.4f}")
    return wins, total


def eval_colour(model, steps: int, scale: float, n_seeds: int = 8, scaling: str = "sqrt_alpha_bar") -> None:
    print(f"\n3. Colour guidance: prompt 'a red circle on a white background' (CFG w = 3), DDIM {steps} steps, "
          f"scale {scale:g}, factor {LG.SCALINGS[scaling]}, {n_seeds} seeds")
    prompts = ["a red circle on a white background"] * n_seeds
    x_T = _latents(model, range(n_seeds))
    kw = dict(guidance_scale=3.0, num_inference_steps=steps, sampler="DDIM", latents=x_T)
    with torch.no_grad():
        plain = sample(model, prompts, **kw)
    for name, colour in COLOUR_TARGETS.items():
        target = torch.tensor(LG.parse_color(colour))
        guided = sample(model, prompts, cond_fn=LG.color_guidance(colour, scale, scaling=scaling), **kw)
        d0 = (LG.mean_color(plain) - target).norm(dim=1)
        d1 = (LG.mean_color(guided) - target).norm(dim=1)
        print(f"   {name:16} mean-colour distance without {d0.mean():.3f}  with {d1.mean():.3f}  "
              f"(closer on {int((d1 < d0).sum())}/{n_seeds}); mean colour {_fmt(LG.mean_color(plain).mean(0))} -> "
              f"{_fmt(LG.mean_color(guided).mean(0))}", flush=True)


def _fmt(c) -> str:
    return "(" + ", ".join(f"{float(v):.2f}" for v in c) + ")"


# --------------------------------------------------------------------------- benchmark


def _time_steps(model, steps: int, **kw) -> float:
    """Seconds per step of one run (after the first step, which includes setup)."""
    times = []
    t0 = time.perf_counter()
    for rec in sample_steps(model, kw.pop("prompt", ""), num_inference_steps=steps, sampler="DDIM",
                            generator=torch.Generator().manual_seed(0), preview="none", **kw):
        t1 = time.perf_counter()
        if rec.index > 0:
            times.append(t1 - t0)
        t0 = t1
    return statistics.median(times)


def bench_guidance_steps(model=None, clip=None, steps: int = 8, repeats: int = 5, n_cutouts: int = 4) -> list[dict]:
    """Per-step cost of plain, batched-CFG and CLIP-guided sampling, interleaved in one run.

    Returns rows ``{"name", "seconds", "ratio"}``; ratios are ÷ the plain step (one UNet pass,
    batch 1, w = 1). Medians over ``repeats`` rounds; each round runs every variant once.
    """
    if model is None or clip is None:
        from pipelines.models import ModelRegistry

        reg = ModelRegistry("cpu")
        model, clip = model or reg.diffusion(), clip or reg.clip()
    prompt = "a red circle on a white background"
    variants = {
        "plain step (w = 1, one UNet pass)": lambda: dict(prompt=prompt, guidance_scale=1.0),
        "CFG step (w = 7.5, batched [uncond, cond])": lambda: dict(prompt=prompt, guidance_scale=7.5),
        f"CLIP-guided step ({n_cutouts} cutouts, w = 1)": lambda: dict(
            prompt="", guidance_scale=1.0,
            cond_fn=LG.clip_guidance(clip, prompt, 100.0, n_cutouts=n_cutouts)),
        f"CLIP-guided step through the UNet ({n_cutouts} cutouts)": lambda: dict(
            prompt="", guidance_scale=1.0,
            cond_fn=LG.clip_guidance(clip, prompt, 100.0, n_cutouts=n_cutouts, through_unet=True)),
    }
    _time_steps(model, 3, **variants["plain step (w = 1, one UNet pass)"]())  # warm-up
    samples: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(repeats):
        for name, make in variants.items():
            samples[name].append(_time_steps(model, steps, **make()))
    base = statistics.median(samples["plain step (w = 1, one UNet pass)"])
    return [{"name": k, "seconds": statistics.median(v), "ratio": statistics.median(v) / base}
            for k, v in samples.items()]


def print_bench(rows: list[dict]) -> None:
    print(f"\n4. Step cost, interleaved in one run ({torch.get_num_threads()} threads); goals: CFG ≤ 1.3x, CLIP ≤ 3x")
    for r in rows:
        print(f"   {r['name']:52} {r['seconds'] * 1000:8.1f} ms   {r['ratio']:5.2f}x")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer prompts and steps")
    ap.add_argument("--bench-only", action="store_true")
    ap.add_argument("--steps", type=int, default=None, help="DDIM steps (default 30, quick 10)")
    ap.add_argument("--clip-scale", type=float, default=200.0)
    ap.add_argument("--cutouts", type=int, default=4)
    ap.add_argument("--colour-scale", type=float, default=LG.COLOUR_SCALE_DEFAULT)
    ap.add_argument("--sections", default="cfg,clip,colour,bench", help="comma-separated subset")
    args = ap.parse_args(argv)
    sections = set(args.sections.split(",")) if not args.bench_only else {"bench"}
    from pipelines.models import ModelRegistry

    reg = ModelRegistry("cpu")
    model, clip = reg.diffusion(), reg.clip()
    steps = args.steps or (10 if args.quick else 30)
    t0 = time.time()
    if "cfg" in sections:
        prompts = CFG_PROMPTS[:6] if args.quick else CFG_PROMPTS
        eval_cfg(model, clip, prompts, samples=2 if args.quick else 4, steps=steps)
    if "clip" in sections:
        eval_clip(model, clip, steps, args.clip_scale, args.cutouts)
    if "colour" in sections:
        eval_colour(model, steps, args.colour_scale, n_seeds=4 if args.quick else 8)
    if "bench" in sections:
        print_bench(bench_guidance_steps(model, clip))
    print(f"\n({time.time() - t0:.0f}s)")


if __name__ == "__main__":
    main()
