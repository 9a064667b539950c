"""pipelines.diffusion.maths against diffusers: each conversion checked against the scheduler that defines it,
and the loop with a flow-matching scheduler against a plain diffusers-style loop."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import DDPMScheduler, EulerDiscreteScheduler, FlowMatchEulerDiscreteScheduler

from pipelines.diffusion import loop, maths
from pipelines.models import load_toy_diffusion
from pipelines.toyworld.unet_config import build_random_toy_sd

G = torch.Generator().manual_seed(0)
X0 = torch.randn(2, 3, 8, 8, generator=G)
EPS = torch.randn(2, 3, 8, 8, generator=G)


@pytest.mark.parametrize("t", [0, 250, 700, 999])
def test_vp_conversions_match_ddpm(t):
    s = DDPMScheduler(prediction_type="v_prediction")
    tt = torch.tensor([t])
    x_t = s.add_noise(X0, EPS, tt)
    v = s.get_velocity(X0, EPS, tt)
    ab = float(s.alphas_cumprod[t])
    a, sg, c_in = maths.coefficients(s, maths.alpha_bar_at(s, t))
    assert (a, sg, c_in) == (math.sqrt(ab), math.sqrt(1 - ab), 1.0)
    for ptype, out in (("epsilon", EPS), ("v_prediction", v), ("sample", X0)):
        eps, x0 = maths.to_eps_x0(out, x_t, a, sg, ptype)
        assert torch.allclose(eps, EPS, atol=2e-4) and torch.allclose(x0, X0, atol=2e-3 if t == 999 else 2e-4), ptype
        assert torch.allclose(maths.from_eps(EPS, x_t, a, sg, ptype), out, atol=2e-3 if t == 999 else 2e-4), ptype


@pytest.mark.parametrize("k", [1, 2, 3])
def test_flow_conversions_match_flow_match_euler(k):
    s = FlowMatchEulerDiscreteScheduler(shift=3.0)
    s.set_timesteps(4)
    t = s.timesteps[k]
    x_t = s.scale_noise(X0, t[None], EPS)  # (1 − σ) x0 + σ ε
    u = EPS - X0  # the velocity flow models predict
    assert maths.space(s) == "flow"
    a, sg, c_in = maths.coefficients(s, maths.alpha_bar_at(s, t, k), k)
    sigma = float(s.sigmas[k])
    assert (a, sg, c_in) == (1 - sigma, sigma, 1.0)
    eps, x0 = maths.to_eps_x0(u, x_t, a, sg, "flow")
    assert torch.allclose(eps, EPS, atol=1e-5) and torch.allclose(x0, X0, atol=1e-5)
    assert torch.allclose(maths.from_eps(EPS, x_t, a, sg, "flow"), u, atol=1e-4)
    # ᾱ of the same SNR: a VP sample at that ᾱ is the flow sample divided by sqrt((1−σ)² + σ²)
    ab = maths.alpha_bar_at(s, t, k)
    norm = math.sqrt((1 - sigma) ** 2 + sigma ** 2)
    assert math.isclose(math.sqrt(ab), (1 - sigma) / norm, rel_tol=1e-6)
    # the scheduler's Euler step with the true velocity lands on the same straight line
    s.set_begin_index(k)
    nxt = s.step(u, t, x_t).prev_sample
    assert torch.allclose(nxt, s.scale_noise(X0, s.timesteps[k + 1][None], EPS) if k < 3 else (1 - float(s.sigmas[k + 1])) * X0 + float(s.sigmas[k + 1]) * EPS, atol=1e-5)


def test_sigma_space_alpha_bar_and_noise_to_start_match_euler():
    s = EulerDiscreteScheduler()
    ts, begin = maths.plan_timesteps(s, 10, 0.6)
    assert begin == 4 and len(ts) == 6
    sig = float(s.sigmas[begin])
    assert maths.alpha_bar_at(s, ts[0], begin) == pytest.approx(1 / (1 + sig ** 2))
    assert torch.allclose(maths.noise_to_start(s, X0, EPS, ts[0], begin), s.add_noise(X0, EPS, ts[:1]), atol=1e-5)


def test_noise_to_start_matches_flow_scale_noise():
    s = FlowMatchEulerDiscreteScheduler(shift=3.0)
    ts, begin = maths.plan_timesteps(s, 8, 0.5)
    assert torch.allclose(maths.noise_to_start(s, X0, EPS, ts[0], begin), s.scale_noise(X0, ts[:1], EPS), atol=1e-6)


def test_cfg_combine_limits_and_linearity():
    u, c = torch.randn(2, 3, 4, 4, generator=G), torch.randn(2, 3, 4, 4, generator=G)
    assert torch.equal(maths.cfg_combine(u, c, 0.0), u)
    assert torch.allclose(maths.cfg_combine(u, c, 1.0), c)
    assert torch.allclose(maths.cfg_combine(u, c, 7.5), u + 7.5 * (c - u))


def test_score_is_minus_eps_over_sigma():
    s = DDPMScheduler()
    t = 500
    ab = float(s.alphas_cumprod[t])
    x_t = s.add_noise(X0, EPS, torch.tensor([t]))
    # the true score of q(x_t | x0) = N(sqrt(ᾱ) x0, (1 − ᾱ) I) is −(x_t − sqrt(ᾱ) x0) / (1 − ᾱ)
    true = -(x_t - math.sqrt(ab) * X0) / (1 - ab)
    assert torch.allclose(maths.score_from_eps(EPS, ab), true, atol=1e-4)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    d = tmp_path_factory.mktemp("toy_maths")
    build_random_toy_sd(d / "toy-sd", d / "toy-clip")
    return load_toy_diffusion(d / "toy-sd", d / "toy-clip", torch.device("cpu"))


@torch.no_grad()
def test_loop_with_a_flow_scheduler_equals_a_plain_diffusers_loop(toy):
    """A denoiser read as a flow model (u = ε − x0) under FlowMatchEulerDiscreteScheduler: the loop's final
    sample equals diffusers' own steps with CFG done by hand."""
    emb = toy.encode_prompt(["a red circle"])
    neg = toy.encode_prompt([""])
    w, n = 3.0, 6
    x_T = torch.randn(1, *toy.sample_shape, generator=torch.Generator().manual_seed(1))
    mine = list(loop.sample_steps(toy, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), num_inference_steps=n,
                                  guidance_scale=w, prompt_embeds=emb, negative_prompt_embeds=neg, latents=x_T,
                                  preview="none"))
    ref = FlowMatchEulerDiscreteScheduler(shift=3.0)
    ref.set_timesteps(n)
    x = x_T.clone()
    for t in ref.timesteps:
        out = toy.unet(torch.cat([x, x]), t, encoder_hidden_states=torch.cat([neg, emb]), return_dict=False)[0]
        ou, oc = out.chunk(2)
        x = ref.step(ou + w * (oc - ou), t, x).prev_sample
    assert torch.allclose(mine[-1].x_prev, x, atol=1e-5)
    # x̂0 per step is x_t − σ u (u recovered from the record's ε)
    r, sig = mine[2], float(ref.sigmas[2])
    u = maths.from_eps(r.pred_eps, r.x_t, 1 - sig, sig, "flow")
    assert torch.allclose(r.pred_x0, r.x_t - sig * u, atol=1e-4)
