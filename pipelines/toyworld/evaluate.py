"""Evaluate the bundled models: tiny-CLIP zero-shot accuracy and toy-sd prompt adherence.

    python -m pipelines.toyworld.evaluate            # full report (a few minutes on 2 cores)
    python -m pipelines.toyworld.evaluate --quick    # fewer samples

Prints:
1. tiny-CLIP zero-shot accuracy on fresh toy images (seed unseen in training) for shape,
   colour and background: each image is classified jointly against every
   "a <colour> <shape> on a <bg> background" caption (160 of them), and its attributes
   read off the best caption; and its accuracy on rendered images of each held-out pair
   (the judge's own ceiling for the held-out figure);
2. for samples generated with DDIM (50 steps) at guidance scales 0, 1, 3, 5, 7.5, 10: the
   fraction whose CLIP-classified shape and colour both match the prompt, the held-out
   (colour, shape) pairs separately, and a diversity figure (mean pairwise distance of
   CLIP image embeddings between samples of the same prompt);
   The same samples judged a second way, by rendering and comparing
   (``render_judge``: no learnt parts, exact on rendered images, so no held-out blind spot), which
   also reads the background: the fraction whose background matches the prompt;
3. the wall time of one 50-step DDIM sample with classifier-free guidance.

    python -m pipelines.toyworld.evaluate --phrasings [--scales 3] [--clip-dir DIR] [--model-dir DIR]

prints instead prompt adherence by phrasing (``captions.py``), judged by rendering (shape, colour and,
where the prompt names it, background): the old template on seen and on held-out (colour, shape) pairs,
the training phrasings, and each held-out phrasing, on seen and held-out pairs; and tiny-CLIP's
zero-shot accuracy when its 160 labels are written in each phrasing.

``--draw K`` (K ≥ 1) repeats either report on another independent draw of prompts and noise: how much of a
figure is the draw (draw 0 is the one the model cards quote).

    python -m pipelines.toyworld.evaluate --fid [--n 200] [--fid-steps 20] [--scales 0 1 3 7.5] [--pca K]

prints instead the FID (toy-clip image embeddings) of toy-sd samples against rendered scenes for each w, with
its mean and covariance parts, beside the real-vs-real floor (two independent rendered sets of the same size):
:mod:`pipelines.theory.fid_sweep`.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import time
from pathlib import Path

import torch

from pipelines.models import TOY_CLIP_DIR, TOY_SD_DIR, ModelRegistry, load_toy_clip, load_toy_diffusion
from pipelines.toyworld.captions import HELD_OUT_TEMPLATES, TRAIN_TEMPLATES, Caption, caption_from_template
from pipelines.toyworld.render_judge import classify_by_rendering
from pipelines.toyworld.world import (BACKGROUNDS, COLORS, HELD_OUT, SHAPES, Scene, all_captions,
                                      make_batch, parse_caption, render_batch, sample_scene)

SCALES = (0.0, 1.0, 3.0, 5.0, 7.5, 10.0)
DEFAULT_FID_SCALES = (0.0, 1.0, 3.0, 7.5)


@torch.no_grad()
def classify(clip, images: torch.Tensor) -> list[dict[str, str | None]]:
    """Images ``[B, 3, H, W]`` in [-1, 1] -> attributes of the best-matching full caption."""
    captions = all_captions()
    text = clip.encode_text(captions)  # [160, D]
    best = (clip.encode_image(images) @ text.T).argmax(dim=1)
    return [parse_caption(captions[i]) for i in best.tolist()]


def clip_zero_shot(clip, n: int = 1000, seed: int = 123_456) -> dict[str, float]:
    x, scenes = make_batch(n, seed=seed, allow_held_out=True)
    pred = classify(clip, x)
    return {k: _mean(agree(pred, scenes, (k,))) for k in ("shape", "color", "background")}


def clip_on_pairs(clip, pairs, n: int = 60, seed: int = 654_321) -> dict[str, float]:
    """The judge's own accuracy on *rendered* scenes of each (colour, shape) pair, shape and colour both
    right, over random backgrounds, sizes and positions: the ceiling of the adherence figure for that pair.
    The held-out pairs were never shown to the tiny CLIP either, and its accuracy on them is far from
    its ~98 % on seen pairs (``evaluate`` prints it: green triangle 27 %, mostly read as a green star;
    orange cross 92 %; purple star 97 %)."""
    rng = random.Random(seed)
    out = {}
    for color, shape in sorted(pairs):
        scenes = [dataclasses.replace(sample_scene(rng, True), shape=shape, color=color) for _ in range(n)]
        out[f"{color} {shape}"] = adherence(clip, render_batch(scenes), scenes)
    return out


@torch.no_grad()
def generate(model, prompts: list[str], scale: float, seed: int, steps: int = 50) -> torch.Tensor:
    """A batch of DDIM samples with CFG at ``scale``: ``[B, 3, 32, 32]`` in [-1, 1].

    Uses the app's sampling loop (``pipelines.diffusion.loop``), so what is evaluated is what
    users run.
    """
    from pipelines.diffusion.loop import sample

    generator = torch.Generator().manual_seed(seed)
    return sample(model, prompts, sampler="DDIM", num_inference_steps=steps, guidance_scale=scale,
                  generator=generator).clamp(-1, 1)


def prompts_for(n: int, rng: random.Random, held_out: bool) -> list[tuple[str, Scene]]:
    out = []
    pairs = sorted(HELD_OUT) if held_out else [(c, s) for c in COLORS for s in SHAPES if (c, s) not in HELD_OUT]
    for i in range(n):
        color, shape = pairs[i % len(pairs)] if held_out else rng.choice(pairs)
        bg = rng.choice(list(BACKGROUNDS))
        scene = Scene(shape, color, bg, "medium", 0.5, 0.5, 0.3)
        out.append((scene.caption(with_size=False), scene))
    return out


SHAPE_COLOR = ("shape", "color")


def agree(pred: list[dict[str, str | None]], scenes: list[Scene], keys=SHAPE_COLOR) -> list[bool]:
    """Per sample: do the judged attributes ``keys`` all equal the prompt scene's?"""
    return [all(p[k] == getattr(s, k) for k in keys) for p, s in zip(pred, scenes)]


def matches(clip, images: torch.Tensor, scenes: list[Scene]) -> list[bool]:
    """Per sample: does its CLIP-classified shape and colour match the prompt's?"""
    return agree(classify(clip, images), scenes)


def adherence(clip, images: torch.Tensor, scenes: list[Scene]) -> float:
    return _mean(matches(clip, images, scenes))


def _mean(hits: list[bool]) -> float:
    return sum(hits) / max(1, len(hits))


def per_pair(hits: list[bool], scenes: list[Scene]) -> str:
    """``"purple star 5/7, ..."``: the held-out figure split by (colour, shape) pair."""
    tally: dict[str, list[int]] = {}
    for hit, s in zip(hits, scenes):
        t = tally.setdefault(f"{s.color} {s.shape}", [0, 0])
        t[0] += hit
        t[1] += 1
    return ", ".join(f"{k} {a}/{n}" for k, (a, n) in sorted(tally.items()))


@torch.no_grad()
def diversity(clip, model, prompt: str, scale: float, k: int = 8, seed: int = 7) -> float:
    """Mean pairwise (1 - cosine) between CLIP embeddings of ``k`` samples of one prompt."""
    f = clip.encode_image(generate(model, [prompt] * k, scale, seed))
    sim = f @ f.T
    return float((1 - sim[~torch.eye(k, dtype=torch.bool)]).mean())


def phrased_prompts(templates: list[str], n: int, rng: random.Random, held_out: bool) -> list[tuple[Caption, Scene]]:
    """``n`` prompts per template (medium size, so no size word), seen or held-out (colour, shape) pairs,
    backgrounds at random; "old" is the first models' full template (``Scene.caption``)."""
    pairs = sorted(HELD_OUT) if held_out else [(c, s) for c in COLORS for s in SHAPES if (c, s) not in HELD_OUT]
    out = []
    for name in templates:
        for i in range(n):
            color, shape = pairs[i % len(pairs)] if held_out else rng.choice(pairs)
            scene = Scene(shape, color, rng.choice(list(BACKGROUNDS)), "medium", 0.5, 0.5, 0.3)
            if name == "old":
                cap = Caption(scene.caption(with_size=False), "old", shape, color, scene.background, None)
            else:
                cap = caption_from_template(name, scene, rng)
            out.append((cap, scene))
    return out


def judged(pred: list[dict[str, str | None]], caps: list[Caption], scenes: list[Scene]) -> list[bool]:
    """Shape and colour as the prompt, and the background too where the prompt names it."""
    return [p["shape"] == s.shape and p["color"] == s.color and (c.background is None or p["background"] == s.background)
            for p, c, s in zip(pred, caps, scenes)]


def by_template(hits: list[bool], caps: list[Caption]) -> dict[str, tuple[int, int]]:
    tally: dict[str, list[int]] = {}
    for hit, c in zip(hits, caps):
        t = tally.setdefault(c.template, [0, 0])
        t[0] += hit
        t[1] += 1
    return {k: (a, n) for k, (a, n) in tally.items()}


@torch.no_grad()
def clip_zero_shot_phrased(clip, template: str, n: int = 300, seed: int = 123_456) -> float:
    """tiny-CLIP's zero-shot accuracy (shape, colour and background all right) with its 160 labels
    written in ``template`` (fixed choices: lower case, no full stop, "gray")."""
    x, scenes = make_batch(n, seed=seed, allow_held_out=True)
    rng = random.Random(0)
    labels = []
    for shape in SHAPES:
        for color in COLORS:
            for bg in BACKGROUNDS:
                scene = Scene(shape, color, bg, "medium", 0.5, 0.5, 0.3)
                text = scene.caption(with_size=False) if template == "old" else caption_from_template(
                    template, scene, rng, capitalise=False, full_stop=False).text.replace("grey", "gray")
                labels.append((text, scene))
    best = (clip.encode_image(x) @ clip.encode_text([t for t, _ in labels]).T).argmax(dim=1)
    return _mean([labels[i][1] == dataclasses.replace(s, size="medium", cx=0.5, cy=0.5, r=0.3)
                  for i, s in zip(best.tolist(), scenes)])


def draw_seed(draw: int, k: int) -> int:
    """The noise seed of sample set ``k`` in independent draw ``draw`` (draw 0: the model cards' seeds, k)."""
    return 1000 * draw + k


def phrasing_report(clip, model, scales: tuple[float, ...], n: int, n_held: int, draw: int = 0) -> None:
    """Adherence by phrasing, judged by rendering (see the module docstring); ``draw``: which independent draw
    of prompts and noise (0: the model cards' figures)."""
    held_names = sorted(HELD_OUT_TEMPLATES)
    bg_names = sorted(k for k, v in TRAIN_TEMPLATES.items() if "{bg}" in v)
    zs = {t: clip_zero_shot_phrased(clip, t) for t in ["old", *bg_names, *held_names]}
    print("tiny-CLIP zero-shot (shape+colour+background, 300 images, 160 labels) by phrasing: "
          + ", ".join(f"{k} {v:.0%}" for k, v in zs.items()), flush=True)
    rng = random.Random(draw)
    sets = {
        "old template, seen pairs": phrased_prompts(["old"], n, rng, False),
        "old template, held-out pairs": phrased_prompts(["old"], n_held, rng, True),
        "training phrasings, seen pairs": phrased_prompts(sorted(TRAIN_TEMPLATES), max(2, n // 8), rng, False),
        "held-out phrasings, seen pairs": phrased_prompts(held_names, max(2, n // 4), rng, False),
        "held-out phrasings, held-out pairs": phrased_prompts(held_names, max(3, n_held // 4), rng, True),
    }
    for scale in scales:
        print(f"\nw = {scale}: DDIM 50 steps; match = shape, colour and (where named) background as the prompt, "
              "by rendering")
        for k, (label, items) in enumerate(sets.items()):
            caps, scenes = [c for c, _ in items], [s for _, s in items]
            x = generate(model, [c.text for c in caps], scale, seed=draw_seed(draw, 10 + k))
            hits = judged(classify_by_rendering(x), caps, scenes)
            detail = ", ".join(f"{t} {a}/{m}" for t, (a, m) in sorted(by_template(hits, caps).items()))
            print(f"  {label:<36} {_mean(hits):>6.1%}  ({sum(hits)}/{len(hits)})   {detail}", flush=True)


def fid_report(clip, model, scales: tuple[float, ...], n: int, steps: int, pca: int | None) -> None:
    """FID over w with its parts and the real-vs-real floor (``pipelines.theory.fid_sweep``)."""
    from pipelines.theory.fid_sweep import fid_sweep, table

    t0 = time.time()
    res = fid_sweep(model, clip, scales, n=n, steps=steps, pca=pca,
                    callback=lambda d, t, what: print(f"  [{d}/{t}] {what}", flush=True))
    print(f"\nFID in toy-clip image-embedding space ({res.dims} dims{', PCA of real A' if pca else ''}), "
          f"{n} images per set, samples: DDIM {steps} steps, prompts = captions of the real-B scenes, "
          "same initial noise at every w; judged right = shape, colour and background by rendering\n")
    print(table(res))
    print(f"\n({time.time() - t0:.0f}s, {torch.get_num_threads()} threads)")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--n", type=int, default=None, help="prompts per scale")
    ap.add_argument("--held-out", type=int, default=None,
                    help="held-out prompts per scale (default n // 4: 20; each is then 5 points of the figure)")
    ap.add_argument("--model-dir", type=Path, default=None,
                    help="a toy-sd folder (unet/, scheduler/) other than the bundled one, e.g. a training run's")
    ap.add_argument("--clip-dir", type=Path, default=None,
                    help="a toy-clip folder other than the bundled one (the judge and toy-sd's text encoder)")
    ap.add_argument("--phrasings", action="store_true",
                    help="adherence by phrasing (captions.py: old template, training and held-out phrasings)")
    ap.add_argument("--scales", type=float, nargs="+", default=None,
                    help="guidance scales (default: 0 1 3 5 7.5 10; with --phrasings: 3; with --fid: 0 1 3 7.5)")
    ap.add_argument("--draw", type=int, default=0,
                    help="another independent draw of prompts and noise (0: the draw the model cards quote)")
    ap.add_argument("--fid", action="store_true",
                    help="FID of samples vs rendered scenes over w, with the real-vs-real floor (--n per set, "
                         "default 200)")
    ap.add_argument("--fid-steps", type=int, default=20, help="DDIM steps of the --fid samples")
    ap.add_argument("--pca", type=int, default=None, help="with --fid: FID on this many principal axes")
    args = ap.parse_args(argv)
    n = args.n or (24 if args.quick else 80)
    registry = ModelRegistry("cpu")
    clip_dir = args.clip_dir or TOY_CLIP_DIR
    if args.clip_dir is None:
        clip = registry.clip()
    else:
        clip = load_toy_clip(clip_dir / "open_clip_model.safetensors", clip_dir / "toy-clip.json", torch.device("cpu"))
    if args.model_dir is None and args.clip_dir is None:
        model = registry.diffusion()
    else:
        folder = args.model_dir or TOY_SD_DIR
        model = load_toy_diffusion(folder, clip_dir, torch.device("cpu"), name=str(folder))
    if args.fid:
        fid_report(clip, model, tuple(args.scales or DEFAULT_FID_SCALES), args.n or (48 if args.quick else 200),
                   args.fid_steps, args.pca)
        return
    if args.phrasings:
        t0 = time.time()
        phrasing_report(clip, model, tuple(args.scales or (3.0,)), n, args.held_out or max(6, n // 4), args.draw)
        print(f"\n({time.time() - t0:.0f}s, {torch.get_num_threads()} threads)")
        return

    t0 = time.time()
    zs = clip_zero_shot(clip, n=300 if args.quick else 1000)
    print(f"tiny-CLIP zero-shot: shape {zs['shape']:.1%}  colour {zs['color']:.1%}  "
          f"background {zs['background']:.1%}   ({time.time() - t0:.0f}s)")

    judge = clip_on_pairs(clip, HELD_OUT)
    print("tiny-CLIP on rendered held-out pairs (the judge's ceiling for the held-out column): "
          + ", ".join(f"{k} {v:.0%}" for k, v in judge.items()))

    rng = random.Random(args.draw)  # draw 0: the figures in the model cards
    seen = prompts_for(n, rng, held_out=False)
    held = prompts_for(args.held_out or max(6, n // 4), rng, held_out=True)
    print(f"\nDDIM 50 steps; {len(seen)} prompts (seen pairs), {len(held)} prompts (held-out pairs)")
    print("match / held-out: shape and colour as the prompt, judged by tiny-CLIP | by rendering; "
          "bg: background as the prompt (by rendering, all prompts)")
    print(f"{'scale':>6} {'match':>7} {'held-out':>9} | {'match':>7} {'held-out':>9} {'bg':>7} {'diversity':>10}")
    seen_scenes, held_scenes = [s for _, s in seen], [s for _, s in held]
    for scale in args.scales or SCALES:
        x_seen = generate(model, [p for p, _ in seen], scale, seed=draw_seed(args.draw, 1))
        x_held = generate(model, [p for p, _ in held], scale, seed=draw_seed(args.draw, 2))
        a = adherence(clip, x_seen, seen_scenes)
        hits = matches(clip, x_held, held_scenes)
        by_render_seen, by_render_held = classify_by_rendering(x_seen), classify_by_rendering(x_held)
        r_seen, r_held = agree(by_render_seen, seen_scenes), agree(by_render_held, held_scenes)
        bg = agree(by_render_seen + by_render_held, seen_scenes + held_scenes, ("background",))
        d = diversity(clip, model, "a red circle", scale)
        print(f"{scale:>6.1f} {a:>7.1%} {_mean(hits):>9.1%} | {_mean(r_seen):>7.1%} {_mean(r_held):>9.1%} "
              f"{_mean(bg):>7.1%} {d:>10.3f}   held-out by pair (tiny-CLIP | rendering): "
              f"{per_pair(hits, held_scenes)} | {per_pair(r_held, held_scenes)}", flush=True)

    generate(model, ["a blue star on a white background"], 5.0, seed=0)  # warm-up
    times = []
    for i in range(3):
        t0 = time.perf_counter()
        generate(model, ["a blue star on a white background"], 5.0, seed=i)
        times.append(time.perf_counter() - t0)
    print(f"\none 50-step DDIM sample with CFG: {min(times):.2f}s (best of 3, "
          f"{torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
