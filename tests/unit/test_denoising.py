"""pipelines.denoising: PSNR, the blur baseline, the strided schedule, the three ways, the oracle,
the sampler race. Expected values are hard-coded or come from references (scipy, diffusers),
never from the module's own constants."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipelines import denoising as D
from pipelines.diffusion import loop
from pipelines.models import load_toy_diffusion
from pipelines.toyworld.unet_config import build_random_toy_sd

CPU = torch.device("cpu")
PROMPT = "a red circle on a navy background"


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    d = tmp_path_factory.mktemp("denoising_toy")
    build_random_toy_sd(d / "toy-sd", d / "toy-clip")
    return load_toy_diffusion(d / "toy-sd", d / "toy-clip", CPU)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def smooth_image(h=32, w=32, seed=0) -> torch.Tensor:
    """A smooth image [1, 3, h, w] in [-0.8, 0.8] (a few low-frequency waves)."""
    g = gen(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    ch = [torch.sin(2 * math.pi * (float(torch.rand(1, generator=g)) * xx + float(torch.rand(1, generator=g)) * yy))
          for _ in range(3)]
    return (0.8 * torch.stack(ch))[None]


# ------------------------------------------------------------------ psnr


def test_psnr_hard_coded_values():
    ref = torch.zeros(1, 3, 8, 8)
    assert D.psnr(ref + 0.1, ref) == pytest.approx(10 * math.log10(4 / 0.01))  # 26.0206 dB: peak-to-peak 2
    assert D.psnr(ref + 0.1, ref) == pytest.approx(26.0206, abs=1e-4)
    assert D.psnr(ref + 1.0, ref) == pytest.approx(6.0206, abs=1e-4)
    assert D.psnr(ref, ref) == math.inf
    assert D.psnr(torch.full_like(ref, 5.0), torch.ones_like(ref)) == math.inf  # both clamp to 1
    half = ref.clone()
    half[..., :4] = 0.2  # MSE 0.02 over half the pixels -> 0.02
    assert D.psnr(half, ref) == pytest.approx(10 * math.log10(4 / 0.02))


# ------------------------------------------------------------------ blur


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0])
def test_gaussian_blur_equals_scipy(sigma):
    from scipy.ndimage import gaussian_filter

    x = torch.rand(1, 3, 24, 24, generator=gen(1))
    ours = D.gaussian_blur(x, sigma)[0].numpy()
    # torchvision pads by reflection without repeating the edge (scipy's "mirror"); kernel radius ceil(3σ)
    ref = np.stack([gaussian_filter(c, sigma, mode="mirror", truncate=math.ceil(3 * sigma) / sigma)
                    for c in x[0].numpy().astype(np.float64)])
    assert np.abs(ours - ref).max() < 1e-5


def test_blur_denoise_undoes_the_sqrt_alpha_bar_scaling():
    """x_t = sqrt(ᾱ) x0 + sqrt(1-ᾱ) ε: the baseline divides by sqrt(ᾱ) (unbiased for x0) before blurring."""
    x0 = torch.full((1, 3, 64, 64), 0.5)
    a = 0.2
    x_t = math.sqrt(a) * x0 + math.sqrt(1 - a) * torch.randn(x0.shape, generator=gen(2))
    out, sigma = D.blur_denoise(x_t, a, sigma=4.0)
    assert sigma == 4.0 and out.shape == x0.shape
    assert float(out.mean()) == pytest.approx(0.5, abs=0.03)  # without ÷ sqrt(ᾱ): 0.22
    assert float(out.max()) <= 1 and float(out.min()) >= -1


def test_blur_denoise_picks_the_best_sigma_when_given_the_clean_image():
    x0 = smooth_image(64, 64)
    a = 0.5
    x_t = math.sqrt(a) * x0 + math.sqrt(1 - a) * torch.randn(x0.shape, generator=gen(3))
    out, sigma = D.blur_denoise(x_t, a, clean=x0)
    candidates = (0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0)
    assert sigma in candidates
    best = D.psnr(out, x0)
    for s in candidates:  # no other σ of the list does better
        other, _ = D.blur_denoise(x_t, a, sigma=s)
        assert D.psnr(other, x0) <= best + 1e-9
    assert best > D.psnr((x_t / math.sqrt(a)).clamp(-1, 1), x0) + 3  # blurring noise away helps a smooth image
    with pytest.raises(ValueError, match="sigma"):
        D.blur_denoise(x_t, a)


# ------------------------------------------------------------------ schedule, noising


def test_strided_timesteps():
    assert D.strided_timesteps(100, 30) == [100, 70, 40, 10, 0]
    assert D.strided_timesteps(90, 30) == [90, 60, 30, 0]
    assert D.strided_timesteps(0, 5) == [0]
    assert D.strided_timesteps(3, 1) == [3, 2, 1, 0]
    with pytest.raises(ValueError, match="stride"):
        D.strided_timesteps(100, 0)


def test_noise_to_equals_diffusers_add_noise(toy):
    from diffusers import DDPMScheduler

    x0 = smooth_image()
    x_t, eps = D.noise_to(toy, x0, 500, gen(4))
    ref = DDPMScheduler.from_config(toy.scheduler_config)
    assert torch.allclose(x_t, ref.add_noise(x0, eps, torch.tensor([500])), atol=1e-6)
    assert abs(float(eps.std()) - 1) < 0.1
    n = int(ref.config.num_train_timesteps)
    for bad in (-1, n):
        with pytest.raises(ValueError, match="t must be between"):
            D.noise_to(toy, x0, bad, gen())


def test_oracle_denoiser_returns_the_true_noise():
    x0 = smooth_image()
    eps = torch.randn(x0.shape, generator=gen(5))
    for a in (0.01, 0.5, 0.99):
        x_in = math.sqrt(a) * x0 + math.sqrt(1 - a) * eps
        assert torch.allclose(D.oracle_denoiser(x0)(x_in, 0, a), eps, atol=1e-4)


# ------------------------------------------------------------------ the experiments, on a tiny random model


def test_three_ways_one_step_is_the_x0_formula_on_one_unet_call(toy):
    x0 = smooth_image()
    t, stride = 600, 200
    r = D.three_ways(toy, x0, t, prompt=PROMPT, stride=stride, generator=gen(6))
    assert r["steps"] == 4 and r["t"] == t  # 600, 400, 200, 0
    x_t, _ = D.noise_to(toy, x0, t, gen(6))  # the same draw from the same seed
    ac = float(toy.make_scheduler("DDPM").alphas_cumprod[t])
    assert r["alpha_bar"] == pytest.approx(ac)
    assert torch.allclose(r["noisy"], x_t.clamp(-1, 1), atol=1e-6)
    with torch.no_grad():
        v = toy.unet(x_t, torch.tensor(t), encoder_hidden_states=toy.encode_prompt([PROMPT]), return_dict=False)[0]
    x0_hat = math.sqrt(ac) * x_t - math.sqrt(1 - ac) * v  # v-prediction (Salimans & Ho 2022): x0 = a x_t - s v
    assert torch.allclose(r["one_step"], x0_hat.clamp(-1, 1), atol=1e-4)
    assert torch.equal(r["clean"], x0.clamp(-1, 1))
    blur, _ = D.blur_denoise(x_t, ac, sigma=r["blur_sigma"])
    assert torch.allclose(r["blur"], blur, atol=1e-6)
    assert r["psnr"]["blur"] == pytest.approx(D.psnr(blur, x0))
    assert r["iterative"].shape == (1, 3, 32, 32)


def test_oracle_vs_model_oracle_recovers_the_image(toy):
    x0 = smooth_image(seed=1)
    r = D.oracle_vs_model(toy, x0, strength=0.6, sampler="DDIM", steps=10, prompt=PROMPT, seed=3)
    assert r["steps"] == 6 and len(r["oracle_x0"]) == 6
    assert r["max_abs_error"]["oracle"] < 1e-3 and r["psnr"]["oracle"] > 60
    assert r["max_abs_error"]["model"] > 0.05  # the random model does not know the image
    assert 0 < r["alpha_bar"] < 1
    assert float((r["noisy"] - x0).abs().mean()) > 0.05  # the start really is noisy


def test_race_uses_the_same_x_T_for_every_lane(toy):
    results = list(D.race(toy, PROMPT, [("DDIM", 4), ("Euler", 4), ("DPM-Solver++", 3)], seed=7,
                          guidance_scale=2.0))
    assert [(r["sampler"], r["steps"], r["model_calls"]) for r in results] == \
        [("DDIM", 4, 4), ("Euler", 4, 4), ("DPM-Solver++", 3, 3)]
    x_T = torch.randn((1, 3, 32, 32), generator=gen(7))
    ref = loop.sample(toy, PROMPT, sampler="DDIM", num_inference_steps=4, guidance_scale=2.0, latents=x_T,
                          generator=gen(8))
    assert torch.allclose(results[0]["image"], ref, atol=1e-6)
    assert (results[0]["image"] - results[1]["image"]).abs().max() < 1e-3  # DDIM ≡ Euler from the same x_T
    for bad in ([], [("DDIM", 2)] * 5):
        with pytest.raises(ValueError, match="1 to 4"):
            list(D.race(toy, PROMPT, bad))
