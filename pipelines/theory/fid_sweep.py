"""FID of toy-sd samples against rendered toy-world scenes, swept over the CFG scale w (seed 004's FID).

The features are toy-clip's image embeddings (its image tower, unit-normalised, D = 128), not Inception's:
the toy world is 32 px shapes, which Inception never saw, and toy-clip is the project's own image model
(Kynkäänniemi et al. 2023 use CLIP features for FID too). The Fréchet maths is :mod:`pipelines.theory.fid`.

Three sets of the same size N, all from the toy world's scene distribution (held-out pairs excluded):

* ``real A``: N scenes rendered (the reference);
* ``real B``: N *other* scenes rendered: FID(A, B) is the real-vs-real floor at this N (an estimate from
  N samples is biased upwards by roughly Tr Σ / N per set, so "near 0" means "near this floor");
* samples: toy-sd prompted with the captions of the B scenes, one batch per w with the same initial noise,
  so each FID(A, samples at w) compares like with like: the same prompts as B, only the images differ.

With fewer samples than dimensions (N ≤ 128) the sample covariances are rank deficient; ``pca`` projects all
sets onto the top components of real A first (a stated, lower-dimensional FID).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from pipelines import validation
from pipelines.theory.fid import Frechet, fid_from_features
from pipelines.toyworld.render_judge import classify_by_rendering
from pipelines.toyworld.world import Scene, render_batch, sample_scene

MAX_SAMPLES = 1000
DEFAULT_SCALES = (0.0, 1.0, 3.0, 7.5)


@dataclass
class FidSweep:
    """``real_vs_real``: FID(A, B); ``rows``: one dict per w with ``scale``, ``fid`` (:class:`Frechet`),
    ``judged`` (fraction of samples whose shape, colour and background the rendering judge reads as the
    prompt's) and ``images`` (the first few samples ``[k, 3, 32, 32]`` in [-1, 1]); ``dims``: feature
    dimensions used (128, or the PCA's); ``n``: samples per set; ``steps``: sampler steps."""

    real_vs_real: Frechet
    n: int
    dims: int
    steps: int
    rows: list[dict] = field(default_factory=list)


def reference_scenes(n: int, seed: int) -> list[Scene]:
    """``n`` toy-world scenes drawn from ``seed`` (trained (colour, shape) pairs only)."""
    rng = random.Random(seed)
    return [sample_scene(rng) for _ in range(n)]


@torch.no_grad()
def embed(clip, images: torch.Tensor, batch: int = 100) -> np.ndarray:
    """Images ``[N, 3, H, W]`` in [-1, 1] -> toy-clip image embeddings ``[N, D]`` (float64, unit norm)."""
    out = [clip.encode_image(images[i:i + batch]).double().cpu() for i in range(0, images.shape[0], batch)]
    return torch.cat(out).numpy()


def pca_projector(reference: np.ndarray, k: int) -> Callable[[np.ndarray], np.ndarray]:
    """Project features ``[N, D]`` onto the top ``k`` principal axes of ``reference`` ``[M, D]`` (centred on its
    mean). FID is then computed in those k dimensions."""
    mean = reference.mean(axis=0)
    _, _, vt = np.linalg.svd(reference - mean, full_matrices=False)
    axes = vt[:k].T  # [D, k]
    return lambda f: (f - mean) @ axes


def judged_fraction(images: torch.Tensor, scenes: Sequence[Scene]) -> float:
    """Fraction of images whose shape, colour and background the rendering judge reads as the scene's."""
    pred = classify_by_rendering(images)
    hits = [p["shape"] == s.shape and p["color"] == s.color and p["background"] == s.background
            for p, s in zip(pred, scenes)]
    return sum(hits) / max(1, len(hits))


def fid_sweep(model, clip, scales: Sequence[float] = DEFAULT_SCALES, *, n: int = 200, steps: int = 20,
              seed: int = 0, sampler: str = "DDIM", pca: int | None = None, chunk: int = 50, keep: int = 6,
              callback: Callable[[int, int, str], None] | None = None) -> FidSweep:
    """Rendered scenes vs toy-sd samples over ``scales`` (see the module docstring).

    ``n`` images per set (real A, real B, samples at each w); samples drawn ``chunk`` at a time with
    ``sampler`` for ``steps`` steps from one generator seeded ``seed`` per w (same noise at every w).
    ``pca``: project onto that many principal axes of real A (≤ min(n − 1, D)); None: all D dimensions.
    ``callback(done, total, what)`` after each chunk. Returns a :class:`FidSweep`.
    """
    from pipelines.diffusion.loop import sample

    n = validation.integer("samples per set", n, 2, MAX_SAMPLES)
    steps = validation.integer("steps", steps, 1, 200)
    scales = [validation.number("guidance scale", w, 0.0, validation.MAX_GUIDANCE) for w in scales]
    if not scales:
        raise ValueError("give at least one guidance scale")
    chunk = max(1, int(chunk))
    scenes_a, scenes_b = reference_scenes(n, seed), reference_scenes(n, seed + 1)
    feats_a, feats_b = embed(clip, render_batch(scenes_a)), embed(clip, render_batch(scenes_b))
    dims = feats_a.shape[1]
    project = lambda f: f  # noqa: E731
    if pca is not None:
        dims = validation.integer("PCA dimensions", pca, 1, min(n - 1, feats_a.shape[1]))
        project = pca_projector(feats_a, dims)
    ref = project(feats_a)
    out = FidSweep(real_vs_real=fid_from_features(ref, project(feats_b)), n=n, dims=dims, steps=steps)
    prompts = [s.caption() for s in scenes_b]
    total, done = len(scales) * ((n + chunk - 1) // chunk), 0
    for w in scales:
        gen = torch.Generator("cpu").manual_seed(int(seed))  # the same initial noise at every w
        parts = []
        for i in range(0, n, chunk):
            with torch.no_grad():
                parts.append(sample(model, prompts[i:i + chunk], guidance_scale=w, num_inference_steps=steps,
                                    sampler=sampler, generator=gen).clamp(-1, 1).float().cpu())
            done += 1
            if callback is not None:
                callback(done, total, f"w = {w:g}: {min(i + chunk, n)}/{n} samples")
        imgs = torch.cat(parts)  # [n, 3, 32, 32]
        out.rows.append({"scale": w, "fid": fid_from_features(ref, project(embed(clip, imgs))),
                         "judged": judged_fraction(imgs, scenes_b), "images": imgs[:keep]})
    return out


def table(result: FidSweep) -> str:
    """The sweep as a Markdown table (FID = mean part + covariance part)."""
    r = result.real_vs_real
    lines = ["| set compared with real A | FID | mean part ‖μ₁−μ₂‖² | covariance part | judged right |",
             "|---|---|---|---|---|",
             f"| real B (other rendered scenes) | {r.total:.4f} | {r.mean:.4f} | {r.covariance:.4f} | 100% |"]
    for row in result.rows:
        f = row["fid"]
        lines.append(f"| samples, w = {row['scale']:g} | {f.total:.4f} | {f.mean:.4f} | {f.covariance:.4f} | "
                     f"{row['judged']:.0%} |")
    return "\n".join(lines)
