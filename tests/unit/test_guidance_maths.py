"""Loss guidance in ε form, checked against the paper and against the DDIM ≡ Euler identity.

Classifier guidance on ε (Dhariwal & Nichol 2021, Alg. 2; Song et al. 2021): with the score
∇ log p(x_in) = -ε / sqrt(1-ᾱ), lowering a loss L shifts ε̂ = ε + sqrt(1-ᾱ_t) ∇_{x_in} L, and since
the UNet sees x_in = c_in x_t, ∇_{x_in} L = ∇_{x_t} L / c_in (c_in = 1 for VP schedulers,
1 / sqrt(σ² + 1) = sqrt(ᾱ) for σ-space ones). A closed-form denoiser (the exact one for Gaussian
data) stands in for the UNet, so every ε is known.
"""

from __future__ import annotations

import math

import pytest
import torch

from pipelines import loss_guidance as LG
from pipelines.diffusion import loop
from pipelines.models import load_toy_diffusion
from pipelines.toyworld.unet_config import build_random_toy_sd

CPU = torch.device("cpu")
PROMPT = "a red circle on a navy background"


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    d = tmp_path_factory.mktemp("guidance_maths_toy")
    build_random_toy_sd(d / "toy-sd", d / "toy-clip")
    return load_toy_diffusion(d / "toy-sd", d / "toy-clip", CPU)


def wiener(x_in, t, alpha_bar, v=0.25):
    """The exact denoiser for data x_0 ~ N(0, v I): E[x_0 | x_in] = a v / (a² v + s²) x_in; returns ε."""
    a, s = math.sqrt(alpha_bar), math.sqrt(1 - alpha_bar)
    return (x_in - a * (a * v / (a * a * v + s * s) * x_in)) / s


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("sampler", ["DDIM", "Euler"])
def test_eps_guidance_shift_is_sqrt_one_minus_alpha_bar_times_grad_over_c_in(toy, sampler):
    g = torch.randn(1, 3, 32, 32, generator=gen(5))  # a fixed "∇_{x_t} L" every step
    recs = list(loop.sample_steps(toy, PROMPT, sampler=sampler, num_inference_steps=6, denoiser=wiener,
                                      generator=gen(), cond_fn=lambda ctx: loop.GuidanceOutput(grad=g)))
    assert len(recs) == 6
    for r in recs:
        a = r.alpha_bar
        c_in = 1.0 if sampler == "DDIM" else math.sqrt(a)  # Euler: x_in = x_t / sqrt(σ² + 1), σ² = (1 - ᾱ) / ᾱ
        assert torch.allclose(r.model_input, r.x_t * c_in, atol=1e-5)
        expected = wiener(r.model_input, r.t, a) + math.sqrt(1 - a) * g / c_in
        assert torch.allclose(r.pred_eps, expected, atol=1e-4, rtol=1e-4), (r.index, a)


def test_colour_guidance_on_eps_is_the_same_for_ddim_and_euler(toy):
    """Deterministic DDIM is the Euler method on the same ODE in σ-space (Karras et al. 2022, §4), so
    the same ε̂ at every step gives the same image. A colour-loss gradient taken w.r.t. each sampler's
    own x_t (σ-space x_t = x_in / sqrt(ᾱ)) must be converted with c_in for the two to agree."""
    kw = dict(num_inference_steps=10, denoiser=wiener, generator=None)
    imgs = {}
    for sampler in ("DDIM", "Euler"):
        plain = loop.sample(toy, PROMPT, sampler=sampler, latents=torch.randn(1, 3, 32, 32, generator=gen(1)),
                                **kw)
        cond = LG.color_guidance("#ff0000", 300.0, apply="eps")
        guided = loop.sample(toy, PROMPT, sampler=sampler, cond_fn=cond,
                                 latents=torch.randn(1, 3, 32, 32, generator=gen(1)), **kw)
        imgs[sampler] = (plain, guided)
    (p_ddim, g_ddim), (p_euler, g_euler) = imgs["DDIM"], imgs["Euler"]
    assert (p_ddim - p_euler).abs().max() < 1e-4  # the identity holds without guidance
    assert (g_ddim - p_ddim).abs().mean() > 0.05  # guidance did something
    assert (g_ddim - g_euler).abs().max() < 1e-3
    # and it moved the image the way the loss wants: towards red, compared with the unguided run
    red = torch.tensor([1.0, -1.0, -1.0]).view(1, 3, 1, 1)
    for plain, guided in imgs.values():
        assert (guided - red).abs().mean() < (plain - red).abs().mean() - 0.05
