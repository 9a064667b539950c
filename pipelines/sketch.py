"""Sketch to image: SDEdit (Meng et al. 2022; CS180 §1.7.1) on a rough drawing, at one or several strengths."""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch

from pipelines import validation
from pipelines.diffusion import loop
from pipelines.masks import resize

SKETCH_STRENGTHS = (0.3, 0.45, 0.6, 0.7, 0.8, 0.9, 1.0)


def blob_sketch(size: int = 256, seed: int = 0, color=(220, 30, 30), background=(245, 245, 245)):
    """A hand-drawn-looking blob (a wobbly closed curve, three random harmonics) as an RGB PIL
    image: the "rough drawing" of the sketch demo and of the evaluation. Deterministic in ``seed``."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    k = np.arange(1, 4)
    amp, phase = rng.uniform(0.03, 0.09, 3), rng.uniform(0, 2 * np.pi, 3)
    cx, cy = size * (0.5 + rng.uniform(-0.06, 0.06, 2))
    r0 = size * rng.uniform(0.27, 0.36)
    th = np.linspace(0, 2 * np.pi, 90, endpoint=False)
    r = r0 * (1 + (amp[:, None] * np.cos(k[:, None] * th + phase[:, None])).sum(0))
    im = Image.new("RGB", (size, size), tuple(background))
    ImageDraw.Draw(im).polygon(list(zip(cx + r * np.cos(th), cy + r * np.sin(th))), fill=tuple(color))
    return im


def start_step(strength: float, num_steps: int) -> int:
    """SDEdit: ``strength`` in (0, 1] -> index of the first step run (0 = from pure noise).

    The loop keeps the last ``int(num_steps * strength)`` steps (diffusers' img2img rule), so
    the sketch is noised to the timestep of that step: strength 1 ignores the sketch, small
    strengths barely change it. Raises ValueError when no step would run.
    """
    n = validation.integer("steps", num_steps, 1, loop.MAX_STEPS)
    s = validation.number("strength", strength, 0.0, 1.0)
    kept = min(int(n * s), n)
    if kept < 1:
        raise ValueError(f"strength {s:g} with {n} steps leaves no denoising step; "
                         f"use a strength of at least {1 / n:.3g}")
    return n - kept


def i_start_mapping(strength: float, num_steps: int) -> dict:
    """CS180's ``i_start`` (index into the N-step plan where denoising begins: the lower, the more noise)
    for an SDEdit ``strength``: i_start = :func:`start_step`, and the strength the loop really runs is
    1 − i_start / N (the requested one rounded down to whole steps). -> ``{i_start, n, strength}``."""
    i = start_step(strength, num_steps)
    n = int(num_steps)
    return {"i_start": i, "n": n, "strength": 1.0 - i / n}


def sketch_steps(model, sketch: torch.Tensor, prompt: str | list[str] = "", *, strength: float = 0.7,
                 **kwargs) -> Iterator[loop.StepRecord]:
    """SDEdit on a drawing: noise ``sketch`` to the step chosen by ``strength``, then denoise.

    Args:
        sketch: ``[B, 3, H, W]`` in [-1, 1], any size (resized to the model's size).
        strength: (0, 1]; see :func:`start_step`.
        kwargs: as :func:`pipelines.diffusion.loop.sample_steps` (sampler, steps, guidance, generator...).

    Yields:
        the loop's :class:`pipelines.diffusion.loop.StepRecord`; the last has ``image`` at the model's size.
    """
    if sketch.ndim != 4 or sketch.shape[1] != 3 or not torch.isfinite(sketch).all():
        raise ValueError("The sketch must be a finite [B, 3, H, W] image in [-1, 1].")
    start_step(strength, kwargs.get("num_inference_steps", 50))
    x = resize(sketch.to(model.device).float(), model.image_size).clamp(-1, 1)
    yield from loop.sample_steps(model, prompt, init_image=x, strength=strength, **kwargs)


def sketch_strip(model, sketch: torch.Tensor, prompt: str | list[str] = "", *, seed: int = 0,
                 strengths: Sequence[float] = SKETCH_STRENGTHS, **kwargs) -> list[tuple[float, torch.Tensor]]:
    """The same sketch, prompt and seed at several strengths -> ``[(strength, image [B, 3, h, w]), ...]``.

    Each strength gets a fresh ``torch.Generator`` seeded with ``seed``, so column k of the strip
    equals a single :func:`sketch_steps` run with that strength and seed (same noise draw).
    """
    out = []
    for s in strengths:
        g = torch.Generator("cpu").manual_seed(int(seed))
        kw = {**kwargs, "generator": g, "preview": "none"}
        rec = None
        for rec in sketch_steps(model, sketch, prompt, strength=s, **kw):
            pass
        out.append((float(s), rec.image))
    return out
