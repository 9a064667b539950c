"""The diffusion maths every loop, hook and tab shares: each formula once.

A noisy sample is x_t = α_t x0 + σ_t ε. Three families of scheduler write it differently:

=========  ==========================================  ====================  ==============================
space      x_t                                         α_t, σ_t              schedulers (diffusers)
=========  ==========================================  ====================  ==============================
``vp``     sqrt(ᾱ_t) x0 + sqrt(1 − ᾱ_t) ε (DDPM eq. 4)  sqrt(ᾱ), sqrt(1 − ᾱ)  DDPM, DDIM, DPM-Solver++
``sigma``  x0 + σ ε, σ² = (1 − ᾱ)/ᾱ (Karras 2022)       1, σ                  Euler, LMS (input x_t/sqrt(σ²+1))
``flow``   (1 − s) x0 + s ε (rectified flow)            1 − s, s              FlowMatchEulerDiscrete
=========  ==========================================  ====================  ==============================

Model outputs and their conversions to (ε, x̂0), given the model's input x with coefficients
(α, σ): ``epsilon`` (ε), ``v_prediction`` (v = α ε − σ x0, Salimans & Ho 2022; VP only),
``sample`` (x0) and ``flow`` (u = ε − x0, the rectified-flow velocity; Liu et al. 2022).
Every function takes plain floats for the coefficients, so the arithmetic is the same whatever
tensor it is applied to.
"""

from __future__ import annotations

import inspect
import math

import torch

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample", "flow")


def randn(shape, generator, device, dtype) -> torch.Tensor:
    """Standard normal noise from the request's generator, drawn as diffusers draws it."""
    from diffusers.utils.torch_utils import randn_tensor

    return randn_tensor(tuple(shape), generator=generator, device=device, dtype=dtype)


# ------------------------------------------------------------------ scheduler spaces and ᾱ


def space(scheduler) -> str:
    """``"flow"`` (no ``alphas_cumprod``, sigmas in [0, 1]), ``"sigma"`` (``init_noise_sigma`` = σ_max > 1)
    or ``"vp"`` (unit-variance samples)."""
    if not hasattr(scheduler, "alphas_cumprod") and hasattr(scheduler, "sigmas"):
        return "flow"
    return "sigma" if float(scheduler.init_noise_sigma) != 1.0 else "vp"


def is_sigma_space(scheduler) -> bool:
    """True for schedulers whose sample is x0 + σε (Euler, LMS, Heun, ...)."""
    return space(scheduler) == "sigma"


def alpha_bar_from_sigma(sigma: float) -> float:
    """σ-space σ -> ᾱ = 1 / (1 + σ²) (the VP sample is x / sqrt(σ² + 1))."""
    return 1.0 / (1.0 + sigma * sigma)


def alpha_bar_from_flow(s: float) -> float:
    """Flow time s -> ᾱ of the same signal-to-noise ratio: (1−s)² / ((1−s)² + s²)."""
    a, b = (1.0 - s) ** 2, s * s
    return a / (a + b) if a + b > 0 else 1.0


def flow_from_alpha_bar(alpha_bar: float) -> float:
    """Inverse of :func:`alpha_bar_from_flow`: s = 1 / (1 + sqrt(ᾱ / (1 − ᾱ))), since sqrt(SNR) = (1 − s) / s."""
    return 0.0 if alpha_bar >= 1.0 else 1.0 / (1.0 + math.sqrt(alpha_bar / (1.0 - alpha_bar)))


def alpha_bar_at(scheduler, t, step_index: int | None = None) -> float:
    """ᾱ of the sample the model sees at timestep ``t`` (the VP-equivalent for σ and flow spaces).

    σ-space: 1 / (1 + σ²) with σ = ``sigmas[step_index]`` (exact, also for Karras sigmas); flow:
    :func:`alpha_bar_from_flow` of ``sigmas[step_index]``; VP: ``alphas_cumprod[t]``.
    """
    kind = space(scheduler)
    if kind == "vp":
        return float(scheduler.alphas_cumprod[int(t)])
    if step_index is None:
        step_index = scheduler.index_for_timestep(t)
    s = float(scheduler.sigmas[step_index])
    return alpha_bar_from_sigma(s) if kind == "sigma" else alpha_bar_from_flow(s)


def coefficients(scheduler, alpha_bar: float, step_index: int | None = None) -> tuple[float, float, float]:
    """``(α, σ, c_in)`` of the model's input x_in = c_in x_t = α x0 + σ ε at this step.

    VP and σ-space give the model the VP sample: α = sqrt(ᾱ), σ = sqrt(1 − ᾱ), and c_in = 1 (VP) or
    1 / sqrt(σ² + 1) (σ-space, what ``scale_model_input`` applies). Flow models take x_t as is:
    α = 1 − s, σ = s, c_in = 1.
    """
    kind = space(scheduler)
    if kind == "flow":
        s = float(scheduler.sigmas[step_index])
        return 1.0 - s, s, 1.0
    c_in = 1.0 / math.sqrt(1.0 + (1.0 - alpha_bar) / alpha_bar) if kind == "sigma" else 1.0
    return math.sqrt(alpha_bar), math.sqrt(1.0 - alpha_bar), c_in


def snr(alpha_bar: float) -> float:
    """SNR = ᾱ / (1 − ᾱ) (Kingma et al. 2021, eq. 1); inf at ᾱ = 1."""
    return alpha_bar / (1.0 - alpha_bar) if alpha_bar < 1.0 else math.inf


# ------------------------------------------------------------------ conversions


def to_eps_x0(out: torch.Tensor, x: torch.Tensor, alpha: float, sigma: float, prediction_type: str):
    """Model output -> ``(ε, x̂0)`` given the model's input x = α x0 + σ ε. Shapes ``[B, C, h, w]``."""
    if prediction_type == "epsilon":
        eps = out
        x0 = (x - sigma * eps) / alpha  # DDPM eq. 4 solved for x0 (eq. 15)
    elif prediction_type == "v_prediction":
        x0 = alpha * x - sigma * out  # v = α ε − σ x0 with α² + σ² = 1
        eps = alpha * out + sigma * x
    elif prediction_type == "sample":
        x0 = out
        eps = (x - alpha * x0) / max(sigma, 1e-12)
    elif prediction_type == "flow":
        x0 = x - sigma * out  # u = ε − x0, x = (1 − s) x0 + s ε
        eps = x + alpha * out
    else:
        raise ValueError(f"unsupported prediction_type {prediction_type!r}; one of {PREDICTION_TYPES}")
    return eps, x0


def from_eps(eps: torch.Tensor, x: torch.Tensor, alpha: float, sigma: float, prediction_type: str) -> torch.Tensor:
    """ε -> the output a scheduler's ``step`` expects for ``prediction_type`` (inverse of :func:`to_eps_x0`)."""
    if prediction_type == "epsilon":
        return eps
    if prediction_type == "v_prediction":  # v = α ε − σ x0 = (ε − σ x) / α
        return (eps - sigma * x) / alpha
    if prediction_type == "sample":
        return (x - sigma * eps) / alpha
    if prediction_type == "flow":  # u = ε − x0 = (ε − x) / α
        return (eps - x) / alpha
    raise ValueError(f"unsupported prediction_type {prediction_type!r}; one of {PREDICTION_TYPES}")


def velocity(x0: torch.Tensor, eps: torch.Tensor, alpha: float, sigma: float) -> torch.Tensor:
    """The v-prediction target v = α ε − σ x0 (Salimans & Ho 2022, §4; diffusers' ``get_velocity``)."""
    return alpha * eps - sigma * x0


def x0_from_eps(eps: torch.Tensor, x: torch.Tensor, alpha: float, sigma: float) -> torch.Tensor:
    """x̂0 = (x − σ ε) / α (DDPM eq. 15, rearranged)."""
    return (x - sigma * eps) / alpha


def cfg_combine(uncond: torch.Tensor, cond: torch.Tensor, w: float) -> torch.Tensor:
    """Classifier-free guidance: uncond + w (cond − uncond) (Ho & Salimans 2022, eq. 6; their w is w − 1).

    w = 0: unconditional; w = 1: conditional; w > 1 extrapolates. Any prediction type, any shape.
    """
    return uncond + w * (cond - uncond)


def score_from_eps(eps: torch.Tensor, alpha_bar: float) -> torch.Tensor:
    """∇ log p(x_t) ≈ −ε / sqrt(1 − ᾱ_t) (Song et al. 2021, eq. 3 with Tweedie)."""
    return -eps / math.sqrt(1.0 - alpha_bar)


# ------------------------------------------------------------------ timesteps and starts


def plan_timesteps(scheduler, num_inference_steps: int, strength: float = 1.0, device=None,
                   timesteps: list[int] | None = None):
    """``set_timesteps`` then keep the last ``strength`` fraction (diffusers' img2img rule).

    ``timesteps``: an explicit descending list (e.g. CS180's strided 990, 960, ..., 0) for
    schedulers whose ``set_timesteps`` accepts one (DDPM). Returns ``(timesteps, begin_index)``:
    the 1-D tensor the loop walks and its offset into ``scheduler.timesteps``. Raises ValueError
    when ``strength`` leaves no step.
    """
    if timesteps is not None:
        timesteps = [int(v) for v in timesteps]
        n_train = int(scheduler.config.num_train_timesteps)
        if not timesteps or any(a <= b for a, b in zip(timesteps, timesteps[1:])) or not 0 <= timesteps[-1] \
                or timesteps[0] >= n_train:
            raise ValueError(f"timesteps must be a strictly descending list within [0, {n_train - 1}]")
        if "timesteps" not in inspect.signature(scheduler.set_timesteps).parameters:
            raise ValueError(f"{type(scheduler).__name__} does not take an explicit list of timesteps; use DDPM")
        scheduler.set_timesteps(timesteps=timesteps, device=device)
        num_inference_steps = len(timesteps)
    else:
        scheduler.set_timesteps(num_inference_steps, device=device)
    init = min(int(num_inference_steps * strength), num_inference_steps)
    if init < 1:
        raise ValueError(f"strength {strength:g} with {num_inference_steps} steps leaves no denoising step; "
                         f"raise the strength to at least {1 / num_inference_steps:.3g} or use more steps")
    return start_at(scheduler, num_inference_steps - init)


def start_at(scheduler, step_index: int):
    """Begin a planned scheduler at ``step_index`` (0 = the noisiest step): ``(timesteps to walk, begin)``."""
    begin = step_index * scheduler.order
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(begin)
    return scheduler.timesteps[begin:], begin


def noise_to_start(scheduler, x0: torch.Tensor, noise: torch.Tensor, t, begin_index: int = 0) -> torch.Tensor:
    """x0 (model space ``[B, C, h, w]``) jumped to timestep ``t`` in the scheduler's space.

    VP: sqrt(ᾱ) x0 + sqrt(1 − ᾱ) ε (DDPM eq. 4, :func:`pipelines.diffusion.forward.q_sample`);
    σ-space: x0 + σ ε; flow: (1 − s) x0 + s ε. Equals ``scheduler.add_noise`` / ``scale_noise`` (tested).
    """
    from pipelines.diffusion import forward

    kind = space(scheduler)
    if kind != "vp":
        s = scheduler.sigmas[begin_index].to(x0.device, x0.dtype)
        return x0 + s * noise if kind == "sigma" else (1.0 - s) * x0 + s * noise
    x_t, _ = forward.q_sample(x0, torch.as_tensor(int(t)), scheduler.alphas_cumprod, noise=noise)
    return x_t
