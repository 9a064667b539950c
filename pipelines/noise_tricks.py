"""Noise tricks: visual anagrams and hybrid images, as ε-combiners on the one sampling loop.

Both come from CS180 project 5 (the DeepFloyd part): at every step the model's noise estimate is
taken for several (prompt, view) pairs and combined before the scheduler steps.

* **Visual anagram** (Geng et al. 2024): ε = ½ [ε_A(x_t) + V⁻¹ ε_B(V x_t)], each term with its own
  CFG; the result reads as prompt A upright and as prompt B under the view V.
* **Hybrid image** (Geng et al.'s factorised diffusion): ε = lowpass(ε_A) + highpass(ε_B), with
  highpass = 1 − lowpass (a Gaussian blur); far away (small, blurred) it reads as A, close up as B.

A combiner is called by :class:`pipelines.diffusion.loop.Predictor` in place of the model + CFG:
``combiner(predict, x_in, t) -> model output``, where ``predict(x_in, emb)`` is one model pass.

Why the combination can be done on the model's raw output (ε, v, x0 or flow velocity) rather than
on ε: every prediction type is affine in (ε, x) with the step's fixed coefficients, e.g.
v = (ε − σ x)/α (:func:`pipelines.diffusion.maths.from_eps`), and every view here is linear and
orthogonal (a flip, a 90° rotation and a negation permute or negate pixels, so V ε is still unit
Gaussian noise and V⁻¹ of the output for V x is the output for x). Averaging with weights that sum
to 1, and lowpass + highpass = identity, then commute with the conversion:
mean_k V_k⁻¹ v_k = (mean_k V_k⁻¹ ε_k − σ x)/α, and lp(v_A) + hp(v_B) = (lp(ε_A) + hp(ε_B) − σ x)/α
because lp(x) + hp(x) = x. So one combiner serves toy-sd (v-pred), SD (ε) and flow models alike,
and with a single identity term it *is* the loop's CFG, bit for bit.
For latent models the views act on the latents: flips and rotations of SD latents are roughly
flips and rotations of the picture, but negating latents is not colour negation.
Never imports gradio.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from pipelines import validation
from pipelines.diffusion import maths

Predict = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_in [N,C,h,w], emb [N,L,D]) -> out

# name -> (view, inverse view) on [B, C, h, w]; each inverse is exact (pure index maps or a sign).
VIEWS: dict[str, tuple[Callable, Callable]] = {
    "identity": (lambda x: x, lambda x: x),
    "flip": (lambda x: torch.flip(x, dims=[-2]), lambda x: torch.flip(x, dims=[-2])),  # upside down
    "rotate90": (lambda x: torch.rot90(x, 1, dims=(-2, -1)), lambda x: torch.rot90(x, -1, dims=(-2, -1))),
    "negate": (lambda x: -x, lambda x: -x),  # colour negation of an image in [-1, 1]
}
VIEW_LABELS = {"identity": "as is", "flip": "upside down", "rotate90": "rotated 90°", "negate": "colours negated"}
MAX_SIGMA = 16.0


def view(name: str) -> tuple[Callable, Callable]:
    """The (view, inverse) pair called ``name`` (one of :data:`VIEWS`)."""
    if name not in VIEWS:
        raise ValueError(f"unknown view {name!r}; choose one of {', '.join(VIEWS)}")
    return VIEWS[name]


def gaussian_kernel(sigma: float, kernel_size: int | None = None) -> torch.Tensor:
    """1-D normalised Gaussian ``[k]``; k defaults to 2·ceil(3σ)+1 (odd)."""
    k = int(kernel_size) if kernel_size else 2 * math.ceil(3 * sigma) + 1
    if k < 1 or k % 2 == 0:
        raise ValueError(f"the blur kernel size must be a positive odd number, got {k}")
    r = torch.arange(k, dtype=torch.float64) - (k - 1) / 2
    g = torch.exp(-0.5 * (r / sigma) ** 2)
    return (g / g.sum()).float()


def lowpass(x: torch.Tensor, sigma: float, kernel_size: int | None = None) -> torch.Tensor:
    """Separable Gaussian blur of ``[B, C, h, w]`` (reflect padding); σ = 0 returns x unchanged."""
    if sigma <= 0:
        return x
    g = gaussian_kernel(sigma, kernel_size).to(x.device, x.dtype)
    k, c = g.numel(), x.shape[1]
    pad = min(k // 2, x.shape[-1] - 1, x.shape[-2] - 1)
    if k // 2 > pad:  # a kernel wider than the image: crop it (reflect padding needs pad < side)
        g = g[k // 2 - pad: k // 2 + pad + 1]
        g = g / g.sum()
    y = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    y = F.conv2d(y, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)  # along w
    return F.conv2d(y, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)  # along h


@dataclass
class Term:
    """One (prompt, view) pair: its encoded text ``cond`` / ``uncond`` ``[1, L, D]`` and CFG scale w."""

    prompt: str
    view: str
    guidance_scale: float
    cond: torch.Tensor
    uncond: torch.Tensor | None


class NoiseCombiner:
    """The ε-combining hook: ``mode`` ``"mean"`` (anagram; one term with the identity view is plain CFG)
    or ``"hybrid"`` (lowpass of term 0 + highpass of term 1, Gaussian σ / kernel size).

    ``batch`` images are drawn; all terms run as one model batch [uncond_0, cond_0, uncond_1, ...] per
    view (with one term it is exactly the loop's [uncond, cond] batch). ``last`` keeps each term's
    combined-back output of the latest step (for display)."""

    def __init__(self, terms: list[Term], mode: str = "mean", sigma: float = 2.0, kernel_size: int | None = None,
                 batch: int = 1):
        if mode not in ("mean", "hybrid"):
            raise ValueError(f"mode must be 'mean' or 'hybrid', got {mode!r}")
        if not terms or (mode == "hybrid" and len(terms) != 2):
            raise ValueError("an anagram needs at least one (prompt, view) term; a hybrid exactly two")
        self.terms, self.mode, self.batch = terms, mode, int(batch)
        self.sigma = validation.number("blur sigma", sigma, 0.0, MAX_SIGMA)
        self.kernel_size = kernel_size
        if self.sigma > 0:
            gaussian_kernel(self.sigma, kernel_size)  # refuse a bad kernel size now, not mid-run
        self.last: list[torch.Tensor] = []

    def __call__(self, predict: Predict, x_in: torch.Tensor, t) -> torch.Tensor:
        """x_in ``[B, C, h, w]`` (the model's input) -> the combined model output ``[B, C, h, w]``."""
        b = x_in.shape[0]
        xs, embs = [], []
        for term in self.terms:
            xv = view(term.view)[0](x_in)
            cfg = term.uncond is not None and term.guidance_scale != 1.0
            xs += [xv, xv] if cfg else [xv]
            embs += ([term.uncond.expand(b, -1, -1)] if cfg else []) + [term.cond.expand(b, -1, -1)]
        out = predict(torch.cat(xs), torch.cat(embs)).chunk(len(xs))
        outs, i = [], 0
        for term in self.terms:
            if term.uncond is not None and term.guidance_scale != 1.0:
                o, i = maths.cfg_combine(out[i], out[i + 1], term.guidance_scale), i + 2  # Ho & Salimans eq. 6
            else:
                o, i = out[i], i + 1
            outs.append(view(term.view)[1](o))  # back to x_t's frame
        self.last = [o.detach() for o in outs]
        if self.mode == "hybrid":
            low_a = lowpass(outs[0], self.sigma, self.kernel_size)
            return low_a + (outs[1] - lowpass(outs[1], self.sigma, self.kernel_size))  # lp(ε_A) + hp(ε_B)
        return outs[0] if len(outs) == 1 else torch.stack(outs).mean(0)  # ½ (ε_A + V⁻¹ ε_B(V x))


def make_combiner(model, pairs: list[tuple[str, str, float]], *, mode: str = "mean", sigma: float = 2.0,
                  kernel_size: int | None = None, negative_prompt: str = "", batch: int = 1) -> NoiseCombiner:
    """Encode ``pairs`` of (prompt, view name, CFG scale w) for ``model`` -> a :class:`NoiseCombiner`.

    Raises ValueError for an unconditional model, an unknown view or bad numbers."""
    if model.encode_prompt is None:
        raise ValueError("noise tricks combine text-conditional estimates; this model takes no prompt")
    neg = model.encode_prompt([validation.prompt(negative_prompt, "negative prompt")])
    terms = []
    for prompt, name, w in pairs:
        view(name)
        w = validation.number("guidance scale", w, 0.0, validation.MAX_GUIDANCE)
        cond = model.encode_prompt([validation.prompt(prompt)]).to(model.device, model.unet.dtype)
        terms.append(Term(prompt, name, w, cond, neg.to(model.device, model.unet.dtype)))
    return NoiseCombiner(terms, mode, sigma, kernel_size, validation.integer("images", batch, 1, 16))


def anagram(model, prompt_a: str, prompt_b: str, view_name: str = "flip", guidance_scale: float = 3.0,
            **kw) -> NoiseCombiner:
    """½ [ε_A(x) + V⁻¹ ε_B(V x)]: upright reads A, under ``view_name`` reads B."""
    return make_combiner(model, [(prompt_a, "identity", guidance_scale), (prompt_b, view_name, guidance_scale)],
                         mode="mean", **kw)


def hybrid(model, prompt_far: str, prompt_near: str, sigma: float = 2.0, kernel_size: int | None = None,
           guidance_scale: float = 3.0, **kw) -> NoiseCombiner:
    """lowpass(ε_far) + highpass(ε_near): blurred/small reads ``prompt_far``, sharp/large ``prompt_near``."""
    return make_combiner(model, [(prompt_far, "identity", guidance_scale), (prompt_near, "identity", guidance_scale)],
                         mode="hybrid", sigma=sigma, kernel_size=kernel_size, **kw)


def views_of(image: torch.Tensor, view_name: str) -> torch.Tensor:
    """The image ``[B, 3, H, W]`` in [-1, 1] seen through the view (what prompt B should read)."""
    return view(view_name)[0](image)


def far_view(image: torch.Tensor, sigma: float, kernel_size: int | None = None, factor: int = 4) -> torch.Tensor:
    """How a hybrid looks from afar: blurred (σ), shrunk by ``factor`` (box) and enlarged back
    (bilinear, so no blocky edges are added) -> ``[B, 3, H, W]`` in [-1, 1]."""
    small = lowpass(image, sigma, kernel_size)
    if factor > 1:
        small = F.interpolate(F.avg_pool2d(small, factor), size=image.shape[-2:], mode="bilinear", align_corners=False)
    return small.clamp(-1, 1)


def near_view(image: torch.Tensor, sigma: float, kernel_size: int | None = None) -> torch.Tensor:
    """The high-pass part of an image, shown on the image's mean (what a close look picks out)
    -> ``[B, 3, H, W]`` in [-1, 1]."""
    hp = image - lowpass(image, sigma, kernel_size)
    return (hp + image.mean(dim=(-2, -1), keepdim=True)).clamp(-1, 1)
