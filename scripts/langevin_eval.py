"""Annealed Langevin vs DDIM with the bundled toy-sd, judged by rendering (issue 21, item 2).

For each budget "LxK" (L noise levels × K Langevin steps, +1 denoising call) both samplers get the same
number of model calls, the same prompts, the same x_T per seed and the same CFG w. Each image is judged by
:mod:`pipelines.toyworld.render_judge` (colour and background as the prompt names them; shape reported too)
and its roughness (mean |Laplacian|, :func:`pipelines.guidance_judge.roughness`).

    OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python scripts/langevin_eval.py --seeds 20 --budgets 10x2 10x5 20x5
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from pipelines.diffusion.loop import sample  # noqa: E402
from pipelines.guidance_judge import expected, roughness  # noqa: E402
from pipelines.models import ModelRegistry  # noqa: E402
from pipelines.theory.langevin import DEFAULT_DELTA, langevin_sample, model_calls  # noqa: E402
from pipelines.toyworld.render_judge import classify_by_rendering  # noqa: E402
from pipelines.toyworld.world import HELD_OUT, all_captions, make_batch, parse_caption  # noqa: E402


def prompts_and_latents(model, n: int) -> tuple[list[str], torch.Tensor]:
    """``n`` trained (non-held-out) captions drawn with a fixed rng, and one x_T per seed 0..n−1."""
    caps = [c for c in all_captions() if (parse_caption(c)["color"], parse_caption(c)["shape"]) not in HELD_OUT]
    prompts = random.Random(0).sample(caps, n)
    lat = torch.cat([torch.randn((1, *model.sample_shape), generator=torch.Generator().manual_seed(s))
                     for s in range(n)])
    return prompts, lat


def judged(images: torch.Tensor, prompts: list[str]) -> dict:
    got = classify_by_rendering(images)
    want = [expected(p) for p in prompts]
    n = len(prompts)
    cb = sum(g["color"] == w["color"] and g["background"] == w["background"] for g, w in zip(got, want)) / n
    shape = sum(g["shape"] == w["shape"] for g, w in zip(got, want)) / n
    return {"colour+background": cb, "shape": shape, "roughness": statistics.median(roughness(images).tolist())}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--budgets", nargs="+", default=["10x2", "10x5", "20x5"], help="LxK: levels x steps per level")
    ap.add_argument("--w", type=float, default=5.0, help="CFG scale for both samplers")
    ap.add_argument("--delta", type=float, default=DEFAULT_DELTA, help="Langevin step δ (η = δ(1 − ᾱ_t))")
    ap.add_argument("--no-ddim", action="store_true", help="Langevin rows only (tuning δ)")
    args = ap.parse_args(argv)
    model = ModelRegistry().diffusion()
    prompts, lat = prompts_and_latents(model, args.seeds)
    print(f"{args.seeds} seeds (prompt i with x_T from seed i), w = {args.w:g}, δ = {args.delta:g}")
    print("| sampler | budget | model calls | colour+background | shape | roughness (median) | time (s, loaded) |")
    print("|---|---|---|---|---|---|---|")
    ref, scenes = make_batch(args.seeds, 0)
    r = judged(ref, [sc.caption() for sc in scenes])
    print(f"| rendered scenes (reference) | - | - | {r['colour+background']:.0%} | {r['shape']:.0%} "
          f"| {r['roughness']:.1f} | - |", flush=True)
    for b in args.budgets:
        levels, k = (int(v) for v in b.lower().split("x"))
        calls = model_calls(model.make_scheduler("DDIM"), levels, k)
        runs = [("Langevin", lambda: langevin_sample(model, prompts, guidance_scale=args.w, n_levels=levels,
                                                     steps_per_level=k, delta=args.delta, latents=lat.clone(),
                                                     generator=torch.Generator().manual_seed(0)))]
        if not args.no_ddim:
            runs.append(("DDIM", lambda: sample(model, prompts, guidance_scale=args.w, num_inference_steps=calls,
                                                sampler="DDIM", latents=lat.clone())))
        for name, fn in runs:
            t0 = time.time()
            with torch.no_grad():
                img = fn()
            r = judged(img, prompts)
            print(f"| {name} | {levels}×{k} | {calls} | {r['colour+background']:.0%} | {r['shape']:.0%} "
                  f"| {r['roughness']:.1f} | {time.time() - t0:.0f} |", flush=True)


if __name__ == "__main__":
    main()
