"""Annealed Langevin dynamics with a diffusion model's score (seed 002; Song & Ermon 2019, Alg. 1).

At each noise level i (largest first) a few Langevin steps sample p_i, the data noised to that level:

    x <- x + (η_i / 2) s(x, t_i) + √η_i z,   z ~ N(0, I),   η_i = δ · (1 − ᾱ_{t_i})

with the score s = −ε̂ / √(1 − ᾱ_t) (:mod:`pipelines.theory.score`). Song & Ermon write the chain in
variance-exploding space y = x0 + σ ε with step α_i = δ σ_i² (their ε / σ_L² is δ). A VP sample is
x = √ᾱ y with σ² = (1 − ᾱ) / ᾱ, and the same chain in x has step ᾱ α_i = δ (1 − ᾱ): "step size scaled
by the level's variance" reads identically in both spaces. After the last level, x̂0 = E[x0 | x]
(Tweedie, the model's own x̂0) removes the remaining noise of that level (Song & Ermon 2020, §4.2
"denoising the last step"); it costs one more model call.

The levels are the timesteps the model's DDIM plan visits for ``n_levels`` steps, so Langevin with L
levels × K steps (+1 denoising call) is compared with DDIM at the same number of model calls. The model
and CFG are the loop's :class:`pipelines.diffusion.loop.Predictor` (CFG combined by ``maths.cfg_combine``).
Shapes: samples ``[B, C, h, w]`` in model space; images ``[B, 3, H, W]`` in [-1, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from pipelines import validation
from pipelines.diffusion import loop, maths
from pipelines.theory.score import score_from_output

MAX_LEVELS = 100
MAX_STEPS_PER_LEVEL = 20
DEFAULT_DELTA = 0.2  # Song & Ermon's ε = 2e-5 at σ_L = 0.01: δ = ε / σ_L² = 0.2


def langevin_step(x: torch.Tensor, score: torch.Tensor, eta: float, z: torch.Tensor) -> torch.Tensor:
    """One unadjusted Langevin step x + (η/2) s + √η z (Song & Ermon 2019, eq. 4); any shape."""
    return x + 0.5 * eta * score + math.sqrt(eta) * z


def run_chain(score_fn: Callable[[torch.Tensor, int], torch.Tensor], x: torch.Tensor, etas: list[float],
              steps_per_level: int, generator: torch.Generator | None) -> torch.Tensor:
    """Annealed Langevin with any score ``score_fn(x, level) -> s`` (e.g. an exact one in tests): for each level
    i, ``steps_per_level`` :func:`langevin_step` with step ``etas[i]``. Returns the final x (same shape as x)."""
    for i, eta in enumerate(etas):
        for _ in range(steps_per_level):
            z = maths.randn(x.shape, generator, x.device, x.dtype)
            x = langevin_step(x, score_fn(x, i), eta, z)
    return x


def level_plan(scheduler, n_levels: int, delta: float) -> list[tuple[int, float, float]]:
    """``[(t_i, ᾱ_i, η_i)]`` for the ``n_levels`` timesteps of the scheduler's plan (noisiest first), levels with
    ᾱ = 0 dropped (the score is then −x, and x_T ~ N(0, I) is already their sample); η_i = δ (1 − ᾱ_i)."""
    ts, _ = maths.plan_timesteps(scheduler, n_levels)
    out = []
    for t in ts:
        ab = maths.alpha_bar_at(scheduler, t)
        if 0.0 < ab < 1.0:
            out.append((int(t), ab, delta * (1.0 - ab)))
    if not out:
        raise ValueError("no noise level with 0 < ᾱ < 1 in this plan")
    return out


@dataclass
class LangevinRecord:
    """One noise level finished. ``x``: the chain's sample ``[B, C, h, w]`` after the level's steps; ``pred_x0``:
    the model's x̂0 at the level's last step; ``score_norm``: mean RMS of the score there; ``calls``: model calls
    so far; ``image``: the final image ``[B, 3, H, W]`` in [-1, 1] (last record only)."""

    level: int
    n_levels: int
    t: int
    alpha_bar: float
    eta: float
    x: torch.Tensor
    pred_x0: torch.Tensor
    score_norm: float
    calls: int
    image: torch.Tensor | None = None


@torch.no_grad()
def annealed_langevin(model, prompt: str | list[str] = "", *, negative_prompt: str | None = None,
                      guidance_scale: float = 5.0, n_levels: int = 10, steps_per_level: int = 5,
                      delta: float = DEFAULT_DELTA, generator: torch.Generator | None = None,
                      latents: torch.Tensor | None = None, denoise: bool = True) -> Iterator[LangevinRecord]:
    """Sample ``model`` (VP, any prediction type) by annealed Langevin; yield a :class:`LangevinRecord` per level.

    x starts at ``latents`` (drawn from ``generator`` when None): x_T ~ N(0, I), the VP prior, as DDIM starts.
    Model calls: ``n_levels_kept × steps_per_level`` (+1 with ``denoise``). Raises ValueError on bad input.
    """
    n_levels = validation.integer("noise levels", n_levels, 1, MAX_LEVELS)
    k = validation.integer("steps per level", steps_per_level, 1, MAX_STEPS_PER_LEVEL)
    delta = validation.number("step size δ", delta, 1e-4, 2.0)
    w = validation.number("guidance scale", guidance_scale, 0.0, validation.MAX_GUIDANCE)
    scheduler = model.make_scheduler("DDIM")  # its ᾱ table and model-input scaling (identity); never stepped
    if maths.space(scheduler) != "vp":
        raise ValueError("annealed Langevin here needs a VP model (ᾱ_t); flow models have no ε-score table")
    plan = level_plan(scheduler, n_levels, delta)
    cond = loop.encode_prompts(model, prompt, negative_prompt, w,
                              batch_size=None if latents is None else latents.shape[0])  # unconditional models
    predictor = loop.Predictor(model, scheduler, cond, w)
    shape = (cond.batch, *model.sample_shape)
    x = loop.prepare_start(model, scheduler, shape, None, 0, generator, latents=latents)
    calls = 0
    for i, (t, ab, eta) in enumerate(plan):
        alpha, sigma, _ = maths.coefficients(scheduler, ab)
        for _ in range(k):
            pred = predictor(x, t, ab, alpha, sigma)
            s = score_from_output(pred.out, pred.x_in, ab, predictor.pred_type)
            z = maths.randn(x.shape, generator, x.device, x.dtype)
            x = langevin_step(x, s, eta, z)
            calls += 1
        rec = LangevinRecord(i, len(plan), t, ab, eta, x, pred.x0, float(s.flatten(1).pow(2).mean(1).sqrt().mean()),
                             calls)
        if i == len(plan) - 1:
            final = x
            if denoise:
                pred = predictor(x, t, ab, alpha, sigma)
                final = pred.x0
                rec.calls = calls + 1
            rec.image = model.decode(final).clamp(-1, 1)
        yield rec


def langevin_sample(model, prompt="", **kwargs) -> torch.Tensor:
    """Run :func:`annealed_langevin` to the end -> image ``[B, 3, H, W]`` in [-1, 1]."""
    rec = None
    for rec in annealed_langevin(model, prompt, **kwargs):
        pass
    return rec.image


def model_calls(scheduler, n_levels: int, steps_per_level: int, denoise: bool = True) -> int:
    """How many model calls :func:`annealed_langevin` makes (the budget DDIM is given to compare)."""
    return len(level_plan(scheduler, n_levels, DEFAULT_DELTA)) * int(steps_per_level) + int(denoise)
