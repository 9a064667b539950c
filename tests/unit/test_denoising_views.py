"""pipelines.denoising_views: the radial power spectrum (against a by-hand DFT), coarse-to-fine bands,
DDPM's β / β̃ (against diffusers' DDPMScheduler with variance_type), sampling at another size, the
size-agnostic judge."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipelines import denoising_views as V
from pipelines.diffusion import loop
from pipelines.models import load_toy_diffusion
from pipelines.toyworld.unet_config import build_random_toy_sd
from pipelines.toyworld.world import Scene, render_batch

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    d = tmp_path_factory.mktemp("views_toy")
    build_random_toy_sd(d / "toy-sd", d / "toy-clip")
    return load_toy_diffusion(d / "toy-sd", d / "toy-clip", CPU)


def hand_spectrum(img: np.ndarray) -> np.ndarray:
    """[C, S, S] -> radial mean of |DFT|²/S², the DFT written out as a sum (no FFT), channels averaged."""
    c, s, _ = img.shape
    n = np.arange(s)
    w = np.exp(-2j * np.pi * np.outer(n, n) / s)  # DFT matrix
    power = np.mean([np.abs(w @ ch @ w.T) ** 2 for ch in img], axis=0) / s**2
    sums, counts = np.zeros(s // 2 + 1), np.zeros(s // 2 + 1)
    for u in range(s):
        for v in range(s):
            fu, fv = (u if u <= s // 2 - (s % 2 == 0) else u - s), (v if v <= s // 2 - (s % 2 == 0) else v - s)
            r = int(round(math.hypot(fu, fv)))
            if r <= s // 2:
                sums[r] += power[u, v]
                counts[r] += 1
    return sums / counts


def test_radial_spectrum_matches_a_dft_by_hand():
    img = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    r, p = V.radial_power_spectrum(img)
    assert list(r) == list(range(9))
    np.testing.assert_allclose(p[0], hand_spectrum(img[0].numpy().astype(np.float64)), rtol=1e-9)


def test_cosine_puts_its_power_at_its_frequency_and_parseval_holds():
    s, k = 32, 5
    xx = torch.arange(s, dtype=torch.float64)
    img = torch.cos(2 * math.pi * k * xx / s).expand(1, 3, s, s)  # k cycles across the image
    _, p = V.radial_power_spectrum(img)
    assert int(np.argmax(p[0])) == k
    assert p[0][np.arange(len(p[0])) != k].max() < 1e-12
    # Parseval: |DFT|²/S² at (±k, 0) each holds S²/4 → mean over the radius-k ring times its count = S²/2
    white = torch.randn(1, 1, s, s, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    _, pw = V.radial_power_spectrum(white)
    assert 0.5 < pw[0][1:].mean() < 2.0  # white noise of unit variance: flat at 1


def test_coarse_to_fine_finds_the_band_that_settles_late():
    s, n = 32, 6
    xx = torch.arange(s, dtype=torch.float64)
    low = torch.cos(2 * math.pi * 1 * xx / s)[None].expand(s, s)
    high = torch.cos(2 * math.pi * 14 * xx / s)[None].expand(s, s)
    final = (0.5 * low + 0.3 * high).expand(1, 3, s, s)
    # the low wave is right from step 1; the high one only appears at the last step
    x0s = torch.stack([(0.5 * low + (0.3 * high if k == n - 1 else 0)).expand(3, s, s) for k in range(n)])
    out = V.coarse_to_fine(x0s.float(), final.float())
    assert out["settled"]["low"] == 1
    assert out["settled"]["high"] == n
    assert out["band_error"].shape == (n, 3)


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
def test_reverse_variances_match_diffusers(variance_type):
    from diffusers import DDPMScheduler

    sch = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", variance_type=variance_type,
                        timestep_spacing="trailing")
    sch.set_timesteps(20)
    ours = V.reverse_variances(sch.alphas_cumprod, sch.timesteps)
    theirs = np.array([float(sch._get_variance(int(t))) for t in sch.timesteps])
    key = "beta_tilde" if variance_type == "fixed_small" else "beta"
    np.testing.assert_allclose(ours[key], theirs, rtol=1e-5, atol=1e-20)
    # the two differ only by (1 - ᾱ_prev) / (1 - ᾱ_t) < 1, and agree at the noisiest step when ᾱ_prev → small
    assert np.all(ours["beta_tilde"] <= ours["beta"] + 1e-12)


def test_variance_switch_reaches_the_step(toy):
    """The same seed through DDPM with β and with β̃: the step's noise scales by sqrt(β/β̃)."""
    x = torch.zeros(1, *toy.sample_shape)
    out = {}
    for v in ("fixed_small", "fixed_large"):
        sch = V.ddpm_scheduler(toy, v)
        sch.set_timesteps(10)
        t = sch.timesteps[5]
        mean = sch.step(torch.zeros_like(x), t, x, generator=torch.Generator().manual_seed(0)).prev_sample
        sch2 = V.ddpm_scheduler(toy, v)
        sch2.set_timesteps(10)
        noisy = sch2.step(torch.zeros_like(x), t, x + 0, generator=torch.Generator().manual_seed(0)).prev_sample
        out[v] = (noisy, V.reverse_variances(sch.alphas_cumprod, sch.timesteps), mean)
    r = out["fixed_large"][1]
    ratio = float(out["fixed_large"][0].std() / out["fixed_small"][0].std())
    assert ratio == pytest.approx(math.sqrt(r["beta"][5] / r["beta_tilde"][5]), rel=1e-4)
    with pytest.raises(ValueError, match="reverse variance"):
        V.ddpm_scheduler(toy, "learned")


def test_at_resolution_samples_the_asked_size(toy):
    big = V.at_resolution(toy, 48)
    assert big.sample_shape[1:] == (48, 48) and big.image_size == (48, 48)
    assert V.at_resolution(toy, 32) is toy
    img = loop.sample(big, "a red circle", num_inference_steps=2, guidance_scale=2.0,
                      generator=torch.Generator().manual_seed(0))
    assert img.shape == (1, 3, 48, 48) and img.abs().max() <= 1
    assert toy.sample_shape[1:] == (32, 32)  # the shared model is untouched
    with pytest.raises(ValueError, match="multiple of"):
        V.at_resolution(toy, 49)


def test_judge_at_any_size_reads_rendered_scenes_and_counts_blobs():
    one = render_batch([Scene("star", "yellow", "black", "large", 0.5, 0.5, 0.35)], size=48)
    v = V.judge_at_any_size(one)
    assert (v["shape"], v["color"], v["background"], v["blobs"]) == ("star", "yellow", "black", 1)
    a = render_batch([Scene("circle", "red", "white", "small", 0.3, 0.3, 0.15)], size=32)
    two = torch.cat([torch.cat([a, a], 3), torch.cat([a, a], 3)], 2)  # 64 px, four circles
    assert V.judge_at_any_size(two)["blobs"] == 4
    flat = torch.zeros(1, 3, 32, 32)
    assert V.roughness(flat) == 0.0 and V.roughness(torch.rand(1, 3, 32, 32)) > 0.1
