"""Loss guidance: steer a sampler by the gradient of a loss on the predicted x̂0 (colour, CLIP).

The HF diffusion-models-class unit 2 recipe, a form of classifier guidance (Dhariwal & Nichol 2021,
Alg. 1): at each step, predict x̂0 from x_t, score it with a differentiable loss, and move x_t down the
gradient before the scheduler steps. :class:`LossGuidance` is that ``cond_fn`` for
:func:`pipelines.diffusion.loop.sample_steps`; :func:`color_guidance` and :func:`clip_guidance` build it.

====================  =============================================  ========================
code                  paper                                          shape / range
====================  =============================================  ========================
``alpha_bar``         ᾱ_t = ``alphas_cumprod[t]``, t the *timestep*  float in (0, 1]
``pred_x0``           x̂0 = (x_in − sqrt(1−ᾱ_t) ε) / sqrt(ᾱ_t)        [B, C, h, w] ~[-1, 1]
``grad``              ∇_{x_t} L(x̂0)                                  [B, C, h, w]
``factor``            per-step scale: 1, sqrt(ᾱ_t) or 1 − ᾱ_t         float
``scale``             the user's guidance (loss) scale s             float ≥ 0
update (``x_t``)      x_t ← x_t − s · factor · ∇_{x_t} L              [B, C, h, w]
update (``eps``)      ε̂ = ε + sqrt(1−ᾱ_t) · s · factor · ∇ L        (Dhariwal & Nichol, Alg. 2)
====================  =============================================  ========================

ᾱ is read from the hook context (``ctx.alpha_bar``), from the *timestep* t. Seed 000 reads ``alphas_cumprod[i]``
with the loop counter i of ``set_timesteps(1000)``: sqrt(ᾱ) at 999 − t, strongest at the noisiest step (backwards).
CLIP cutouts draw from their own ``torch.Generator``: guided and unguided runs of one seed start from one noise.
"""

from __future__ import annotations

import math
import re
import dataclasses
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from pipelines import validation
# the CLIP losses are part of this module's API (LG.ClipLoss, LG.final_clip_loss, ...): they live in clip_loss
from pipelines.clip_loss import (MAX_CUTOUTS, ClipLoss, NoisyClipLoss, final_clip_loss,  # noqa: F401
                                 make_cutouts, spherical_distance_loss)
from pipelines.diffusion import maths
from pipelines.diffusion.loop import GuidanceContext, GuidanceOutput, sample_steps
from pipelines.guidance import rms
from pipelines.serving import compute_thread

SCALINGS: dict[str, str] = {
    "none": "1",
    "sqrt_alpha_bar": "sqrt(ᾱ_t)",
    "one_minus_alpha_bar": "1 − ᾱ_t",
    "seed_bug": "sqrt(ᾱ at T−1−t), the seed's bug",
}
APPLY_MODES = ("x_t", "eps")
MAX_LOSS_SCALE = 10_000.0
# No loss guidance below this ᾱ_t: x̂0 with ε held fixed moves 1/sqrt(ᾱ) ≥ 32x as far as x_t there
# (docs/measurements.md, "Loss guidance near zero SNR").
MIN_ALPHA_BAR = 1e-3
MAX_RECUR = 8  # repeats per guided step: each costs one more guided step and two more model calls
COLOUR_SCALE_DEFAULT = 400.0  # the playground's default (docs/measurements.md, "Colour guidance scale")

# Named settings, chosen by the rendering judge (``python -m pipelines.guidance_judge``; docs/measurements.md).
# "naive" is the old tab default (scale 200 on the raw gradient, "naive_raw") as a unit-RMS step, kept as the
# lesson: it lowers the CLIP loss by drawing adversarial noise. "noisy": the noise-aware tower's best setting.
CLIP_PRESETS: dict[str, dict] = {
    "naive": {"scale": 2.0, "scaling": "sqrt_alpha_bar", "n_cutouts": 4, "normalize": True},
    "naive_raw": {"scale": 200.0, "scaling": "sqrt_alpha_bar", "n_cutouts": 4},
    "noisy": {"scale": 0.3, "scaling": "none", "normalize": True, "noise_aware": True, "guide_range": (0.0, 0.3),
              "smooth": 4},
    # the tab's default: small steps over the first half, 4 passes per guided step with time travel
    "default": {"scale": 0.2, "scaling": "none", "normalize": True, "n_cutouts": 8, "through_unet": True,
                "guide_range": (0.0, 0.5), "smooth": 4, "recur": 4, "clip": "toy-clip-natural (bundled)"},
    # the default before time travel: one pass per guided step over the first 30 %
    "one_pass": {"scale": 0.3, "scaling": "none", "normalize": True, "n_cutouts": 8, "through_unet": True,
                 "guide_range": (0.0, 0.3), "smooth": 4, "clip": "toy-clip-natural (bundled)"},
}
COLOUR_PRESETS: dict[str, dict] = {
    "default": {"scale": COLOUR_SCALE_DEFAULT, "scaling": "sqrt_alpha_bar"},
    # seed 000: gradient through the UNet (x.requires_grad_() before the model call), no per-step factor
    "seed": {"scale": 40.0, "scaling": "none", "through_unet": True},
}


def describe_clip(preset: dict) -> str:
    """One line naming a CLIP preset's levers."""
    p = {"n_cutouts": 4, "scaling": "sqrt_alpha_bar", "normalize": False, "guide_range": (0.0, 1.0), **preset}
    parts = [f"scale {p['scale']:g}", f"× {SCALINGS[p['scaling']]}"]
    parts.append("noise-aware tower on x_t" if p.get("noise_aware") else f"{p['n_cutouts']} cutouts of x̂0"
                 + (" (gradient through the UNet)" if p.get("through_unet") else ""))
    if p["normalize"]:
        parts.append("unit-RMS gradient")
    if p.get("smooth", 1) > 1:
        parts.append(f"gradient smoothed over {p['smooth']} px")
    if tuple(p["guide_range"]) != (0.0, 1.0):
        parts.append(f"steps {p['guide_range'][0]:.0%}–{p['guide_range'][1]:.0%}")
    if p.get("recur", 1) > 1:
        parts.append(f"{p['recur']} passes per guided step (time travel)")
    return ", ".join(parts)


def describe_colour(preset: dict) -> str:
    """One line naming a colour preset's levers."""
    p = {"scaling": "none", "through_unet": False, **preset}
    return (f"scale {p['scale']:g} × {SCALINGS[p['scaling']]}, "
            + ("through the UNet" if p["through_unet"] else "ε held fixed"))


# ---- Loss guidance: colour and CLIP ----


def step_factor(scaling: str, alpha_bar: float, mirrored_alpha_bar: float | None = None) -> float:
    """The per-step factor on the guidance gradient, from ᾱ_t *of the current timestep t*.

    ``none`` -> 1; ``sqrt_alpha_bar`` -> sqrt(ᾱ_t) (the seed's intent: cancels the 1/sqrt(ᾱ_t)
    that x̂0 = (x_t − sqrt(1−ᾱ_t) ε)/sqrt(ᾱ_t) puts on ∇_{x_t}, which is huge at high noise);
    ``one_minus_alpha_bar`` -> 1 − ᾱ_t (strong early, fading to 0 as the image settles);
    ``seed_bug`` -> sqrt(``mirrored_alpha_bar``), ᾱ at T − 1 − t: what seed 000 computes with
    ``set_timesteps(1000)`` and ``alphas_cumprod[i]`` (i the loop counter, t = 999 − i), the
    factor running backwards: full strength at the noisiest step, almost none at the end.
    """
    if scaling not in SCALINGS:
        raise ValueError(f"scaling must be one of {list(SCALINGS)}, got {scaling!r}")
    a = float(alpha_bar)
    if scaling == "seed_bug":
        if mirrored_alpha_bar is None:
            raise ValueError("the seed_bug factor needs ᾱ at T − 1 − t")
        return math.sqrt(float(mirrored_alpha_bar))
    if scaling == "sqrt_alpha_bar":
        return math.sqrt(a)
    if scaling == "one_minus_alpha_bar":
        return 1.0 - a
    return 1.0


_HEX = re.compile(r"^#?([0-9a-fA-F]{3}|[0-9a-fA-F]{6})$")
_RGB = re.compile(r"^rgba?\(\s*([\d.]+)\s*,\s*([\d.]+)\s*,\s*([\d.]+)\s*(?:,\s*[\d.]+\s*)?\)$")


def parse_color(value) -> tuple[float, float, float]:
    """A colour as ``#rrggbb``, ``#rgb``, ``rgb(r, g, b)`` / ``rgba(...)`` (0..255) or an
    (r, g, b) triple in [0, 1] -> (r, g, b) in [0, 1]. Raises ValueError otherwise."""
    if isinstance(value, (tuple, list)) and len(value) == 3:
        rgb = tuple(validation.number("colour component", v, 0.0, 1.0) for v in value)
        return rgb  # type: ignore[return-value]
    s = str(value or "").strip()
    m = _HEX.match(s)
    if m:
        h = m.group(1)
        if len(h) == 3:
            h = "".join(c * 2 for c in h)
        return tuple(int(h[i:i + 2], 16) / 255.0 for i in (0, 2, 4))  # type: ignore[return-value]
    m = _RGB.match(s)
    if m:
        return tuple(validation.number("colour component", v, 0, 255) / 255.0 for v in m.groups())  # type: ignore[return-value]
    raise ValueError(f"not a colour: {value!r} (use #rrggbb)")


def color_target(rgb01: Sequence[float], device=None, dtype=torch.float32) -> torch.Tensor:
    """(r, g, b) in [0, 1] -> target ``[3]`` in the images' [-1, 1] range."""
    return torch.tensor([float(c) for c in rgb01], device=device, dtype=dtype) * 2 - 1


def color_loss(images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute distance of every pixel to a target colour, per image.

    Args:
        images: ``[B, 3, H, W]`` in [-1, 1].
        target: ``[3]`` in [-1, 1] (see :func:`color_target`).
    Returns:
        ``[B]``: mean over channels and pixels of |x − target| (0 = the image is that colour).
    """
    return (images - target.to(images.device, images.dtype).view(1, 3, 1, 1)).abs().flatten(1).mean(1)


def mean_color(images: torch.Tensor) -> torch.Tensor:
    """Average colour per image: ``[B, 3, H, W]`` in [-1, 1] -> ``[B, 3]`` in [0, 1]."""
    return ((images.clamp(-1, 1) + 1) / 2).mean(dim=(2, 3))


@dataclass
class GuidanceStep:
    """What :class:`LossGuidance` did at one step (floats are batch means; maps on CPU).

    ``loss``: L(x̂0) before the update, per image ``[B]``; ``factor``: the per-step factor
    from ᾱ_t; ``update_rms``: RMS of s · factor · ∇_{x_t} L (what was subtracted);
    ``grad_map``: per-pixel ‖s · factor · ∇_{x_t} L‖ over channels, ``[B, h, w]`` (None when
    not kept or not guided).
    """

    index: int
    t: int | float
    alpha_bar: float
    factor: float
    loss: torch.Tensor
    grad_rms: float = 0.0
    update_rms: float = 0.0
    grad_map: torch.Tensor | None = None


class LossGuidance:
    """A ``cond_fn`` for :func:`pipelines.diffusion.loop.sample_steps`: steer x̂0 down a loss.

    At each step (classifier guidance, Dhariwal & Nichol 2021, Alg. 1, with a loss in place
    of −log p(y|x); the HF class's colour/CLIP guidance):

    1. x̂0 = (x_in − sqrt(1−ᾱ_t) ε) / sqrt(ᾱ_t) (DDPM eq. 15), with ε held fixed (cheap; the
       seed's way) or, with ``through_unet``, ε re-predicted from x_t with autograd.
    2. L = Σ_b loss(decode(x̂0))_b: a sum of per-image losses, so each image's gradient is its
       own loss's and does not shrink with the batch size. The image is clamped to [-1, 1] in
       value only (straight-through gradient), so the loss scores what the user would see.
    3. g = s · factor(ᾱ_t) · ∇_{x_t} L, factor from :func:`step_factor` with ᾱ of timestep t.
    4. ``apply="x_t"``: step from x_t − g (the HF class). ``apply="eps"``: ε̂ = ε + sqrt(1−ᾱ_t) g
       (Dhariwal & Nichol, Alg. 2 / Song et al. 2021 score form; done by the loop).

    ``scale = 0`` only measures the loss (no gradient, no change): the unguided reference. So do
    steps with ᾱ_t < :data:`MIN_ALPHA_BAR` (near zero SNR, where x̂0 with ε fixed is meaningless).
    ``history`` holds one :class:`GuidanceStep` per step; create one object per request.

    Args:
        loss_fn: images ``[B, 3, H, W]`` in [-1, 1] -> ``[B]`` (differentiable).
        scale: s ≥ 0.
        scaling: a key of :data:`SCALINGS`.
        keep_maps: keep a per-pixel gradient-magnitude map per step (for heatmaps).
    """

    def __init__(self, loss_fn: Callable[[torch.Tensor], torch.Tensor], scale: float, *, scaling: str = "none",
                 apply: str = "x_t", through_unet: bool = False, keep_maps: bool = False,
                 normalize: bool = False, guide_range: tuple[float, float] = (0.0, 1.0), smooth: int = 1,
                 recur: int = 1, generator: torch.Generator | None = None):
        self.loss_fn = loss_fn
        self.recur = validation.integer("repeats per guided step", recur, 1, MAX_RECUR)
        if self.recur > 1 and apply != "x_t":
            raise ValueError("repeats per guided step (time travel) need apply='x_t'")
        # the re-noising of time travel draws from its own generator, so the request's noise stays the same
        self.renoise = generator if generator is not None else torch.Generator("cpu").manual_seed(0)
        self.smooth = validation.integer("gradient smoothing (pixels)", smooth, 1, 16)
        self.scale = validation.number("guidance scale", scale, 0.0, MAX_LOSS_SCALE)
        step_factor(scaling, 1.0, 1.0)  # validates the name
        if apply not in APPLY_MODES:
            raise ValueError(f"apply must be one of {APPLY_MODES}, got {apply!r}")
        lo, hi = (validation.number("guided range", v, 0.0, 1.0) for v in guide_range)
        if hi <= lo:
            raise ValueError(f"guided range must have start < end (fractions of the steps), got {guide_range}")
        self.scaling, self.apply, self.through_unet, self.keep_maps = scaling, apply, bool(through_unet), keep_maps
        self.normalize, self.guide_range = bool(normalize), (lo, hi)
        # a loss that reads x_t and t itself (the noise-aware CLIP), not x̂0
        self.on_x_t = bool(getattr(loss_fn, "on_x_t", False))
        self.history: list[GuidanceStep] = []

    def _pred_x0(self, ctx: GuidanceContext, x: torch.Tensor) -> torch.Tensor:
        if self.through_unet:
            return ctx.predict(x)[1]
        return maths.x0_from_eps(ctx.eps, x * ctx.c_in, ctx.alpha, ctx.sigma)  # DDPM eq. 15, ε fixed

    def _score(self, ctx: GuidanceContext, x: torch.Tensor) -> torch.Tensor:
        """Per-image loss ``[B]`` of sample x (model space), differentiable in x."""
        if self.on_x_t:
            return self.loss_fn(x * ctx.c_in, ctx.t)  # x_in = α x0 + σ ε, the noised image itself
        img = ctx.model.decode(self._pred_x0(ctx, x))
        # Score a valid image: clamp to [-1, 1] in value (as the scheduler's clip_sample / the
        # final image), straight-through in the gradient. Early on x̂0 is far outside the range
        # (÷ sqrt(ᾱ_t) ≈ 5e-5 at t = 999 on the cosine schedule) and its raw loss is meaningless.
        img = img + (img.clamp(-1, 1) - img).detach()
        return self.loss_fn(img)

    def _guided(self, ctx: GuidanceContext) -> bool:
        lo, hi = self.guide_range
        frac = ctx.index / max(ctx.num_steps, 1)  # position of this step in the run, 0 = noisiest
        return self.scale > 0.0 and ctx.alpha_bar >= MIN_ALPHA_BAR and lo <= frac < hi

    def __call__(self, ctx: GuidanceContext) -> GuidanceOutput | None:
        out = self._once(ctx)
        if out is None or self.recur == 1:
            return out
        eps = None
        for _ in range(self.recur - 1):
            # Universal Guidance's time travel (Bansal et al. 2023, Alg. 1, k > 1): step the guided sample on to
            # the next timestep, noise it back to this one, guide again; each pass moves it a little further
            # along the loss while the re-noising keeps it a sample the model knows how to denoise
            x, eps, x0 = self._time_travel(ctx, out.x_t)
            ctx = dataclasses.replace(ctx, x_t=x, eps=eps, pred_x0=x0)
            out = self._once(ctx)
        return GuidanceOutput(x_t=out.x_t, eps=eps)  # ε of the re-noised sample, the one the loop steps from

    def _time_travel(self, ctx: GuidanceContext, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (at t) -> DDIM step to the next timestep s -> re-noised to t (:func:`pipelines.inpainting.renoise_jump`:
        x_t' = sqrt(ᾱ_t/ᾱ_s) x_s + sqrt(1 − ᾱ_t/ᾱ_s) z); returns (x_t', ε, x̂0) of the model at x_t'."""
        sch = ctx.scheduler
        if maths.space(sch) != "vp":
            raise ValueError("repeats per guided step (time travel) need a DDPM-family schedule (not σ or flow)")
        ts = [int(v) for v in sch.timesteps]
        here = ts.index(int(ctx.t))
        ab_t = float(ctx.alpha_bar)
        ab_s = float(sch.alphas_cumprod[ts[here + 1]]) if here + 1 < len(ts) else 1.0
        with torch.no_grad():
            eps, x0 = ctx.predict(x)
            x_s = math.sqrt(ab_s) * x0 + math.sqrt(1.0 - ab_s) * eps  # DDIM (η = 0) to s
            # the forward process from s back to t, as inpainting.renoise_jump, written out in float32 (its
            # float64 β differs in the last bits, and guided images amplify such differences)
            ratio = ab_t / ab_s
            z = maths.randn(x.shape, self.renoise, x.device, x.dtype)
            x = math.sqrt(ratio) * x_s + math.sqrt(max(1.0 - ratio, 0.0)) * z
            compute_thread.checkpoint()  # two UNet calls: other requests' turns between them
            eps, x0 = ctx.predict(x)
        return x, eps, x0

    def _once(self, ctx: GuidanceContext) -> GuidanceOutput | None:
        # Other requests' turns between the UNet call and the loss, and between the loss's forward and
        # backward pass: each pass through CLIP over many cutouts can be as long as a UNet call.
        compute_thread.checkpoint()
        t = ctx.t.item() if torch.is_tensor(ctx.t) else ctx.t
        mirrored = None
        if self.scaling == "seed_bug":
            acp = ctx.scheduler.alphas_cumprod
            mirrored = float(acp[len(acp) - 1 - int(round(float(t)))])  # ᾱ at T − 1 − t
        factor = step_factor(self.scaling, ctx.alpha_bar, mirrored)  # ᾱ of timestep t, never the loop index
        if not self._guided(ctx):
            with torch.no_grad():
                if self.on_x_t:
                    loss = self.loss_fn(ctx.x_t * ctx.c_in, ctx.t)
                else:
                    loss = self.loss_fn(ctx.model.decode(ctx.pred_x0).clamp(-1, 1))
            self.history.append(GuidanceStep(ctx.index, t, ctx.alpha_bar, factor, loss.detach().float().cpu()))
            return None
        with torch.enable_grad():
            x = ctx.x_t.detach().requires_grad_(True)  # before the UNet call when through_unet (seed 000)
            per_image = self._score(ctx, x)  # [B]
            compute_thread.checkpoint()
            grad = torch.autograd.grad(per_image.sum(), x)[0]  # ∇_{x_t} L, [B, C, h, w]
        if self.smooth > 1:
            # low-pass: average over smooth × smooth blocks and upsample; keeps the shape- and colour-sized
            # part of the gradient and drops the per-pixel part adversarial examples live in
            k = self.smooth
            grad = F.interpolate(F.avg_pool2d(grad, k, ceil_mode=True), size=grad.shape[-2:], mode="bilinear",
                                 align_corners=False)
        if self.normalize:
            # unit RMS per image: the scale is then the step size itself, whatever the loss's slope
            grad = grad / rms(grad).clamp_min(1e-12).view(-1, *([1] * (grad.dim() - 1)))
        g = self.scale * factor * grad
        gmap = g.detach().norm(dim=1).float().cpu() if self.keep_maps else None  # [B, h, w]
        self.history.append(GuidanceStep(ctx.index, t, ctx.alpha_bar, factor,
                                         per_image.detach().float().cpu(), float(rms(grad).mean()),
                                         float(rms(g).mean()), gmap))
        if self.apply == "x_t":
            return GuidanceOutput(x_t=ctx.x_t - g)
        return GuidanceOutput(grad=g)

    def losses(self) -> list[float]:
        """Batch-mean loss per step, in step order (with several passes per step: the last pass's)."""
        last = {s.index: float(s.loss.mean()) for s in self.history}
        return [last[i] for i in sorted(last)]


def color_guidance(color, scale: float, *, scaling: str = "none", apply: str = "x_t",
                   through_unet: bool = False, keep_maps: bool = False) -> LossGuidance:
    """A cond_fn pulling x̂0 towards one colour (``color``: see :func:`parse_color`)."""
    target = color_target(parse_color(color))
    return LossGuidance(lambda img: color_loss(img, target), scale, scaling=scaling, apply=apply,
                        through_unet=through_unet, keep_maps=keep_maps)


def guided_vs_unguided(model, prompt: str, make_hook: Callable[[float], LossGuidance], scale: float, *,
                       generator_fn: Callable[[], torch.Generator], sampler: str | None = None,
                       on_base_step: Callable | None = None, **sample_kwargs):
    """The same seed twice: unguided (``make_hook(0)``, which only measures the loss), then guided at ``scale``.

    Yields ``(base, ref_hook, record, hook)`` for every step of the guided run; ``base`` is the unguided
    run's last :class:`StepRecord` (its ``image``), ``ref_hook`` its loss history. ``generator_fn`` makes a
    fresh generator per run so both start from the same noise. ``on_base_step(record)``, if given, sees
    every step of the unguided run (e.g. to replay both runs side by side).
    """
    ref = make_hook(0.0)
    base = None
    for base in sample_steps(model, prompt, sampler=sampler, generator=generator_fn(), cond_fn=ref, **sample_kwargs):
        if on_base_step is not None:
            on_base_step(base)
    hook = make_hook(scale)
    for rec in sample_steps(model, prompt, sampler=sampler, generator=generator_fn(), cond_fn=hook, **sample_kwargs):
        yield base, ref, rec, hook


def clip_guidance(clip, prompt: str | Sequence[str], scale: float, *, n_cutouts: int = 4, scaling: str = "sqrt_alpha_bar",
                  generator: torch.Generator | None = None, min_frac: float = 0.75, apply: str = "x_t",
                  through_unet: bool = False, keep_maps: bool = False, noisy_encoder=None,
                  normalize: bool = False, guide_range: tuple[float, float] = (0.0, 1.0),
                  smooth: int = 1, recur: int = 1) -> LossGuidance:
    """A cond_fn pulling the sample towards ``prompt`` in CLIP space.

    Without ``noisy_encoder``: :class:`ClipLoss` over cutouts of x̂0 (the HF class's recipe). With it
    (a noise-aware image tower, e.g. ``noisy_clip.load()``): :class:`NoisyClipLoss` on x_t and t.
    ``generator`` drives the cutouts only (default: a fresh one seeded 0, so runs repeat). ``prompt``: one
    text, or one per image of the batch (the judge's batched runs). ``recur``: guided passes per guided step,
    with time travel between them (:meth:`LossGuidance.__call__`; DDPM-family schedules).
    """
    prompt = (validation.prompt(prompt, "CLIP prompt") if isinstance(prompt, str)
              else [validation.prompt(p, "CLIP prompt") for p in prompt])
    if noisy_encoder is not None:
        loss = NoisyClipLoss(noisy_encoder, clip, prompt)
    else:
        loss = ClipLoss(clip, prompt, n_cutouts, generator, min_frac)
    return LossGuidance(loss, scale, scaling=scaling, apply=apply, through_unet=through_unet,
                        keep_maps=keep_maps, normalize=normalize, guide_range=guide_range, smooth=smooth,
                        recur=recur)
