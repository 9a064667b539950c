"""The closed-form Gaussian KL against a Monte Carlo estimate E_q[log q − log p] (numpy, independent)."""

import math

import numpy as np
import pytest

from pipelines.theory.elbo import gaussian_kl, nats_to_bits_per_dim


def _log_normal(x, m, v):
    return -0.5 * (np.log(2 * math.pi * v) + (x - m) ** 2 / v)


@pytest.mark.parametrize("mq,vq,mp,vp", [(0.0, 1.0, 0.0, 1.0), (0.3, 0.02, -0.1, 0.05), (1.0, 0.5, 0.2, 0.4)])
def test_kl_matches_monte_carlo(mq, vq, mp, vp):
    rng = np.random.default_rng(0)
    x = mq + math.sqrt(vq) * rng.standard_normal(400_000)
    mc = np.mean(_log_normal(x, mq, vq) - _log_normal(x, mp, vp))
    stderr = np.std(_log_normal(x, mq, vq) - _log_normal(x, mp, vp)) / math.sqrt(x.size)
    assert float(gaussian_kl(np.float64(mq), vq, np.float64(mp), vp)) == pytest.approx(mc, abs=5 * stderr + 1e-9)


def test_bits_per_dim():
    assert nats_to_bits_per_dim(3 * 32 * 32 * math.log(2.0), 3 * 32 * 32) == pytest.approx(1.0)


def test_bad_variance():
    with pytest.raises(ValueError):
        gaussian_kl(0.0, 0.0, 0.0, 1.0)
