"""The forward (noising) process of DDPM: one jump q(x_t | x_0) or t single steps q(x_t | x_{t-1}).

=====================  =========================================  ==========================
code                   paper (Ho et al. 2020)                      shape / range
=====================  =========================================  ==========================
``x0``                 x_0, the clean image                        [B, C, H, W] in [-1, 1]
``x_t``                x_t, the noised image                       [B, C, H, W], unbounded
``noise``              epsilon ~ N(0, I)                           same shape as x0
``betas[t]``           beta_t, variance added by step t            [T] in (0, 1]
``alphas_cumprod[t]``  alpha-bar_t = prod_{s<=t} (1 - beta_s)      [T] in [0, 1)
=====================  =========================================  ==========================

Timesteps are diffusers' 0-based indices (index ``t`` = the paper's ``t + 1``), so
:func:`q_sample` at ``t`` equals ``DDPMScheduler.add_noise`` at ``t``, and reaching it by
single steps takes the ``t + 1`` steps 0, 1, ..., t.

Randomness only comes from the ``torch.Generator`` passed in (never a global seed). Every
function returns the noise it drew, so a UI can show it and a test can replay it.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from pipelines.serving import compute_thread


def _at(values: torch.Tensor, t: int | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """values[t] shaped to broadcast over ``like`` ([B, 1, 1, 1]); t is an int or ``[B]``."""
    v = values.to(device=like.device, dtype=like.dtype)
    t = torch.as_tensor(t, device=like.device, dtype=torch.long)
    if t.min() < 0 or t.max() >= v.shape[0]:
        raise ValueError(f"timestep out of range: need 0 <= t < {v.shape[0]}, got {t.tolist()}")
    return v[t].reshape(-1, *([1] * (like.ndim - 1)))


def _randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def q_sample(
    x0: torch.Tensor,
    t: int | torch.Tensor,
    alphas_cumprod: torch.Tensor,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Jump straight from x0 to x_t: a sample of q(x_t | x_0) (DDPM eq. 4).

    Args:
        x0: ``[B, C, H, W]`` in [-1, 1].
        t: timestep index, an int or a long tensor ``[B]``, ``0 <= t < T``.
        alphas_cumprod: ``[T]`` alpha-bar (see :mod:`pipelines.diffusion.schedules`).
        noise: epsilon to use, shape of x0; drawn from ``generator`` when None.
        generator: the request's ``torch.Generator`` (on x0's device).

    Returns:
        ``(x_t, noise)``: x_t ``[B, C, H, W]`` (unbounded) and the epsilon used.
    """
    if noise is None:
        noise = _randn_like(x0, generator)
    elif noise.shape != x0.shape:
        raise ValueError(f"noise shape {tuple(noise.shape)} differs from x0 shape {tuple(x0.shape)}")
    a = _at(alphas_cumprod, t, x0)
    # DDPM eq. 4 reparameterised: x_t = sqrt(alpha-bar_t) x_0 + sqrt(1 - alpha-bar_t) eps
    x_t = a.sqrt() * x0 + (1.0 - a).sqrt() * noise
    return x_t, noise


def q_step(
    x_prev: torch.Tensor,
    t: int,
    betas: torch.Tensor,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward step: a sample of q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I) (DDPM eq. 2).

    Args:
        x_prev: x_{t-1}, ``[B, C, H, W]`` (x0 in [-1, 1] when ``t == 0``).
        t: timestep index of the step, ``0 <= t < T``.
        betas: ``[T]`` beta schedule.
        generator: the request's ``torch.Generator``.
        noise: epsilon to use; drawn from ``generator`` when None.

    Returns:
        ``(x_t, noise)``.
    """
    if noise is None:
        noise = _randn_like(x_prev, generator)
    b = _at(betas, t, x_prev)
    # DDPM eq. 2 reparameterised: x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) eps
    return (1.0 - b).sqrt() * x_prev + b.sqrt() * noise, noise


def q_sample_by_steps(
    x0: torch.Tensor,
    t: int,
    betas: torch.Tensor,
    generator: torch.Generator | None = None,
    callback: Callable[[int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Reach x_t from x0 by the ``t + 1`` single steps 0..t of :func:`q_step`.

    In distribution this equals :func:`q_sample` at ``t`` (the product of Gaussians collapses
    to DDPM eq. 4); the noise of each step is fresh, so it is not returned.

    Args:
        x0: ``[B, C, H, W]`` in [-1, 1].
        t: final timestep index, ``0 <= t < T``.
        betas: ``[T]``.
        generator: the request's ``torch.Generator``.
        callback: called as ``callback(s, x_s)`` after each step (e.g. for progress).

    Returns:
        x_t ``[B, C, H, W]``.
    """
    if not 0 <= int(t) < betas.shape[0]:
        raise ValueError(f"timestep out of range: need 0 <= t < {betas.shape[0]}, got {t}")
    x = x0
    for s in range(int(t) + 1):
        if s % 50 == 0:
            compute_thread.checkpoint()  # a long chain lets other requests run (serving/compute_thread.py)
        x, _ = q_step(x, s, betas, generator)
        if callback is not None:
            callback(s, x)
    return x


def steps_vs_jump(
    x0: torch.Tensor,
    t: int,
    betas: torch.Tensor,
    n_draws: int = 16,
    generator: torch.Generator | None = None,
    callback: Callable[[int, torch.Tensor], None] | None = None,
) -> dict[str, torch.Tensor]:
    """Draw ``n_draws`` samples of x_t both ways and summarise them per pixel.

    Args:
        x0: ``[1, C, H, W]`` in [-1, 1] (keep it small: the chain costs t+1 noise draws).
        t: timestep index, ``0 <= t < T``.
        betas: ``[T]``.
        n_draws: samples per method (>= 2).
        generator: the request's ``torch.Generator``.
        callback: forwarded to :func:`q_sample_by_steps`.

    Returns:
        ``jump`` and ``steps`` samples ``[n, C, H, W]``; their per-pixel ``*_mean`` and
        ``*_std`` ``[1, C, H, W]`` (std with Bessel's correction); the theory:
        ``expected_mean`` = sqrt(alpha-bar_t) x0 ``[1, C, H, W]`` and ``expected_std`` =
        sqrt(1 - alpha-bar_t) (a 0-d tensor).
    """
    if x0.shape[0] != 1 or n_draws < 2:
        raise ValueError("steps_vs_jump needs a single image (batch 1) and at least 2 draws")
    from pipelines.diffusion.schedules import alphas_cumprod as _alphas_cumprod

    ac = _alphas_cumprod(betas)
    xs = x0.expand(n_draws, *x0.shape[1:])
    jump, _ = q_sample(xs, t, ac, generator=generator)
    steps = q_sample_by_steps(xs, t, betas, generator=generator, callback=callback)
    a = ac[int(t)].to(x0.dtype)
    return {
        "jump": jump,
        "steps": steps,
        "jump_mean": jump.mean(0, keepdim=True),
        "steps_mean": steps.mean(0, keepdim=True),
        "jump_std": jump.std(0, keepdim=True),
        "steps_std": steps.std(0, keepdim=True),
        "expected_mean": a.sqrt() * x0,
        "expected_std": (1.0 - a).sqrt(),
    }


def display_basis(x: torch.Tensor) -> torch.Tensor:
    """``[1, C, H, W]`` in [-1, 1] (or unbounded noise) -> float32 ``[H, W, C]`` = 127.5 * x, channels last.

    The pre-scaled, display-ordered copy that :func:`q_sample_uint8` mixes; cache it per user.
    """
    return (x[0].movedim(0, -1) * 127.5).contiguous()


def q_sample_uint8(x0_d: torch.Tensor, noise_d: torch.Tensor, alpha_bar: float) -> np.ndarray:
    """DDPM eq. 4 straight to display pixels: uint8 ``[H, W, C]`` of clip(x_t, -1, 1).

    Equals ``images.tensor_to_uint8(q_sample(x0, t, ..., noise)[0])`` to within one grey level
    (rounding), in four passes over the pixels instead of about ten; this is the slider's path.

    Args:
        x0_d, noise_d: :func:`display_basis` of x0 and of epsilon, ``[H, W, C]``.
        alpha_bar: alpha-bar_t, in [0, 1].
    """
    # 127.5 (x_t + 1) = sqrt(ab) * (127.5 x0) + sqrt(1 - ab) * (127.5 eps) + 127.5; +0.5 so the cast rounds
    y = torch.mul(x0_d, alpha_bar**0.5)
    y.add_(noise_d, alpha=(1.0 - alpha_bar) ** 0.5).add_(128.0).clamp_(0.0, 255.0)
    return y.to(torch.uint8).numpy()


BLEND_NOISES = ("uniform", "gaussian")


def amount_blend(
    x0: torch.Tensor, amount: float, noise_kind: str = "uniform", generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The seeds' corruption (HF class unit 2's ``add_noise``; DDPM-from-scratch's uniform draw), *not* DDPM:

    x = (1 − a) x0 + a n, with n uniform (``torch.rand`` on [0, 1) for images in [0, 1], i.e. U[−1, 1) here in
    [−1, 1]) or Gaussian N(0, I). The two coefficients sum to 1 instead of their squares, so the variance
    is not kept: (1 − a)² Var x0 + a² Var n, and at a = 1 the sample is the noise's own distribution.

    Args:
        x0: ``[B, C, H, W]`` in [-1, 1]; amount: a in [0, 1]; noise_kind: ``uniform`` | ``gaussian``.
    Returns:
        ``(x, noise)``, both ``[B, C, H, W]``.
    """
    if noise_kind not in BLEND_NOISES:
        raise ValueError(f"noise kind must be one of {BLEND_NOISES}, got {noise_kind!r}")
    if not 0.0 <= float(amount) <= 1.0:
        raise ValueError(f"amount must be between 0 and 1, got {amount}")
    if noise_kind == "uniform":
        # 2 u - 1 with u ~ U[0, 1): the seed's rand_like noise moved from [0, 1] pixels to [-1, 1] ones
        noise = torch.rand(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype).mul_(2).sub_(1)
    else:
        noise = _randn_like(x0, generator)
    return (1.0 - amount) * x0 + amount * noise, noise


def blend_vs_forward(x0: torch.Tensor, amount: float, noise_kind: str, generator: torch.Generator | None) -> dict:
    """The amount blend beside DDPM eq. 4 at the same signal coefficient √ᾱ = 1 − a, on the same x0.

    Returns ``blend``, ``forward`` (x_t ``[B, C, H, W]``), ``alpha_bar`` = (1 − a)², and per method the
    noise part standardised by its theoretical std (``*_z``, flat tensors; N(0, 1) for DDPM), the total
    variance of x minus that of the signal part (``*_noise_var``) with its theory (a² Var n, resp. 1 − ᾱ).
    """
    blend, n = amount_blend(x0, amount, noise_kind, generator)
    a = float(amount)
    alpha_bar = (1.0 - a) ** 2
    x_t, eps = q_sample(x0, 0, torch.tensor([alpha_bar]), generator=generator)
    var_n = 1.0 / 3.0 if noise_kind == "uniform" else 1.0  # Var U[-1, 1) = 2² / 12
    return {
        "blend": blend, "forward": x_t, "alpha_bar": alpha_bar,
        "blend_z": (n / var_n**0.5).flatten(), "forward_z": eps.flatten(),
        "blend_noise_var": float((blend - (1 - a) * x0).var()), "blend_noise_var_theory": a * a * var_n,
        "forward_noise_var": float((x_t - alpha_bar**0.5 * x0).var()), "forward_noise_var_theory": 1.0 - alpha_bar,
    }
