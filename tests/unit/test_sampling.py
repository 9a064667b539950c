"""pipelines.diffusion.loop: the loop equals diffusers' own pipelines (<= 1e-4, fp32), its records
are consistent (x̂0 from ε, CFG terms), hooks work, the oracle recovers x0, bad input is refused.

Every model is a tiny random one built from a small config, saved to a temp dir and loaded
through the real loading code (``pipelines.models``).
"""

from __future__ import annotations

import math

import pytest
import torch

from pipelines.diffusion import loop, maths
from pipelines.models import SAMPLERS, load_latent_hub, load_pixel_hub, load_toy_diffusion
from pipelines.toyworld.unet_config import build_random_toy_sd
from tests.tiny_models import build_tiny_sd, identity_vae

CPU = torch.device("cpu")
PROMPT = "a red circle on a navy background"
TOL = 1e-4


@pytest.fixture(scope="module")
def tiny_sd_dir(tmp_path_factory):
    return build_tiny_sd(tmp_path_factory.mktemp("tiny_sd"))


@pytest.fixture(scope="module")
def tiny_sd(tiny_sd_dir):
    return load_latent_hub(str(tiny_sd_dir), CPU, "tiny-sd")


@pytest.fixture(scope="module")
def stock_sd(tiny_sd_dir):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_dir, safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    d = tmp_path_factory.mktemp("toy")
    build_random_toy_sd(d / "toy-sd", d / "toy-clip")
    return load_toy_diffusion(d / "toy-sd", d / "toy-clip", CPU)


@pytest.fixture(scope="module")
def ddpm_dir(tmp_path_factory):
    """An unconditional UNet2DModel saved like a DDPMPipeline (unet/, scheduler/)."""
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=16, in_channels=3, out_channels=3, layers_per_block=1,
                       block_out_channels=(16, 32), norm_num_groups=8,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"))
    d = tmp_path_factory.mktemp("ddpm")
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=1000)).save_pretrained(d)
    return d


def gen(seed=3):
    return torch.Generator("cpu").manual_seed(seed)


def to01(x):
    return (x + 1) / 2  # the pipelines' "pt" output: (x / 2 + 0.5).clamp(0, 1)


# ------------------------------------------------------------------ equivalence with diffusers


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_tiny_stable_diffusion_matches_stock_pipeline_with_cfg(tiny_sd, stock_sd, sampler):
    eta = 0.5 if sampler == "DDIM" else 0.0
    stock_sd.scheduler = tiny_sd.make_scheduler(sampler)
    ref = stock_sd(PROMPT, negative_prompt="green", num_inference_steps=6, guidance_scale=5.0, eta=eta,
                   generator=gen(), output_type="pt").images
    img = loop.sample(tiny_sd, PROMPT, negative_prompt="green", sampler=sampler, num_inference_steps=6,
                          guidance_scale=5.0, eta=eta, generator=gen())
    assert img.shape == ref.shape == (1, 3, 32, 32)
    assert ref.std() > 1e-3  # not a constant image
    assert (to01(img) - ref).abs().max().item() <= TOL
    # and the test can fail: another seed gives another image
    other = loop.sample(tiny_sd, PROMPT, negative_prompt="green", sampler=sampler, num_inference_steps=6,
                            guidance_scale=5.0, eta=eta, generator=gen(4))
    assert (to01(other) - ref).abs().max().item() > 10 * TOL


def test_tiny_sd_batch_of_prompts_matches(tiny_sd, stock_sd):
    stock_sd.scheduler = tiny_sd.make_scheduler("DDIM")
    prompts = [PROMPT, "a blue star"]
    ref = stock_sd(prompts, num_inference_steps=4, guidance_scale=3.0, generator=gen(), output_type="pt").images
    img = loop.sample(tiny_sd, prompts, sampler="DDIM", num_inference_steps=4, guidance_scale=3.0, generator=gen())
    assert img.shape[0] == 2 and (to01(img) - ref).abs().max().item() <= TOL


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_toy_model_matches_stock_pipeline(toy, sampler):
    """The pixel-space toy model driven by the stock StableDiffusionPipeline (identity 'VAE')."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(vae=identity_vae(), text_encoder=None, tokenizer=None, unet=toy.unet,
                                   scheduler=toy.make_scheduler(sampler), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    # StableDiffusionPipeline.__init__ rewrites some scheduler configs (SD-1.x fixes such as
    # clip_sample, steps_offset); hand the pipeline exactly the toy model's scheduler after.
    pipe.scheduler = toy.make_scheduler(sampler)
    pipe.set_progress_bar_config(disable=True)
    pe, ne = toy.encode_prompt([PROMPT]), toy.encode_prompt(["a white background"])
    ref = pipe(prompt_embeds=pe, negative_prompt_embeds=ne, height=32, width=32, num_inference_steps=5,
               guidance_scale=3.0, generator=gen(), output_type="pt").images
    img = loop.sample(toy, PROMPT, negative_prompt="a white background", sampler=sampler,
                          num_inference_steps=5, guidance_scale=3.0, generator=gen())
    assert img.shape == ref.shape == (1, 3, 32, 32)
    assert (to01(img) - ref).abs().max().item() <= TOL


@pytest.mark.parametrize("kind", ["DDPM", "DDIM"])
def test_unconditional_pixel_model_matches_ddpm_and_ddim_pipelines(ddpm_dir, kind):
    from diffusers import DDIMPipeline, DDPMPipeline

    model = load_pixel_hub(str(ddpm_dir), CPU, "tiny-ddpm")
    if kind == "DDPM":
        pipe = DDPMPipeline(unet=model.unet, scheduler=model.make_scheduler("DDPM"))
        pipe.set_progress_bar_config(disable=True)
        ref = pipe(batch_size=2, generator=gen(), num_inference_steps=8, output_type="np").images
        img = loop.sample(model, sampler="DDPM", num_inference_steps=8, generator=gen(), batch_size=2)
    else:
        pipe = DDIMPipeline(unet=model.unet, scheduler=model.make_scheduler("DDIM"))
        pipe.set_progress_bar_config(disable=True)
        ref = pipe(batch_size=2, generator=gen(), num_inference_steps=8, eta=0.7, output_type="np").images
        img = loop.sample(model, sampler="DDIM", num_inference_steps=8, generator=gen(), batch_size=2, eta=0.7)
    ref = torch.from_numpy(ref).permute(0, 3, 1, 2)
    assert img.shape == ref.shape == (2, 3, 16, 16)
    assert (to01(img) - ref).abs().max().item() <= TOL


# ------------------------------------------------------------------ records


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_pred_x0_is_consistent_with_eps_and_alpha_bar(tiny_sd, sampler):
    """x̂0 = (x_in - sqrt(1-ᾱ) ε) / sqrt(ᾱ) with the recorded ᾱ, also for σ-space schedulers
    (where x̂0 comes from the scheduler's own pred_original_sample = x_t - σ ε)."""
    recs = list(loop.sample_steps(tiny_sd, PROMPT, sampler=sampler, num_inference_steps=5, guidance_scale=4.0,
                                      generator=gen(), preview="none"))
    assert [r.index for r in recs] == list(range(5)) and recs[-1].is_last and recs[-1].image is not None
    for r in recs:
        a = r.alpha_bar
        x0 = (r.model_input - math.sqrt(1 - a) * r.pred_eps) / math.sqrt(a)
        scale = max(1.0, r.pred_x0.abs().max().item())
        assert (x0 - r.pred_x0).abs().max().item() <= 1e-4 * scale, (r.index, r.t)
        # CFG terms: ε = ε_u + w (ε_c - ε_u)
        assert torch.allclose(r.eps_uncond + 4.0 * (r.eps_cond - r.eps_uncond), r.pred_eps, atol=1e-5)
    assert recs[0].alpha_bar < recs[-1].alpha_bar  # noise level decreases
    # x_T as the UNet sees it is unit-variance noise, also for σ-space schedulers (x_T / sqrt(σ²+1))
    assert 0.8 < recs[0].model_input.std().item() < 1.2
    assert all(r1.x_t is r0.x_prev for r0, r1 in zip(recs, recs[1:]))


def test_no_cfg_without_guidance_and_for_unconditional(tiny_sd, ddpm_dir):
    r = next(loop.sample_steps(tiny_sd, PROMPT, num_inference_steps=3, guidance_scale=1.0, generator=gen()))
    assert r.eps_uncond is None and r.eps_cond is None
    model = load_pixel_hub(str(ddpm_dir), CPU, "tiny-ddpm")
    r = next(loop.sample_steps(model, num_inference_steps=3, guidance_scale=7.0, generator=gen()))
    assert r.eps_uncond is None and r.x_t_rgb.shape == (1, 3, 16, 16)


def test_latent_previews(tiny_sd):
    recs = list(loop.sample_steps(tiny_sd, PROMPT, num_inference_steps=2, generator=gen(), preview="linear"))
    assert recs[0].pred_x0_rgb.shape == (1, 3, 16, 16)  # latent resolution
    recs = list(loop.sample_steps(tiny_sd, PROMPT, num_inference_steps=2, generator=gen(), preview="vae"))
    assert recs[0].pred_x0_rgb.shape == (1, 3, 32, 32)  # decoded
    assert recs[-1].image.shape == (1, 3, 32, 32) and recs[-1].image.abs().max() <= 1


# ------------------------------------------------------------------ start from an image, oracle


@pytest.mark.parametrize("sampler", ["DDIM", "Euler"])
def test_noise_to_start_equals_scheduler_add_noise(tiny_sd, sampler):
    sch = tiny_sd.make_scheduler(sampler)
    ts, begin = maths.plan_timesteps(sch, 10, 0.6)
    assert len(ts) == 6 and begin == 4
    x0 = torch.rand(2, 4, 16, 16, generator=gen()) * 2 - 1
    noise = torch.randn(x0.shape, generator=gen(5))
    mine = maths.noise_to_start(sch, x0, noise, ts[0], begin)
    ref = sch.add_noise(x0, noise, ts[:1])
    assert torch.allclose(mine, ref, atol=1e-5)


def test_strength_runs_the_last_fraction_of_steps(toy):
    x0 = torch.zeros(1, 3, 32, 32)
    recs = list(loop.sample_steps(toy, PROMPT, num_inference_steps=10, init_latents=x0, strength=0.3,
                                      generator=gen(), guidance_scale=2.0))
    full = toy.make_scheduler("DDIM")
    full.set_timesteps(10)
    assert len(recs) == 3 and [r.t for r in recs] == full.timesteps[-3:].tolist()
    with pytest.raises(ValueError, match="strength"):
        next(loop.sample_steps(toy, PROMPT, num_inference_steps=3, init_latents=x0, strength=0.1))


@pytest.mark.parametrize("sampler", ["DDIM", "DDPM", "Euler", "DPM-Solver++"])
def test_oracle_with_true_noise_recovers_x0(toy, sampler):
    """A denoiser that knows x0 returns the true ε of the current x_t; every sampler lands on x0."""
    x0 = torch.rand(1, 3, 32, 32, generator=gen()) * 1.6 - 0.8

    def oracle(x_in, t, alpha_bar):  # ε = (x_t - sqrt(ᾱ) x0) / sqrt(1-ᾱ)  (DDPM eq. 4 solved for ε)
        return (x_in - math.sqrt(alpha_bar) * x0) / math.sqrt(1 - alpha_bar)

    recs = list(loop.sample_steps(toy, PROMPT, sampler=sampler, num_inference_steps=8, init_latents=x0,
                                      strength=0.5, denoiser=oracle, generator=gen()))
    assert (recs[0].pred_x0 - x0).abs().max() < 1e-4
    assert (recs[-1].image - x0).abs().max() < 1e-3
    # the model itself from the same start does not (it is random)
    model_img = loop.sample(toy, PROMPT, sampler=sampler, num_inference_steps=8, init_latents=x0, strength=0.5,
                                generator=gen())
    assert (model_img - x0).abs().max() > 1e-2


# ------------------------------------------------------------------ hooks


def test_replace_fn_repaint_keeps_the_known_region(toy):
    x_orig = torch.rand(1, 3, 32, 32, generator=gen()) * 2 - 1
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., :, 16:] = 1  # 1 = generate, 0 = keep

    def repaint(ctx):  # x_t <- m x_t + (1 - m) q(x_orig, t)
        return mask * ctx.x_t + (1 - mask) * ctx.add_noise(x_orig)

    for sampler in ["DDIM", "Euler"]:
        img = loop.sample(toy, PROMPT, sampler=sampler, num_inference_steps=5, generator=gen(), replace_fn=repaint)
        assert torch.allclose(img[..., :16], x_orig[..., :16], atol=1e-5)
        assert (img[..., 16:] - x_orig[..., 16:]).abs().mean() > 0.05


def wiener(x_in, t, alpha_bar, v=0.25):
    """The exact denoiser for data x0 ~ N(0, v I): E[x0 | x_t] = a v / (a² v + s²) x_t; returns ε."""
    a, s = math.sqrt(alpha_bar), math.sqrt(1 - alpha_bar)
    x0 = a * v / (a * a * v + s * s) * x_in
    return (x_in - a * x0) / s


@pytest.mark.parametrize("mode", ["grad", "x_t"])
@pytest.mark.parametrize("sampler", ["DDIM", "Euler"])
def test_cond_fn_colour_guidance_moves_the_image(toy, mode, sampler):
    """Gradient of a colour loss on x̂0 (differentiated through the model) w.r.t. x_t pushes the
    image towards red. A smooth closed-form denoiser stands in for the random UNet."""
    red = torch.tensor([1.0, -1.0, -1.0]).view(1, 3, 1, 1)
    calls = []

    def cond_fn(ctx):
        x = ctx.x_t.detach().requires_grad_()
        _, x0 = ctx.predict(x)
        loss = ((x0 - red) ** 2).mean()
        (g,) = torch.autograd.grad(loss, x)
        calls.append(ctx.index)
        if mode == "grad":
            return loop.GuidanceOutput(grad=1000.0 * g)
        return loop.GuidanceOutput(x_t=ctx.x_t - 1000.0 * g * (1 / ctx.c_in) ** 2)

    kw = dict(sampler=sampler, num_inference_steps=8, denoiser=wiener)
    plain = loop.sample(toy, PROMPT, generator=gen(), **kw)
    guided = loop.sample(toy, PROMPT, generator=gen(), cond_fn=cond_fn, **kw)
    assert calls == list(range(8))
    dist = lambda im: ((im - red) ** 2).mean().item()
    assert dist(guided) < 0.8 * dist(plain), (dist(guided), dist(plain))
    # a no-op hook changes nothing
    same = loop.sample(toy, PROMPT, generator=gen(), cond_fn=lambda ctx: None, **kw)
    assert torch.equal(same, plain)


def test_cond_fn_predict_goes_through_the_unet(toy):
    seen = {}

    def cond_fn(ctx):
        x = ctx.x_t.detach().requires_grad_()
        eps, x0 = ctx.predict(x)
        assert torch.allclose(eps, ctx.eps, atol=1e-5) and torch.allclose(x0, ctx.pred_x0, atol=1e-3)
        (g,) = torch.autograd.grad(x0.mean(), x)
        seen["grad"] = g
        return None

    next(loop.sample_steps(toy, PROMPT, num_inference_steps=4, guidance_scale=3.0, generator=gen(),
                               cond_fn=cond_fn))
    assert seen["grad"].abs().sum() > 0


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_inference_steps=float("nan")), "finite"),
    (dict(num_inference_steps=0), "between"),
    (dict(num_inference_steps=5000), "between"),
    (dict(guidance_scale=float("inf")), "finite"),
    (dict(eta=0.5, sampler="Euler"), "DDIM only"),
    (dict(eta=2.0), "between"),
    (dict(sampler="Heun"), "unknown sampler"),
    (dict(preview="fancy"), "preview"),
])
def test_bad_arguments_raise_value_error(toy, kwargs, match):
    with pytest.raises(ValueError, match=match):
        next(loop.sample_steps(toy, PROMPT, **kwargs))


@pytest.mark.parametrize("sampler", ["DDIM", "Euler"])
@pytest.mark.parametrize("strength", [0.5, 1.0])
def test_noise_to_start_on_the_toy_schedule_is_ddpm_eq4(toy, sampler, strength):
    """x0 != 0 jumped to the first kept timestep of the toy's own schedule (trained betas, trailing
    spacing, zero terminal SNR): DDPM eq. 4 with ᾱ_t = prod(1 - β) computed here in float64 from the
    config, in VP form (DDIM) or divided by sqrt(ᾱ_t) (σ-space, Euler: x0 + σ ε); and diffusers' add_noise."""
    import numpy as np

    sch = toy.make_scheduler(sampler)
    ts, begin = maths.plan_timesteps(sch, 10, strength)
    t = int(round(float(ts[0])))
    abar = float(np.cumprod(1.0 - np.asarray(toy.scheduler_config["trained_betas"], np.float64))[t])
    x0 = torch.rand(1, 3, 32, 32, generator=gen()) * 1.6 - 0.8
    noise = torch.randn(x0.shape, generator=gen(5))
    mine = maths.noise_to_start(sch, x0, noise, ts[0], begin)
    vp = math.sqrt(abar) * x0 + math.sqrt(1 - abar) * noise
    expected = vp if sampler == "DDIM" else vp / math.sqrt(abar)
    assert torch.allclose(mine, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))
    assert torch.allclose(mine, sch.add_noise(x0, noise, ts[:1]), rtol=1e-4, atol=1e-5 * float(expected.abs().max()))
    if strength == 1.0:
        assert abar < 1e-4  # the terminal step: (almost) pure noise


def test_drawing_x_T_outside_the_loop_is_the_same_draw(toy):
    """The viewer draws x_T itself (to show it at once) and passes it in with the same generator:
    the result equals letting the loop draw it (also for DDPM, whose steps keep drawing)."""
    g = gen()
    x_T = torch.randn((1, *toy.sample_shape), generator=g)
    a = loop.sample(toy, PROMPT, sampler="DDPM", num_inference_steps=4, latents=x_T, generator=g)
    b = loop.sample(toy, PROMPT, sampler="DDPM", num_inference_steps=4, generator=gen())
    assert torch.equal(a, b)
