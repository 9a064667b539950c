"""Inside the model (issue 17): tokens, text features, the recording/editing attention processor, DAAM maps,
re-weighting and word swap, on a random toy model and a tiny random Stable Diffusion (no network)."""

from __future__ import annotations

import open_clip
import pytest
import torch
import torch.nn.functional as F

from pipelines import attention as A
from pipelines.attention import maps as M
from pipelines.diffusion import maths
from pipelines.diffusion.loop import sample
from pipelines.models import load_latent_hub, load_toy_diffusion
from pipelines.toyworld.unet_config import build_random_toy_sd
from tests.tiny_models import build_tiny_sd

PROMPT = "a red circle on a navy background"
STEPS = 4


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    d = tmp_path_factory.mktemp("toy_attention")
    build_random_toy_sd(d / "toy-sd", d / "toy-clip")
    return load_toy_diffusion(d / "toy-sd", d / "toy-clip", torch.device("cpu"))


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    folder = build_tiny_sd(tmp_path_factory.mktemp("sd_attention") / "tiny-sd")
    return load_latent_hub(str(folder), torch.device("cpu"), "tiny-sd")


def latents(model, seed=3):
    return maths.randn((1, *model.sample_shape), torch.Generator().manual_seed(seed), model.device, model.unet.dtype)


def plain(model, prompt=PROMPT, seed=3, w=4.0):
    return sample(model, prompt, num_inference_steps=STEPS, guidance_scale=w, latents=latents(model, seed),
                  generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------ tokens


@pytest.mark.parametrize("prompt", [PROMPT, "A Cyan  triangle, on a GRAY background!", "",
                                    "a very big cheerful red circle on a navy background with sparkles and a cat"])
def test_token_ids_equal_open_clip_tokenizer(toy, prompt):
    view = A.tokens(toy, prompt)
    ref = open_clip.get_tokenizer("toy-clip")([prompt])[0].tolist()
    assert view.ids == ref and [t.id for t in view.tokens] == ref and view.context_length == 16
    assert view.tokens[0].kind == "start" and view.tokens[view.end_index].id == 49407


def test_long_prompt_shows_its_cut_off(toy):
    words = "a red circle on a navy background " * 3
    view = A.tokens(toy, words)
    full = open_clip.get_tokenizer("toy-clip").encode(words)
    assert view.end_index == 15 and not [t for t in view.tokens if t.kind == "pad"]
    assert [t.id for t in view.words] + [t.id for t in view.cut] == full  # nothing dropped silently
    assert [t.text for t in view.cut][:3] == ["a", "red", "circle"] and all(t.position is None for t in view.cut)


def test_unseen_tokens_come_from_the_training_vocabulary(toy):
    view = A.tokens(toy, "a cyan dragon on a gray background")
    assert [t.text for t in view.unseen] == ["dragon"]
    assert [t.text for t in view.words[:3]] == ["a", "cy", "an"]  # cyan is two pieces, both seen
    assert A.find_tokens(view, "cyan") == [2, 3]


def test_a_model_trained_on_natural_captions_has_their_words_in_its_vocabulary(toy):
    import dataclasses

    prompt = "A tiny red star against a grey background, in front of it."
    assert [t.text for t in A.tokens(toy, prompt).unseen] == ["tiny", "against", "grey", ",", "in", "front", "of",
                                                                 "it", "."]
    natural = dataclasses.replace(toy, captions="natural")
    assert [t.text for t in A.tokens(natural, prompt).unseen] == ["it"]  # "it": only a held-out phrasing has it


def test_unseen_words_are_listed_once_in_prompt_order(toy, sd):
    assert A.unseen_words(toy, "a dragon, a red dragon!") == ["dragon", ",", "!"]
    assert A.unseen_words(toy, PROMPT) == []
    assert A.unseen_words(sd, "a dragon") == []  # a hub model's training vocabulary is unknown: nothing flagged


def test_sd_tokens_equal_its_tokenizer_and_context_77(sd):
    view = A.tokens(sd, PROMPT)
    ref = sd.tokenizer([PROMPT], padding="max_length", max_length=77, truncation=True).input_ids[0]
    assert view.ids == ref and view.context_length == 77 and view.words[1].text == "red"
    long = A.tokens(sd, "red " * 100)
    assert len(long.words) == 75 and len(long.cut) == 25 and long.ids[-1] == sd.tokenizer.eos_token_id


def test_causal_features_and_similarity(toy):
    sim, va, vb = A.similarity(toy, "a orange cross", "an orange cross")
    assert sim.shape == (5, 5)
    assert sim[0, 0] == pytest.approx(1.0, abs=1e-5)  # the start token: nothing before it differs
    assert (sim.diagonal()[1:] < 0.9999).all()  # every token at or after the difference changes
    f = A.features(toy, PROMPT)
    assert f.per_token.shape == (16, 64) and f.pooled.shape == (128,)
    assert torch.allclose(f.per_token, toy.encode_prompt([PROMPT])[0])
    near = A.nearest_captions(toy, PROMPT, k=3)
    assert len(near) == 3 and near[0][1] >= near[1][1] >= near[2][1]


# ------------------------------------------------------------------ the processor


@pytest.mark.parametrize("jit", ["1", "0"])
def test_recording_does_not_change_the_image(toy, monkeypatch, jit):
    monkeypatch.setenv("DL_JIT", jit)
    ref = plain(toy)
    run = A.run(toy, PROMPT, seed=3, steps=STEPS, guidance_scale=4.0, latents=latents(toy))
    assert (run.image - ref).abs().max() <= 1e-6
    assert run.record.steps == list(range(STEPS)) and sorted(run.record.layers) == sorted(M.cross_attention_layers(toy.unet))


def test_explicit_attention_equals_default_processor(toy):
    """The editing path (:func:`maps.attend`, the explicit softmax) against diffusers' default processor."""
    x, t = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)), torch.tensor(500)
    emb = torch.cat([toy.encode_prompt([""]), toy.encode_prompt([PROMPT])])
    with torch.no_grad():
        ref = toy.unet(x, t, encoder_hidden_states=emb, return_dict=False)[0]
        sess = M.Session(1, True, (32, 32), 9, record=False, control=A.Reweight([2], 1.0))
        with M.session(toy, sess):
            out = toy.unet(x, t, encoder_hidden_states=emb, return_dict=False)[0]
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)  # float32 rounding (a few ulps), not a change


def test_recorded_maps_are_the_layers_softmax(toy):
    """Step 0's recorded map of one layer against softmax(QKᵀ·scale) from the layer's own inputs (hooked)."""
    name = M.cross_attention_layers(toy.unet)[-1]
    layer = toy.unet.get_submodule(name)
    seen = []
    h = layer.register_forward_pre_hook(lambda m, a, kw: seen.append((a[0] if a else kw["hidden_states"],
                                                                      kw["encoder_hidden_states"])),
                                        with_kwargs=True)
    try:
        run = A.run(toy, PROMPT, seed=3, steps=1, guidance_scale=4.0)
    finally:
        h.remove()
    hs, enc = seen[0]
    n = hs.shape[1]
    side = int(n ** 0.5)
    q = layer.to_q(hs[1:]).view(1, n, layer.heads, -1).transpose(1, 2)  # conditional half, [1, heads, n, d]
    k = layer.to_k(enc[1:]).view(1, 16, layer.heads, -1).transpose(1, 2)
    probs = (q @ k.transpose(-1, -2) * layer.scale).softmax(-1)  # [1, heads, n, 16]
    ref = probs[..., :9].permute(0, 1, 3, 2).reshape(1, layer.heads, 9, side, side)  # rows of `side` = image rows
    got = run.record.maps[name][0].float()
    assert got.shape == ref.shape and (got - ref).abs().max() < 2e-3  # float16 storage


def test_maps_of_a_batch_survive_micro_batching(toy, monkeypatch):
    """A batch larger than the compute thread's micro-batch (UNet calls split into chunks) records every
    prompt's maps, equal to the runs one prompt at a time; editing sees the whole batch too."""
    prompts = [PROMPT, "a blue square on a white background", "a green star on a gray background"]
    monkeypatch.setenv("DL_MICRO_BATCH", "2")  # 3 prompts with CFG: 6 images per call
    lat = latents(toy).expand(3, -1, -1, -1)
    both = A.run(toy, prompts, steps=2, latents=lat)
    zero = A.run(toy, prompts, steps=2, latents=lat, control=A.Reweight([2], 0.0))
    for i, p in enumerate(prompts):
        one = A.run(toy, p, steps=2, latents=lat[:1])
        assert torch.allclose(both.heatmaps(i), one.heatmaps(0), atol=1e-3)
        assert float(zero.heatmaps(i)[2].max()) == 0  # the edit reached every prompt's conditional half


def test_daam_aggregation_against_hand_computation():
    rec = M.Record((8, 8), 2)
    g = torch.Generator().manual_seed(0)
    a = {s: torch.rand(1, 2, 2, 4, 4, generator=g).half() for s in range(3)}
    b = {s: torch.rand(1, 3, 2, 2, 2, generator=g).half() for s in range(3)}
    rec.maps, rec.sides = {"a": a, "b": b}, {"a": (4, 4), "b": (2, 2)}
    ups = []
    for per in (a, b):
        m = sum(per[s].float() for s in (1, 2))[0]  # sum over the steps, per head
        ups += list(F.interpolate(m, size=(8, 8), mode="bicubic", align_corners=False).clamp(min=0))
    want = torch.stack(ups).mean(0)  # mean over (layer, head)
    assert torch.allclose(M.aggregate(rec, steps=[1, 2]), want, atol=1e-6)
    assert torch.allclose(M.aggregate(rec, layers=["a"], steps=[0]),
                          F.interpolate(a[0][0].float(), size=(8, 8), mode="bicubic").clamp(min=0).mean(0), atol=1e-6)
    with pytest.raises(ValueError):
        M.aggregate(rec, steps=[7])


def test_relative_maps_are_daams_normalize_and_the_centred_reading():
    g = torch.Generator().manual_seed(1)
    maps, end = torch.rand(9, 8, 8, generator=g), 7  # start token, 6 words, end token, one pad
    daam = maps[:end + 1]  # DAAM keeps SOS, the words and one end/pad token, then divides by the words' sum
    daam = daam / (daam[1:-1].sum(0, keepdim=True) + 1e-6)
    assert torch.allclose(A.relative(maps, end, "share")[:end + 1], daam, atol=1e-5)
    assert torch.allclose(A.relative(maps, end, "share")[1:end].sum(0), torch.ones(8, 8), atol=1e-5)
    centred = A.relative(maps, end, "centred")
    assert torch.allclose(centred[1:end].mean(0), torch.zeros(8, 8), atol=1e-6)
    assert torch.allclose(centred[3] - centred[4], maps[3] - maps[4], atol=1e-6)
    assert torch.equal(A.relative(maps, end, "raw"), maps)
    with pytest.raises(ValueError, match="map mode"):
        A.relative(maps, end, "softmax")


def test_renormalised_zero_is_the_token_masked_out_of_the_softmax():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 4, 16, 9, generator=g)  # [B, heads, h·w, L]
    probs = logits.softmax(-1)
    A.Reweight([[2], [3, 4]], 0.0, renormalise=True).edit(probs, 0, True)
    masked = logits.clone()
    masked[0, ..., 2] = masked[1, ..., 3] = masked[1, ..., 4] = float("-inf")
    assert torch.allclose(probs, masked.softmax(-1), atol=1e-6)
    p2 = logits.softmax(-1)
    A.Reweight([2], 2.0, renormalise=False).edit(p2, 0, True)  # P2P: scaled, rows no longer sum to 1
    assert torch.allclose(p2[..., 2], 2 * logits.softmax(-1)[..., 2]) and not torch.allclose(p2.sum(-1), torch.ones(2, 4, 16))


def test_session_restores_processors_and_the_traced_path(toy):
    before = {k: type(v) for k, v in toy.unet.attn_processors.items()}
    A.run(toy, PROMPT, seed=1, steps=2)
    assert {k: type(v) for k, v in toy.unet.attn_processors.items()} == before
    calls = toy.unet.forward.traced_calls
    plain(toy)
    assert toy.unet.forward.traced_calls > calls


def test_memory_is_bounded_by_averaging_heads_then_thinning_steps(toy):
    full = A.run(toy, PROMPT, seed=3, steps=STEPS)
    per_step = full.record.nbytes // STEPS
    heads = next(iter(full.record.maps.values()))[0].shape[1]
    avg = A.run(toy, PROMPT, seed=3, steps=STEPS, max_bytes=full.record.nbytes - 1)
    assert avg.record.nbytes == full.record.nbytes // heads and avg.record.steps == list(range(STEPS))
    mean_ref = M.aggregate(full.record)  # heads averaged before upsampling: the same maps up to the clamp
    assert torch.allclose(M.aggregate(avg.record), mean_ref, atol=0.02 * float(mean_ref.max()))
    thin = A.run(toy, PROMPT, seed=3, steps=STEPS, max_bytes=per_step // heads * 2)
    assert thin.record.steps == [0, 2] and thin.record.nbytes <= per_step // heads * 2


# ------------------------------------------------------------------ control


def test_reweight_zero_removes_the_token_and_changes_the_image(toy):
    base = A.run(toy, PROMPT, seed=3, steps=STEPS)
    zero = A.run(toy, PROMPT, seed=3, steps=STEPS, control=A.Reweight([2], 0.0))
    assert all(float(m[:, :, 2].abs().max()) == 0 for per in zero.record.maps.values() for m in per.values())
    assert float(base.record.maps[zero.record.layers[0]][0][:, :, 2].max()) > 0
    assert (zero.image - base.image).abs().max() > 1e-3
    one = A.run(toy, PROMPT, seed=3, steps=STEPS, control=A.Reweight([2], 1.0))
    assert (one.image - base.image).abs().max() < 1e-4  # ×1 is the identity (explicit softmax vs SDPA rounding)


def test_reweight_and_every_later_token(toy):
    plain_run, edited = A.reweight(toy, PROMPT, "red", 0.0, and_after=True, seed=3, steps=2)
    for per in edited.record.maps.values():
        for m in per.values():
            assert float(m[:, :, 2:].abs().max()) == 0 and float(m[:, :, :2].min()) >= 0
            assert float(m[:, :, :2].max()) > 0  # start token and "a" are still read
    assert (plain_run.image - edited.image).abs().max() > 1e-3


def test_word_swap_injects_the_source_maps(toy):
    src, tgt = PROMPT, "a red square on a navy background"
    plain_run, inj = A.swap(toy, src, tgt, steps=STEPS, cross_fraction=1.0, self_fraction=0.5, seed=3)
    for per in inj.record.maps.values():
        for m in per.values():
            assert torch.equal(m[1], m[0])  # the target read the source's maps at every step
    some = next(iter(plain_run.record.maps.values()))[0]
    assert not torch.equal(some[1], some[0])
    assert torch.allclose(plain_run.image[0], inj.image[0], atol=1e-4)  # the source itself is untouched
    assert (plain_run.image[1] - inj.image[1]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="equally many tokens"):
        A.swap(toy, src, "a cyan circle on a navy background", steps=2)


def test_find_tokens_errors(toy):
    with pytest.raises(ValueError, match="not in the tokens"):
        A.find_tokens(A.tokens(toy, PROMPT), "dragon")


# ------------------------------------------------------------------ other models


def test_sd_maps_through_the_same_code_path(sd):
    ref = sample(sd, PROMPT, num_inference_steps=2, guidance_scale=4.0, latents=latents(sd),
                 generator=torch.Generator().manual_seed(3))
    run = A.run(sd, PROMPT, seed=3, steps=2, latents=latents(sd))
    assert (run.image - ref).abs().max() <= 1e-6
    assert run.record.tokens == 9 and set(run.record.sides.values()) == {(8, 8)}
    assert run.heatmaps().shape == (9, 16, 16)  # at the latent size


def test_unconditional_model_says_it_has_no_cross_attention():
    from diffusers import UNet2DModel

    from pipelines.models import DiffusionModel

    unet = UNet2DModel(sample_size=8, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(8, 16),
                       norm_num_groups=4, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"))
    m = DiffusionModel("cat", "pixel", unet, {"num_train_timesteps": 1000}, torch.device("cpu"))
    with pytest.raises(ValueError, match="no cross-attention"):
        A.run(m, "a cat")
    with pytest.raises(ValueError, match="no text encoder"):
        A.tokens(m, "a cat")


def test_render_judge_locates_the_shape():
    from pipelines.toyworld import world
    from pipelines.toyworld.render_judge import locate_by_rendering

    scenes = [world.Scene("square", "red", "navy", "medium", 0.42, 0.58, 0.3),
              world.Scene("circle", "cyan", "white", "large", 0.6, 0.45, 0.38)]
    found = locate_by_rendering(world.render_batch(scenes))
    for s, f in zip(scenes, found):
        assert f["shape"] == s.shape and f["mask"].shape == (32, 32)
        assert abs(f["centroid"][0] - s.cx * 32) < 1.0 and abs(f["centroid"][1] - s.cy * 32) < 1.0
        assert abs(float(f["mask"].sum()) - float(world.shape_coverage(s.shape, s.cx, s.cy, s.r).sum())) < 30
