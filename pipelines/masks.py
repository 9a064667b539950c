"""Masks for inpainting: paint layers -> a binary mask (1 = replace), reconciled with the image; resizing.

Convention: ``mask`` ``[B|1, 1, H, W]`` in {0, 1}, **1 = the region to replace** (CS180's and diffusers'
inpainting convention; RePaint writes m for the known region).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

MASK_THRESHOLD = 0.5
LAYER_ALPHA_THRESHOLD = 0.1  # paint-layer alpha above this counts as painted (soft brush edges)


def mask_from_layers(layers: Sequence[np.ndarray], size: tuple[int, int] | None = None,
                     threshold: float = LAYER_ALPHA_THRESHOLD) -> np.ndarray:
    """Paint layers (``[H, W, 4]`` uint8 RGBA, e.g. an image editor's) -> mask ``[H, W]`` float32 in {0, 1}.

    A pixel is masked (1 = replace) where any layer's alpha exceeds ``threshold`` (0..1): the
    colour of the paint does not matter, only where it is. Layers of another size are resized
    (nearest) to the first layer's size, or to ``size = (H, W)`` when given. No layer -> all zeros
    of ``size`` (an empty mask; :func:`prepare` then refuses it with a clear message).
    """
    from PIL import Image

    layers = [np.asarray(a) for a in layers if a is not None]
    if not layers:
        if size is None:
            raise ValueError("No paint layer and no size given: paint over the region to replace.")
        return np.zeros(size, np.float32)
    h, w = size if size is not None else layers[0].shape[:2]
    out = np.zeros((h, w), np.float32)
    for a in layers:
        if a.ndim == 2:  # a gray layer: its brightness is the paint
            alpha = a.astype(np.float32) / (255.0 if a.dtype == np.uint8 else 1.0)
        elif a.ndim == 3 and a.shape[2] == 4:
            alpha = a[..., 3].astype(np.float32) / (255.0 if a.dtype == np.uint8 else 1.0)
        elif a.ndim == 3 and a.shape[2] in (1, 3):  # no alpha: non-black counts as paint
            alpha = a.astype(np.float32).max(axis=2) / (255.0 if a.dtype == np.uint8 else 1.0)
        else:
            raise ValueError(f"A paint layer must be HxW, HxWx3 or HxWx4; got shape {a.shape}.")
        if alpha.shape != (h, w):
            im = Image.fromarray((np.clip(alpha, 0, 1) * 255).astype(np.uint8), "L")
            alpha = np.asarray(im.resize((w, h), Image.Resampling.NEAREST), np.float32) / 255.0
        out = np.maximum(out, (alpha > threshold).astype(np.float32))
    return out


def _as_mask(mask, batch: int) -> torch.Tensor:
    """Any of ``[H, W]``, ``[1, H, W]``, ``[B, 1, H, W]`` (tensor or array) -> float ``[B|1, 1, H, W]``."""
    m = torch.as_tensor(np.asarray(mask) if not torch.is_tensor(mask) else mask).float()
    if m.ndim == 2:
        m = m[None, None]
    elif m.ndim == 3:
        m = m[:, None] if m.shape[0] == batch and batch > 1 else m[:1][None]
    if m.ndim != 4 or m.shape[1] != 1 or m.shape[0] not in (1, batch):
        raise ValueError(f"mask must be HxW, 1xHxW or Bx1xHxW (B = {batch}); got shape {tuple(m.shape)}")
    if not torch.isfinite(m).all():
        raise ValueError("The mask contains NaN or infinite values.")
    return m


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``[B, C, H, W]`` -> ``[B, C, *size]``: antialiased bilinear (down) / bicubic (up); identity if equal."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    up = size[0] >= x.shape[-2] and size[1] >= x.shape[-1]
    return F.interpolate(x, size=size, mode="bicubic" if up else "bilinear", antialias=not up,
                         align_corners=False)


def pool_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Binary mask ``[B, 1, H, W]`` -> ``[B, 1, *size]``: a cell is 1 if *any* pixel in it is
    (max-pool; nearest when upsizing). Conservative: nothing masked is ever kept."""
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask
    if size[0] >= mask.shape[-2] and size[1] >= mask.shape[-1]:
        return F.interpolate(mask, size=size, mode="nearest")
    return F.adaptive_max_pool2d(mask, size)


@dataclass
class Prepared:
    """An image and a mask made consistent: same batch, same size, mask binary.

    Attributes:
        image: ``[B, 3, H, W]`` in [-1, 1] (the input's resolution).
        mask: ``[B, 1, H, W]`` in {0, 1}, 1 = replace.
        coverage: fraction of pixels masked (mean over the batch).
        plain_generation: True when the whole image is masked (nothing is known).
        notes: what was changed, for the user (never changed silently).
    """

    image: torch.Tensor
    mask: torch.Tensor
    coverage: float
    plain_generation: bool
    notes: list[str] = field(default_factory=list)


def prepare(image: torch.Tensor, mask) -> Prepared:
    """Validate and reconcile an image ``[B, 3, H, W]`` in [-1, 1] and a mask (see :func:`_as_mask`).

    * A mask of another size is resized (nearest) to the image's, with a note.
    * The mask is binarised at :data:`MASK_THRESHOLD` (values must lie in [0, 1]).
    * An empty mask raises ``ValueError``; a full mask is flagged ``plain_generation``.
    """
    if image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(f"image must be [B, 3, H, W]; got shape {tuple(image.shape)}")
    if not torch.isfinite(image).all():
        raise ValueError("The image contains NaN or infinite values.")
    b, _, h, w = image.shape
    m = _as_mask(mask, b).to(image.device)
    notes = []
    if m.min() < 0 or m.max() > 1:
        raise ValueError(f"mask values must lie in [0, 1] (1 = replace); got {float(m.min()):g}..{float(m.max()):g}")
    if tuple(m.shape[-2:]) != (h, w):
        notes.append(f"The mask ({m.shape[-1]}×{m.shape[-2]} px) was resized to the image size ({w}×{h} px).")
        m = F.interpolate(m, size=(h, w), mode="nearest")
    m = (m > MASK_THRESHOLD).float().expand(b, 1, h, w).contiguous()
    per_image = m.flatten(1).sum(1)
    if (per_image == 0).any():
        raise ValueError("The mask is empty: paint over the region you want to replace (1 = replace) "
                         "before running inpainting.")
    full = bool((m > 0).all())
    if full:
        notes.append("The whole image is masked: nothing is kept, so this is plain text-to-image generation.")
    return Prepared(image, m, float(m.mean()), full, notes)
