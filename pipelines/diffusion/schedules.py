"""Beta schedules, as pure functions and as diffusers scheduler configs.

A schedule is the sequence beta_0 .. beta_{T-1} of per-step noise variances. Everything the
forward process needs follows from it (DDPM, Ho et al. 2020, eq. 4 and the text above it):

    alpha_t         = 1 - beta_t
    alphas_cumprod  = prod_{s <= t} alpha_s                  (the paper's alpha-bar_t)
    SNR(t)          = alpha-bar_t / (1 - alpha-bar_t)        (Kingma et al. 2021, eq. 1)

Timesteps use diffusers' 0-based indexing: index ``t`` holds the paper's ``t + 1`` (so
``alphas_cumprod[0] = 1 - beta_0`` is already one step of noise, and ``alphas_cumprod[T-1]``
is the last). This keeps every tab consistent with ``scheduler.timesteps``.

Where the betas come from
-------------------------
=================  ==========================================  ===========================
name               formula                                      source here
=================  ==========================================  ===========================
``linear``         linspace(b0, b1, T)                          diffusers ``"linear"``
``scaled_linear``  linspace(sqrt b0, sqrt b1, T) ** 2           diffusers ``"scaled_linear"``
``quadratic``      linspace(sqrt b0, sqrt b1, T) ** 2           diffusers ``"scaled_linear"``
``sigmoid``        sigmoid(linspace(-6, 6, T)) * (b1-b0) + b0   diffusers ``"sigmoid"``
``cosine``         from alpha-bar(t) = cos^2((t/T+s)/(1+s) pi/2) diffusers ``"squaredcos_cap_v2"``
=================  ==========================================  ===========================

Honest note on ``quadratic``: the "quadratic" schedule of the DiffusionFastForward sandbox
(and of most DDPM codebases) is *the same formula* as diffusers' ``scaled_linear``; diffusers
just named it after its use in latent diffusion. The two differ here only in their customary
β range: ``quadratic`` defaults to DDPM's (1e-4, 0.02), ``scaled_linear`` to Stable
Diffusion's (0.00085, 0.012). With the same range they are identical (a test checks that).
The cosine schedule (Nichol & Dhariwal 2021, eq. 17, betas clipped at 0.999) ignores the β
range. Zero-terminal-SNR (Lin et al. 2024, Algorithm 1) is diffusers'
``rescale_zero_terminal_snr``; it sets alpha-bar_{T-1} = 0 exactly (beta_{T-1} = 1).

All tensors here are 1-D float32 of length T, indexed by timestep.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

import torch

# name -> (diffusers beta_schedule, customary (beta_start, beta_end) or None if unused)
SCHEDULES: dict[str, tuple[str, tuple[float, float] | None]] = {
    "linear": ("linear", (1e-4, 0.02)),  # DDPM
    "scaled_linear": ("scaled_linear", (0.00085, 0.012)),  # Stable Diffusion
    "cosine": ("squaredcos_cap_v2", None),  # improved DDPM; ignores the β range
    "sigmoid": ("sigmoid", (1e-4, 0.02)),  # GeoDiff shape, DDPM range
    "quadratic": ("scaled_linear", (1e-4, 0.02)),  # same formula as scaled_linear, DDPM range
}
SCHEDULE_NAMES: tuple[str, ...] = tuple(SCHEDULES)
PORTABLE = {"linear", "scaled_linear", "squaredcos_cap_v2"}  # beta_schedule values every scheduler knows
MAX_TIMESTEPS = 10_000


@dataclass(frozen=True)
class ScheduleSpec:
    """A schedule by name and parameters; ``None`` β bounds mean "the customary range"."""

    name: str = "linear"
    num_train_timesteps: int = 1000
    beta_start: float | None = None
    beta_end: float | None = None
    zero_terminal_snr: bool = False

    def resolved(self) -> "ScheduleSpec":
        """Validate and fill in the customary β range. Raises ValueError on bad values."""
        if self.name not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.name!r}; choose one of {', '.join(SCHEDULE_NAMES)}")
        T = int(self.num_train_timesteps)
        if not 2 <= T <= MAX_TIMESTEPS:
            raise ValueError(f"T (num_train_timesteps) must be between 2 and {MAX_TIMESTEPS}, got {T}")
        default = SCHEDULES[self.name][1] or (1e-4, 0.02)
        b0 = default[0] if self.beta_start is None else float(self.beta_start)
        b1 = default[1] if self.beta_end is None else float(self.beta_end)
        if not (0.0 < b0 < b1 < 1.0):
            raise ValueError(f"need 0 < beta_start < beta_end < 1, got beta_start={b0:g}, beta_end={b1:g}")
        return ScheduleSpec(self.name, T, b0, b1, bool(self.zero_terminal_snr))

    def label(self) -> str:
        s = self.resolved()
        rng = "" if SCHEDULES[s.name][1] is None else f", β {s.beta_start:g}..{s.beta_end:g}"
        return f"{s.name} (T={s.num_train_timesteps}{rng}{', zero-SNR' if s.zero_terminal_snr else ''})"


def _native_config(s: ScheduleSpec) -> dict:
    return {
        "num_train_timesteps": s.num_train_timesteps,
        "beta_schedule": SCHEDULES[s.name][0],
        "beta_start": s.beta_start,
        "beta_end": s.beta_end,
        "rescale_betas_zero_snr": s.zero_terminal_snr,
    }


def scheduler_config(spec: ScheduleSpec) -> dict:
    """The diffusers scheduler kwargs that reproduce ``spec``, for any scheduler taking betas.

    Only ``DDPMScheduler`` knows ``"sigmoid"``, so that schedule is passed as ``trained_betas``
    (before the zero-SNR rescale, which the scheduler applies itself when asked).

    >>> from diffusers import DDIMScheduler
    >>> DDIMScheduler(**scheduler_config(ScheduleSpec("cosine", 1000)))  # doctest: +SKIP
    """
    s = spec.resolved()
    cfg = _native_config(s)
    if cfg["beta_schedule"] not in PORTABLE:
        raw = _betas_cached(dataclasses.replace(s, zero_terminal_snr=False))
        cfg["trained_betas"] = raw.tolist()
    return cfg


def make_scheduler(spec: ScheduleSpec, cls: str | type = "DDPMScheduler", **overrides):
    """A fresh diffusers scheduler (one per request: schedulers hold state) for ``spec``."""
    import diffusers

    klass = getattr(diffusers, cls) if isinstance(cls, str) else cls
    return klass(**{**scheduler_config(spec), **overrides})


@functools.lru_cache(maxsize=64)
def _betas_cached(spec: ScheduleSpec) -> torch.Tensor:
    from diffusers import DDPMScheduler

    # DDPMScheduler computes the betas (and the zero-terminal-SNR rescale) in its __init__.
    return DDPMScheduler(**_native_config(spec)).betas.to(torch.float32)


def make_betas(spec: ScheduleSpec | str = "linear", **kwargs) -> torch.Tensor:
    """beta_t for t = 0..T-1: float32 ``[T]`` in (0, 1] (1 only at t=T-1 under zero-SNR).

    ``make_betas("cosine", num_train_timesteps=500)`` or ``make_betas(ScheduleSpec(...))``.
    Raises ValueError on an unknown name or bad parameters.
    """
    if isinstance(spec, str):
        spec = ScheduleSpec(spec, **kwargs)
    return _betas_cached(spec.resolved()).clone()


def alphas_cumprod(betas: torch.Tensor) -> torch.Tensor:
    """alpha-bar_t = prod_{s<=t} (1 - beta_s) (DDPM, text above eq. 4): ``[T]`` in [0, 1)."""
    return torch.cumprod(1.0 - betas, dim=0)


@dataclass(frozen=True)
class ScheduleCurves:
    """Everything plotted on the Schedules tab; each field is float32 ``[T]``."""

    betas: torch.Tensor
    alphas_cumprod: torch.Tensor
    sqrt_alphas_cumprod: torch.Tensor  # signal coefficient of x0 in q(x_t | x0)
    sqrt_one_minus_alphas_cumprod: torch.Tensor  # noise coefficient of eps
    snr: torch.Tensor  # alpha-bar / (1 - alpha-bar); 0 where alpha-bar = 0
    log_snr: torch.Tensor  # natural log of SNR; -inf where alpha-bar = 0


def snr(alphas_cumprod_: torch.Tensor) -> torch.Tensor:
    """SNR_t = alpha-bar_t / (1 - alpha-bar_t) (signal variance over noise variance)."""
    return alphas_cumprod_ / (1.0 - alphas_cumprod_)


def curves(spec: ScheduleSpec | str = "linear", **kwargs) -> ScheduleCurves:
    """All per-timestep curves of a schedule (see :class:`ScheduleCurves`)."""
    betas = make_betas(spec, **kwargs)
    ac = alphas_cumprod(betas)
    s = snr(ac)
    return ScheduleCurves(betas, ac, ac.sqrt(), (1.0 - ac).sqrt(), s, torch.log(s))


def snr_db(alpha_bar: float) -> float:
    """10 log10(SNR) for one alpha-bar value; -inf when alpha-bar == 0, +inf when 1."""
    if alpha_bar <= 0.0:
        return -math.inf
    if alpha_bar >= 1.0:
        return math.inf
    return 10.0 * math.log10(alpha_bar / (1.0 - alpha_bar))
