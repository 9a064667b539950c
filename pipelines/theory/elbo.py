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
