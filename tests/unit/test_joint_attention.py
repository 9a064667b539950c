"""Joint-attention maps of an SD3-style transformer (issue 18, item 3): the text→image block of the attention
matrix, recorded by the same dispatch processor on the one loop, on a tiny random SD3 built from configs."""

from __future__ import annotations

import math

import pytest
import torch

from pipelines import attention as A
from pipelines.attention import maps as M
from pipelines.diffusion import maths
from pipelines.diffusion.loop import sample
from tests.unit.test_sd3_loop import tiny  # noqa: F401  (the fixture: a random SD3 loaded by load_toy_sd3)

PROMPT = "a red circle on a navy background"


def _latents(model, seed=1):
    return maths.randn((1, *model.sample_shape), torch.Generator().manual_seed(seed), model.device, model.unet.dtype)


def test_recording_does_not_change_the_image(tiny):  # noqa: F811
    ref = sample(tiny, PROMPT, num_inference_steps=3, guidance_scale=4.0, latents=_latents(tiny),
                 generator=torch.Generator().manual_seed(1))
    run = A.run(tiny, PROMPT, steps=3, guidance_scale=4.0, latents=_latents(tiny))
    assert (run.image - ref).abs().max() <= 1e-6
    assert sorted(run.record.layers) == sorted(M.cross_attention_layers(tiny.unet)) == \
        [f"transformer_blocks.{i}.attn" for i in range(len(tiny.unet.transformer_blocks))]
    h, w = tiny.sample_shape[1:]
    p = tiny.unet.config.patch_size
    assert set(run.record.sides.values()) == {(h // p, w // p)} and run.record.steps == [0, 1, 2]
    assert run.heatmaps().shape == (run.views[0].end_index + 1, h, w)


def test_recorded_probabilities_equal_a_hand_computation_from_q_and_k(tiny):  # noqa: F811
    """Block 0: Q and K as the original processor projected them (forward hooks on its linear layers),
    softmax(Q Kᵀ/√d) over the [image; text] keys by hand; the record holds its image-rows × text-columns."""
    name = "transformer_blocks.0.attn"
    attn = tiny.unet.get_submodule(name)
    assert attn.norm_q is None and attn.norm_added_q is None  # toy config: no q/k norm, so Q, K are the projections
    seen = {}
    hooks = [getattr(attn, k).register_forward_hook(lambda m, i, o, k=k: seen.setdefault(k, o))
             for k in ("to_q", "to_k", "add_q_proj", "add_k_proj")]
    emb = tiny.encode_prompt([PROMPT])
    x = _latents(tiny)
    view = A.tokens(tiny, PROMPT)
    sess = M.Session(1, False, tiny.sample_shape[1:], view.end_index + 1)
    try:
        with torch.no_grad(), M.session(tiny, sess):
            tiny.predict(x, torch.tensor(700.0), emb)
    finally:
        for hk in hooks:
            hk.remove()
    heads = attn.heads
    split = lambda t: t.view(1, t.shape[1], heads, -1).transpose(1, 2)  # noqa: E731  [1, heads, T, d]
    q = torch.cat([split(seen["to_q"]), split(seen["add_q_proj"])], 2)
    k = torch.cat([split(seen["to_k"]), split(seen["add_k_proj"])], 2)
    n = seen["to_q"].shape[1]
    probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), -1)  # [1, heads, N+L, N+L]
    block = probs[0, :, :n, n:]  # image queries × text keys, [heads, N, L]
    h, w = sess.record.sides[name]
    assert h * w == n
    rec = sess.record.maps[name][0][0].float()  # [heads, T, h, w]
    t = rec.shape[1]
    want = block[:, :, :t].permute(0, 2, 1).reshape(heads, t, h, w)  # token j's column on the patch grid
    torch.testing.assert_close(rec, want, atol=1e-3, rtol=1e-2)  # float16 storage
    assert float(block.sum(-1).max()) < 1.0  # the rest of each row went to image keys


def test_editing_joint_attention_is_refused_clearly(tiny):  # noqa: F811
    with pytest.raises(ValueError, match="not offered for joint attention"):
        A.reweight(tiny, PROMPT, "red", 0.0, steps=2)
