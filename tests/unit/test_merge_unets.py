"""Merging a fine-tuned UNet with its start (pipelines/toyworld/merge_unets.py), on tiny random UNets from a config."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import DDIMScheduler, UNet2DConditionModel

from pipelines.toyworld import merge_unets

CONFIG = dict(block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=3, out_channels=3,
              down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
              up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=16, norm_num_groups=4,
              attention_head_dim=4)


def _model(folder, seed):
    torch.manual_seed(seed)  # test fixture only: two different random UNets of one architecture
    unet = UNet2DConditionModel(**CONFIG)
    unet.save_pretrained(folder / "unet")
    DDIMScheduler(prediction_type="v_prediction").save_pretrained(folder / "scheduler")
    return unet


def test_interpolation_ends_are_the_two_models_and_the_midpoint_their_mean():
    a = {"w": torch.tensor([0.0, 2.0]), "b": torch.tensor([[1.0]])}
    b = {"w": torch.tensor([4.0, -2.0]), "b": torch.tensor([[3.0]])}
    assert all(torch.equal(merge_unets.merge(a, b, 0.0)[k], a[k]) for k in a)
    assert all(torch.equal(merge_unets.merge(a, b, 1.0)[k], b[k]) for k in a)
    mid = merge_unets.merge(a, b, 0.25)
    assert torch.allclose(mid["w"], torch.tensor([1.0, 1.0])) and torch.allclose(mid["b"], torch.tensor([[1.5]]))


def test_mismatched_models_and_alpha_out_of_range_are_refused():
    a, b = {"w": torch.zeros(2)}, {"w": torch.zeros(3)}
    with pytest.raises(ValueError, match="shapes"):
        merge_unets.merge(a, b, 0.5)
    with pytest.raises(ValueError, match="differ"):
        merge_unets.merge(a, {"v": torch.zeros(2)}, 0.5)
    with pytest.raises(ValueError, match="alpha"):
        merge_unets.merge(a, a, 1.5)
    with pytest.raises(ValueError, match="no tensor"):
        merge_unets.merge(a, a, 0.5, ["attn2.to_k"])


def test_tuned_parts_take_the_fine_tuned_tensors_and_the_rest_follow_alpha():
    base = {"down.attn2.to_k.weight": torch.zeros(2), "down.attn1.to_k.weight": torch.zeros(2),
            "down.attn2.to_q.weight": torch.zeros(2)}
    tuned = {k: torch.ones(2) for k in base}
    out = merge_unets.merge(base, tuned, 0.0, ["attn2.to_k"])
    assert torch.equal(out["down.attn2.to_k.weight"], torch.ones(2))  # cross-attention key: the fine-tune's
    assert torch.equal(out["down.attn1.to_k.weight"], torch.zeros(2))  # self-attention key: the start's
    assert torch.equal(out["down.attn2.to_q.weight"], torch.zeros(2))


def test_built_unet_loads_reproduces_either_end_and_differs_from_both_in_between(tmp_path):
    """The written folder loads with diffusers; at α = 0 and 1 it reproduces the two models' outputs (fp32), and
    an intermediate α gives another network (a weight average is not an output average)."""
    base, tuned = _model(tmp_path / "base", 0), _model(tmp_path / "tuned", 1)
    x, t, emb = torch.randn(2, 3, 8, 8), torch.tensor([10, 500]), torch.randn(2, 4, 16)
    outs = {}
    for alpha in (0.0, 1.0, 0.5):
        out = tmp_path / f"mix{alpha}"
        merge_unets.main(["--base", str(tmp_path / "base"), "--tuned", str(tmp_path / "tuned"), "--alpha",
                          str(alpha), "--out", str(out), "--dtype", "float32"])
        unet = UNet2DConditionModel.from_pretrained(out / "unet").eval()
        assert (out / "scheduler" / "scheduler_config.json").exists()
        assert json.loads((out / "unet" / "config.json").read_text())["_name_or_path"] == f"merge_unets alpha={alpha:g}"
        with torch.no_grad():
            outs[alpha] = unet(x, t, encoder_hidden_states=emb).sample
    with torch.no_grad():
        want0 = base.eval()(x, t, encoder_hidden_states=emb).sample
        want1 = tuned.eval()(x, t, encoder_hidden_states=emb).sample
    assert torch.allclose(outs[0.0], want0, atol=1e-6) and torch.allclose(outs[1.0], want1, atol=1e-6)
    assert not torch.allclose(outs[0.5], want0, atol=1e-3) and not torch.allclose(outs[0.5], want1, atol=1e-3)
