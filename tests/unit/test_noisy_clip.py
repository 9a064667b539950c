"""The noise-aware CLIP image tower (pipelines/toyworld/noisy_clip.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pipelines.toyworld import noisy_clip
from pipelines.models.tinyclip import normalize_for_clip


def test_starts_as_toy_clips_image_tower_and_then_reads_the_timestep(tmp_path):
    torch.manual_seed(0)  # test only: random weights
    enc, clip = noisy_clip.build()  # random toy-clip weights: no download, no bundled file needed
    g = torch.Generator().manual_seed(1)
    x = torch.rand(4, 3, 32, 32, generator=g) * 2 - 1
    t = torch.tensor([0, 100, 500, 959])
    ref = F.normalize(clip.encode_image(normalize_for_clip(x, 32)), dim=-1)
    assert torch.allclose(enc(x, t), ref, atol=1e-6)  # zero-initialised time MLP: the same tower
    torch.nn.init.normal_(enc.time_mlp[2].weight, std=0.5)
    same_x = x[:1].expand(2, -1, -1, -1)
    out = enc(same_x, torch.tensor([0, 900]))
    assert (out[0] - out[1]).abs().max() > 1e-3  # now the timestep changes the embedding
    assert torch.allclose(out.norm(dim=-1), torch.ones(2), atol=1e-5)
    x_req = x.clone().requires_grad_(True)
    enc(x_req, t).sum().backward()
    assert x_req.grad is not None and x_req.grad.abs().sum() > 0  # differentiable in x_t: usable for guidance
    noisy_clip.save(enc, tmp_path)
    back = noisy_clip.load(tmp_path)
    assert all(v.dtype == torch.float32 for v in back.state_dict().values())
    assert torch.allclose(back(x, t), enc(x, t).detach(), atol=2e-2)  # stored in fp16
