"""The seeds' own baselines beside the app's: the amount blend vs DDPM eq. 4 (variances from the closed
form, not from the module), CS180's fixed-kernel blur (against a kernel built by hand), i_start ↔ strength
(against the loop's own plan)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipelines import denoising as D
from pipelines import sketch
from pipelines.diffusion import forward, maths


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("kind,var_n", [("uniform", 1 / 3), ("gaussian", 1.0)])
def test_amount_blend_variance_is_not_preserved(kind, var_n):
    x0 = torch.full((1, 3, 64, 64), 0.6)  # constant: Var x0 = 0, so Var x = a² Var n exactly
    for a in (0.25, 0.5, 1.0):
        x, n = forward.amount_blend(x0, a, kind, gen(1))
        assert float(x.mean()) == pytest.approx((1 - a) * 0.6, abs=0.02)
        assert float(x.var()) == pytest.approx(a * a * var_n, rel=0.05)
    if kind == "uniform":
        assert n.min() >= -1 and n.max() < 1  # bounded, unlike any Gaussian
    r = forward.blend_vs_forward(x0, 0.5, kind, gen(2))
    assert r["alpha_bar"] == pytest.approx(0.25)
    # DDPM eq. 4 at the same signal 1 − a = √ᾱ adds noise of variance 1 − ᾱ = 0.75 > a² Var n
    assert r["forward_noise_var"] == pytest.approx(0.75, rel=0.05)
    assert r["blend_noise_var"] == pytest.approx(0.25 * var_n, rel=0.05)
    with pytest.raises(ValueError, match="noise kind"):
        forward.amount_blend(x0, 0.5, "salt", gen())
    with pytest.raises(ValueError, match="amount"):
        forward.amount_blend(x0, 1.5, "uniform", gen())


def test_fixed_kernel_blur_is_torchvisions_gaussian_on_x_t():
    k = 5
    sigma = 0.3 * ((k - 1) * 0.5 - 1) + 0.8  # torchvision's default σ for a kernel size
    g = np.exp(-0.5 * ((np.arange(k) - k // 2) / sigma) ** 2)
    g /= g.sum()
    impulse = torch.zeros(1, 1, 15, 15)
    impulse[0, 0, 7, 7] = 1.0
    out = D.fixed_kernel_blur(impulse, k)[0, 0, 5:10, 5:10].numpy()
    np.testing.assert_allclose(out, np.outer(g, g), atol=1e-6)
    # no 1/√ᾱ rescale: a noiseless x_t = √ᾱ c stays √ᾱ c (faded), where the oracle blur recovers c
    a = 0.36
    x_t = torch.full((1, 3, 16, 16), math.sqrt(a) * 0.5)
    assert float(D.fixed_kernel_blur(x_t, 9).mean()) == pytest.approx(0.3, abs=1e-5)
    assert float(D.blur_denoise(x_t, a, sigma=1.0)[0].mean()) == pytest.approx(0.5, abs=1e-5)
    with pytest.raises(ValueError, match="odd"):
        D.fixed_kernel_blur(x_t, 4)


@pytest.mark.parametrize("steps,strength", [(30, 0.6), (50, 0.35), (20, 1.0), (7, 0.5)])
def test_i_start_is_where_the_loops_plan_begins(steps, strength):
    from diffusers import DDIMScheduler

    sch = DDIMScheduler(num_train_timesteps=1000, timestep_spacing="trailing")
    full, _ = maths.plan_timesteps(sch, steps, 1.0)
    sch2 = DDIMScheduler(num_train_timesteps=1000, timestep_spacing="trailing")
    kept, _ = maths.plan_timesteps(sch2, steps, strength)
    m = sketch.i_start_mapping(strength, steps)
    assert full.tolist().index(int(kept[0])) == m["i_start"]
    assert len(kept) == steps - m["i_start"]
    assert m["strength"] == pytest.approx(1 - m["i_start"] / steps)
    assert m["strength"] <= strength + 1e-9
