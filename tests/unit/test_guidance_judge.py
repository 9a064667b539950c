"""Guidance is judged by rendering (render_judge) and roughness, never by the guiding model's loss.

The fake CLIP here scores per-pixel noise as the best match (what a fooled CLIP does), so an evaluation
that trusted the loss would call the noisy image a success; the judge must not.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from pipelines import guidance_judge as J
from pipelines import loss_guidance as LG
from pipelines.diffusion import loop
from pipelines.models import load_toy_diffusion
from pipelines.toyworld.unet_config import build_random_toy_sd
from pipelines.toyworld.world import Scene, render_batch


def scene(shape="circle", color="red", bg="white") -> torch.Tensor:
    return render_batch([Scene(shape, color, bg, "medium", 0.5, 0.5, 0.3)])  # [1, 3, 32, 32] in [-1, 1]


def noise(seed=0) -> torch.Tensor:
    return torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_roughness_is_the_mean_abs_laplacian_in_0_255_units():
    img = noise(1)
    x = (img[0].numpy() + 1) * 127.5  # [3, H, W]
    lap = x[:, :-2, 1:-1] + x[:, 2:, 1:-1] + x[:, 1:-1, :-2] + x[:, 1:-1, 2:] - 4 * x[:, 1:-1, 1:-1]
    assert float(J.roughness(img)[0]) == pytest.approx(np.abs(lap).mean(), rel=1e-5)
    assert float(J.roughness(torch.zeros(1, 3, 8, 8))[0]) == 0.0
    assert float(J.roughness(scene())[0]) < 20 < 100 < float(J.roughness(noise())[0])


def test_expected_reads_natural_phrasings():
    assert J.expected("A blue circle against a black background.") == {
        "shape": "circle", "color": "blue", "background": "black"}
    assert J.expected("a purple circle on a grey background")["background"] == "gray"
    assert J.expected("Red triangle.") == {"shape": "triangle", "color": "red", "background": None}


class FooledClip:
    """A CLIP that likes noise: its image embedding points at the text the rougher the image is."""

    image_size = 32

    def encode_text(self, prompts):
        return torch.tensor([[1.0, 0.0]])

    def encode_image(self, x):
        r = J.roughness(x) / 200  # [B]
        return torch.nn.functional.normalize(torch.stack([r, 1 - r.clamp(max=1)], 1), dim=1)


def test_eval_clip_judges_the_image_not_the_loss(monkeypatch):
    """Guided = noise (lower loss, fooled) for one prompt, guided = the prompt's scene (higher loss) for another."""
    images = {"a red circle on a white background": (scene("square", "blue", "black"), noise()),
              "a green star on a navy background": (noise(2) * 0.2, scene("star", "green", "navy"))}
    calls = []

    def fake_sample(model, prompts, cond_fn=None, **kw):
        plain, guided = images[current[0]]
        calls.append(cond_fn is not None)
        return guided if cond_fn is not None else plain

    current = [None]
    monkeypatch.setattr(J, "sample", fake_sample)
    monkeypatch.setattr(J.LG, "clip_guidance", lambda clip, prompt, scale, **kw: "a hook")

    class M:
        sample_shape = (3, 32, 32)

    rows = []
    for p in images:
        current[0] = p
        rows += J.eval_clip(M(), FooledClip(), [(p, 0, False)], {"scale": 1.0})
    fooled, honest = rows
    assert fooled.extra["loss_guided"] < fooled.extra["loss_plain"]  # the loss says "better"
    assert not fooled.success and not fooled.clean  # the judge says no
    assert J.fooled(fooled.extra["loss_plain"], fooled.extra["loss_guided"], fooled.rough_plain, fooled.rough_guided)
    assert honest.extra["loss_guided"] > honest.extra["loss_plain"]  # the loss says "worse"
    assert honest.success, honest.guided  # the judge reads a green star, clean
    assert J.summary(rows)["success"] == 0.5


def test_fooled_needs_both_a_lower_loss_and_a_rougher_image():
    assert J.fooled(1.0, 0.2, 10.0, 150.0)
    assert not J.fooled(1.0, 0.2, 10.0, 15.0)  # loss fell, image still clean: steering
    assert not J.fooled(0.2, 1.0, 10.0, 150.0)  # loss rose: not fooling CLIP


def test_seed_bug_factor_is_sqrt_alpha_bar_at_T_minus_1_minus_t():
    """Seed 000: set_timesteps(1000), factor alphas_cumprod[i] with the loop counter i (t = 999 − i)."""
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(num_train_timesteps=1000)
    sched.set_timesteps(1000)
    acp = sched.alphas_cumprod
    hook = LG.LossGuidance(lambda img: img.mean(dim=(1, 2, 3)), 1.0, scaling="seed_bug")
    for i, t in list(enumerate(sched.timesteps.tolist()))[::97]:
        ctx = loop.GuidanceContext(i, 1000, t, float(acp[t]), 1.0, torch.zeros(1, 3, 4, 4), sched, None, None)
        mirrored = float(acp[len(acp) - 1 - t])
        assert mirrored == pytest.approx(float(acp[i]))  # what the seed's loop-counter indexing reads
        ab = mirrored if hook.scaling == "seed_bug" else None
        assert LG.step_factor("seed_bug", ctx.alpha_bar, ab) == pytest.approx(math.sqrt(float(acp[i])))
    # backwards: full strength at the noisiest step, ~0 at the last
    assert LG.step_factor("seed_bug", float(acp[999]), float(acp[0])) > 0.99
    assert LG.step_factor("seed_bug", float(acp[0]), float(acp[999])) < 0.01


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    d = tmp_path_factory.mktemp("judge_toy")
    build_random_toy_sd(d / "toy-sd", d / "toy-clip")
    return load_toy_diffusion(d / "toy-sd", d / "toy-clip", torch.device("cpu"))


def test_colour_gradient_through_the_unet_matches_finite_differences(toy):
    """through_unet: ∇_{x_t} L(x̂0(x_t)) with ε re-predicted from x_t (seed 000's requires_grad_ before the UNet),
    against central differences of the same loss along random directions, float64."""
    model = toy
    model.unet.double()
    try:
        seen = {}

        def cond_fn(ctx):
            if ctx.index != 1:
                return None
            hook = LG.color_guidance((0.2, 0.8, 0.9), 1.0, scaling="none", through_unet=True)
            x = ctx.x_t.double()
            ctx_d = loop.GuidanceContext(ctx.index, ctx.num_steps, ctx.t, ctx.alpha_bar, ctx.c_in, x,
                                         ctx.scheduler, None, ctx.model, ctx.alpha, ctx.sigma,
                                         eps=ctx.eps.double(), pred_x0=ctx.pred_x0.double(), _predict=ctx._predict)
            out = hook(ctx_d)
            seen["grad"] = (ctx_d.x_t - out.x_t).detach()  # = 1 · 1 · ∇L
            target = LG.color_target((0.2, 0.8, 0.9), dtype=torch.float64)

            def loss(xx):
                with torch.no_grad():
                    img = ctx.predict(xx)[1]
                return float(LG.color_loss(img, target).sum())  # target inside (-1, 1): the straight-through clamp changes no sign

            rng = torch.Generator().manual_seed(0)
            fd, an = [], []
            for _ in range(4):
                d = torch.randn(x.shape, generator=rng, dtype=torch.float64)
                h = 1e-4
                fd.append((loss(x + h * d) - loss(x - h * d)) / (2 * h))
                an.append(float((seen["grad"] * d).sum()))
            seen["fd"], seen["an"] = fd, an
            return None

        latents = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        list(loop.sample_steps(model, "a red circle", num_inference_steps=4, guidance_scale=1.0, cond_fn=cond_fn,
                               latents=latents, generator=torch.Generator().manual_seed(0)))
        assert seen, "the hook did not run"
        np.testing.assert_allclose(seen["an"], seen["fd"], rtol=2e-3, atol=1e-6)
        # and it differs from the ε-held-fixed gradient (the UNet's Jacobian matters)
    finally:
        model.unet.float()


class ColourClip:
    """A CLIP that reads the mean colour: text "r"/"g"/"b" -> that axis; image -> its mean RGB (unit)."""

    image_size = 32

    def encode_text(self, prompts):
        axes = {"r": 0, "g": 1, "b": 2}
        return torch.eye(3)[[axes[p] for p in prompts]]  # [B, 3]

    def encode_image(self, x):
        return torch.nn.functional.normalize(((x + 1) / 2).mean(dim=(2, 3)) + 1e-3, dim=-1)


def test_clip_loss_with_one_prompt_per_image_equals_each_prompt_alone():
    """The judge's batched runs: image b is scored (and steered) towards prompt b only."""
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    batched = LG.ClipLoss(ColourClip(), ["r", "g", "b"], n_cutouts=0)(x)
    alone = torch.cat([LG.ClipLoss(ColourClip(), p, n_cutouts=0)(x[i:i + 1]) for i, p in enumerate("rgb")])
    assert torch.allclose(batched, alone) and not torch.allclose(batched, LG.ClipLoss(ColourClip(), "r", 0)(x))
    # the gradient of image b comes from its own prompt: pushing towards red raises image 0's red channel
    xg = x.clone().requires_grad_(True)
    grad = torch.autograd.grad(LG.ClipLoss(ColourClip(), ["r", "g", "b"], n_cutouts=0)(xg).sum(), xg)[0]
    assert [int(grad[b].mean(dim=(1, 2)).argmin()) for b in range(3)] == [0, 1, 2]
    with pytest.raises(ValueError, match="prompt"):
        LG.ClipLoss(ColourClip(), ["r", "  "])


def test_clip_settings_take_changes_on_top_of_a_preset():
    from pipelines import guidance_judge as J
    from pipelines import loss_guidance as LG

    assert J.clip_setting("one_pass") == LG.CLIP_PRESETS["one_pass"]
    changed = J.clip_setting("one_pass:recur=4+scale=0.2+guide_end=0.5")
    assert changed == LG.CLIP_PRESETS["default"] and LG.CLIP_PRESETS["one_pass"]["scale"] == 0.3  # preset untouched
    with pytest.raises(ValueError, match="cannot be changed"):
        J.clip_setting("default:tower=x")
    swapped = J.clip_setting("default:clip=robust+through_unet=0")
    assert swapped["clip"] == "toy-clip-robust (bundled)" and swapped["through_unet"] is False
    assert J.clip_setting("default:clip=toy-clip")["clip"] == "toy-clip (bundled)"
    with pytest.raises(ValueError, match="unknown preset"):
        J.clip_setting("seed")  # a colour preset, not a CLIP one
    seed = J.clip_setting("seed:scale=100", LG.COLOUR_PRESETS)
    assert seed == {**LG.COLOUR_PRESETS["seed"], "scale": 100.0} and LG.COLOUR_PRESETS["seed"]["scale"] == 40.0
