"""The adversarially trained CLIP image tower: its PGD adversary and how the registry swaps the tower in."""

from __future__ import annotations

import open_clip
import torch
from safetensors.torch import save_file

from pipelines.models.registry import ClipModel, with_image_tower
from pipelines.models.tinyclip import CONFIG_PATH, normalize_for_clip, register
from pipelines.toyworld.train_robust_clip import l2_pgd


def test_pgd_stays_in_its_ball_and_raises_the_loss():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 8, 8, generator=g) * 1.6 - 0.8  # inside [-1, 1], so clamping does not bind
    target = torch.rand(4, 3, 8, 8, generator=g) * 2 - 1

    def loss(img):  # a smooth loss the adversary should raise: distance from a target
        return (img - target).pow(2).sum()

    eps = 0.5
    adv = l2_pgd(loss, x, eps, steps=5, generator=torch.Generator().manual_seed(1))
    dist = (adv - x).flatten(1).norm(dim=1)
    assert (dist <= eps + 1e-5).all()  # projected onto the per-image L2 ball
    assert (dist > 0.9 * eps).all()  # a linear-ish loss: the best move goes to the ball's edge
    assert loss(adv) > loss(x) + 0.5  # it ascends
    assert torch.equal(l2_pgd(loss, x, 0.0, 5, torch.Generator()), x)  # ε = 0: the clean images


def test_the_swapped_tower_is_used_and_the_original_clip_is_untouched(tmp_path):
    torch.manual_seed(0)  # test only: random weights
    name = register(CONFIG_PATH)
    model, _, _ = open_clip.create_model_and_transforms(name)
    clip = ClipModel(name, model.eval().requires_grad_(False), open_clip.get_tokenizer(name), 32,
                     torch.device("cpu"))
    other, _, _ = open_clip.create_model_and_transforms(name)  # other random weights
    save_file({k: v.contiguous() for k, v in other.visual.state_dict().items()}, tmp_path / "tower.safetensors")
    swapped = with_image_tower(clip, tmp_path / "tower.safetensors")
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    other_emb = torch.nn.functional.normalize(other.encode_image(normalize_for_clip(x, 32)), dim=-1)
    assert torch.allclose(swapped.encode_image(x), other_emb, atol=1e-5)
    assert not torch.allclose(clip.encode_image(x), other_emb, atol=1e-3)  # the shared model kept its tower
    assert torch.allclose(swapped.encode_text(["a red circle"]), clip.encode_text(["a red circle"]))
