"""A noise-aware CLIP image tower for the toy world (toy-clip-noisy), as GLIDE's "noised CLIP".

Why: CLIP guidance differentiates a CLIP loss with respect to the image being denoised. toy-clip saw
only clean images, so on x_t (or on a blurry x̂0 early in sampling) its gradient points anywhere
that fools it: adversarial per-pixel noise. GLIDE (Nichol et al. 2022, sec. 2.4 and app. "CLIP
guidance") trains CLIP's image encoder on *noised* images x_t with the timestep t as an input, so
f(x_t, t) · g(c) is a meaningful score at every step and its gradient ∇_{x_t} steers.

The model: toy-clip's ViT image tower (initialised from toy-clip's weights) plus a timestep
embedding (sinusoidal, as the UNet's, then a 2-layer MLP, last layer zero-initialised so at the
start it is exactly toy-clip's tower) added to every patch token before ``ln_pre``. It shares
toy-clip's *text* tower (frozen) and embedding space, so a prompt's toy-clip text embedding is
what the image embedding is compared with. Only the image tower and the MLP are stored
(``assets/models/toy-clip-noisy/image_tower.safetensors`` + ``config.json``).

Images: x_t ``[B, 3, 32, 32]`` in the toy-sd model space (x0 in [-1, 1], x_t = sqrt(ᾱ_t) x0 +
sqrt(1 - ᾱ_t) ε, DDPM eq. 4, on toy-sd's schedule), t ``[B]`` integer timesteps in [0, 960).
"""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from diffusers.models.embeddings import get_timestep_embedding
from safetensors.torch import load_file, save_file
from torch import nn

from pipelines.models.tinyclip import ASSET_DIR, CONFIG_PATH, normalize_for_clip, register

NOISY_DIR = ASSET_DIR.parent / "toy-clip-noisy"
T_DIM = 64  # sinusoidal timestep features


class NoisyImageEncoder(nn.Module):
    """f(x_t, t): toy-clip's image tower with a timestep embedding added to its tokens.

    ``forward(x_t [B, 3, 32, 32], t [B] int) -> [B, D]`` unit-norm embeddings (differentiable in x_t).
    """

    def __init__(self, visual: nn.Module):
        super().__init__()
        self.visual = visual
        width = visual.class_embedding.shape[0]
        self.time_mlp = nn.Sequential(nn.Linear(T_DIM, width), nn.SiLU(), nn.Linear(width, width))
        nn.init.zeros_(self.time_mlp[2].weight)  # at init: exactly toy-clip's tower
        nn.init.zeros_(self.time_mlp[2].bias)
        size = visual.image_size
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        v = self.visual
        x = normalize_for_clip(x_t, self.image_size)  # the same affine map as toy-clip's input
        x = v.conv1(x).flatten(2).transpose(1, 2)  # [B, grid², width]
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)  # [B, 1 + grid², width]
        temb = self.time_mlp(get_timestep_embedding(t.flatten().float(), T_DIM, flip_sin_to_cos=True,
                                                    downscale_freq_shift=0).to(x.dtype))  # [B, width]
        x = v.ln_pre(x + temb[:, None])
        x = v.transformer(x)
        pooled, _ = v._pool(x)
        return F.normalize(pooled @ v.proj, dim=-1)


def build(clip_weights: Path | None = None) -> tuple[NoisyImageEncoder, nn.Module]:
    """A fresh encoder from toy-clip (``clip_weights``: its safetensors) and the toy-clip model itself."""
    name = register(CONFIG_PATH)
    clip, _, _ = open_clip.create_model_and_transforms(name)
    if clip_weights is not None:
        clip.load_state_dict(load_file(clip_weights))
    return NoisyImageEncoder(clip.visual), clip


def save(encoder: NoisyImageEncoder, folder: Path, dtype: torch.dtype = torch.float16, **info) -> None:
    """Weights (``dtype``) and a config naming the toy-clip whose text tower it pairs with."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().to(dtype).contiguous() for k, v in encoder.state_dict().items()},
              folder / "image_tower.safetensors")
    (folder / "config.json").write_text(json.dumps({"base": "toy-clip", "t_dim": T_DIM, **info}, indent=2))


def load(folder: Path = NOISY_DIR, device: torch.device | str = "cpu") -> NoisyImageEncoder:
    """The stored encoder, float32, frozen, in eval mode."""
    folder = Path(folder)
    if not (folder / "image_tower.safetensors").exists():
        raise FileNotFoundError(f"no noise-aware CLIP in {folder}; train it with "
                                "`python -m pipelines.toyworld.train_noisy_clip`")
    encoder, _ = build()
    encoder.load_state_dict({k: v.float() for k, v in load_file(folder / "image_tower.safetensors").items()})
    return encoder.requires_grad_(False).eval().to(device)
