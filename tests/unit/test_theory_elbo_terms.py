"""The ELBO's terms per t against independent formulas: torch.distributions' KL, diffusers' DDPM posterior,
Kingma et al.'s SNR form, scipy's normal CDF, and a Monte Carlo estimate with a tiny random toy-sd."""

import math

import numpy as np
import pytest
import torch

from pipelines.theory import elbo
from pipelines.theory import elbo_terms as E
from pipelines.toyworld.unet_config import toy_scheduler_config


@pytest.fixture(scope="module")
def alphas_cumprod():
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(toy_scheduler_config()).alphas_cumprod.double()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from pipelines.models import load_toy_diffusion
    from pipelines.toyworld.unet_config import build_random_toy_sd

    d = tmp_path_factory.mktemp("tiny_toy_sd")
    build_random_toy_sd(d / "sd", d / "clip")
    return load_toy_diffusion(d / "sd", d / "clip", torch.device("cpu"), name="tiny")


def test_step_kl_matches_torch_kl_divergence(alphas_cumprod):
    from torch.distributions import Normal, kl_divergence

    g = torch.Generator().manual_seed(0)
    x0, x_t, x0_hat = (torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64) for _ in range(3))
    for t in (1, 100, 500, 958):
        a, a_prev = float(alphas_cumprod[t]), float(alphas_cumprod[t - 1])
        c0, ct, var_q = elbo.posterior_coefficients(a, a_prev)
        for choice, var_p in (("beta_tilde", var_q), ("beta", 1 - a / a_prev)):
            want = kl_divergence(Normal(c0 * x0 + ct * x_t, math.sqrt(var_q)),
                                 Normal(c0 * x0_hat + ct * x_t, math.sqrt(var_p)))
            assert torch.allclose(elbo.step_kl(x0, x_t, x0_hat, a, a_prev, choice), want, rtol=1e-9, atol=1e-12)


def test_posterior_matches_diffusers_ddpm_step(alphas_cumprod):
    """DDPMScheduler.step with the true x0 as its prediction samples q(x_{t−1}|x_t,x0): mean and variance."""
    from diffusers import DDPMScheduler
    from diffusers.utils.torch_utils import randn_tensor

    sched = DDPMScheduler.from_config({**toy_scheduler_config(), "prediction_type": "sample",
                                       "variance_type": "fixed_small", "timestep_spacing": "leading"})
    sched.set_timesteps(sched.config.num_train_timesteps)  # one step = t -> t − 1
    g = torch.Generator().manual_seed(1)
    x0, x_t = torch.rand(1, 3, 4, 4, generator=g) * 2 - 1, torch.randn(1, 3, 4, 4, generator=g)
    for t in (3, 250, 700):
        a, a_prev = float(alphas_cumprod[t]), float(alphas_cumprod[t - 1])
        c0, ct, var = elbo.posterior_coefficients(a, a_prev)
        assert var == pytest.approx(float(sched._get_variance(t)), rel=1e-3)  # diffusers: float32 ᾱ
        out = sched.step(x0, t, x_t, generator=torch.Generator().manual_seed(7)).prev_sample
        noise = randn_tensor(x0.shape, generator=torch.Generator().manual_seed(7), dtype=x0.dtype)
        assert torch.allclose(out - math.sqrt(var) * noise, c0 * x0 + ct * x_t, atol=1e-4)  # float32 near t = 0


def test_kl_with_beta_tilde_is_half_snr_difference_times_x0_error(alphas_cumprod):
    g = torch.Generator().manual_seed(2)
    x0, x_t, x0_hat = (torch.randn(1, 3, 8, 8, generator=g, dtype=torch.float64) for _ in range(3))
    snr = alphas_cumprod / (1 - alphas_cumprod)
    for t in (1, 50, 400, 900):
        kl = elbo.step_kl(x0, x_t, x0_hat, float(alphas_cumprod[t]), float(alphas_cumprod[t - 1])).sum()
        vdm = elbo.kl_weight_on_x0_mse(float(snr[t - 1]), float(snr[t])) * ((x0 - x0_hat) ** 2).sum()
        assert float(kl) == pytest.approx(float(vdm), rel=1e-6)


def test_monte_carlo_kl_with_an_analytic_denoiser(alphas_cumprod):
    """Data x0 ~ N(0, s²): the optimal x̂0 = √ᾱ s² x_t / (ᾱ s² + 1 − ᾱ). MC (log-prob ratios) vs closed form."""
    g = torch.Generator().manual_seed(3)
    s2 = 0.25
    x0 = math.sqrt(s2) * torch.randn(4, 3, 8, 8, generator=g, dtype=torch.float64)
    for t in (5, 200, 600):
        a, a_prev = float(alphas_cumprod[t]), float(alphas_cumprod[t - 1])
        x_t = math.sqrt(a) * x0 + math.sqrt(1 - a) * torch.randn(x0.shape, generator=g, dtype=torch.float64)
        x0_hat = math.sqrt(a) * s2 * x_t / (a * s2 + 1 - a)
        c0, ct, var_q = elbo.posterior_coefficients(a, a_prev)
        for choice in ("beta_tilde", "beta"):
            closed = elbo.step_kl(x0, x_t, x0_hat, a, a_prev, choice).flatten(1).sum(1)
            mc, se = elbo.monte_carlo_kl(c0 * x0 + ct * x_t, var_q, c0 * x0_hat + ct * x_t,
                                         elbo.reverse_variance(a, a_prev, choice), 400, g)
            assert (closed - mc).abs().max() <= 4 * se.max() + 1e-9, (t, choice, closed, mc, se)


def test_monte_carlo_check_agrees_with_closed_form_on_a_tiny_model(tiny_model):
    x0, _ = E.scenes_for_prompt("a red circle on a white background", 2, seed=0)
    rows = E.monte_carlo_check(tiny_model, x0, "a red circle", [2, 300, 900], samples=200, seed=1)
    for r in rows:  # a random model's errors are large, so the KL is too: a tight relative check
        assert r["closed"] > 0 and abs(r["closed"] - r["mc"]) <= 4 * r["stderr"], r
        assert r["stderr"] < 0.2 * r["closed"], r  # tight enough to tell a wrong variance or factor


def test_discretised_decoder_against_scipy():
    from scipy.stats import norm

    grid = torch.arange(256, dtype=torch.float64) * 2 / 255 - 1  # the 8-bit values in [-1, 1]
    for mean, var in ((0.1, 1e-4), (-0.99, 4e-5), (0.5, 0.01), (0.999, 1e-3)):
        nll = elbo.discretised_nll(grid, torch.full_like(grid, mean), var)
        edges = np.concatenate([[-np.inf], (grid[:-1].numpy() + grid[1:].numpy()) / 2, [np.inf]])
        p = np.diff(norm.cdf(edges, loc=mean, scale=math.sqrt(var)))
        keep = p > 1e-300
        assert np.allclose(np.exp(-nll.numpy()), p, atol=1e-12)
        assert np.allclose(nll.numpy()[keep & (p > 1e-12)], -np.log(p[keep & (p > 1e-12)]), rtol=1e-6)
        assert float(torch.exp(-nll).sum()) == pytest.approx(1.0, abs=1e-9)


def test_prior_term_matches_torch_and_vanishes_at_zero_terminal_snr(alphas_cumprod):
    from torch.distributions import Normal, kl_divergence

    x0 = torch.linspace(-1, 1, 11, dtype=torch.float64)
    for a in (0.3, float(alphas_cumprod[-1])):
        want = kl_divergence(Normal(math.sqrt(a) * x0, math.sqrt(1 - a)), Normal(torch.zeros_like(x0), 1.0))
        assert torch.allclose(elbo.prior_kl(x0, a), want, atol=1e-12)
    assert float(elbo.prior_kl(x0, float(alphas_cumprod[-1])).max()) < 1e-5


def test_kl_sum_interpolates_and_is_exact_with_every_term():
    n = 11
    ts = list(range(n))
    vals = [0.0] + [float(t * t) for t in range(1, n)]
    assert E.kl_sum(ts, vals, n) == pytest.approx(sum(t * t for t in range(1, n)))
    assert E.kl_sum([0, 1, 4, 10], [5.0, 1.0, 4.0, 10.0], n) == pytest.approx(sum(range(1, n)))  # linear: exact
    assert E.kl_sum([0, 1, 2, 10], [5.0, 1.0, 4.0, 4.0], n) == pytest.approx(1 + 4 * 9)  # flat after t = 2
    assert E.strided_timesteps(960, 100)[:12] == list(range(11)) + [100] and E.strided_timesteps(960, 100)[-1] == 959


def test_loss_weights():
    ac = torch.tensor([0.999, 0.9, 0.5, 0.1, 0.001], dtype=torch.float64)
    w = E.loss_weights(ac)
    snr = (ac / (1 - ac)).numpy()
    assert np.allclose(w["ELBO"], (snr[:4] - snr[1:]) / (snr[0] - snr[4]))  # telescoping sum
    assert np.allclose(w["Min-SNR-5"], np.minimum(snr[1:], 5) / np.minimum(snr[1:], 5).sum())
    assert np.allclose(w["L_simple"], snr[1:] / snr[1:].sum())
    assert all(v.shape == (4,) and v.sum() == pytest.approx(1.0) for v in w.values())


def test_elbo_terms_on_a_tiny_model(tiny_model):
    x0, scenes = E.scenes_for_prompt("a blue square on a black background", 2, seed=3)
    seen = []
    res = E.elbo_terms(tiny_model, x0, "a blue square", stride=300, callback=lambda d, t: seen.append(d))
    assert list(res.t) == E.strided_timesteps(960, 300) and len(res.bits) == len(res.t) == len(seen)
    assert np.all(res.bits >= 0) and res.l0 == res.bits[0] and res.total > res.l0 > 0 and 0 <= res.lT < 1e-4
    with pytest.raises(ValueError):
        E.elbo_terms(tiny_model, x0, "a blue square", variance="sigma")


def test_scenes_for_prompt():
    from pipelines.toyworld.render_judge import classify_by_rendering

    x, scenes = E.scenes_for_prompt("a green star on a navy background", 3, seed=5)
    assert x.shape == (3, 3, 32, 32) and x.min() >= -1 and x.max() <= 1
    assert all(p == {"shape": "star", "color": "green", "background": "navy"} for p in classify_by_rendering(x))
    with pytest.raises(ValueError, match="names no toy-world"):
        E.scenes_for_prompt("a photo of a cat", 2)
