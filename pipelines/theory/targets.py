"""What should the model predict? ε, x0 or v, true and predicted (seed 003's three parameterisations).

x_t = α x0 + σ ε with α = √ᾱ_t, σ = √(1 − ᾱ_t) (DDPM eq. 4). Any one of the three targets fixes the other two
given x_t (``maths.to_eps_x0``, ``maths.velocity``), so a model trained on one still "predicts" all three; what
differs is how an error Δ in the trained target reaches the others:

==============  ====================  ====================  ==============================
trained on      error in ε̂            error in x̂0           blows up where
==============  ====================  ====================  ==============================
ε               Δ                     (σ/α) Δ               high noise (α → 0, zero terminal SNR: ∞)
x0              (α/σ) Δ               Δ                     low noise (σ → 0)
v = α ε − σ x0  α Δ                   σ Δ                   nowhere (α, σ ≤ 1)
==============  ====================  ====================  ==============================

(from x̂0 = (x_t − σ ε̂)/α, ε̂ = (x_t − α x̂0)/σ, and x̂0 = α x_t − σ v̂, ε̂ = σ x_t + α v̂.) toy-sd is trained on v
with a zero-terminal-SNR schedule (Lin et al. 2024): at t = T, α = 0 and an ε-model's x̂0 is undefined.

Images ``[B, 3, H, W]`` in [-1, 1]; the model's input and targets in model space (pixels for toy-sd).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from pipelines import validation
from pipelines.diffusion import loop, maths

TARGETS = ("epsilon", "x0", "v")
SYMBOLS = {"epsilon": "ε", "x0": "x0", "v": "v"}


@dataclass
class TargetView:
    """True and predicted targets at one t: dicts keyed by :data:`TARGETS`, tensors ``[B, C, h, w]``;
    ``mse``: per target, the mean squared error over all elements (float); ``x_t`` the noisy input."""

    t: int
    alpha_bar: float
    x_t: torch.Tensor
    true: dict
    pred: dict
    mse: dict


def vp_scheduler(model):
    """The model's DDIM scheduler (its ᾱ table); ValueError for models outside the VP family (flow)."""
    scheduler = model.make_scheduler("DDIM")
    if maths.space(scheduler) != "vp":
        raise ValueError("the ε / x0 / v comparison needs a VP model (ᾱ_t); choose toy-sd")
    return scheduler


def _predictor(model, scheduler, prompts: list[str]):
    cond = loop.encode_prompts(model, prompts, None, 1.0, batch_size=len(prompts))  # w = 1: the conditional model
    return loop.Predictor(model, scheduler, cond, 1.0)


@torch.no_grad()
def targets_at(model, x0: torch.Tensor, t: int, prompts: list[str], generator: torch.Generator | None = None,
               noise: torch.Tensor | None = None, scheduler=None, predictor=None) -> TargetView:
    """Noise ``x0`` ``[B, C, h, w]`` (model space) to timestep ``t`` and compare the model's ε̂, x̂0, v̂ with the truth."""
    scheduler = scheduler or vp_scheduler(model)
    n_train = int(scheduler.config.num_train_timesteps)
    t = validation.integer("t", t, 0, n_train - 1)
    x0 = x0.to(model.device, model.unet.dtype)
    if noise is None:
        noise = maths.randn(x0.shape, generator, x0.device, x0.dtype)
    ab = maths.alpha_bar_at(scheduler, t)
    alpha, sigma, _ = maths.coefficients(scheduler, ab)
    x_t = maths.noise_to_start(scheduler, x0, noise, t)  # DDPM eq. 4
    predictor = predictor or _predictor(model, scheduler, prompts)
    p = predictor(x_t, t, ab, alpha, sigma)
    true = {"epsilon": noise, "x0": x0, "v": maths.velocity(x0, noise, alpha, sigma)}
    pred = {"epsilon": p.eps, "x0": p.x0, "v": maths.velocity(p.x0, p.eps, alpha, sigma)}
    mse = {k: float((pred[k] - true[k]).float().pow(2).mean()) for k in TARGETS}
    return TargetView(t, ab, x_t, true, pred, mse)


@torch.no_grad()
def error_vs_t(model, x0: torch.Tensor, prompts: list[str], timesteps: list[int], generator: torch.Generator | None,
               callback: Callable[[int, int], None] | None = None) -> dict:
    """Mean squared error of each target over a batch ``x0`` ``[B, C, h, w]`` at each timestep (fresh noise per t):
    ``{"t": [...], "alpha_bar": [...], "mse": {target: [...]}, "amplification": {...}}``."""
    scheduler = vp_scheduler(model)
    predictor = _predictor(model, scheduler, prompts)
    out = {"t": [], "alpha_bar": [], "mse": {k: [] for k in TARGETS}}
    for i, t in enumerate(timesteps):
        view = targets_at(model, x0, int(t), prompts, generator, scheduler=scheduler, predictor=predictor)
        out["t"].append(view.t)
        out["alpha_bar"].append(view.alpha_bar)
        for k in TARGETS:
            out["mse"][k].append(view.mse[k])
        if callback:
            callback(i + 1, len(timesteps))
    out["amplification"] = amplification(out["alpha_bar"])
    return out


def amplification(alpha_bars: list[float]) -> dict:
    """Squared gains of the module table at each ᾱ: how a unit squared error in the trained target reaches the
    derived one (``"eps->x0"`` = σ²/α², ``"x0->eps"`` = α²/σ², ``"v->x0"`` = σ², ``"v->eps"`` = α²); inf at the ends."""
    out = {"eps->x0": [], "x0->eps": [], "v->x0": [], "v->eps": []}
    for ab in alpha_bars:
        a2, s2 = ab, 1.0 - ab
        out["eps->x0"].append(s2 / a2 if a2 > 0 else float("inf"))
        out["x0->eps"].append(a2 / s2 if s2 > 0 else float("inf"))
        out["v->x0"].append(s2)
        out["v->eps"].append(a2)
    return out


def timestep_grid(scheduler, n: int) -> list[int]:
    """``n`` timesteps spread evenly over [0, T − 1] (both ends included)."""
    n_train = int(scheduler.config.num_train_timesteps)
    n = validation.integer("number of timesteps", n, 2, n_train)
    return sorted({round(i * (n_train - 1) / (n - 1)) for i in range(n)})
