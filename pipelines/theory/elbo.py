"""The ELBO's per-step terms (seed 002; DDPM Ho et al. 2020, eq. 5): L_{t−1} = KL(q(x_{t−1}|x_t,x0) ‖ p_θ(x_{t−1}|x_t)).

Both are Gaussians with isotropic variances (scalars per t), so the KL is closed form per dimension.
Only arithmetic and ``math.log`` on scalars: works on torch tensors and numpy arrays alike.
"""

from __future__ import annotations

import math


def gaussian_kl(mean_q, var_q: float, mean_p, var_p: float):
    """KL(N(mean_q, var_q I) ‖ N(mean_p, var_p I)) per dimension, in nats; same shape as the means.

    KL = ½ [log(var_p / var_q) + (var_q + (mean_q − mean_p)²) / var_p − 1].
    """
    if var_q <= 0 or var_p <= 0:
        raise ValueError(f"variances must be positive, got var_q={var_q}, var_p={var_p}")
    return 0.5 * (math.log(var_p / var_q) + (var_q + (mean_q - mean_p) ** 2) / var_p - 1.0)


def nats_to_bits_per_dim(nats_total: float, num_dims: int) -> float:
    """Total nats over an image -> bits per dimension (divide by D·ln 2)."""
    return nats_total / (num_dims * math.log(2.0))


# ------------------------------------------------------------------ the terms of one step t -> t−1


def posterior_coefficients(alpha_bar_t: float, alpha_bar_prev: float) -> tuple[float, float, float]:
    """q(x_{t−1} | x_t, x0) = N(c0 x0 + ct x_t, β̃_t I) (DDPM eq. 6-7) -> ``(c0, ct, β̃_t)``.

    β_t = 1 − ᾱ_t/ᾱ_{t−1}; c0 = √ᾱ_{t−1} β_t / (1 − ᾱ_t); ct = √α_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t);
    β̃_t = (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · β_t. ``alpha_bar_prev`` = 1 at t = 1 (x0 itself): c0 = 1, ct = β̃ = 0.
    """
    if not 0.0 <= alpha_bar_t < alpha_bar_prev <= 1.0:
        raise ValueError(f"need 0 <= alpha_bar_t < alpha_bar_prev <= 1, got {alpha_bar_t}, {alpha_bar_prev}")
    beta = 1.0 - alpha_bar_t / alpha_bar_prev
    c0 = math.sqrt(alpha_bar_prev) * beta / (1.0 - alpha_bar_t)
    ct = math.sqrt(alpha_bar_t / alpha_bar_prev) * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar_t)
    return c0, ct, (1.0 - alpha_bar_prev) / (1.0 - alpha_bar_t) * beta


def reverse_variance(alpha_bar_t: float, alpha_bar_prev: float, choice: str = "beta_tilde") -> float:
    """σ_t² of p_θ(x_{t−1} | x_t): ``beta_tilde`` (β̃_t, the posterior's) or ``beta`` (β_t); DDPM §3.2."""
    if choice == "beta":
        return 1.0 - alpha_bar_t / alpha_bar_prev
    if choice == "beta_tilde":
        return posterior_coefficients(alpha_bar_t, alpha_bar_prev)[2]
    raise ValueError(f"reverse variance must be 'beta_tilde' or 'beta', got {choice!r}")


def step_kl(x0, x_t, x0_hat, alpha_bar_t: float, alpha_bar_prev: float, variance: str = "beta_tilde"):
    """L_{t−1} = KL(q(x_{t−1}|x_t,x0) ‖ p_θ(x_{t−1}|x_t)) per element, nats (DDPM eq. 5, 8).

    p_θ's mean is the posterior mean with the model's x̂0 in place of x0 (μ_θ = c0 x̂0 + ct x_t, eq. 7 with
    eq. 15's x̂0), its variance :func:`reverse_variance`. Tensors ``[B, C, H, W]``; returns the same shape.
    """
    c0, ct, var_q = posterior_coefficients(alpha_bar_t, alpha_bar_prev)
    var_p = reverse_variance(alpha_bar_t, alpha_bar_prev, variance)
    return gaussian_kl(c0 * x0 + ct * x_t, var_q, c0 * x0_hat + ct * x_t, var_p)


def prior_kl(x0, alpha_bar_T: float):
    """L_T = KL(q(x_T | x0) ‖ N(0, I)) per element, nats: q(x_T|x0) = N(√ᾱ_T x0, (1 − ᾱ_T) I) (DDPM eq. 4)."""
    return gaussian_kl(math.sqrt(alpha_bar_T) * x0, 1.0 - alpha_bar_T, 0.0 * x0, 1.0)


def discretised_nll(x0, mean, var: float, bins: int = 256):
    """L_0 = −log p_θ(x0 | x1) per element, nats: DDPM eq. 13's discretised Gaussian decoder.

    ``x0`` ``[B, C, H, W]`` on the 8-bit grid of [-1, 1] (values k·2/255 − 1), ``mean`` the model's μ_θ(x1, 1);
    each value's probability is the Gaussian mass on its bin of width 2/(bins − 1), the two end bins extended
    to ±∞ (so the masses of all bins sum to 1).
    """
    import torch

    half = 1.0 / (bins - 1)
    sd = math.sqrt(var)
    upper = torch.where(x0 > 1 - half, torch.full_like(x0, math.inf), (x0 + half - mean) / sd)
    lower = torch.where(x0 < -1 + half, torch.full_like(x0, -math.inf), (x0 - half - mean) / sd)
    # log(Φ(u) − Φ(l)) computed where it is accurate: in the lower tail via log Φ(u) + log1p(−Φ(l)/Φ(u)),
    # in the upper tail by symmetry (Φ(u) − Φ(l) = Φ(−l) − Φ(−u)).
    flip = (lower + upper) > 0
    u, low = torch.where(flip, -lower, upper), torch.where(flip, -upper, lower)
    log_u = torch.special.log_ndtr(u)
    return -(log_u + torch.log1p(-torch.exp(torch.special.log_ndtr(low) - log_u).clamp(max=1 - 1e-12)))


def kl_weight_on_x0_mse(snr_prev: float, snr_t: float) -> float:
    """The weight L_{t−1} puts on ‖x0 − x̂0‖² with σ_t² = β̃_t: ½ (SNR_{t−1} − SNR_t) (Kingma et al. 2021, eq. 13)."""
    return 0.5 * (snr_prev - snr_t)


def monte_carlo_kl(mean_q, var_q: float, mean_p, var_p: float, num_samples: int, generator=None):
    """KL(N(mean_q, var_q I) ‖ N(mean_p, var_p I)) summed over each item's elements, by Monte Carlo:
    draw x ~ q ``num_samples`` times, average log q(x) − log p(x) (``torch.distributions.Normal.log_prob``).

    Means ``[B, ...]``; returns ``(estimate [B], standard error [B])`` in nats.
    """
    import torch

    q = torch.distributions.Normal(mean_q.double(), math.sqrt(var_q))
    p = torch.distributions.Normal(mean_p.double(), math.sqrt(var_p))
    ratios = []
    for _ in range(int(num_samples)):
        x = mean_q.double() + math.sqrt(var_q) * torch.randn(mean_q.shape, generator=generator, dtype=torch.float64)
        ratios.append((q.log_prob(x) - p.log_prob(x)).flatten(1).sum(1))
    r = torch.stack(ratios)  # [num_samples, B]
    return r.mean(0), r.std(0) / math.sqrt(r.shape[0])
