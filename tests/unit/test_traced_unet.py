"""The traced UNet forward (pipelines/traced_unet.py): same numbers as eager, and it is really used.

(Its speed is a benchmark row, ``scripts/benchmark.py --only viewer``, never a test.)
"""

from __future__ import annotations

import copy

import pytest
import torch

from pipelines.diffusion import loop
from pipelines.models import traced_unet
from pipelines.models import TOY_CLIP_DIR, TOY_SD_DIR, load_toy_diffusion
from pipelines.toyworld.unet_config import build_random_toy_sd

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def bundled():
    return load_toy_diffusion(TOY_SD_DIR, TOY_CLIP_DIR, CPU)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    d = tmp_path_factory.mktemp("toy")
    build_random_toy_sd(d / "toy-sd", d / "toy-clip")
    return load_toy_diffusion(d / "toy-sd", d / "toy-clip", CPU)


def cfg_inputs(model, seed=0):
    """A CFG batch as the sampling loop makes it: x [2, C, H, W], 0-d int64 t, emb [2, L, D]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((1, *model.sample_shape), generator=g).repeat(2, 1, 1, 1)
    emb = torch.cat([model.encode_prompt([""]), model.encode_prompt(["a red circle on a navy background"])])
    return x, emb


def test_bundled_model_loads_with_the_traced_forward_and_matches_eager(bundled):
    fwd = bundled.unet.forward
    assert isinstance(fwd, traced_unet.TracedForward)
    x, emb = cfg_inputs(bundled)
    for t in (900, 500, 20):
        t = torch.tensor(t)
        before = fwd.traced_calls
        with torch.no_grad():
            out = bundled.unet(x, t, encoder_hidden_states=emb).sample
            ref = fwd.eager(x, t, encoder_hidden_states=emb).sample
        assert fwd.traced_calls == before + 1  # the graph ran, not the eager fallback
        assert out.shape == ref.shape == (2, 3, 32, 32)
        assert (out - ref).abs().max().item() <= 1e-5


def test_full_sample_equals_eager_sample(bundled, monkeypatch):
    def run():
        return loop.sample(bundled, "a green triangle on a white background", sampler="DDIM",
                               num_inference_steps=20, guidance_scale=5.0, generator=torch.Generator().manual_seed(7))

    fwd = bundled.unet.forward
    before = fwd.traced_calls
    traced = run()
    assert fwd.traced_calls == before + 20  # one CFG pass per step, all traced
    monkeypatch.setenv("DL_JIT", "0")
    eager = run()
    assert fwd.traced_calls == before + 20  # DL_JIT=0: eager everywhere
    assert (traced - eager).abs().max().item() <= 1e-5


def test_gradients_and_unusual_calls_run_eager(toy):
    fwd = toy.unet.forward
    x, emb = cfg_inputs(toy)
    t = torch.tensor(300)
    before = fwd.traced_calls
    x_req = x.clone().requires_grad_(True)
    out = toy.unet(x_req, t, encoder_hidden_states=emb).sample  # autograd on: CLIP guidance through the UNet
    out.square().mean().backward()
    assert x_req.grad is not None and x_req.grad.abs().sum() > 0
    with torch.no_grad():
        toy.unet(x, 300, encoder_hidden_states=emb)  # a Python-number timestep
        toy.unet(x, t, encoder_hidden_states=emb, cross_attention_kwargs=None)  # extra kwargs
        tup = toy.unet(x, t, encoder_hidden_states=emb, return_dict=False)  # traced, tuple out
    assert fwd.traced_calls == before + 1
    assert isinstance(tup, tuple) and tup[0].shape == x.shape


def test_graph_cache_is_bounded_and_copies_get_their_own(toy, monkeypatch):
    fwd = toy.unet.forward
    x, emb = cfg_inputs(toy)
    t = torch.tensor(100)
    with torch.no_grad():
        toy.unet(x, t, encoder_hidden_states=emb)
        monkeypatch.setattr(traced_unet, "MAX_GRAPHS", len(fwd._graphs))  # noqa: SLF001 - full now
        before = fwd.traced_calls
        x4, emb4 = torch.cat([x, x]), torch.cat([emb, emb])  # a new signature: batch 4
        out4 = toy.unet(x4, t, encoder_hidden_states=emb4).sample
        assert fwd.traced_calls == before  # past the cap: eager, still correct
        assert (out4[:2] - toy.unet(x, t, encoder_hidden_states=emb).sample).abs().max().item() <= 1e-5

    twin = copy.deepcopy(toy.unet)
    assert isinstance(twin.forward, traced_unet.TracedForward)
    assert twin.forward.unet is twin and twin.forward is not fwd
    assert twin.forward._graphs == {}  # noqa: SLF001


def test_after_a_weight_change_clear_retraces_with_the_new_weights(toy):
    x, emb = cfg_inputs(toy)
    t = torch.tensor(200)
    unet, fwd = toy.unet, toy.unet.forward
    saved = {k: v.clone() for k, v in unet.state_dict().items()}
    try:
        with torch.no_grad():
            before = unet(x, t, encoder_hidden_states=emb).sample  # traces this signature
            unet.conv_out.bias.add_(1.0)  # the output's last op: every output value moves by +1
            fwd.clear()
            assert fwd._graphs == {}  # noqa: SLF001 - the old graph (whose constants may be stale) is gone
            calls = fwd.traced_calls
            after = unet(x, t, encoder_hidden_states=emb).sample
            eager = fwd.eager(x, t, encoder_hidden_states=emb).sample
        assert fwd.traced_calls == calls + 1 and len(fwd._graphs) == 1  # noqa: SLF001 - traced anew
        assert (after - eager).abs().max().item() <= 1e-5
        assert (after - before - 1.0).abs().max().item() <= 1e-5
    finally:
        unet.load_state_dict(saved)
        fwd.clear()


def test_scalar_and_per_sample_timesteps_share_one_graph(toy):
    """A call alone passes a 0-d timestep; the same call stacked with other requests' calls passes per-sample
    timesteps [B] (compute_thread.batched). Both must run one traced graph with the same output, or the first
    stacked call of each shape traces anew inside a turn (a 1-2 s hold, scripts/abuse.py --only latency)."""
    fwd = copy.deepcopy(toy.unet).forward  # an empty graph cache of its own
    x, emb = cfg_inputs(toy)
    with torch.no_grad():
        scalar = fwd(x, torch.tensor(500), encoder_hidden_states=emb, return_dict=False)[0]
        per_sample = fwd(x, torch.tensor([500, 500]), encoder_hidden_states=emb, return_dict=False)[0]
    assert len(fwd._graphs) == 1
    assert torch.equal(scalar, per_sample)
