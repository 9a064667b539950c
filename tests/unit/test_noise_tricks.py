"""pipelines.noise_tricks: the ε-combining hook of the one loop.

One identity term is exactly the loop's CFG (and diffusers' StableDiffusionPipeline); the views are
exact inverses and match numpy's flips/rotations; an anagram step equals the formula computed from
separate model calls; the blur matches scipy; a hybrid with σ = 0 or one prompt reduces to plain CFG;
combining v-predictions equals combining ε and converting. Tiny random models, no downloads.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipelines import noise_tricks as NT
from pipelines.diffusion import loop, maths
from pipelines.models import load_latent_hub, load_toy_diffusion
from pipelines.toyworld.unet_config import build_random_toy_sd
from tests.tiny_models import build_tiny_sd

CPU = torch.device("cpu")
A, B = "a red circle on a navy background", "a blue star on a white background"


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    d = tmp_path_factory.mktemp("tricks_toy")
    build_random_toy_sd(d / "toy-sd", d / "toy-clip")
    return load_toy_diffusion(d / "toy-sd", d / "toy-clip", CPU)


@pytest.fixture(scope="module")
def tiny_sd_dir(tmp_path_factory):
    return build_tiny_sd(tmp_path_factory.mktemp("tricks_sd"))


def gen(seed=3):
    return torch.Generator("cpu").manual_seed(seed)


@pytest.mark.parametrize("sampler", ["DDIM", "Euler", "DPM-Solver++"])
def test_one_identity_term_is_exactly_the_loops_cfg(toy, sampler):
    assert toy.prediction_type(toy.make_scheduler(sampler)) == "v_prediction"  # toy-sd predicts v
    ref = loop.sample(toy, A, negative_prompt="", sampler=sampler, num_inference_steps=5, guidance_scale=4.0,
                      generator=gen())
    comb = NT.make_combiner(toy, [(A, "identity", 4.0)])
    img = loop.sample(toy, combiner=comb, sampler=sampler, num_inference_steps=5, generator=gen())
    assert torch.equal(img, ref)
    other = loop.sample(toy, combiner=NT.make_combiner(toy, [(A, "identity", 2.0)]), sampler=sampler,
                        num_inference_steps=5, generator=gen())
    assert (other - ref).abs().max() > 1e-3  # and w reaches the combiner


def test_one_identity_term_matches_the_stock_stable_diffusion_pipeline(tiny_sd_dir):
    from diffusers import StableDiffusionPipeline

    sd = load_latent_hub(str(tiny_sd_dir), CPU, "tiny-sd")
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_dir, safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = sd.make_scheduler("DDIM")
    ref = pipe(A, num_inference_steps=5, guidance_scale=5.0, generator=gen(), output_type="pt").images
    img = loop.sample(sd, combiner=NT.make_combiner(sd, [(A, "identity", 5.0)]), num_inference_steps=5,
                      generator=gen())
    assert ref.std() > 1e-3 and ((img + 1) / 2 - ref).abs().max().item() <= 1e-4


def test_views_are_exact_inverses_and_match_numpy():
    x = torch.randn(2, 3, 8, 8, generator=gen())
    xn = x.numpy()
    expected = {"identity": xn, "flip": xn[:, :, ::-1, :], "rotate90": np.rot90(xn, 1, axes=(2, 3)), "negate": -xn}
    for name, (v, inv) in NT.VIEWS.items():
        assert np.array_equal(v(x).numpy(), expected[name]), name
        assert torch.equal(inv(v(x)), x) and torch.equal(v(inv(x)), x), name
    assert not torch.equal(NT.VIEWS["rotate90"][0](x), NT.VIEWS["rotate90"][1](x))  # +90° is not −90°
    u8 = torch.randint(0, 256, (1, 3, 4, 4)).float()  # negation in [-1, 1] is 255 − p in 0..255
    assert torch.allclose(NT.VIEWS["negate"][0](u8 / 127.5 - 1), (255 - u8) / 127.5 - 1, atol=1e-6)
    with pytest.raises(ValueError, match="unknown view"):
        NT.view("mirror")


def test_an_anagram_step_is_the_mean_of_each_prompts_cfg_mapped_back(toy):
    x = torch.randn(2, 3, 32, 32, generator=gen(1))
    comb = NT.anagram(toy, A, B, "rotate90", 3.0)
    seen = []

    def predict(x_in, emb):
        seen.append(x_in.shape[0])
        return toy.predict(x_in, 500, emb)

    with torch.no_grad():
        got = comb(predict, x, 500)
        enc = lambda p: toy.encode_prompt([p]).expand(2, -1, -1)  # noqa: E731
        u = toy.predict(x, 500, enc(""))
        ua = maths.cfg_combine(u, toy.predict(x, 500, enc(A)), 3.0)
        xr = torch.rot90(x, 1, dims=(2, 3))
        ur = toy.predict(xr, 500, enc(""))
        ub = torch.rot90(maths.cfg_combine(ur, toy.predict(xr, 500, enc(B)), 3.0), -1, dims=(2, 3))
    assert seen == [8]  # both prompts, both CFG branches, one batched model call
    assert torch.allclose(got, (ua + ub) / 2, atol=1e-5)


def test_blur_matches_scipy_and_sigma_zero_is_identity():
    from scipy.ndimage import gaussian_filter

    x = torch.randn(1, 3, 16, 16, generator=gen(2))
    for s in (1.0, 1.5, 2.0):  # 2·ceil(3σ)+1 taps = scipy's truncate=3 radius here
        ref = np.stack([gaussian_filter(c, s, mode="mirror", truncate=3.0) for c in x[0].numpy()])
        assert np.allclose(NT.lowpass(x, s)[0].numpy(), ref, atol=1e-5), s
    assert torch.equal(NT.lowpass(x, 0.0), x)
    assert NT.gaussian_kernel(2.0, 7).numel() == 7 and math.isclose(float(NT.gaussian_kernel(1.0).sum()), 1, rel_tol=1e-6)
    with pytest.raises(ValueError, match="odd"):
        NT.gaussian_kernel(2.0, 6)


def test_hybrid_reduces_to_plain_cfg_with_sigma_zero_or_one_prompt(toy):
    ref = loop.sample(toy, A, num_inference_steps=4, guidance_scale=3.0, generator=gen())
    flat = loop.sample(toy, combiner=NT.hybrid(toy, A, B, sigma=0.0), num_inference_steps=4, generator=gen())
    # σ = 0: lowpass = identity, so the far prompt alone; equal up to float rounding (the hybrid runs both
    # prompts' CFG pairs in one batch of 4, plain CFG a batch of 2: ~3e-6 apart, README "Determinism")
    assert (flat - ref).abs().max() < 1e-4
    same = loop.sample(toy, combiner=NT.hybrid(toy, A, A, sigma=2.0), num_inference_steps=4, generator=gen())
    assert (same - ref).abs().max() < 1e-5  # lp(ε) + hp(ε) = ε
    mixed = loop.sample(toy, combiner=NT.hybrid(toy, A, B, sigma=2.0), num_inference_steps=4, generator=gen())
    assert (mixed - ref).abs().max() > 1e-2  # and the near prompt matters when σ > 0
    with pytest.raises(ValueError, match="exactly two"):
        NT.make_combiner(toy, [(A, "identity", 3.0)], mode="hybrid")


@pytest.mark.parametrize("mode", ["mean", "hybrid"])
def test_combining_v_predictions_equals_combining_eps(toy, mode):
    """toy-sd predicts v = α ε − σ x; the combiner mixes v. Converting each term to ε, mixing ε
    (the paper's recipe) and converting back must give the same v (module docstring)."""
    x = torch.randn(1, 3, 32, 32, generator=gen(4))
    alpha, sigma = math.sqrt(0.3), math.sqrt(0.7)
    pairs = [(A, "identity", 3.0), (B, "flip" if mode == "mean" else "identity", 3.0)]
    comb = NT.make_combiner(toy, pairs, mode=mode, sigma=1.5)
    with torch.no_grad():
        v = comb(lambda xi, emb: toy.predict(xi, 300, emb), x, 300)
    eps = [maths.to_eps_x0(o, x, alpha, sigma, "v_prediction")[0] for o in comb.last]
    mixed = (eps[0] + eps[1]) / 2 if mode == "mean" else NT.lowpass(eps[0], 1.5) + eps[1] - NT.lowpass(eps[1], 1.5)
    assert torch.allclose(maths.from_eps(mixed, x, alpha, sigma, "v_prediction"), v, atol=1e-5)
