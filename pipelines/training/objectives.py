"""Training targets and samplers shared by the 2-D playground and the digits: DDPM ε-prediction and
flow matching (rectified flow), for any tensor shape ``[B, ...]``.

Conventions (diffusers', so a trained model runs under its schedulers):

============  =====================================================  ====================================
objective     forward path / target                                   time fed to the model
============  =====================================================  ====================================
``ddpm``      x_t = √ᾱ_t x0 + √(1−ᾱ_t) ε, target ε (DDPM eq. 4, 14)   integer timestep t in [0, T−1]
``flow``      x_σ = (1−σ) x0 + σ ε, target v = ε − x0 (rectified       σ·T (``FlowMatchEulerDiscreteScheduler``
              flow, Liu et al. 2022; Lipman et al. 2022)               feeds ``timesteps = sigmas * T``)
============  =====================================================  ====================================

σ = 1 is pure noise and σ = 0 is data. Conversions (each once): x̂0 = x_σ − σ v, ε̂ = x_σ + (1−σ) v.
Flow sampling is Euler on dx/dσ = v from σ = 1 to 0 (the flow scheduler's ``step``: x + (σ' − σ) v);
DDPM models sample with DDIM, η = 0 (Song et al. 2021, eq. 12) through diffusers' ``DDIMScheduler``
with "trailing" spacing, so one step starts from t = T−1.

A model here is any callable ``fn(x, model_time) -> prediction`` with ``model_time`` float ``[B]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from pipelines.diffusion import maths, schedules

OBJECTIVES = ("flow", "ddpm")
T_TRAIN = 1000  # num_train_timesteps for both objectives
ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _bcast(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``[B]`` -> ``[B, 1, ...]`` to broadcast over a batch of any shape."""
    return v.reshape(-1, *([1] * (x.dim() - 1))).to(x.dtype)


def x0_from_velocity(x_t: torch.Tensor, v: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    """x̂0 = x_σ − σ v (straight path x_σ = (1−σ) x0 + σ ε, v = ε − x0), σ a number or ``[B]``."""
    s = _bcast(torch.as_tensor(sigma).expand(x_t.shape[0]), x_t)
    return maths.to_eps_x0(v, x_t, 1.0 - s, s, "flow")[1]


def eps_from_velocity(x_t: torch.Tensor, v: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    """ε̂ = x_σ + (1−σ) v, σ a number or ``[B]``."""
    s = _bcast(torch.as_tensor(sigma).expand(x_t.shape[0]), x_t)
    return maths.to_eps_x0(v, x_t, 1.0 - s, s, "flow")[0]


def euler_flow_step(x: torch.Tensor, v: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
    """One Euler step of dx/dσ = v: x_{σ'} = x_σ + (σ' − σ) v (what the flow scheduler's ``step`` does)."""
    return x + (sigma_next - sigma) * v


def flow_sigmas(steps: int, shift: float = 1.0) -> torch.Tensor:
    """σ grid ``[steps + 1]`` from 1 down to 0, with SD3's time shift σ' = sσ / (1 + (s−1)σ)."""
    s = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    return (shift * s / (1 + (shift - 1) * s)).float()


def sample_sigma(n: int, generator: torch.Generator, logit_normal: bool = False) -> torch.Tensor:
    """Training times σ ``[n]`` in (0, 1): uniform, or logit-normal (σ = sigmoid(N(0, 1)); SD3, Esser
    et al. 2024, eq. 19), which spends more updates at mid σ where the velocity is hardest to guess."""
    if logit_normal:
        return torch.sigmoid(torch.randn(n, generator=generator))
    return torch.rand(n, generator=generator)


@dataclass(frozen=True)
class Objective:
    """What a model learns: ``kind`` in OBJECTIVES; ``schedule`` (a name of :mod:`pipelines.diffusion.schedules`)
    for ``ddpm``; ``logit_normal`` σ sampling for ``flow``; ``clip``: DDIM's clip of the predicted x0
    (near t = T−1, x̂0 = (x_t − √(1−ᾱ) ε̂) / √ᾱ divides by √ᾱ ≈ 0 and a one-step sample explodes
    without it; diffusers clips images to [−1, 1] by default for the same reason)."""

    kind: str = "flow"
    schedule: str = "cosine"
    logit_normal: bool = False
    clip: float | None = None  # DDIM clips the predicted x0 to [-clip, clip] (clip_sample); None: no clip

    def __post_init__(self):
        if self.kind not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.kind!r}")
        if self.schedule not in schedules.SCHEDULE_NAMES:
            raise ValueError(f"unknown schedule {self.schedule!r}; choose one of {', '.join(schedules.SCHEDULE_NAMES)}")

    def alphas_cumprod(self) -> torch.Tensor:
        return schedules.alphas_cumprod(schedules.make_betas(self.schedule, num_train_timesteps=T_TRAIN))

    def training_pair(self, x0: torch.Tensor, generator: torch.Generator,
                      noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x_t, model_time ``[B]``, target) for a batch ``x0``. ``noise`` pairs each x0 with a given ε
        (reflow); by default ε ~ N(0, I) from ``generator``."""
        b = x0.shape[0]
        eps = torch.randn(x0.shape, generator=generator) if noise is None else noise
        if self.kind == "flow":
            sigma = sample_sigma(b, generator, self.logit_normal)
            s = _bcast(sigma, x0)
            return (1 - s) * x0 + s * eps, sigma * T_TRAIN, eps - x0  # x_σ and v = ε − x0
        t = torch.randint(0, T_TRAIN, (b,), generator=generator)
        ab = _bcast(self.alphas_cumprod()[t], x0)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * eps, t.float(), eps  # DDPM eq. 4; target ε (eq. 14)

    def scheduler(self):
        """A fresh diffusers scheduler that samples a model trained with this objective."""
        from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler

        if self.kind == "flow":
            return FlowMatchEulerDiscreteScheduler(num_train_timesteps=T_TRAIN, shift=1.0)
        return schedules.make_scheduler(schedules.ScheduleSpec(self.schedule, T_TRAIN), DDIMScheduler,
                                        timestep_spacing="trailing", set_alpha_to_one=True,
                                        clip_sample=self.clip is not None, clip_sample_range=self.clip or 1.0)

    @torch.no_grad()
    def sample(self, fn: ModelFn, noise: torch.Tensor, steps: int,
               keep_path: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Integrate from ``noise`` (x at σ = 1 / t = T−1) to data in ``steps`` model calls.

        Returns (x0 ``[B, ...]``, path): ``path`` holds x before every step and the result
        (``steps + 1`` tensors) when ``keep_path``, else is empty."""
        if not 1 <= int(steps) <= 1000:
            raise ValueError(f"sampling steps must be between 1 and 1000, got {steps}")
        x, path = noise.clone(), [noise.clone()] if keep_path else []
        if self.kind == "flow":
            sig = flow_sigmas(int(steps))
            for i in range(int(steps)):
                v = fn(x, torch.full((x.shape[0],), float(sig[i]) * T_TRAIN))
                x = euler_flow_step(x, v, float(sig[i]), float(sig[i + 1]))
                if keep_path:
                    path.append(x.clone())
            return x, path
        sched = self.scheduler()
        sched.set_timesteps(int(steps))
        for t in sched.timesteps:
            eps = fn(x, torch.full((x.shape[0],), float(t)))
            x = sched.step(eps, t, x, eta=0.0).prev_sample  # DDIM eq. 12, deterministic
            if keep_path:
                path.append(x.clone())
        return x, path


def straightness(path: list[torch.Tensor]) -> torch.Tensor:
    """Per-particle ratio |x_end − x_start| / Σ |x_{k+1} − x_k| ``[B]`` in (0, 1]; 1 = a straight line."""
    xs = torch.stack([p.flatten(1) for p in path])  # [K+1, B, D]
    length = (xs[1:] - xs[:-1]).norm(dim=-1).sum(0)
    return (xs[-1] - xs[0]).norm(dim=-1) / length.clamp_min(1e-12)


def cfg_combine(uncond: torch.Tensor, cond: torch.Tensor, w: float) -> torch.Tensor:
    """Classifier-free guidance, :func:`pipelines.diffusion.maths.cfg_combine`, with a finite w."""
    if not math.isfinite(w):
        raise ValueError(f"guidance scale w must be finite, got {w}")
    return maths.cfg_combine(uncond, cond, w)
