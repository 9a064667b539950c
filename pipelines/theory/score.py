"""A denoiser's output read as a score (seed 002; Song et al. 2021): s(x_t, t) = ∇ log p_t(x_t) ≈ −ε̂ / √(1 − ᾱ_t).

Any prediction type (toy-sd predicts v) is first turned into ε̂ with ``maths.to_eps_x0``; the formulas live in
``pipelines.diffusion.maths`` once and are only composed here.
"""

from __future__ import annotations

import math

import torch

from pipelines.diffusion import maths


def score_from_output(out: torch.Tensor, x: torch.Tensor, alpha_bar: float, prediction_type: str) -> torch.Tensor:
    """Model output at x_t -> score ``[B, C, H, W]``; x_t = √ᾱ x0 + √(1−ᾱ) ε, 0 < ᾱ < 1."""
    if not 0.0 < alpha_bar < 1.0:
        raise ValueError(f"the score needs 0 < alpha_bar < 1, got {alpha_bar}")
    eps, _ = maths.to_eps_x0(out, x, math.sqrt(alpha_bar), math.sqrt(1.0 - alpha_bar), prediction_type)
    return maths.score_from_eps(eps, alpha_bar)
