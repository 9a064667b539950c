"""toy-sd3 in the registry and in the one loop: its final image equals diffusers' own
``StableDiffusion3Pipeline`` (same transformer, scheduler, latents, embeddings) within 1e-4, for the
bundled model and for a tiny random SD3 built from configs and loaded through the real loading code;
the records hold x̂0 = x_t − σ v; the registry loads it lazily, once; the linear preview is a
least-squares fit. Nothing is downloaded."""

from __future__ import annotations

import json

import pytest
import torch

from pipelines.diffusion import loop
from pipelines.diffusion.previews import fit_latent_rgb, latent_to_rgb_linear
from pipelines.models import ModelRegistry, load_toy_clip, toy_clip_config
from pipelines.models.sd3 import load_toy_sd3, pack_text, unpack_text

SD3 = "toy-sd3 (bundled, 64 px, latent)"
PROMPT = "a red circle on a white background"
TOL = 1e-4


@pytest.fixture(scope="module")
def registry():
    return ModelRegistry("cpu")


@pytest.fixture(scope="module")
def bundled(registry):
    return registry.diffusion(SD3)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random SD3 transformer + VAE saved like the bundled folders, a random toy-clip, loaded by load_toy_sd3."""
    from diffusers import AutoencoderKL, SD3Transformer2DModel

    from pipelines.toyworld.toy_sd3 import toy_scheduler_config, toy_transformer_config
    from pipelines.toyworld.toy_vae import toy_vae_config
    from pipelines.toyworld.unet_config import build_random_toy_sd

    d = tmp_path_factory.mktemp("tiny_sd3")
    torch.manual_seed(0)  # test fixture only: deterministic random weights
    SD3Transformer2DModel(**toy_transformer_config(num_layers=2, width=32, heads=2)).save_pretrained(d / "sd3" / "transformer")
    (d / "sd3" / "scheduler").mkdir()
    (d / "sd3" / "scheduler" / "scheduler_config.json").write_text(json.dumps(toy_scheduler_config(shift=3.0)))
    vae = AutoencoderKL(**toy_vae_config(block_out_channels=(8, 16, 16)))
    vae.register_to_config(scaling_factor=0.7, shift_factor=0.3)
    vae.save_pretrained(d / "vae")
    build_random_toy_sd(d / "unused", d / "clip")
    clip = load_toy_clip(d / "clip" / "open_clip_model.safetensors", toy_clip_config(d / "clip"), torch.device("cpu"))
    return load_toy_sd3(d / "sd3", d / "vae", torch.device("cpu"), "tiny-sd3", clip=clip)


def _stock(model, prompt, negative, latents, steps, w):
    """diffusers' StableDiffusion3Pipeline on the same parts and embeddings -> images in [0, 1]."""
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

    pipe = StableDiffusion3Pipeline(transformer=model.unet, vae=model.vae,
                                    scheduler=FlowMatchEulerDiscreteScheduler.from_config(model.scheduler_config),
                                    text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None,
                                    text_encoder_3=None, tokenizer_3=None)
    pipe.set_progress_bar_config(disable=True)
    tok, pooled = model.encode_text(prompt)
    ntok, npooled = model.encode_text(negative)
    with torch.no_grad():
        return pipe(prompt_embeds=tok, pooled_prompt_embeds=pooled, negative_prompt_embeds=ntok,
                    negative_pooled_prompt_embeds=npooled, latents=latents.clone(), height=model.image_size[0],
                    width=model.image_size[1], num_inference_steps=steps, guidance_scale=w, output_type="pt").images


@pytest.mark.parametrize("which", ["bundled", "tiny"])
def test_loop_final_image_equals_stable_diffusion_3_pipeline(which, request):
    model = request.getfixturevalue(which)
    prompts = [PROMPT, "a blue star on a black background"]
    latents = torch.randn((2, *model.sample_shape), generator=torch.Generator().manual_seed(5))
    steps, w = (28, 3.0) if which == "bundled" else (6, 4.5)
    ours = loop.sample(model, prompts, negative_prompt="", sampler="Euler", num_inference_steps=steps,
                       guidance_scale=w, latents=latents)
    ref = _stock(model, prompts, ["", ""], latents, steps, w)
    assert ours.shape == (2, 3, 64, 64)
    torch.testing.assert_close((ours + 1) / 2, ref, atol=TOL, rtol=0)


def test_records_hold_flow_x0_and_velocity(tiny):
    """Every record's x̂0 is x_t − σ v with v the transformer's CFG velocity at 1000 σ, called directly."""
    g = torch.Generator().manual_seed(2)
    sched = tiny.make_scheduler("Euler")
    sched.set_timesteps(4)
    tok, pooled = tiny.encode_text([PROMPT])
    utok, upooled = tiny.encode_text([""])
    for k, rec in enumerate(loop.sample_steps(tiny, PROMPT, sampler="Euler", num_inference_steps=4,
                                              guidance_scale=2.0, generator=g, preview="none")):
        sigma = float(sched.sigmas[k])
        assert rec.t == pytest.approx(1000 * sigma, rel=1e-6)
        with torch.no_grad():
            v = tiny.unet(torch.cat([rec.x_t] * 2), timestep=torch.full((2,), 1000 * sigma),
                          encoder_hidden_states=torch.cat([utok, tok]), pooled_projections=torch.cat([upooled, pooled])).sample
        v = v[0:1] + 2.0 * (v[1:2] - v[0:1])
        torch.testing.assert_close(rec.pred_x0, rec.x_t - sigma * v, atol=1e-5, rtol=0)
        torch.testing.assert_close(rec.x_prev, rec.x_t + (float(sched.sigmas[k + 1]) - sigma) * v, atol=1e-5, rtol=0)


def test_registry_lists_and_loads_toy_sd3_lazily_once(registry):
    assert SD3 in registry.diffusion_names() and registry.spec(SD3).kind == "sd3"
    assert registry.default_diffusion.startswith("toy-sd (")  # the pixel toy-sd stays the default
    fresh = ModelRegistry("cpu")
    assert not any(k.startswith("diffusion:") for k in fresh._cache)  # nothing loads until asked
    a = fresh.diffusion(SD3)
    assert fresh.diffusion(SD3) is a
    assert a.sample_shape == (4, 16, 16) and a.image_size == (64, 64) and a.conditional
    assert (a.latent_scale, a.latent_shift) == (a.vae.config.scaling_factor, a.vae.config.shift_factor)
    assert not any(p.requires_grad for p in a.unet.parameters())
    # toy-sd3 reads toy-clip-natural (the tower it was trained on), loaded once and cached like toy-clip
    from pipelines.models import TOY_CLIP_NATURAL_DIR

    assert fresh.spec(SD3).clip_source == str(TOY_CLIP_NATURAL_DIR)
    assert fresh._toy_clip(fresh.spec(SD3).clip_source) is fresh._toy_clip(str(TOY_CLIP_NATURAL_DIR))


def test_flow_model_refuses_vp_samplers_clearly(tiny):
    with pytest.raises(ValueError, match="flow-matching model.*Euler"):
        tiny.make_scheduler("DDIM")
    assert type(tiny.make_scheduler("Euler")).__name__ == "FlowMatchEulerDiscreteScheduler"


def test_flow_sampler_variants_are_the_shifted_grid_and_the_stochastic_step():
    """"Euler, shift 3": σ' = 3σ / (1 + 2σ) on the unshifted grid (SD3's shift sσ / (1 + (s − 1)σ), s = 3); "Euler, stochastic": the
    next sample is (1 − σ') x̂0 + σ' ε, x̂0 = x − σ v, ε from the request's generator."""
    from pipelines.models.sd3 import FLOW_SAMPLERS, flow_scheduler

    config = {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": 1.0}
    plain, shifted = (flow_scheduler("m", config, s, {}) for s in ("Euler", "Euler, shift 3"))
    for sch in (plain, shifted):
        sch.set_timesteps(5)
    shift = lambda u: 3 * u / (1 + 2 * u)  # noqa: E731
    torch.testing.assert_close(plain.sigmas[:-1].double(), torch.linspace(1, 1e-3, 5, dtype=torch.float64),
                               atol=1e-6, rtol=0)
    # the grid runs linearly from σ_max to the shifted σ_min (diffusers spaces it between the shifted ends), then shifts
    grid = torch.linspace(1, shift(1e-3), 5, dtype=torch.float64)
    torch.testing.assert_close(shifted.sigmas[:-1].double(), shift(grid), atol=1e-6, rtol=0)
    sto = flow_scheduler("m", config, "Euler, stochastic", {})
    sto.set_timesteps(5)
    x, v = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    out = sto.step(v, sto.timesteps[0], x, generator=torch.Generator().manual_seed(3)).prev_sample
    s0, s1 = float(sto.sigmas[0]), float(sto.sigmas[1])
    eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(out, (1 - s1) * (x - s0 * v) + s1 * eps, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="flow-matching model"):
        flow_scheduler("m", config, "DDIM", {})
    assert list(FLOW_SAMPLERS)[0] == "Euler"


def test_pack_text_round_trip():
    tok, pooled = torch.randn(3, 16, 64), torch.randn(3, 100)  # 100 is not a multiple of 64: padded
    packed = pack_text(tok, pooled)
    assert packed.shape == (3, 18, 64)
    t2, p2 = unpack_text(packed, 100)
    assert torch.equal(t2, tok) and torch.equal(p2, pooled)


def test_fit_latent_rgb_recovers_a_known_affine_map():
    """Images made from latents by a known affine map (nearest-upsampled x4) give back that map."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(6, 4, 8, 8, generator=g)
    m = torch.randn(5, 3, generator=g)
    rgb = torch.einsum("bchw,cr->brhw", z, m[:4]) + m[4].view(1, 3, 1, 1)
    images = rgb.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)
    fit = fit_latent_rgb(z, images)
    torch.testing.assert_close(fit, m, atol=1e-4, rtol=0)
    torch.testing.assert_close(latent_to_rgb_linear(z, fit), rgb.clamp(-1, 1), atol=1e-4, rtol=0)


def test_bundled_preview_is_close_to_the_decode(bundled):
    """The fitted preview of a toy scene's latent is nearer the scene (area-averaged) than a flat grey."""
    from pipelines.toyworld.world import make_batch

    x, _ = make_batch(8, seed=123, size=64)
    with torch.no_grad():
        prev = latent_to_rgb_linear(bundled.encode(x), bundled.latent_rgb)
    target = torch.nn.functional.avg_pool2d(x, 4)
    err = (prev - target).pow(2).mean()
    assert err < 0.25 * (target - target.mean()).pow(2).mean()


def test_repaint_jump_in_flow_space_has_the_forward_statistics():
    """A RePaint jump from flow time s1 to s2 > s1 gives (1 − s2) x0 + s2 ε' in distribution: mean (1 − s2) x0
    and standard deviation s2, per element (flow matching's forward process, an independent formula)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from pipelines.diffusion import maths
    from pipelines.inpainting import renoise_jump

    sched = FlowMatchEulerDiscreteScheduler()
    s1, s2 = 0.3, 0.7
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((20000, 1, 1, 1), 0.8)
    x = (1 - s1) * x0 + s1 * torch.randn(x0.shape, generator=g)
    y = renoise_jump(sched, x, maths.alpha_bar_from_flow(s1), maths.alpha_bar_from_flow(s2), g)
    assert float(y.mean()) == pytest.approx((1 - s2) * 0.8, abs=0.01)
    assert float(y.std()) == pytest.approx(s2, abs=0.01)
    assert maths.flow_from_alpha_bar(maths.alpha_bar_from_flow(s2)) == pytest.approx(s2)
