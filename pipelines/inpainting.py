"""RePaint-style inpainting (with resampling jumps) and SDEdit sketch-to-image, on top of
:func:`pipelines.sampling.sample_steps` (the loop is never copied here).

Mask convention
---------------
``mask`` is ``[B or 1, 1, H, W]`` in [0, 1] and is **binarised at 0.5**:
**1 = the region to replace** (generated), 0 = the region to keep (known). This is the
convention of the CS180 notes (x_t <- m x_t + (1 - m) forward(x_orig, t)) and of diffusers'
inpainting pipelines (white = repaint). RePaint (Lugmayr et al. 2022) writes m for the *known*
region; every comment below is written in *our* convention.

=========================  ================================================  ==========================
code                       paper (RePaint, Lugmayr et al. 2022, Alg. 1)      shape / range
=========================  ================================================  ==========================
``image``                  x_0 the input, in pixels                          [B, 3, H, W] in [-1, 1]
``mask``                   1 - m (the *unknown* region)                      [B|1, 1, H, W] in {0, 1}
``x0``                     x_0 in model space (pixels or VAE latents)        [B, C, h, w]
``m``                      the mask at model-space resolution (max-pooled)   [B|1, 1, h, w] in {0, 1}
``known``                  x^known_t ~ N(sqrt(ᾱ_t) x_0, (1 - ᾱ_t) I)         [B, C, h, w]  (Alg. 1 l. 4)
``x_t``                    m x^unknown_t + (1 - m) x^known_t                 [B, C, h, w]  (Alg. 1 l. 7)
``jump_length``            j, steps walked back up per resampling jump       int >= 1
``resamples``              r (U in Alg. 1): passes over each stretch         int >= 1 (1 = no resampling)
=========================  ================================================  ==========================

The replacement runs as a ``replace_fn`` hook of the sampling loop: before the UNet at every
step, the known region of x_t is overwritten with a fresh sample of q(x_t | x_0) at *that*
step's ᾱ_t (DDPM eq. 4, the right amount of noise for t); after the last step it is
overwritten with x_0 itself. **Resampling** (Alg. 1 l. 8, and the jump schedule of RePaint
§4.2): after walking ``jump_length`` steps down, re-noise the sample back up with
q(x_{t+j} | x_t) (DDPM eq. 2 composed over the stride) and denoise the stretch again, ``resamples``
passes in all. Each pass lets the generated region re-adapt to the known region it was just
combined with, so seams and colours harmonise; it costs proportionally more UNet calls.

Resolution: images and masks of any size come in; the model works at its own size (32 px for
the bundled toy model; latents 1/8 of the pixels for Stable Diffusion, with the mask max-pooled
so every latent cell that touches the mask is regenerated). The result is upscaled back and
composited with the input **at the input's resolution**, so pixels outside the mask equal the
input exactly (up to 8-bit rounding).

The dedicated Stable Diffusion inpainting checkpoint (UNet with 9 input channels: latents,
mask, masked-image latents) is driven through the loop's ``denoiser`` hook; it needs no
replacement (it sees the known image) but gets the same final composite.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from pipelines import forward, sampling

MASK_THRESHOLD = 0.5
LAYER_ALPHA_THRESHOLD = 0.1  # paint-layer alpha above this counts as painted (soft brush edges)
MAX_RESAMPLES = 20
MAX_UNET_CALLS = 2000
SKETCH_STRENGTHS = (0.3, 0.45, 0.6, 0.7, 0.8, 0.9, 1.0)


# --------------------------------------------------------------------------------------
# Masks and sizes
# --------------------------------------------------------------------------------------


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


def model_pixel_size(model) -> tuple[int, int]:
    """``(H, W)`` in pixels of what ``model`` generates (32x32 for the toy model; 8x the latent for SD)."""
    _, h, w = model.sample_shape
    vae = getattr(model, "vae", None)
    if vae is None:
        return (h, w)
    f = 2 ** (len(vae.config.block_out_channels) - 1)
    return (h * f, w * f)


# --------------------------------------------------------------------------------------
# The RePaint jump schedule
# --------------------------------------------------------------------------------------


def repaint_walk(num_steps: int, jump_length: int = 10, resamples: int = 1) -> list[int]:
    """The positions the sampler visits: 0 = pure noise, ``num_steps`` = clean.

    RePaint's schedule (Lugmayr et al. 2022, §4.2 and Fig. 9; diffusers ``RePaintScheduler``):
    walking down, on arriving at a position ``p`` that is ``num_steps - k * jump_length``
    (``k >= 0``) and above ``jump_length``, jump back up ``jump_length`` steps and walk down
    again, ``resamples - 1`` times. ``resamples = 1`` gives ``[0, 1, ..., num_steps]``.
    Each step down is one UNet evaluation.
    """
    n, j, r = int(num_steps), int(jump_length), int(resamples)
    if n < 1 or j < 1 or r < 1:
        raise ValueError("steps, jump length and resamples must all be at least 1")
    jumps = {p: r - 1 for p in range(n, j, -j)} if r > 1 else {}
    walk, p = [0], 0
    while p < n:
        p += 1
        walk.append(p)
        if jumps.get(p, 0) > 0:
            jumps[p] -= 1
            p -= j
            walk.append(p)  # one jump back up (a forward-process move, no UNet)
    return walk


def unet_calls(walk: Sequence[int]) -> int:
    """Number of steps down (UNet evaluations) in a walk from :func:`repaint_walk`."""
    return sum(1 for a, b in zip(walk, walk[1:]) if b == a + 1)


def _segments(walk: Sequence[int]) -> list[tuple[str, int, int]]:
    """A walk -> ``[("down", p0, p1) | ("up", p0, p1), ...]`` maximal monotone stretches."""
    segs: list[tuple[str, int, int]] = []
    for a, b in zip(walk, walk[1:]):
        kind = "down" if b == a + 1 else "up"
        if segs and segs[-1][0] == kind == "down" and segs[-1][2] == a:
            segs[-1] = (kind, segs[-1][1], b)
        else:
            segs.append((kind, a, b))
    return segs


# --------------------------------------------------------------------------------------
# Inpainting
# --------------------------------------------------------------------------------------


@dataclass
class InpaintStep:
    """One UNet step of an inpainting run.

    Attributes:
        index: 0-based count of UNet evaluations so far; ``total`` in all (with resampling).
        position: steps done after this one (0..num_steps; goes back down after a jump).
        num_steps: the sampler's steps without resampling.
        t: the timestep the UNet saw.
        phase: "pass k/r" of the stretch being (re)denoised, for display.
        composite: ``[B, 3, H, W]`` in [-1, 1] at the input resolution: the current prediction
            x̂_0 inside the mask, the input outside (what you would get if it stopped now).
        x_t_rgb: the sample the UNet saw (after replacement), upscaled, ``[B, 3, H, W]``.
        image: the final composite ``[B, 3, H, W]`` (last step only); outside the mask it
            equals the input.
        model_image: the final model output at the model's size ``[B, 3, h, w]`` (last step only).
        record: the underlying :class:`pipelines.sampling.StepRecord`.
    """

    index: int
    total: int
    position: int
    num_steps: int
    t: int | float
    phase: str
    composite: torch.Tensor
    x_t_rgb: torch.Tensor | None
    record: sampling.StepRecord
    image: torch.Tensor | None = None
    model_image: torch.Tensor | None = None

    @property
    def is_last(self) -> bool:
        return self.index == self.total - 1


def _embeddings(model, prompt, negative_prompt, b: int, guidance_scale: float):
    if model.encode_prompt is None:
        return None, None
    prompts = [prompt] * b if isinstance(prompt, str) else list(prompt)
    if len(prompts) != b:
        raise ValueError(f"{len(prompts)} prompts for {b} images")
    pe = model.encode_prompt(prompts)  # [B, L, D]
    ne = None
    if guidance_scale != 1.0:
        neg = negative_prompt if negative_prompt is not None else ""
        negs = [neg] * b if isinstance(neg, str) else list(neg)
        ne = model.encode_prompt(negs)
    return pe, ne


def _resume_noise(scheduler, x_t: torch.Tensor, begin: int) -> torch.Tensor:
    """The ε that makes the loop's start-from-image path start *exactly* at ``x_t``.

    ``sample_steps(init_latents=0, noise=ε, strength=...)`` starts from
    ``noise_to_start(0, ε)`` = sqrt(1-ᾱ_t) ε (VP, DDPM eq. 4 with x_0 = 0) or σ ε (σ-space);
    solving for ε resumes a run mid-way (after a RePaint jump) without copying the loop.
    """
    if sampling.is_sigma_space(scheduler):
        return x_t / float(scheduler.sigmas[begin])
    t = int(scheduler.timesteps[begin])
    return x_t / math.sqrt(1.0 - float(scheduler.alphas_cumprod[t]))


def _alpha_bar_at_position(scheduler, timesteps, p: int) -> float:
    """ᾱ of the sample at walk position ``p`` (1 at the end: the final sample is clean)."""
    if p >= len(timesteps):
        return 1.0
    return sampling.alpha_bar_at(scheduler, timesteps[p], p)


def _renoise(scheduler, x: torch.Tensor, abar_from: float, abar_to: float, generator) -> torch.Tensor:
    """One RePaint jump: x_{t'} ~ q(x_{t'} | x_t) with ᾱ_{t'} = ``abar_to`` < ``abar_from``.

    The forward step of DDPM eq. 2 composed over the stride: β_eff = 1 - ᾱ_{t'} / ᾱ_t, so
    x_{t'} = sqrt(1 - β_eff) x_t + sqrt(β_eff) ε (:func:`pipelines.forward.q_step`). Done on the VP
    sample; σ-space samples (Euler/LMS) are converted there and back (x_vp = x / sqrt(σ² + 1)).
    """
    sigma_space = sampling.is_sigma_space(scheduler)
    c_from = math.sqrt(abar_from) if sigma_space else 1.0  # 1/sqrt(σ²+1) = sqrt(ᾱ)
    c_to = math.sqrt(abar_to) if sigma_space else 1.0
    beta_eff = torch.tensor([1.0 - abar_to / abar_from], dtype=torch.float64)
    x_vp, _ = forward.q_step(x * c_from, 0, beta_eff, generator=generator)
    return x_vp / c_to


def _inpainting_denoiser(model, m, masked_latents, pe, ne, w: float, pred_type: str):
    """ε for the 9-channel SD inpainting UNet: input cat([x_in, m, masked-image latents]) (as
    diffusers' StableDiffusionInpaintPipeline), with CFG done here (the loop's denoiser hook
    bypasses its own CFG): ε = ε_u + w (ε_c - ε_u) (Ho & Salimans 2022, eq. 6)."""
    unet = model.unet

    def denoiser(x_in, t, alpha_bar):
        do_cfg = ne is not None and w != 1.0
        emb = torch.cat([ne, pe]) if do_cfg else pe
        k = 2 if do_cfg else 1
        inp = torch.cat([x_in.repeat(k, 1, 1, 1), m.expand(x_in.shape[0], -1, -1, -1).repeat(k, 1, 1, 1),
                         masked_latents.expand(x_in.shape[0], -1, -1, -1).repeat(k, 1, 1, 1)], dim=1)
        with torch.no_grad():
            out = unet(inp.to(unet.dtype), t, encoder_hidden_states=emb.to(unet.dtype), return_dict=False)[0]
        if do_cfg:
            out_u, out_c = out.chunk(2)
            out = out_u + w * (out_c - out_u)
        eps, _ = sampling._model_output_to_eps_x0(out, x_in, alpha_bar, pred_type)  # noqa: SLF001
        return eps

    return denoiser


def is_inpainting_unet(model) -> bool:
    """True for the dedicated SD inpainting checkpoint (UNet input: 4 + 1 + 4 = 9 channels)."""
    return getattr(model, "vae", None) is not None and int(model.unet.config.in_channels) == 9


def inpaint_steps(
    model,
    image: torch.Tensor,
    mask,
    prompt: str | list[str] = "",
    *,
    negative_prompt: str | list[str] | None = None,
    sampler: str = "DDIM",
    num_inference_steps: int = 50,
    guidance_scale: float = 5.0,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    jump_length: int = 10,
    resamples: int = 1,
    preview: str = "auto",
) -> Iterator[InpaintStep]:
    """Inpaint ``image`` where ``mask`` is 1, following ``prompt``; yield an :class:`InpaintStep` per UNet call.

    Args:
        model: a :class:`pipelines.models.DiffusionModel` (toy, pixel, latent or SD inpainting).
        image: ``[B, 3, H, W]`` in [-1, 1], any size (resized to the model's and back).
        mask: ``[H, W]`` / ``[B|1, 1, H, W]`` in [0, 1], 1 = replace, any size (reconciled).
        prompt, negative_prompt, sampler, num_inference_steps, guidance_scale, eta, preview:
            as :func:`pipelines.sampling.sample_steps`.
        generator: the request's ``torch.Generator`` (all noise: x_T, known-region noise, jumps).
        jump_length: j, steps walked back up per resampling jump (1..steps).
        resamples: r, passes over each stretch (1 = no resampling; at most 20).

    Yields:
        one :class:`InpaintStep` per UNet evaluation; the last carries ``image``.

    Raises:
        ValueError: empty mask, bad sizes or numbers (messages meant for the user).
    """
    steps = int(sampling._finite("steps", num_inference_steps, 1, sampling.MAX_STEPS))  # noqa: SLF001
    w = sampling._finite("guidance scale", guidance_scale, 0.0, 100.0)  # noqa: SLF001
    r = int(sampling._finite("resamples", resamples, 1, MAX_RESAMPLES))  # noqa: SLF001
    # the jump length only matters with resampling (r > 1); then it must fit in the run
    jl = int(sampling._finite("jump length", jump_length, 1, steps if r > 1 else sampling.MAX_STEPS))  # noqa: SLF001
    walk = repaint_walk(steps, jl, r)
    total = unet_calls(walk)
    if total > MAX_UNET_CALLS:
        raise ValueError(f"{steps} steps with jump length {jl} and {r} resamples need {total} UNet calls; "
                         f"the limit is {MAX_UNET_CALLS}. Use fewer steps or resamples.")
    prep = prepare(image, mask)
    device = model.device
    b, _, h, w_px = prep.image.shape
    image_px, mask_px = prep.image.to(device), prep.mask.to(device)

    # 1. To the model's resolution; x_0 in model space; the mask pooled to it.
    hm, wm = model_pixel_size(model)
    img_m = resize(image_px, (hm, wm)).clamp(-1, 1)  # [B, 3, hm, wm]
    mask_m = pool_mask(mask_px, (hm, wm))  # [B, 1, hm, wm]
    x0 = sampling.encode_image(model, img_m).to(device, model.unet.dtype)  # [B, C, h, w]
    m = pool_mask(mask_m, tuple(x0.shape[-2:])).to(x0.dtype)  # [B, 1, h, w]

    pe, ne = _embeddings(model, prompt, negative_prompt, b, w)
    scheduler = model.make_scheduler(sampler)  # one scheduler for the whole request
    scheduler.set_timesteps(steps, device=device)
    timesteps = scheduler.timesteps.clone()
    pred_type = scheduler.config.get("prediction_type", "epsilon")

    denoiser = None
    replace_fn = None
    if is_inpainting_unet(model):
        masked = img_m * (1.0 - mask_m)  # the known image, masked region blanked (diffusers: mask < 0.5)
        masked_latents = sampling.encode_image(model, masked).to(x0.dtype)
        denoiser = _inpainting_denoiser(model, m, masked_latents, pe, ne, w, pred_type)
    else:
        def replace_fn(ctx):
            # RePaint Alg. 1 l. 4: x^known_t ~ N(sqrt(ᾱ_t) x_0, (1-ᾱ_t) I), at this step's ᾱ_t
            # (ctx.add_noise returns x_0 itself after the last step).
            known = ctx.add_noise(x0)
            # Alg. 1 l. 7 (our m = 1 on the unknown region): x_t = m x^unknown + (1-m) x^known
            return m * ctx.x_t + (1.0 - m) * known

    def up(x):  # model-size preview -> input resolution, composited with the input
        return resize(x.float(), (h, w_px)).clamp(-1, 1)

    common = dict(sampler=sampler, scheduler=scheduler, num_inference_steps=steps, guidance_scale=w, eta=eta,
                  generator=generator, prompt_embeds=pe, negative_prompt_embeds=ne, replace_fn=replace_fn,
                  denoiser=denoiser, preview=preview,
                  batch_size=b if pe is None else None)
    if denoiser is not None:
        common["guidance_scale"] = 1.0  # CFG happens inside the denoiser
        common["negative_prompt_embeds"] = None
    x = None
    index = 0
    passes_at: dict[int, int] = {}
    for kind, p0, p1 in _segments(walk):
        if kind == "up":
            # RePaint jump: x_{t(p1)} ~ q(x_{t(p1)} | x_{t(p0)}), walking back up p0 - p1 steps.
            x = _renoise(scheduler, x, _alpha_bar_at_position(scheduler, timesteps, p0),
                         _alpha_bar_at_position(scheduler, timesteps, p1), generator)
            continue
        if x is None:
            run = sampling.sample_steps(model, **common)  # from pure noise x_T ~ N(0, I)
        else:
            strength = (steps - p0 + 0.5) / steps  # keeps exactly steps - p0 steps
            noise = _resume_noise(scheduler, x, p0)
            run = sampling.sample_steps(model, init_latents=torch.zeros_like(x), noise=noise, strength=strength,
                                        **common)
        rec = None
        for k, rec in zip(range(p1 - p0), run):
            p = p0 + k
            passes_at[p] = passes_at.get(p, 0) + 1
            pred = sampling.to_rgb(model, rec.pred_x0, "auto") if rec.pred_x0_rgb is None else rec.pred_x0_rgb
            comp = mask_px * up(pred) + (1.0 - mask_px) * image_px
            xt = None if rec.x_t_rgb is None else up(rec.x_t_rgb)
            step = InpaintStep(index, total, p + 1, steps, rec.t, f"pass {passes_at[p]}/{r}" if r > 1 else "",
                               comp, xt, rec)
            if rec.image is not None and index == total - 1:  # resampling passes also end a run: not final
                # Final composite at the input resolution: generated inside, the input outside.
                gen = rec.image.float()
                step.model_image = gen
                step.image = mask_px * up(gen) + (1.0 - mask_px) * image_px
            index += 1
            yield step
        run.close()
        x = rec.x_prev


def inpaint(model, image, mask, prompt="", **kwargs) -> torch.Tensor:
    """Run :func:`inpaint_steps` to the end; the final composite ``[B, 3, H, W]`` in [-1, 1]."""
    kwargs.setdefault("preview", "none")
    last = None
    for last in inpaint_steps(model, image, mask, prompt, **kwargs):
        pass
    return last.image


# --------------------------------------------------------------------------------------
# Sketch to image (SDEdit, Meng et al. 2022; CS180 §1.7.1)
# --------------------------------------------------------------------------------------


def blob_sketch(size: int = 256, seed: int = 0, color=(220, 30, 30), background=(245, 245, 245)):
    """A hand-drawn-looking blob (a wobbly closed curve, three random harmonics) as an RGB PIL
    image: the "rough drawing" of the sketch demo and of the evaluation. Deterministic in ``seed``."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    k = np.arange(1, 4)
    amp, phase = rng.uniform(0.03, 0.09, 3), rng.uniform(0, 2 * np.pi, 3)
    cx, cy = size * (0.5 + rng.uniform(-0.06, 0.06, 2))
    r0 = size * rng.uniform(0.27, 0.36)
    th = np.linspace(0, 2 * np.pi, 90, endpoint=False)
    r = r0 * (1 + (amp[:, None] * np.cos(k[:, None] * th + phase[:, None])).sum(0))
    im = Image.new("RGB", (size, size), tuple(background))
    ImageDraw.Draw(im).polygon(list(zip(cx + r * np.cos(th), cy + r * np.sin(th))), fill=tuple(color))
    return im


def start_step(strength: float, num_steps: int) -> int:
    """SDEdit: ``strength`` in (0, 1] -> index of the first step run (0 = from pure noise).

    The loop keeps the last ``int(num_steps * strength)`` steps (diffusers' img2img rule), so
    the sketch is noised to the timestep of that step: strength 1 ignores the sketch, small
    strengths barely change it. Raises ValueError when no step would run.
    """
    n = int(sampling._finite("steps", num_steps, 1, sampling.MAX_STEPS))  # noqa: SLF001
    s = sampling._finite("strength", strength, 0.0, 1.0)  # noqa: SLF001
    kept = min(int(n * s), n)
    if kept < 1:
        raise ValueError(f"strength {s:g} with {n} steps leaves no denoising step; "
                         f"use a strength of at least {1 / n:.3g}")
    return n - kept


def sketch_steps(model, sketch: torch.Tensor, prompt: str | list[str] = "", *, strength: float = 0.7,
                 **kwargs) -> Iterator[sampling.StepRecord]:
    """SDEdit on a drawing: noise ``sketch`` to the step chosen by ``strength``, then denoise.

    Args:
        sketch: ``[B, 3, H, W]`` in [-1, 1], any size (resized to the model's size).
        strength: (0, 1]; see :func:`start_step`.
        kwargs: as :func:`pipelines.sampling.sample_steps` (sampler, steps, guidance, generator...).

    Yields:
        the loop's :class:`pipelines.sampling.StepRecord`; the last has ``image`` at the model's size.
    """
    if sketch.ndim != 4 or sketch.shape[1] != 3 or not torch.isfinite(sketch).all():
        raise ValueError("The sketch must be a finite [B, 3, H, W] image in [-1, 1].")
    start_step(strength, kwargs.get("num_inference_steps", 50))
    x = resize(sketch.to(model.device).float(), model_pixel_size(model)).clamp(-1, 1)
    yield from sampling.sample_steps(model, prompt, init_image=x, strength=strength, **kwargs)


def sketch_strip(model, sketch: torch.Tensor, prompt: str | list[str] = "", *, seed: int = 0,
                 strengths: Sequence[float] = SKETCH_STRENGTHS, **kwargs) -> list[tuple[float, torch.Tensor]]:
    """The same sketch, prompt and seed at several strengths -> ``[(strength, image [B, 3, h, w]), ...]``.

    Each strength gets a fresh ``torch.Generator`` seeded with ``seed``, so column k of the strip
    equals a single :func:`sketch_steps` run with that strength and seed (same noise draw).
    """
    out = []
    for s in strengths:
        g = torch.Generator("cpu").manual_seed(int(seed))
        kw = {**kwargs, "generator": g, "preview": "none"}
        rec = None
        for rec in sketch_steps(model, sketch, prompt, strength=s, **kw):
            pass
        out.append((float(s), rec.image))
    return out
