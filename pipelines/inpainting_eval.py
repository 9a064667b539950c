"""Evaluate inpainting and sketch-to-image on the toy world with the bundled models.

    python -m pipelines.inpainting_eval                 # 20 seeds, DDIM 50 steps (a few minutes on 2 cores)
    python -m pipelines.inpainting_eval --seeds 5 --steps 25   # quick look

1. **Inpainting follows the prompt inside the mask.** Per seed: a toy scene (one shape, medium
   size, on a background) at 32 px; the mask is the shape's bounding box plus 2 px (the
   background around it is kept); the prompt asks for a *different colour and a different shape*
   on the same background. The result is classified by the tiny CLIP (zero-shot over all 160
   "a <colour> <shape> on a <bg> background" captions; ``pipelines.toyworld.evaluate.classify``).
   Reported: colour match, shape match, both, background read as the original's, the fraction
   still read as the *old* (colour, shape), and the largest change outside the mask (must be 0).
   Without resampling and with RePaint resampling (jump length 5, 3 passes).
2. **A red-blob sketch + "a red circle" gives a red circle.** Per seed: a wobbly red blob drawn
   on white (:func:`pipelines.inpainting.blob_sketch`), SDEdit at several strengths; reported:
   the fraction classified (red, circle) and the mean distance to the sketch. Controls: the same
   sketch with an empty prompt (does the drawing alone carry it?) and "a blue square" (does the
   prompt override the drawing at high strength?).

Seed ``i`` uses ``torch.Generator().manual_seed(i)``, like the app with seed ``i``.
"""

from __future__ import annotations

import argparse
import json
import random
import time

import torch

from pipelines import sketch
from pipelines import masks
from pipelines import inpainting as ip
from pipelines.images import pil_to_tensor
from pipelines.models import TOY_SD_DIR, ModelRegistry
from pipelines.toyworld.evaluate import classify
from pipelines.toyworld.world import BACKGROUNDS, COLORS, HELD_OUT, SHAPES, SIZE_RADIUS, Scene, render

PX = 32


def inpaint_cases(n: int) -> list[dict]:
    """Scene, box mask ``[1, 1, 32, 32]`` and a prompt for a different colour and shape, per seed."""
    cases = []
    for seed in range(n):
        rng = random.Random(1000 + seed)
        shape, color = rng.choice(SHAPES), rng.choice(list(COLORS))
        bg = rng.choice(list(BACKGROUNDS))
        r = rng.uniform(*SIZE_RADIUS["medium"])
        cx, cy = 0.5 + rng.uniform(-0.08, 0.08), 0.5 + rng.uniform(-0.08, 0.08)
        scene = Scene(shape, color, bg, "medium", cx, cy, r)
        while True:
            new_shape = rng.choice([s for s in SHAPES if s != shape])
            new_color = rng.choice([c for c in COLORS if c != color])
            if (new_color, new_shape) not in HELD_OUT:
                break
        target = Scene(new_shape, new_color, bg, "medium", cx, cy, r)
        mask = torch.zeros(1, 1, PX, PX)
        x0, x1 = int((cx - r) * PX) - 2, int((cx + r) * PX + 0.999) + 2
        y0, y1 = int((cy - r) * PX) - 2, int((cy + r) * PX + 0.999) + 2
        mask[..., max(y0, 0):min(y1, PX), max(x0, 0):min(x1, PX)] = 1
        cases.append(dict(seed=seed, scene=scene, target=target, image=pil_to_tensor(render(scene, PX)),
                          mask=mask, prompt=target.caption(with_size=False)))
    return cases


def eval_inpainting(model, clip, cases, steps: int, scale: float, jump: int, resamples: int) -> dict:
    outs, worst_outside = [], 0.0
    for c in cases:
        out = ip.inpaint(model, c["image"], c["mask"], c["prompt"], num_inference_steps=steps, guidance_scale=scale,
                         generator=torch.Generator().manual_seed(c["seed"]), jump_length=jump, resamples=resamples)
        keep = (c["mask"] < 0.5).expand_as(out)
        diff = ((out.clamp(-1, 1) + 1) * 127.5).round() - ((c["image"] + 1) * 127.5).round()
        worst_outside = max(worst_outside, float(diff.abs()[keep].max()))
        outs.append(out)
    pred = classify(clip, torch.cat(outs))
    n = len(cases)
    t = [c["target"] for c in cases]
    s = [c["scene"] for c in cases]
    return {
        "colour": sum(p["color"] == x.color for p, x in zip(pred, t)) / n,
        "shape": sum(p["shape"] == x.shape for p, x in zip(pred, t)) / n,
        "both": sum(p["color"] == x.color and p["shape"] == x.shape for p, x in zip(pred, t)) / n,
        "background": sum(p["background"] == x.background for p, x in zip(pred, s)) / n,
        "old": sum(p["color"] == x.color and p["shape"] == x.shape for p, x in zip(pred, s)) / n,
        "outside_max_255": worst_outside,
        "coverage": float(torch.cat([c["mask"] for c in cases]).mean()),
    }


def eval_sketch(model, clip, n: int, prompt: str, strength: float, steps: int, scale: float,
                want=("red", "circle")) -> dict:
    outs, dist = [], 0.0
    for seed in range(n):
        drawing = pil_to_tensor(sketch.blob_sketch(256, seed))
        rec = None
        for rec in sketch.sketch_steps(model, drawing, prompt, strength=strength, num_inference_steps=steps,
                                   guidance_scale=scale, generator=torch.Generator().manual_seed(seed),
                                   preview="none"):
            pass
        outs.append(rec.image)
        dist += float((rec.image - masks.resize(sketch, (PX, PX))).abs().mean()) / n
    pred = classify(clip, torch.cat(outs))
    return {"match": sum(p["color"] == want[0] and p["shape"] == want[1] for p in pred) / n,
            "red": sum(p["color"] == "red" for p in pred) / n,
            "circle": sum(p["shape"] == "circle" for p in pred) / n, "dist": dist}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--scale", type=float, default=5.0, help="classifier-free guidance scale")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    ap.add_argument("--part", choices=["all", "inpaint", "sketch"], default="all")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    reg = ModelRegistry("cpu")
    model, clip = reg.diffusion(), reg.clip()
    try:
        step = json.loads((TOY_SD_DIR / "resume" / "train_state.json").read_text())["step"]
    except (OSError, ValueError, KeyError):
        step = "?"
    print(f"toy-sd checkpoint: step {step}; DDIM {args.steps} steps, guidance {args.scale:g}; "
          f"{args.seeds} seeds; tiny-CLIP zero-shot classification over 160 captions")

    if args.part in ("all", "inpaint"):
        run_inpaint_part(model, clip, args)
    if args.part in ("all", "sketch"):
        run_sketch_part(model, clip, args)


def run_inpaint_part(model, clip, args) -> None:
    t0 = time.time()
    cases = inpaint_cases(args.seeds)
    orig = classify(clip, torch.cat([c["image"] for c in cases]))
    ok = sum(p["shape"] == c["scene"].shape and p["color"] == c["scene"].color for p, c in zip(orig, cases))
    print(f"\n1. Inpainting (box mask around the shape, {100 * float(torch.cat([c['mask'] for c in cases]).mean()):.0f}% "
          f"of the pixels; prompt = a different colour and shape, same background)")
    print(f"   sanity: tiny-CLIP reads the *original* scenes right on {ok}/{len(cases)}")
    print(f"   {'resampling':<22} {'colour':>7} {'shape':>7} {'both':>7} {'bg kept':>8} {'old obj':>8} "
          f"{'max |Δ| outside':>16}")
    for label, jump, r in (("none (r = 1)", 5, 1), ("j = 5, r = 3", 5, 3)):
        m = eval_inpainting(model, clip, cases, args.steps, args.scale, jump, r)
        print(f"   {label:<22} {m['colour']:>7.0%} {m['shape']:>7.0%} {m['both']:>7.0%} {m['background']:>8.0%} "
              f"{m['old']:>8.0%} {m['outside_max_255']:>12.0f}/255", flush=True)
    print(f"   ({time.time() - t0:.0f}s)")


def run_sketch_part(model, clip, args) -> None:
    t0 = time.time()
    print("\n2. Sketch to image (SDEdit): a red blob drawn on white")
    print(f"   {'prompt':<16} {'strength':>8} {'red circle':>11} {'red':>6} {'circle':>7} {'|x - sketch|':>13}")
    for prompt, strengths in (("a red circle", (0.5, 0.7, 0.9)), ("", (0.5, 0.7, 0.9)),
                              ("a blue square", (0.5, 0.9))):
        for s in strengths:
            m = eval_sketch(model, clip, args.seeds, prompt, s, args.steps, args.scale)
            print(f"   {repr(prompt):<16} {s:>8.1f} {m['match']:>11.0%} {m['red']:>6.0%} {m['circle']:>7.0%} "
                  f"{m['dist']:>13.3f}", flush=True)
    print(f"   ({time.time() - t0:.0f}s)")


if __name__ == "__main__":
    main()
