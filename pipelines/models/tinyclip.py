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
def text_token_features(model: torch.nn.Module, tokens: torch.Tensor,
                        key_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Per-token text features for cross-attention: ``[B, L]`` ids -> ``[B, L, width]``.

    The same computation as ``CLIP.encode_text`` up to ``ln_final``, before pooling and
    projection, i.e. what Stable Diffusion takes from its CLIP text encoder. ``key_weights``:
    see :func:`weighted_causal_mask` (None: the plain causal encoder).
    """
    return token_features(model, tokens, key_weights)


def weighted_causal_mask(causal: torch.Tensor, key_weights: torch.Tensor, heads: int) -> torch.Tensor:
    """The text tower's additive causal mask ``[L, L]`` with key j's attention from every *later* query
    i > j multiplied by ``key_weights[b, j]`` ``[B, L]`` (≥ 0; 1 = unchanged) -> ``[B·heads, L, L]``
    (``nn.MultiheadAttention``'s per-head mask layout).

    Adding log f to a logit multiplies that key's softmax weight by f before the row is re-summed:
    softmax(s + log f)_j = f e^{s_j} / (Σ_{k≠j} e^{s_k} + f e^{s_j}). So f = 0 removes the key from the
    context of later tokens (masked, as Compel's down-weighting masks a token in the encoder) and an
    integer f counts the key as if it stood f times in the context. A token's own row (i = j) and
    earlier rows are untouched."""
    b, n = key_weights.shape
    later = torch.ones(n, n, dtype=torch.bool, device=causal.device).tril(-1)  # [i, j]: i > j
    bias = torch.where(later, key_weights.to(causal.dtype).log()[:, None, :], torch.zeros((), dtype=causal.dtype))
    return (causal[:n, :n] + bias).repeat_interleave(heads, dim=0)  # [B·heads, L, L]


def token_features(model: torch.nn.Module, tokens: torch.Tensor,
                   key_weights: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`text_token_features` with gradients (for training the text tower)."""
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast_dtype)  # [B, L, width]
    x = x + model.positional_embedding[: tokens.shape[1]].to(cast_dtype)
    mask = model.attn_mask
    if key_weights is not None:
        mask = weighted_causal_mask(mask, key_weights.to(x.device), model.transformer.resblocks[0].attn.num_heads)
    x = model.transformer(x, attn_mask=mask)
    return model.ln_final(x)  # [B, L, width]


def load_image_tower(model: torch.nn.Module, path: str | Path) -> None:
    """Put the image tower stored at ``path`` (``visual.*`` weights, safetensors, any float dtype) into
    ``model.visual``, in place, as float32."""
    from safetensors.torch import load_file

    model.visual.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})


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
