"""The bundled tiny CLIP: an open_clip model built from a custom config (``toy-clip``).

The config JSON lives beside the weights in ``assets/models/toy-clip/`` and is registered
with open_clip by :func:`register`, after which the ordinary open_clip calls work::

    model, _, preprocess = open_clip.create_model_and_transforms("toy-clip", pretrained=path)
    tokenizer = open_clip.get_tokenizer("toy-clip")   # open_clip's bundled BPE, 16 tokens

Vision tower: ViT, 32x32 input, patch 4, width 128, 4 layers. Text tower: width 64,
3 layers, context 16. Joint embedding: 128-d.
"""

from __future__ import annotations

from pathlib import Path

import open_clip
import torch

CLIP_NAME = "toy-clip"
ASSET_DIR = Path(__file__).resolve().parents[2] / "assets" / "models" / "toy-clip"
CONFIG_PATH = ASSET_DIR / f"{CLIP_NAME}.json"
WEIGHTS_PATH = ASSET_DIR / "open_clip_model.safetensors"

# open_clip's normalisation constants (OPENAI_DATASET_MEAN/STD), used by every CLIP here.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def register(config_path: Path = CONFIG_PATH) -> str:
    """Register the custom config with open_clip (idempotent); returns the model name."""
    if Path(config_path).stem not in open_clip.list_models():
        open_clip.add_model_config(Path(config_path))
    return Path(config_path).stem


@torch.no_grad()
def text_token_features(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Per-token text features for cross-attention: ``[B, L]`` ids -> ``[B, L, width]``.

    The same computation as ``CLIP.encode_text`` up to ``ln_final``, before pooling and
    projection, i.e. what Stable Diffusion takes from its CLIP text encoder.
    """
    return token_features(model, tokens)


def token_features(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """:func:`text_token_features` with gradients (for training the text tower)."""
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast_dtype)  # [B, L, width]
    x = x + model.positional_embedding[: tokens.shape[1]].to(cast_dtype)
    x = model.transformer(x, attn_mask=model.attn_mask)
    return model.ln_final(x)  # [B, L, width]


def normalize_for_clip(x: torch.Tensor, size: int) -> torch.Tensor:
    """Images ``[B, 3, H, W]`` in [-1, 1] -> CLIP input ``[B, 3, size, size]``, normalised.

    Differentiable (used by CLIP guidance); bicubic resize when the size differs.
    """
    x = (x + 1) / 2
    if x.shape[-1] != size or x.shape[-2] != size:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)
    mean = torch.tensor(CLIP_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std
