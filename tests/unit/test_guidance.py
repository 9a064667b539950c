"""pipelines.guidance: CFG limits against separate runs, CFG decomposition, colour guidance moves the
colour, the per-step factor uses ᾱ of the timestep (not the loop index), the great-circle loss by
hand, cutouts are deterministic and differentiable, bad input is refused.

Models are tiny random ones built from small configs and loaded through the real loading code.
"""

from __future__ import annotations

import math

import pytest
import torch

from pipelines import loss_guidance as LG
from pipelines import guidance as G
from pipelines.diffusion import maths
from pipelines.models import load_toy_clip, load_toy_diffusion, toy_clip_config
from pipelines.diffusion.loop import sample, sample_steps
from pipelines.toyworld.unet_config import build_random_toy_sd

PROMPT = "a red circle on a navy background"
STEPS = 6


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    d = tmp_path_factory.mktemp("toy_guidance")
    build_random_toy_sd(d / "toy-sd", d / "toy-clip")
    return load_toy_diffusion(d / "toy-sd", d / "toy-clip", torch.device("cpu"))


@pytest.fixture(scope="module")
def toy_clip(toy, tmp_path_factory):
    d = tmp_path_factory.getbasetemp() / "toy_guidance0" / "toy-clip"
    return load_toy_clip(d / "open_clip_model.safetensors", toy_clip_config(d), torch.device("cpu"))


def gen(seed=3):
    return torch.Generator("cpu").manual_seed(seed)


# ------------------------------------------------------------------ classifier-free guidance


@torch.no_grad()
def reference_run(model, prompt: str, negative: str, w: float | None, steps=STEPS, seed=3):
    """An independent DDIM loop with *separate* (unbatched) UNet passes.

    w None: the conditional model alone; otherwise ε = ε_u + w (ε_c − ε_u) from two separate passes.
    """
    sched = model.make_scheduler("DDIM")
    sched.set_timesteps(steps)
    x = torch.randn((1, *model.sample_shape), generator=gen(seed)) * sched.init_noise_sigma
    emb_c, emb_u = model.encode_prompt([prompt]), model.encode_prompt([negative])
    for t in sched.timesteps:
        eps_c = model.unet(x, t, encoder_hidden_states=emb_c).sample
        if w is None:
            eps = eps_c
        else:
            eps_u = model.unet(x, t, encoder_hidden_states=emb_u).sample
            eps = eps_u + w * (eps_c - eps_u)
        x = sched.step(eps, t, x).prev_sample
    return x.clamp(-1, 1)  # as the loop's final image


# Batched ([uncond, cond] in one UNet call) and unbatched passes agree to float rounding
# (~5e-6 here), not bit for bit: oneDNN picks kernels by batch size.
TOL = 5e-5


def test_cfg_w0_is_the_unconditional_run_and_w1_the_conditional_run(toy):
    uncond = reference_run(toy, "", "", None)  # the model given only the empty prompt
    cond = reference_run(toy, PROMPT, "", None)
    w0 = sample(toy, PROMPT, guidance_scale=0.0, num_inference_steps=STEPS, generator=gen())
    w1 = sample(toy, PROMPT, guidance_scale=1.0, num_inference_steps=STEPS, generator=gen())
    assert (uncond - cond).abs().max() > 100 * TOL  # the prompt matters, so the test can fail
    assert torch.allclose(w0, uncond, atol=TOL, rtol=0)
    assert torch.allclose(w1, cond, atol=TOL, rtol=0)
    # a negative prompt replaces the empty one in ε_u: w = 0 is then the negative prompt's run
    neg = sample(toy, PROMPT, negative_prompt="a blue star", guidance_scale=0.0, num_inference_steps=STEPS,
                 generator=gen())
    assert torch.allclose(neg, reference_run(toy, "a blue star", "", None), atol=TOL, rtol=0)


def test_cfg_at_w_gt_1_matches_separate_passes(toy):
    ref = reference_run(toy, PROMPT, "", 7.5)
    out = sample(toy, PROMPT, guidance_scale=7.5, num_inference_steps=STEPS, generator=gen())
    assert torch.allclose(out, ref, atol=20 * TOL, rtol=0)  # w = 7.5 amplifies the batch rounding (~2e-4)
    assert (out - reference_run(toy, PROMPT, "", 3.0)).abs().max() > 100 * TOL


def test_cfg_combine_limits():
    u, c = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    assert torch.equal(maths.cfg_combine(u, c, 0.0), u)
    assert torch.allclose(maths.cfg_combine(u, c, 1.0), c)
    assert torch.allclose(maths.cfg_combine(u, c, 3.0), u + 3 * (c - u))


def test_cfg_decomposition_terms(toy):
    kw = dict(num_inference_steps=STEPS, sampler="DDIM")
    d = G.cfg_decomposition(toy, PROMPT, step_index=2, guidance_scale=4.0, generator=gen(), **kw)
    assert torch.allclose(d.combined, d.eps_uncond + 4.0 * (d.eps_cond - d.eps_uncond))
    assert torch.allclose(d.difference, d.eps_cond - d.eps_uncond)
    recs = list(sample_steps(toy, PROMPT, guidance_scale=4.0, generator=gen(), preview="none", **kw))
    assert torch.allclose(d.combined, recs[2].pred_eps, atol=1e-6)
    assert d.t == recs[2].t and d.norms["difference"]["l2"] > 0
    # step 0 sees the same x_T for any w: at w = 1 (no CFG in the loop) ε_u comes from an extra pass
    a = G.cfg_decomposition(toy, PROMPT, step_index=0, guidance_scale=1.0, generator=gen(), **kw)
    b = G.cfg_decomposition(toy, PROMPT, step_index=0, guidance_scale=4.0, generator=gen(), **kw)
    assert torch.allclose(a.eps_uncond, b.eps_uncond, atol=TOL) and torch.allclose(a.eps_cond, b.eps_cond, atol=TOL)
    assert torch.allclose(a.combined, a.eps_cond)
    with pytest.raises(ValueError, match="step"):
        G.cfg_decomposition(toy, PROMPT, step_index=STEPS, generator=gen(), **kw)


# ------------------------------------------------------------------ colour guidance


@pytest.mark.parametrize("colour", ["#00ff00", "#ff00ff"])
def test_colour_guidance_moves_the_mean_colour_towards_the_target(toy, colour):
    target = torch.tensor(LG.parse_color(colour))
    kw = dict(guidance_scale=3.0, num_inference_steps=10)
    hook0 = LG.color_guidance(colour, 0.0)
    plain = sample(toy, PROMPT, generator=gen(), cond_fn=hook0, **kw)
    assert torch.equal(plain, sample(toy, PROMPT, generator=gen(), **kw))  # scale 0 only measures
    hook = LG.color_guidance(colour, 1000.0, scaling="sqrt_alpha_bar")  # scale 300 moves it ~15%, 1000 ~45%
    guided = sample(toy, PROMPT, generator=gen(), cond_fn=hook, **kw)
    d0 = float((LG.mean_color(plain)[0] - target).norm())
    d1 = float((LG.mean_color(guided)[0] - target).norm())
    assert d1 < 0.8 * d0, (d0, d1)
    assert len(hook.history) == 10 and len(hook0.history) == 10
    assert hook.losses()[-1] < hook0.losses()[-1]


def test_color_loss_and_parse():
    img = torch.zeros(2, 3, 4, 4)
    img[1] = 1.0
    target = LG.color_target((1.0, 0.5, 0.0))  # -> (1, 0, -1)
    # zeros: (1 + 0 + 1) / 3; ones: (0 + 1 + 2) / 3
    assert torch.allclose(LG.color_loss(img, target), torch.tensor([2 / 3, 1.0]))
    assert LG.parse_color("#ff8000") == pytest.approx((1.0, 128 / 255, 0.0))
    assert LG.parse_color("#f80") == pytest.approx((1.0, 136 / 255, 0.0))
    assert LG.parse_color("rgba(255, 0, 51, 1)") == pytest.approx((1.0, 0.0, 0.2))
    for bad in ["", "red", "#12345", "rgb(300, 0, 0)", None]:
        with pytest.raises(ValueError):
            LG.parse_color(bad)


# ------------------------------------------------------------------ CLIP loss and per-step scaling


def test_spherical_distance_by_hand():
    e = torch.eye(3)
    # orthogonal unit vectors: ‖a − b‖ = √2, arcsin(√2/2) = π/4, loss = 2 (π/4)² = π²/8
    assert float(LG.spherical_distance_loss(e[0], e[1])) == pytest.approx(math.pi**2 / 8, rel=1e-6)
    assert float(LG.spherical_distance_loss(e[0], e[0])) == pytest.approx(0.0, abs=1e-6)
    assert float(LG.spherical_distance_loss(e[0], -e[0])) == pytest.approx(2 * (math.pi / 2) ** 2, rel=1e-6)
    for theta in (0.3, 1.0, 2.5):  # at angle θ the loss is θ²/2
        b = torch.tensor([math.cos(theta), math.sin(theta), 0.0])
        assert float(LG.spherical_distance_loss(e[0], b)) == pytest.approx(theta**2 / 2, rel=1e-5)
        assert float(LG.spherical_distance_loss(3 * e[0], 0.5 * b)) == pytest.approx(theta**2 / 2, rel=1e-5)
    a, b = torch.randn(5, 1, 8), torch.randn(1, 4, 8)
    assert LG.spherical_distance_loss(a, b).shape == (5, 4)


def test_cutouts_are_deterministic_and_differentiable():
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    c1 = LG.make_cutouts(x, 5, 16, torch.Generator().manual_seed(1))
    c2 = LG.make_cutouts(x, 5, 16, torch.Generator().manual_seed(1))
    c3 = LG.make_cutouts(x, 5, 16, torch.Generator().manual_seed(2))
    assert c1.shape == (10, 3, 16, 16) and torch.equal(c1, c2) and not torch.equal(c1, c3)
    c1.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_step_factor_modes():
    assert LG.step_factor("none", 0.25) == 1.0
    assert LG.step_factor("sqrt_alpha_bar", 0.25) == 0.5
    assert LG.step_factor("one_minus_alpha_bar", 0.25) == 0.75
    with pytest.raises(ValueError):
        LG.step_factor("sqrt", 0.5)


@pytest.mark.parametrize("scaling", ["sqrt_alpha_bar", "one_minus_alpha_bar"])
def test_clip_gradient_factor_uses_alpha_bar_of_the_timestep(toy, scaling, toy_clip):
    """With 8 of 1000 steps, timestep t and loop index i differ: ᾱ_t ≠ ᾱ_i (the seed's bug)."""
    clip = toy_clip
    hook = LG.clip_guidance(clip, "a red circle", 50.0, n_cutouts=2, scaling=scaling)
    sample(toy, "", guidance_scale=1.0, num_inference_steps=8, generator=gen(), cond_fn=hook)
    sched = toy.make_scheduler("DDIM")
    sched.set_timesteps(8)
    ac = sched.alphas_cumprod
    f = (lambda a: math.sqrt(a)) if scaling == "sqrt_alpha_bar" else (lambda a: 1 - a)
    assert [h.t for h in hook.history] == [int(t) for t in sched.timesteps]
    for i, h in enumerate(hook.history):
        assert h.factor == pytest.approx(f(float(ac[h.t])), rel=1e-6, abs=1e-12)
        assert h.alpha_bar == pytest.approx(float(ac[h.t]), rel=1e-6, abs=1e-12)
    buggy = [f(float(ac[i])) for i in range(8)]  # what indexing by the loop counter would give
    assert max(abs(h.factor - b) for h, b in zip(hook.history, buggy)) > 0.5


def test_applied_update_is_scale_times_factor_times_gradient(toy):
    """Loss = mean of x̂0 (ε held fixed): ∇_{x_t} = 1 / (sqrt(ᾱ_t) N) per element, so with the
    sqrt(ᾱ_t) factor the update is s / N at *every* step. ᾱ of the wrong index would break it."""
    n = 3 * 32 * 32
    hook = LG.LossGuidance(lambda img: img.flatten(1).mean(1), 2.0, scaling="sqrt_alpha_bar")
    sample(toy, PROMPT, guidance_scale=2.0, num_inference_steps=8, generator=gen(), cond_fn=hook)
    assert len(hook.history) == 8
    for h in hook.history:
        if h.alpha_bar < LG.MIN_ALPHA_BAR:  # near zero SNR (toy-sd's t = 959, ᾱ = 1e-6): measured, not guided
            assert h.update_rms == 0.0 and h.grad_rms == 0.0 and h.index == 0
            continue
        assert h.update_rms == pytest.approx(2.0 / n, rel=1e-3)
        assert h.grad_rms == pytest.approx(1.0 / (math.sqrt(h.alpha_bar) * n), rel=1e-3)
    assert hook.history[0].alpha_bar < LG.MIN_ALPHA_BAR <= hook.history[1].alpha_bar


def test_clip_guidance_lowers_the_clip_loss_of_a_tiny_model(toy, toy_clip):
    clip = toy_clip
    kw = dict(guidance_scale=1.0, num_inference_steps=8)
    hook = LG.clip_guidance(clip, "a red circle", 300.0, n_cutouts=4, generator=torch.Generator().manual_seed(0),
                           keep_maps=True)
    x0 = torch.randn(3, *toy.sample_shape, generator=gen(5))
    plain = sample(toy, [""] * 3, latents=x0, **kw)
    guided = sample(toy, [""] * 3, latents=x0, cond_fn=hook, **kw)
    before = LG.final_clip_loss(clip, plain, "a red circle")
    after = LG.final_clip_loss(clip, guided, "a red circle")
    assert (after < before).all(), (before, after)
    assert hook.history[-1].grad_map.shape == (3, 32, 32)


def test_through_unet_and_eps_modes_run(toy):
    for kw in (dict(through_unet=True), dict(apply="eps")):
        hook = LG.color_guidance("#0000ff", 10.0, scaling="sqrt_alpha_bar", **kw)
        img = sample(toy, PROMPT, guidance_scale=2.0, num_inference_steps=3, generator=gen(), cond_fn=hook)
        assert torch.isfinite(img).all() and len(hook.history) == 3


@pytest.mark.parametrize("kwargs,match", [
    (dict(scale=float("nan")), "finite"),
    (dict(scale=float("inf")), "finite"),
    (dict(scale=1e9), "between"),
    (dict(scale=-1.0), "between"),
    (dict(scale=1.0, scaling="loop"), "scaling"),
    (dict(scale=1.0, apply="x0"), "apply"),
])
def test_bad_guidance_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LG.LossGuidance(lambda x: x.mean((1, 2, 3)), **kwargs)


def test_clip_loss_needs_a_prompt(toy, toy_clip):
    with pytest.raises(ValueError, match="prompt"):
        LG.ClipLoss(toy_clip, "  ")



def test_clip_guidance_steps_aside_inside_a_step_and_gives_the_same_image(toy, toy_clip, monkeypatch):
    """On the compute thread, with another request waiting at every turn: the loss and its gradient are turns
    of their own (per step a UNet call and the loss; a guided step also its backward pass), the other request
    runs between them, and the image is the one the same run alone on the compute thread gives, to the bit."""
    import threading

    from pipelines.serving import compute_thread

    steps = 4
    x0 = torch.randn(1, *toy.sample_shape, generator=gen(7))
    # UNet calls as plain turns (checkpoint), not stacked with the waiting request's (test_step_batching.py)
    monkeypatch.setenv("DL_STEP_BATCHING", "0")

    def run():
        hook = LG.clip_guidance(toy_clip, "a red circle", 300.0, n_cutouts=4, generator=torch.Generator().manual_seed(0))
        return sample(toy, [""], latents=x0, cond_fn=hook, guidance_scale=1.0, num_inference_steps=steps), hook

    # the reference on the compute thread too, alone (its checkpoints are no-ops): the same torch thread count,
    # so the same kernels' float rounding (1 and 2 threads differ by ~1e-6)
    inline, _ = compute_thread.call(run)
    calls, other_turns, stop, started = [], [], threading.Event(), threading.Event()
    checkpoint = compute_thread.checkpoint

    def counted():
        calls.append(1)
        checkpoint()

    def other():  # a second request, waiting for the next turn whenever the first one runs
        started.set()
        while not stop.is_set():
            if compute_thread.waiting():
                other_turns.append(1)
            checkpoint()

    t = threading.Thread(target=lambda: compute_thread.call(other))
    t.start()
    started.wait(60)
    monkeypatch.setattr(compute_thread, "checkpoint", counted)
    try:
        threaded, hook = compute_thread.call(run)
    finally:
        stop.set()
        t.join(60)
    guided = sum(h.alpha_bar >= LG.MIN_ALPHA_BAR for h in hook.history)
    assert torch.equal(threaded, inline)
    assert guided >= 1 and len(calls) >= 2 * steps + guided, (len(calls), guided)
    assert len(other_turns) >= len(calls) - 1  # the other request ran at (almost) every one of them


# ------------------------------------------------------------------ time travel (repeats per guided step)


class _Oracle:
    """A denoiser that knows x0: ε = (x − sqrt(ᾱ_t) x0) / sqrt(1 − ᾱ_t) at this step's ᾱ_t."""

    def __init__(self, x0, alpha_bar):
        self.x0, self.ab = x0, alpha_bar

    def __call__(self, x):
        return (x - math.sqrt(self.ab) * self.x0) / math.sqrt(1 - self.ab), self.x0


def test_time_travel_steps_like_diffusers_ddim_then_noises_back_to_the_same_marginal(toy):
    """One time-travel move: the step to the next timestep equals diffusers' DDIMScheduler.step (η = 0) on the
    same ε, and the re-noised sample is x0 at ᾱ_t again: mean sqrt(ᾱ_t) x0, variance 1 − ᾱ_t per element."""
    from diffusers import DDIMScheduler

    from pipelines.diffusion.loop import GuidanceContext

    sched = DDIMScheduler.from_config(toy.scheduler_config, prediction_type="epsilon")  # the oracle gives ε
    sched.set_timesteps(10)
    t, s = int(sched.timesteps[4]), int(sched.timesteps[5])
    ab_t, ab_s = float(sched.alphas_cumprod[t]), float(sched.alphas_cumprod[s])
    x0 = torch.rand(4, 3, 64, 64, generator=gen(1)) * 2 - 1
    x = math.sqrt(ab_t) * x0 + math.sqrt(1 - ab_t) * torch.randn(x0.shape, generator=gen(2))
    oracle = _Oracle(x0, ab_t)
    ctx = GuidanceContext(4, 10, sched.timesteps[4], ab_t, 1.0, x, sched, None, toy, _predict=oracle)
    hook = LG.LossGuidance(lambda img: img.flatten(1).mean(1), 0.1, recur=2, generator=gen(7))
    x_new, eps_new, x0_new = hook._time_travel(ctx, x)
    # undo the re-noising with the same draw: what is left is the step to s, which must be diffusers' DDIM step
    ratio = ab_t / ab_s
    z = maths.randn(x.shape, gen(7), x.device, x.dtype)
    x_s = (x_new - math.sqrt(1 - ratio) * z) / math.sqrt(ratio)
    eps = oracle(x)[0]
    ref_s = sched.step(eps, sched.timesteps[4], x, eta=0.0).prev_sample
    assert torch.allclose(x_s, ref_s, atol=1e-4)
    noise = (x_new - math.sqrt(ab_t) * x0) / math.sqrt(1 - ab_t)  # x_new is x0 at ᾱ_t: this must be N(0, 1)
    assert abs(float(noise.mean())) < 0.02 and float(noise.std()) == pytest.approx(1.0, abs=0.02)
    corr = float((noise * eps).mean() / (noise.std() * eps.std()))
    assert corr == pytest.approx(math.sqrt(ab_t * (1 - ab_s) / ab_s / (1 - ab_t)), abs=0.02)  # DDPM eq. 4, s -> t
    assert torch.equal(x0_new, x0) and torch.allclose(eps_new, noise, atol=1e-5)


def test_repeats_per_guided_step_run_each_pass_and_refuse_other_spaces(toy):
    def run(recur, sampler="DDIM"):
        hook = LG.LossGuidance(lambda img: LG.color_loss(img, LG.color_target(LG.parse_color("#0000ff"))), 0.5,
                               normalize=True, recur=recur, generator=gen(9))
        img = sample(toy, PROMPT, guidance_scale=2.0, num_inference_steps=4, generator=gen(), cond_fn=hook,
                     sampler=sampler)
        return img, hook

    one, h1 = run(1)
    three, h3 = run(3)
    again, _ = run(3)
    guided = [h for h in h1.history if h.update_rms > 0]
    assert len(h3.history) == len(h1.history) + 2 * len(guided)  # every guided step guided three times
    assert torch.equal(three, again) and not torch.allclose(one, three)  # repeatable; the passes change the image
    with pytest.raises(ValueError, match="DDPM-family"):
        run(2, sampler="Euler")
    with pytest.raises(ValueError, match="apply"):
        LG.LossGuidance(lambda img: img.mean((1, 2, 3)), 1.0, apply="eps", recur=2)
    with pytest.raises(ValueError, match="repeats"):
        LG.LossGuidance(lambda img: img.mean((1, 2, 3)), 1.0, recur=LG.MAX_RECUR + 1)
