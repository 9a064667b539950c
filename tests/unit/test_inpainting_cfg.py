"""CFG inside the 9-channel Stable Diffusion inpainting denoiser, checked against separate UNet calls.

The loop's own CFG is bypassed for the dedicated inpainting UNet (its denoiser hook does the
two passes), so the combination ε = ε_u + w (ε_c - ε_u) (Ho & Salimans 2022, eq. 6) is computed
here independently: the UNet's input at each step is recorded, the UNet is called once with the
prompt's and once with the negative prompt's embeddings, and the ε the step used must be the
combination, for several w (w = 1 is the conditional ε, w = 0 the unconditional one).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from pipelines import inpainting as ip
from pipelines.models import load_latent_hub
from tests.tiny_models import build_tiny_sd

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def sd9(tmp_path_factory):
    from diffusers import UNet2DConditionModel

    tiny = load_latent_hub(str(build_tiny_sd(tmp_path_factory.mktemp("cfg9_sd"))), CPU, "tiny-sd")
    torch.manual_seed(0)  # test fixture only: random 9-channel weights
    unet9 = UNet2DConditionModel.from_config({**tiny.unet.config, "in_channels": 9}).eval().requires_grad_(False)
    return dataclasses.replace(tiny, unet=unet9)


def image_and_mask():
    g = torch.Generator().manual_seed(2)
    img = torch.randint(0, 256, (1, 3, 32, 32), generator=g).float() / 127.5 - 1.0
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 8:24, 8:24] = 1
    return img, mask


@pytest.mark.parametrize("w", [0.0, 1.0, 4.0])
def test_inpainting_unet_eps_is_cfg_of_separate_passes(sd9, w):
    assert ip.is_inpainting_unet(sd9)
    assert sd9.scheduler_config.get("prediction_type", "epsilon") == "epsilon"  # UNet output is ε
    seen = []
    handle = sd9.unet.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    try:
        img, mask = image_and_mask()
        steps = list(ip.inpaint_steps(sd9, img, mask, "a cat", negative_prompt="a dog", num_inference_steps=3,
                                      guidance_scale=w, generator=torch.Generator().manual_seed(0), preview="none"))
    finally:
        handle.remove()
    assert len(steps) == 3
    calls = [s for s in seen if s.shape[0] <= 2]
    assert len(calls) == 3 and calls[0].shape[1] == 9
    cond, neg = sd9.encode_prompt(["a cat"]), sd9.encode_prompt(["a dog"])
    for step, inp in zip(steps, calls):
        x9 = inp[-1:]  # the conditional half (or the only one): latents, mask, masked-image latents
        t = torch.as_tensor(step.t)
        with torch.no_grad():
            eps_c = sd9.unet(x9, t, encoder_hidden_states=cond, return_dict=False)[0]
            eps_u = sd9.unet(x9, t, encoder_hidden_states=neg, return_dict=False)[0]
        expected = eps_u + w * (eps_c - eps_u)
        assert (eps_c - eps_u).abs().mean() > 1e-3  # the prompts make a difference, so w matters
        assert torch.allclose(step.record.pred_eps, expected, atol=1e-4), (w, step.index)
        assert torch.allclose(step.record.model_input, x9[:, :4], atol=1e-6)
