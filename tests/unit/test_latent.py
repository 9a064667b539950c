"""pipelines.latent: slerp against the closed form on orthogonal unit vectors, the round trip against toy-vae's own
encode/decode (StableDiffusion3Pipeline's normalisation, tested there), noise at s = 0 and s = 1, and the
refusal of pixel models. Tiny random VAE + transformer from configs (nothing downloaded)."""

from __future__ import annotations

import math

import pytest
import torch

from pipelines import latent
from pipelines.toyworld.toy_vae import decode_latents, encode_latents
from pipelines.toyworld.world import make_batch


@pytest.fixture(scope="module")
def model():
    from diffusers import AutoencoderKL, SD3Transformer2DModel

    from pipelines.models.sd3 import from_parts
    from pipelines.toyworld.toy_sd3 import toy_scheduler_config, toy_transformer_config
    from pipelines.toyworld.toy_vae import toy_vae_config

    torch.manual_seed(0)  # test fixture only: deterministic random weights
    vae = AutoencoderKL(**toy_vae_config(block_out_channels=(8, 16, 16))).eval()
    vae.register_to_config(scaling_factor=0.6, shift_factor=0.2)
    tr = SD3Transformer2DModel(**toy_transformer_config(num_layers=1, width=32, heads=2)).eval()
    return from_parts(tr, vae, toy_scheduler_config(), "tiny-sd3", fit_preview=True)


def test_slerp_is_the_great_circle():
    """Between orthogonal unit vectors e1, e2, slerp(t) = cos(tπ/2) e1 + sin(tπ/2) e2; lerp is the chord."""
    a = torch.tensor([[1.0, 0.0, 0.0, 0.0]]).view(1, 1, 2, 2)
    b = torch.tensor([[0.0, 1.0, 0.0, 0.0]]).view(1, 1, 2, 2)
    for t in (0.0, 0.25, 0.5, 0.9, 1.0):
        expected = math.cos(t * math.pi / 2) * a + math.sin(t * math.pi / 2) * b
        torch.testing.assert_close(latent.slerp(a, b, t), expected)
        torch.testing.assert_close(latent.lerp(a, b, t), (1 - t) * a + t * b)
    torch.testing.assert_close(latent.slerp(a, 2 * a, 0.5), 1.5 * a)  # parallel: falls back to lerp


def test_round_trip_is_toy_vaes_encode_decode(model):
    x, _ = make_batch(1, seed=11, size=64)
    r = latent.round_trip(model, x)
    with torch.no_grad():
        z = encode_latents(model.vae, x, sample=False)
        torch.testing.assert_close(r.latents, z)
        torch.testing.assert_close(r.recon, decode_latents(model.vae, z).clamp(-1, 1))
    mse = float((x - r.recon).pow(2).mean())
    assert r.psnr_db == pytest.approx(10 * math.log10(4 / mse), abs=1e-3)
    assert r.compression == 12 and latent.channel_images(r.latents).shape == (4, 3, 16, 16)


def test_noise_both_ends(model):
    x, _ = make_batch(1, seed=12, size=64)
    clean = latent.noise_both(model, x, 0.0, torch.Generator().manual_seed(0))
    torch.testing.assert_close(clean["pixel"], x)
    torch.testing.assert_close(clean["latent"], latent.round_trip(model, x).recon)
    noisy = latent.noise_both(model, x, 1.0, torch.Generator().manual_seed(0))
    assert noisy["alpha_bar"] == 0.0 and noisy["psnr_pixel"] < 10


def test_lerp_midpoint_of_two_noises_is_short_slerps_is_not():
    """Two independent Gaussian latents are nearly orthogonal: lerp's midpoint has ~1/√2 of their norm."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(1, 4, 16, 16, generator=g), torch.randn(1, 4, 16, 16, generator=g)
    ratio = lambda z: float(z.norm() / a.norm())  # noqa: E731
    assert ratio(latent.lerp(a, b, 0.5)) == pytest.approx(1 / math.sqrt(2), abs=0.06)
    assert ratio(latent.slerp(a, b, 0.5)) == pytest.approx(1.0, abs=0.06)


def test_pixel_models_are_refused():
    class Pixel:
        name, vae = "toy-sd", None

    with pytest.raises(ValueError, match="pixel space"):
        latent.require_latent(Pixel())
