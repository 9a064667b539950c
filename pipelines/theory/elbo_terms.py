"""The ELBO of rendered scenes under a bundled model, term by term over t (seed 002; Ho et al. 2020, eq. 5).

−log p_θ(x0) ≤ L_T + Σ_{t>1} L_{t−1} + L_0, with (DDPM indices; diffusers' timestep index i = t − 1)

* L_{t−1} = E_q KL(q(x_{t−1}|x_t,x0) ‖ p_θ(x_{t−1}|x_t)), closed form per x_t (:func:`elbo.step_kl`);
* L_0 = −log p_θ(x0|x1), the discretised Gaussian decoder with σ_1² = β_1 (DDPM eq. 13);
* L_T = KL(q(x_T|x0) ‖ N(0, I)), no parameters (≈ 0 under a zero-terminal-SNR schedule).

The expectation over x_t is one draw per image (the images themselves average over it); the KL inside it is
exact. The cross-check :func:`monte_carlo_check` estimates the same KL at the same x_t by sampling x_{t−1}
and averaging log-density ratios. Everything is reported in bits per dimension (nats / (D ln 2), D = 3·32·32).
Scene-rendering and prompt are the caller's; images are ``[B, 3, H, W]`` in [-1, 1] on the 8-bit grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from pipelines import validation
from pipelines.diffusion import maths
from pipelines.theory import elbo

GAMMA = 5.0  # Min-SNR-γ (Hang et al. 2023), as toy-sd was trained with


@dataclass
class ElboTerms:
    """Per evaluated timestep index ``t`` (diffusers' 0..N−1; index i holds L_{i} in DDPM's L_{t−1} with
    t = i + 1, i = 0 being L_0): ``bits`` (bits/dim, mean over images); ``l0``, ``lT``, ``total`` in bits/dim,
    ``total`` summing every term, the KL terms not evaluated interpolated between evaluated neighbours
    (:func:`kl_sum`; exact when every t is evaluated); ``weights``: :func:`loss_weights` (every t = 1 … N−1)."""

    t: np.ndarray
    bits: np.ndarray
    l0: float
    lT: float
    total: float
    num_timesteps: int
    num_images: int
    variance: str
    weights: dict[str, np.ndarray] = field(default_factory=dict)


FIRST = 10  # the first KL terms, where L_t changes fastest with t, are always evaluated


def strided_timesteps(num_timesteps: int, stride: int) -> list[int]:
    """0 (L_0), the first :data:`FIRST` KL terms, then every ``stride``-th, and always the last (L_{T−1})."""
    stride = validation.integer("stride", stride, 1, num_timesteps)
    ts = sorted(set(range(0, min(FIRST + 1, num_timesteps))) | set(range(0, num_timesteps, stride)))
    return ts + ([num_timesteps - 1] if ts[-1] != num_timesteps - 1 else [])


def kl_sum(timesteps: Sequence[int], values: Sequence[float], num_timesteps: int) -> float:
    """Σ of the KL terms at indices 1..N−1 from those evaluated (``timesteps`` ascending, with 1 and N − 1):
    the missing ones linearly interpolated between their evaluated neighbours (exact when all are given)."""
    ts, vs = np.asarray(timesteps), np.asarray(values)
    keep = ts >= 1
    return float(np.interp(np.arange(1, num_timesteps), ts[keep], vs[keep]).sum())


def loss_weights(alphas_cumprod: torch.Tensor, gamma: float = GAMMA) -> dict[str, np.ndarray]:
    """Weight on the x0-error ‖x0 − x̂0‖² at every KL index t = 1 … N−1, each normalised to sum 1 over them:

    * ``ELBO`` ½ (SNR_{t−1} − SNR_t) (the true L_{t−1} with β̃; Kingma et al. 2021, eq. 13);
    * ``L_simple`` SNR_t (DDPM's unweighted ε-MSE: ‖ε − ε̂‖² = SNR ‖x0 − x̂0‖², uniform t);
    * ``Min-SNR-γ`` min(SNR_t, γ) (Hang et al. 2023; toy-sd's v-loss variant is min(SNR + 1, γ)).
    Arrays ``[N − 1]``, entry i for t = i + 1.
    """
    ac = alphas_cumprod.double()
    snr = (ac / (1 - ac)).numpy()
    out = {"ELBO": elbo.kl_weight_on_x0_mse(snr[:-1], snr[1:]), "L_simple": snr[1:],
           f"Min-SNR-{gamma:g}": np.minimum(snr[1:], gamma)}
    return {k: v / v.sum() for k, v in out.items()}


def _alpha_bars(scheduler, t: int) -> tuple[float, float]:
    ac = scheduler.alphas_cumprod
    return float(ac[t]), (float(ac[t - 1]) if t > 0 else 1.0)


@torch.no_grad()
def predict_x0(model, scheduler, x0: torch.Tensor, t: int, emb, generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw x_t ~ q(x_t|x0) (DDPM eq. 4) and the model's x̂0 there -> ``(x_t, x̂0)``, both ``[B, C, H, W]``."""
    a, _ = _alpha_bars(scheduler, t)
    alpha, sigma = math.sqrt(a), math.sqrt(1 - a)
    noise = maths.randn(x0.shape, generator, x0.device, x0.dtype)
    x_t = alpha * x0 + sigma * noise
    out = model.predict(x_t.to(model.device, model.unet.dtype), torch.full((x0.shape[0],), t, device=model.device),
                        emb).float().cpu()
    _, x0_hat = maths.to_eps_x0(out, x_t, alpha, sigma, model.prediction_type(scheduler))
    return x_t, x0_hat


def term_nats(scheduler, x0, x_t, x0_hat, t: int, variance: str) -> torch.Tensor:
    """Nats per image ``[B]`` of the term at index ``t``: L_0 (decoder) at 0, else the KL L_{t−1}."""
    a, a_prev = _alpha_bars(scheduler, t)
    if t == 0:  # μ_θ(x1, 1) = x̂0 (c0 = 1, ct = 0 at ᾱ_prev = 1); σ_1² = β_1 since β̃_1 = 0
        return elbo.discretised_nll(x0, x0_hat, 1.0 - a).flatten(1).sum(1)
    return elbo.step_kl(x0, x_t, x0_hat, a, a_prev, variance).flatten(1).sum(1)


def check_model(model):
    """The ELBO here needs a VP (DDPM-family) pixel model: the likelihood is of pixels."""
    if model.vae is not None or model.kind in ("latent", "sd3"):
        raise ValueError(f"{model.name} works on latents: the ELBO in pixels needs a pixel model (toy-sd)")
    scheduler = model.make_scheduler("DDPM")
    if maths.space(scheduler) != "vp":
        raise ValueError(f"{model.name} is not a DDPM-family (VP) model: its ELBO has other terms")
    return scheduler


def elbo_terms(model, x0: torch.Tensor, prompt: str, *, stride: int = 20, variance: str = "beta_tilde",
               seed: int = 0, callback: Callable[[int, int], None] | None = None) -> ElboTerms:
    """The ELBO terms of images ``x0`` ``[B, 3, H, W]`` in [-1, 1] under ``model`` conditioned on ``prompt``
    (no CFG: the ELBO bounds the conditional model's own likelihood), at :func:`strided_timesteps`.
    ``variance``: p_θ's σ_t², ``beta_tilde`` or ``beta``. ``callback(done, total)`` after each t."""
    scheduler = check_model(model)
    elbo.reverse_variance(0.5, 0.6, variance)  # refuse a bad choice before any work
    n = scheduler.config.num_train_timesteps
    ts = strided_timesteps(n, stride)
    x0 = x0.float().cpu()
    emb = model.encode_prompt([prompt] * x0.shape[0]) if model.conditional else None
    gen = validation.generator(seed)
    d = x0[0].numel()
    bits = []
    for k, t in enumerate(ts):
        x_t, x0_hat = predict_x0(model, scheduler, x0, t, emb, gen)
        bits.append(float(term_nats(scheduler, x0, x_t, x0_hat, t, variance).mean()) / (d * math.log(2.0)))
        if callback is not None:
            callback(k + 1, len(ts))
    bits_arr = np.asarray(bits)
    ac = scheduler.alphas_cumprod
    l_t = elbo.nats_to_bits_per_dim(float(elbo.prior_kl(x0, float(ac[-1])).flatten(1).sum(1).mean()), d)
    kl_total = kl_sum(ts, bits_arr, n)  # the n − 1 KL terms L_1 .. L_{T−1}
    return ElboTerms(t=np.asarray(ts), bits=bits_arr, l0=float(bits_arr[0]), lT=l_t,
                     total=l_t + float(bits_arr[0]) + kl_total, num_timesteps=n, num_images=x0.shape[0],
                     variance=variance, weights=loss_weights(ac))


def monte_carlo_check(model, x0: torch.Tensor, prompt: str, timesteps: Sequence[int], *, samples: int = 64,
                      variance: str = "beta_tilde", seed: int = 0) -> list[dict]:
    """At each index t ≥ 1: one x_t per image, then the closed-form KL and its Monte Carlo estimate from
    ``samples`` draws of x_{t−1} ~ q(x_{t−1}|x_t, x0) at that same x_t. Rows (bits/dim, mean over images):
    ``t``, ``closed``, ``mc``, ``stderr`` (of the MC mean)."""
    scheduler = check_model(model)
    emb = model.encode_prompt([prompt] * x0.shape[0]) if model.conditional else None
    gen = validation.generator(seed)
    x0 = x0.float().cpu()
    scale = x0[0].numel() * math.log(2.0)
    rows = []
    for t in timesteps:
        t = validation.integer("timestep", t, 1, scheduler.config.num_train_timesteps - 1)
        x_t, x0_hat = predict_x0(model, scheduler, x0, t, emb, gen)
        a, a_prev = _alpha_bars(scheduler, t)
        c0, ct, var_q = elbo.posterior_coefficients(a, a_prev)
        closed = term_nats(scheduler, x0, x_t, x0_hat, t, variance)
        mc, se = elbo.monte_carlo_kl(c0 * x0 + ct * x_t, var_q, c0 * x0_hat + ct * x_t,
                                     elbo.reverse_variance(a, a_prev, variance), samples, gen)
        b = x0.shape[0]
        rows.append({"t": t, "closed": float(closed.mean()) / scale, "mc": float(mc.mean()) / scale,
                     "stderr": float(se.pow(2).sum().sqrt()) / b / scale})
    return rows


def scenes_for_prompt(prompt: str, k: int, seed: int = 0) -> tuple[torch.Tensor, list]:
    """``k`` rendered scenes matching ``prompt``'s shape, colour and background (those it does not name, and
    size and position, drawn at random from ``seed``) -> images ``[k, 3, 32, 32]`` in [-1, 1] and the scenes."""
    import dataclasses
    import random

    from pipelines.toyworld.world import parse_caption, render_batch, sample_scene

    want = {key: v for key, v in parse_caption(validation.prompt(prompt)).items() if v is not None}
    if "shape" not in want and "color" not in want:
        raise ValueError(f"the prompt {prompt!r} names no toy-world shape or colour (try 'a red circle on a "
                         "white background')")
    rng = random.Random(validation.seed(seed))
    k = validation.integer("images", k, 1, 64)
    scenes = [dataclasses.replace(sample_scene(rng, allow_held_out=True), **want) for _ in range(k)]
    return render_batch(scenes), scenes
