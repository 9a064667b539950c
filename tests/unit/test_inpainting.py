"""pipelines.inpainting: kept pixels equal the input, edge cases (empty / full / mismatched
masks), the RePaint jump schedule equals diffusers' RePaintScheduler, resuming mid-run is exact,
resampling runs and changes the result, the 9-channel SD inpainting UNet is driven, SDEdit.

Every model is a tiny random one built from a small config and loaded through the real code.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from pipelines import sketch
from pipelines import masks
from pipelines import inpainting as ip
from pipelines.diffusion import loop
from pipelines.models import load_latent_hub, load_toy_diffusion
from pipelines.toyworld.unet_config import build_random_toy_sd
from tests.tiny_models import build_tiny_sd

CPU = torch.device("cpu")
PROMPT = "a yellow star on a navy background"


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    d = tmp_path_factory.mktemp("inp_toy")
    build_random_toy_sd(d / "toy-sd", d / "toy-clip")
    return load_toy_diffusion(d / "toy-sd", d / "toy-clip", CPU)


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    return load_latent_hub(str(build_tiny_sd(tmp_path_factory.mktemp("inp_sd"))), CPU, "tiny-sd")


def gen(seed=0):
    return torch.Generator("cpu").manual_seed(seed)


def image_u8(h=64, w=64, seed=0) -> torch.Tensor:
    """A random image that is exactly representable in 8 bits, [1, 3, h, w] in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (1, 3, h, w), generator=g).float() / 127.5 - 1.0


def box_mask(h=64, w=64, y0=16, y1=44, x0=20, x1=48) -> torch.Tensor:
    m = torch.zeros(1, 1, h, w)
    m[..., y0:y1, x0:x1] = 1
    return m


def max_outside_error(out, img, mask) -> float:
    keep = (mask < 0.5).expand_as(img)
    a = torch.from_numpy(sampling_u8(out)).float()
    b = torch.from_numpy(sampling_u8(img)).float()
    return float((a - b).abs()[keep.permute(0, 2, 3, 1)].max()) / 255.0


def sampling_u8(x):
    from pipelines.images import tensor_to_uint8

    return tensor_to_uint8(x)


# ------------------------------------------------------------------ the guarantee


@pytest.mark.parametrize("sampler,resamples", [("DDIM", 1), ("DDPM", 2), ("Euler", 2)])
def test_pixels_outside_the_mask_equal_the_input(toy, sampler, resamples):
    img, mask = image_u8(), box_mask()
    out = ip.inpaint(toy, img, mask, PROMPT, sampler=sampler, num_inference_steps=6, generator=gen(),
                     jump_length=2, resamples=resamples)
    assert out.shape == img.shape  # back at the input resolution (the model works at 32 px)
    assert max_outside_error(out, img, mask) <= 1 / 255
    inside = (mask > 0.5).expand_as(img)
    assert float((out - img).abs()[inside].mean()) > 0.05  # and inside, something was generated


def test_latent_model_keeps_pixels_outside_and_pools_the_mask(tiny_sd):
    img = image_u8(48, 40, seed=1)  # not the model's 32 px, not square
    mask = box_mask(48, 40, 10, 30, 8, 24)
    steps = list(ip.inpaint_steps(tiny_sd, img, mask, "a cat", num_inference_steps=4, generator=gen(),
                                  jump_length=2, resamples=2))
    assert steps[-1].image.shape == img.shape and steps[-1].model_image.shape == (1, 3, 32, 32)
    assert max_outside_error(steps[-1].image, img, mask) <= 1 / 255
    assert [s.index for s in steps] == list(range(steps[0].total))
    assert all(s.composite.shape == img.shape for s in steps)


def test_sd_inpainting_unet_gets_latents_mask_and_masked_image(tiny_sd):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)  # test fixture only: random 9-channel weights
    unet9 = UNet2DConditionModel.from_config({**tiny_sd.unet.config, "in_channels": 9}).eval().requires_grad_(False)
    seen = []
    unet9.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    model = dataclasses.replace(tiny_sd, unet=unet9)
    assert ip.is_inpainting_unet(model) and not ip.is_inpainting_unet(tiny_sd)
    img, mask = image_u8(32, 32, seed=2), box_mask(32, 32, 8, 24, 8, 24)
    out = ip.inpaint(model, img, mask, "a cat", num_inference_steps=3, guidance_scale=4.0, generator=gen())
    assert len(seen) == 3 and seen[0].shape == (2, 9, 16, 16)  # CFG batch of 2, 4 + 1 + 4 channels
    m_lat = seen[0][:, 4:5]
    assert set(m_lat.unique().tolist()) == {0.0, 1.0} and float(m_lat[..., 4:12, 4:12].min()) == 1.0
    expected = model.encode(img * (1 - mask))  # masked-image latents
    assert torch.allclose(seen[0][:1, 5:], expected, atol=1e-5)
    assert max_outside_error(out, img, mask) <= 1 / 255


# ------------------------------------------------------------------ edge cases


def test_empty_mask_is_refused_with_a_clear_message(toy):
    with pytest.raises(ValueError, match="mask is empty"):
        ip.inpaint(toy, image_u8(), torch.zeros(64, 64), PROMPT, num_inference_steps=3, generator=gen())
    with pytest.raises(ValueError, match="mask is empty"):  # values below the 0.5 threshold count as empty
        masks.prepare(image_u8(), torch.full((64, 64), 0.4))


def test_full_mask_is_plain_generation(toy):
    img = image_u8(32, 32)
    prep = masks.prepare(img, torch.ones(32, 32))
    assert prep.plain_generation and "plain text-to-image" in prep.notes[0]
    out = ip.inpaint(toy, img, torch.ones(32, 32), PROMPT, num_inference_steps=5, generator=gen(4))
    # DDIM with η = 0 draws only x_T: a full mask gives exactly the plain sample of the same seed
    plain = loop.sample(toy, PROMPT, num_inference_steps=5, guidance_scale=5.0, generator=gen(4))
    assert torch.allclose(out, plain, atol=1e-5)
    assert not masks.prepare(img, box_mask(32, 32, 0, 8, 0, 8)).plain_generation


def test_mask_of_another_size_is_reconciled_with_a_note(toy):
    img = image_u8(64, 64)
    small = box_mask(32, 32, 8, 22, 10, 24)  # half the size: resized (nearest) to the image
    prep = masks.prepare(img, small)
    assert prep.mask.shape == (1, 1, 64, 64) and "resized" in prep.notes[0]
    assert torch.equal(prep.mask, box_mask(64, 64, 16, 44, 20, 48))
    out = ip.inpaint(toy, img, small, PROMPT, num_inference_steps=4, generator=gen())
    assert out.shape == img.shape and max_outside_error(out, img, prep.mask) <= 1 / 255


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1, 0])
def test_bad_numbers_are_refused(toy, bad):
    with pytest.raises(ValueError):
        ip.inpaint(toy, image_u8(), box_mask(), PROMPT, num_inference_steps=4, resamples=bad, generator=gen())
    with pytest.raises(ValueError):
        ip.inpaint(toy, image_u8(), box_mask(), PROMPT, num_inference_steps=bad, generator=gen())


def test_bad_masks_are_refused():
    with pytest.raises(ValueError, match="NaN"):
        masks.prepare(image_u8(), torch.full((64, 64), float("nan")))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        masks.prepare(image_u8(), torch.full((64, 64), 2.0))
    with pytest.raises(ValueError, match="shape"):
        masks.prepare(image_u8(), torch.ones(2, 3, 64, 64))


def test_mask_from_paint_layers():
    a = np.zeros((20, 30, 4), np.uint8)
    a[5:10, 5:10] = (255, 0, 255, 140)  # translucent paint counts
    a[0, 0] = (255, 255, 255, 10)  # a faint anti-aliasing fringe does not
    b = np.zeros((10, 15, 4), np.uint8)  # a layer of another size is resized
    b[0:2, 0:2, 3] = 255
    m = masks.mask_from_layers([a, b])
    assert m.shape == (20, 30) and m.dtype == np.float32
    assert m[5:10, 5:10].min() == 1 and m[0:4, 0:4].min() == 1 and m[15:, 20:].max() == 0 and m.sum() == 25 + 16
    assert masks.mask_from_layers([], size=(4, 5)).sum() == 0


# ------------------------------------------------------------------ RePaint schedule and resampling


@pytest.mark.parametrize("n,j,r", [(20, 5, 3), (50, 10, 10), (10, 3, 2), (10, 4, 1)])
def test_walk_equals_diffusers_repaint_schedule(n, j, r):
    from diffusers import RePaintScheduler

    s = RePaintScheduler(num_train_timesteps=1000)
    s.set_timesteps(n, jump_length=j, jump_n_sample=r)
    theirs = [0] + [n - int(t) // (1000 // n) for t in s.timesteps]  # their t -> our position
    walk = ip.repaint_walk(n, j, r)
    ours = [0]  # diffusers lists a jump as single undo steps; we jump in one go (same distribution)
    for a, b in zip(walk, walk[1:]):
        ours += [b] if b == a + 1 else list(range(a - 1, b - 1, -1))
    assert ours == theirs
    assert ip.unet_calls(walk) == sum(1 for a, b in zip(theirs, theirs[1:]) if b > a)
    if r == 1:
        assert ip.repaint_walk(n, j, r) == list(range(n + 1))


@pytest.mark.parametrize("sampler", ["DDIM", "Euler", "DPM-Solver++"])
def test_resuming_mid_run_is_exact(toy, sampler):
    """What RePaint jumps rely on: restart the loop from a sample it produced (``loop.Start``), fresh scheduler."""
    emb = toy.encode_prompt([PROMPT])
    kw = dict(sampler=sampler, num_inference_steps=6, guidance_scale=3.0, prompt_embeds=emb, preview="none")
    recs = list(loop.sample_steps(toy, generator=gen(5), **kw))
    k = 2
    resumed = list(loop.sample_steps(toy, start=loop.Start(recs[k - 1].x_prev, k), **kw))
    assert len(resumed) == 6 - k
    assert [r.index for r in resumed] == list(range(k, 6)) and resumed[0].num_steps == 6
    assert torch.equal(resumed[0].x_t, recs[k].x_t)
    assert resumed[0].t == recs[k].t
    if sampler != "DPM-Solver++":  # a multistep solver restarts at first order: same start, other path
        assert torch.allclose(resumed[-1].image, recs[-1].image, atol=1e-5)


def test_renoise_jump_has_the_forward_statistics():
    from diffusers import DDIMScheduler

    s = DDIMScheduler()
    x = torch.full((1, 1, 200, 200), 0.5)
    a_from, a_to = 0.9, 0.3
    y = ip.renoise_jump(s, x, a_from, a_to, gen(1))
    ratio = a_to / a_from  # q(x_t' | x_t) = N(sqrt(ᾱ'/ᾱ) x_t, (1 - ᾱ'/ᾱ) I)
    assert abs(float(y.mean()) - ratio ** 0.5 * 0.5) < 0.01
    assert abs(float(y.std()) - (1 - ratio) ** 0.5) < 0.01


def test_resampling_runs_and_changes_the_result(toy):
    img, mask = image_u8(32, 32, seed=3), box_mask(32, 32, 8, 24, 8, 24)
    plain = ip.inpaint(toy, img, mask, PROMPT, num_inference_steps=6, generator=gen(7))
    steps = list(ip.inpaint_steps(toy, img, mask, PROMPT, num_inference_steps=6, generator=gen(7),
                                  jump_length=2, resamples=3, preview="none"))
    assert len(steps) == steps[0].total == ip.unet_calls(ip.repaint_walk(6, 2, 3)) == 6 + 2 * 2 * 2
    assert [s.position for s in steps] == [p for a, p in zip(ip.repaint_walk(6, 2, 3), ip.repaint_walk(6, 2, 3)[1:])
                                           if p > a]
    assert {s.phase for s in steps} == {"pass 1/3", "pass 2/3", "pass 3/3"}
    # the walk reaches the last step 3 times; only the very last UNet call carries the final image
    assert [s.index for s in steps if s.image is not None] == [len(steps) - 1]
    res = steps[-1].image
    inside = (mask > 0.5).expand_as(img)
    assert float((res - plain).abs()[inside].mean()) > 1e-3  # resampling changed the generated region
    assert max_outside_error(res, img, mask) <= 1 / 255
    again = ip.inpaint(toy, img, mask, PROMPT, num_inference_steps=6, generator=gen(7), jump_length=2, resamples=3)
    assert torch.equal(again, res)  # and it is deterministic given the seed


def test_too_much_resampling_is_refused(toy):
    with pytest.raises(ValueError, match="UNet calls"):
        ip.inpaint(toy, image_u8(), box_mask(), PROMPT, num_inference_steps=1000, jump_length=1, resamples=20)
    with pytest.raises(ValueError, match="jump length"):
        ip.inpaint(toy, image_u8(), box_mask(), PROMPT, num_inference_steps=5, jump_length=6, resamples=2)


# ------------------------------------------------------------------ SDEdit


def test_start_step_follows_strength():
    assert sketch.start_step(1.0, 40) == 0 and sketch.start_step(0.7, 40) == 12 and sketch.start_step(0.5, 10) == 5
    with pytest.raises(ValueError, match="no denoising step"):
        sketch.start_step(0.01, 40)
    with pytest.raises(ValueError):
        sketch.start_step(float("nan"), 40)


def test_sketch_strip_is_ordered_and_reproducible(toy):
    drawing = image_u8(64, 64, seed=9)
    strip = sketch.sketch_strip(toy, drawing, "a red circle", seed=3, strengths=(0.2, 1.0), num_inference_steps=10)
    assert [s for s, _ in strip] == [0.2, 1.0] and strip[0][1].shape == (1, 3, 32, 32)
    target = masks.resize(drawing, (32, 32))
    d_low, d_high = [float((img - target).abs().mean()) for _, img in strip]
    assert d_low < d_high  # low strength stays near the drawing
    single = sampling_final(sketch.sketch_steps(toy, drawing, "a red circle", strength=0.2, num_inference_steps=10,
                                            generator=gen(3)))
    assert torch.allclose(single, strip[0][1], atol=1e-6)


def sampling_final(records):
    rec = None
    for rec in records:
        pass
    return rec.image
