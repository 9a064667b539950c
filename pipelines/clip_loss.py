"""CLIP losses for guidance: the great-circle distance, random cutouts, and the loss of an image (or a noised
image, GLIDE-style) to a prompt. :mod:`pipelines.loss_guidance` differentiates them.

``clip`` is a :class:`pipelines.models.ClipModel` (``encode_image`` on [-1, 1] images, differentiable;
``encode_text``; ``image_size``); images are ``[B, 3, H, W]`` in [-1, 1]; every loss returns ``[B]``.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from pipelines import validation

MAX_CUTOUTS = 64


def spherical_distance_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared great-circle distance between unit vectors, as in the seed: 2 · arcsin(‖a − b‖ / 2)².

    For unit a, b at angle θ, ‖a − b‖ = 2 sin(θ/2), so this is 2 (θ/2)² = θ²/2: half the squared
    geodesic distance on the unit sphere. arcsin of the chord is better behaved than arccos(a·b)
    near θ = 0. Inputs ``[..., D]`` (normalised here), broadcast; returns ``[...]``.
    """
    a = F.normalize(a, dim=-1)
    b = F.normalize(b, dim=-1)
    chord = (a - b).norm(dim=-1).clamp(max=2.0)
    return (chord / 2).asin().pow(2).mul(2)


def make_cutouts(images: torch.Tensor, n: int, cut_size: int, generator: torch.Generator | None = None,
                 min_frac: float = 0.75, flip: bool = True) -> torch.Tensor:
    """``n`` random square crops of each image, resized to ``cut_size`` and randomly flipped.

    Differentiable in ``images`` (crops and bilinear resizing). Each crop's side is a uniform
    fraction in [``min_frac``, 1] of the shorter side, at a uniform position; all images in the
    batch share a crop. Randomness comes only from ``generator`` (CPU), so a run repeats.

    Args:
        images: ``[B, 3, H, W]`` in [-1, 1].
    Returns:
        ``[n * B, 3, cut_size, cut_size]``, cutout-major (cutout j of image b at ``j * B + b``).
    """
    b, _, h, w = images.shape
    side = min(h, w)
    u = torch.rand(n, 4, generator=generator)  # [n, 4]: size, y, x, flip
    cuts = []
    for j in range(n):
        s = max(1, int(round(side * (min_frac + (1 - min_frac) * float(u[j, 0])))))
        y = int(float(u[j, 1]) * (h - s + 1)) if h > s else 0
        x = int(float(u[j, 2]) * (w - s + 1)) if w > s else 0
        c = images[:, :, y:y + s, x:x + s]
        c = F.interpolate(c, size=(cut_size, cut_size), mode="bilinear", align_corners=False,
                          antialias=s > cut_size)
        if flip and float(u[j, 3]) < 0.5:
            c = c.flip(-1)
        cuts.append(c)
    return torch.cat(cuts)  # [n * B, 3, S, S]


def _prompt_embeddings(clip, prompt: str | Sequence[str]) -> torch.Tensor:
    """One prompt (``[1, D]``, shared by the batch) or one per image (``[B, D]``), unit text embeddings."""
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    if not prompts or not all(str(p).strip() for p in prompts):
        raise ValueError("CLIP guidance needs a prompt to steer towards")
    return clip.encode_text([str(p) for p in prompts])


class ClipLoss:
    """Per-image CLIP loss: mean over ``n_cutouts`` cutouts of the spherical distance between
    the cutout's CLIP image embedding and the prompt's text embedding.

    ``clip`` is a :class:`pipelines.models.ClipModel` (``encode_image`` on [-1, 1] images,
    differentiable; ``encode_text``; ``image_size``). Call on ``[B, 3, H, W]`` in [-1, 1] ->
    ``[B]``. ``n_cutouts = 0`` scores the whole image once (deterministic).
    """

    def __init__(self, clip, prompt: str | Sequence[str], n_cutouts: int = 4,
                 generator: torch.Generator | None = None, min_frac: float = 0.75):
        self.clip = clip
        self.n = validation.integer("cutouts", n_cutouts, 0, MAX_CUTOUTS)
        self.generator = generator if generator is not None else torch.Generator("cpu").manual_seed(0)
        self.min_frac = float(min_frac)
        self.text = _prompt_embeddings(clip, prompt)  # [1 or B, D], unit

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        b = images.shape[0]
        if self.n == 0:
            emb = self.clip.encode_image(images)[None]  # [1, B, D]
        else:
            cuts = make_cutouts(images, self.n, self.clip.image_size, self.generator, self.min_frac)
            emb = self.clip.encode_image(cuts).view(self.n, b, -1)  # [n, B, D]
        return spherical_distance_loss(emb, self.text.to(emb.device)[None]).mean(0)  # [B]


class NoisyClipLoss:
    """Per-image CLIP loss of a *noised* image: the spherical distance between the noise-aware image
    tower's f(x_t, t) and the prompt's text embedding (GLIDE's noised CLIP; ``toyworld/noisy_clip.py``).

    ``encoder(x_t [B, 3, H, W], t [B]) -> [B, D]`` unit; ``clip`` the toy-clip whose text tower it pairs
    with. Call on (x_t ``[B, 3, H, W]`` in model space, t) -> ``[B]``; :class:`LossGuidance` then
    differentiates it in x_t directly, no x̂0 involved.
    """

    on_x_t = True

    def __init__(self, encoder, clip, prompt: str | Sequence[str]):
        self.encoder, self.text = encoder, _prompt_embeddings(clip, prompt)  # [1 or B, D], unit

    def __call__(self, x_t: torch.Tensor, t) -> torch.Tensor:
        tt = torch.as_tensor(t, device=x_t.device).flatten().expand(x_t.shape[0])  # [B]
        return spherical_distance_loss(self.encoder(x_t, tt), self.text.to(x_t.device))


@torch.no_grad()
def final_clip_loss(clip, images: torch.Tensor, prompt: str | Sequence[str]) -> torch.Tensor:
    """Spherical distance loss of whole images ``[B, 3, H, W]`` (no cutouts) to ``prompt`` (one, or one
    per image) -> ``[B]``."""
    return ClipLoss(clip, prompt, n_cutouts=0)(images)
