"""Re-weighting a word where the causal text encoder reads it (issue 17): the key weights in toy-clip's
text tower (:func:`pipelines.models.tinyclip.weighted_causal_mask`) and the runs built on them."""

from __future__ import annotations

import pytest
import torch

from pipelines import attention as A
from pipelines.diffusion import maths
from pipelines.models import load_latent_hub, load_toy_clip, load_toy_diffusion, toy_clip_config
from pipelines.toyworld.unet_config import build_random_toy_sd
from tests.tiny_models import build_tiny_sd

PROMPT = "a red circle on a navy background"
STEPS = 3


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    d = tmp_path_factory.mktemp("toy_encoder")
    build_random_toy_sd(d / "toy-sd", d / "toy-clip")
    clip = load_toy_clip(d / "toy-clip" / "open_clip_model.safetensors", toy_clip_config(d / "toy-clip"), "cpu")
    return clip, load_toy_diffusion(d / "toy-sd", d / "toy-clip", torch.device("cpu"), clip=clip)


def _weights(n, pos, f):
    w = torch.ones(1, n)
    w[0, pos] = f
    return w


def test_weight_one_everywhere_is_the_plain_encoder(parts):
    _, toy = parts
    plain = toy.encode_prompt([PROMPT])
    ones = toy.encode_weighted([PROMPT], torch.ones(1, plain.shape[1]))
    assert torch.allclose(ones, plain, atol=1e-6, rtol=0)


def test_zero_removes_the_word_from_the_context_of_later_tokens(parts):
    """×0 on key p: rows ≤ p unchanged; rows after p equal an independent computation, the causal tower run
    on the embedded sequence with row p deleted (open_clip's text tower has no relative positions: a
    token's position lives in its input row, so deleting the row removes the word and keeps the others'
    positions)."""
    clip, toy = parts
    m = clip.model
    view = A.tokens(toy, PROMPT)
    p = A.find_token(view, "red")
    ids = clip.tokenizer([PROMPT])
    n = ids.shape[1]
    edited = toy.encode_weighted([PROMPT], _weights(n, p, 0.0))[0]
    plain = toy.encode_prompt([PROMPT])[0]
    assert torch.allclose(edited[: p + 1], plain[: p + 1], atol=1e-6, rtol=0)  # causal: before the word, and itself
    assert (edited[p + 1:] - plain[p + 1:]).abs().max() > 1e-3  # the later tokens did read it
    with torch.no_grad():
        x = m.token_embedding(ids) + m.positional_embedding[:n]  # [1, L, D]
        kept = torch.cat([x[:, :p], x[:, p + 1:]], dim=1)  # the word's row deleted
        causal = torch.full((n - 1, n - 1), float("-inf")).triu(1)
        ref = m.ln_final(m.transformer(kept, attn_mask=causal))[0]  # [L-1, D]
    assert torch.allclose(edited[p + 1:], ref[p:], atol=1e-5, rtol=0)


def test_the_mask_scales_the_softmax_weight_of_the_key():
    """softmax(s + log f)_j = f e^{s_j} / Σ_k f_k e^{s_k} for a later query, unchanged on and above the diagonal."""
    from pipelines.models.tinyclip import weighted_causal_mask

    n, f, j = 5, 2.0, 1
    causal = torch.full((n, n), float("-inf")).triu(1)
    w = torch.ones(1, n)
    w[0, j] = f
    mask = weighted_causal_mask(causal, w, heads=2)
    assert mask.shape == (2, n, n) and torch.equal(mask[0], mask[1])
    s = torch.randn(n, n)
    got = torch.softmax(s + mask[0], -1)
    e = s.exp() * torch.ones(n, n).tril()  # causal
    scale = torch.ones(n, n)
    scale[j + 1:, j] = f
    assert torch.allclose(got, e * scale / (e * scale).sum(-1, keepdim=True), atol=1e-6)


def test_runs_with_the_encoder_side(parts):
    _, toy = parts
    lat = maths.randn((1, *toy.sample_shape), torch.Generator().manual_seed(2), toy.device, toy.unet.dtype)
    kw = dict(steps=STEPS, latents=lat, record=False)
    pos = A.find_tokens(A.tokens(toy, PROMPT), "red")
    plain = A.run(toy, PROMPT, **kw).image
    ones = A.run(toy, PROMPT, control=A.Reweight(pos, 1.0, encoder=True), **kw).image
    unet_ones = A.run(toy, PROMPT, control=A.Reweight(pos, 1.0), **kw).image
    assert torch.allclose(ones, unet_ones, atol=1e-6, rtol=0)  # ×1 in the encoder adds nothing
    assert torch.allclose(ones, plain, atol=1e-4, rtol=0)  # the UNet's explicit softmax vs SDPA: rounding only
    unet_only = A.run(toy, PROMPT, control=A.Reweight(pos, 0.0), **kw).image
    both = A.run(toy, PROMPT, control=A.Reweight(pos, 0.0, encoder=True), **kw).image
    assert (both - unet_only).abs().max() > 1e-4  # the later tokens no longer carry the word


def test_encoder_side_refused_where_the_encoder_does_not_offer_it(tmp_path):
    sd = load_latent_hub(str(build_tiny_sd(tmp_path / "tiny-sd")), torch.device("cpu"), "tiny-sd")
    with pytest.raises(ValueError, match="UNet cross-attention only"):
        A.reweight(sd, PROMPT, "red", 0.0, encoder=True, steps=2)
