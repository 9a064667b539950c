"""RePaint-style inpainting (with resampling jumps) and SDEdit sketch-to-image, on top of
:func:`pipelines.diffusion.loop.sample_steps` (the loop is never copied here).

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
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from pipelines import validation
from pipelines.diffusion import forward, loop, maths
from pipelines.diffusion.previews import to_rgb
from pipelines.serving import compute_thread
from pipelines.masks import pool_mask, prepare, resize

MAX_RESAMPLES = 20
MAX_UNET_CALLS = 2000


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
        record: the underlying :class:`pipelines.diffusion.loop.StepRecord`.
    """

    index: int
    total: int
    position: int
    num_steps: int
    t: int | float
    phase: str
    composite: torch.Tensor
    x_t_rgb: torch.Tensor | None
    record: loop.StepRecord
    image: torch.Tensor | None = None
    model_image: torch.Tensor | None = None

    @property
    def is_last(self) -> bool:
        return self.index == self.total - 1


def _embeddings(model, prompt, negative_prompt, b: int, guidance_scale: float):
    if model.encode_prompt is None:
        return None, None
    prompts = [prompt] * b if isinstance(prompt, str) or prompt is None else list(prompt)
    if len(prompts) != b:
        raise ValueError(f"{len(prompts)} prompts for {b} images")
    pe = model.encode_prompt([validation.prompt(p) for p in prompts])  # [B, L, D]
    ne = None
    if guidance_scale != 1.0:
        neg = negative_prompt if negative_prompt is not None else ""
        negs = [neg] * b if isinstance(neg, str) else list(neg)
        ne = model.encode_prompt([validation.prompt(n, "negative prompt") for n in negs])
    return pe, ne


def _alpha_bar_at_position(scheduler, timesteps, p: int) -> float:
    """ᾱ of the sample at walk position ``p`` (1 at the end: the final sample is clean)."""
    if p >= len(timesteps):
        return 1.0
    return maths.alpha_bar_at(scheduler, timesteps[p], p)


def renoise_jump(scheduler, x: torch.Tensor, abar_from: float, abar_to: float, generator) -> torch.Tensor:
    """One RePaint jump: x_{t'} ~ q(x_{t'} | x_t) with ᾱ_{t'} = ``abar_to`` < ``abar_from``.

    The forward step of DDPM eq. 2 composed over the stride: β_eff = 1 - ᾱ_{t'} / ᾱ_t, so
    x_{t'} = sqrt(1 - β_eff) x_t + sqrt(β_eff) ε (:func:`pipelines.diffusion.forward.q_step`). Done on the VP
    sample; σ-space samples (Euler/LMS) are converted there and back (x_vp = x / sqrt(σ² + 1)), flow samples
    (1 − s) x0 + s ε likewise (x_vp = x / sqrt((1 − s)² + s²) = x sqrt(ᾱ) / (1 − s)).
    """
    kind = maths.space(scheduler)

    def to_vp(abar: float) -> float:  # x_vp = c x
        if kind == "flow":
            return math.sqrt(abar) / (1.0 - maths.flow_from_alpha_bar(abar)) if abar > 0 else 1.0
        return math.sqrt(abar) if kind == "sigma" else 1.0  # σ-space: 1/sqrt(σ²+1) = sqrt(ᾱ)

    c_from, c_to = to_vp(abar_from), to_vp(abar_to)
    beta_eff = torch.tensor([1.0 - abar_to / abar_from], dtype=torch.float64)
    x_vp, _ = forward.q_step(x * c_from, 0, beta_eff, generator=generator)
    return x_vp / c_to


def _inpainting_denoiser(model, m, masked_latents, pe, ne, w: float, pred_type: str):
    """ε for the 9-channel SD inpainting UNet: input cat([x_in, m, masked-image latents]) (as
    diffusers' StableDiffusionInpaintPipeline), with CFG done here (the loop's denoiser hook
    bypasses its own CFG): ε = ε_u + w (ε_c - ε_u) (Ho & Salimans 2022, eq. 6)."""
    unet = model.unet

    def denoiser(x_in, t, alpha_bar):
        compute_thread.checkpoint()  # other requests' turn first, as in DiffusionModel.predict
        do_cfg = ne is not None and w != 1.0
        emb = torch.cat([ne, pe]) if do_cfg else pe
        k = 2 if do_cfg else 1
        inp = torch.cat([x_in.repeat(k, 1, 1, 1), m.expand(x_in.shape[0], -1, -1, -1).repeat(k, 1, 1, 1),
                         masked_latents.expand(x_in.shape[0], -1, -1, -1).repeat(k, 1, 1, 1)], dim=1)
        with torch.no_grad():
            out = unet(inp.to(unet.dtype), t, encoder_hidden_states=emb.to(unet.dtype), return_dict=False)[0]
        if do_cfg:
            out_u, out_c = out.chunk(2)
            out = maths.cfg_combine(out_u, out_c, w)
        eps, _ = maths.to_eps_x0(out, x_in, math.sqrt(alpha_bar), math.sqrt(1.0 - alpha_bar), pred_type)
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
            as :func:`pipelines.diffusion.loop.sample_steps`.
        generator: the request's ``torch.Generator`` (all noise: x_T, known-region noise, jumps).
        jump_length: j, steps walked back up per resampling jump (1..steps).
        resamples: r, passes over each stretch (1 = no resampling; at most 20).

    Yields:
        one :class:`InpaintStep` per UNet evaluation; the last carries ``image``.

    Raises:
        ValueError: empty mask, bad sizes or numbers (messages meant for the user).
    """
    steps = validation.integer("steps", num_inference_steps, 1, loop.MAX_STEPS)
    w = validation.number("guidance scale", guidance_scale, 0.0, validation.MAX_GUIDANCE)
    r = validation.integer("resamples", resamples, 1, MAX_RESAMPLES)
    # the jump length only matters with resampling (r > 1); then it must fit in the run
    jl = validation.integer("jump length", jump_length, 1, steps if r > 1 else loop.MAX_STEPS)
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
    hm, wm = model.image_size
    img_m = resize(image_px, (hm, wm)).clamp(-1, 1)  # [B, 3, hm, wm]
    mask_m = pool_mask(mask_px, (hm, wm))  # [B, 1, hm, wm]
    x0 = model.encode(img_m).to(device, model.unet.dtype)  # [B, C, h, w]
    m = pool_mask(mask_m, tuple(x0.shape[-2:])).to(x0.dtype)  # [B, 1, h, w]

    pe, ne = _embeddings(model, prompt, negative_prompt, b, w)
    scheduler = model.make_scheduler(sampler)  # the plan: timesteps and ᾱ of every walk position
    scheduler.set_timesteps(steps, device=device)
    timesteps = scheduler.timesteps.clone()
    pred_type = model.prediction_type(scheduler)

    denoiser = None
    replace_fn = None
    if is_inpainting_unet(model):
        masked = img_m * (1.0 - mask_m)  # the known image, masked region blanked (diffusers: mask < 0.5)
        masked_latents = model.encode(masked).to(x0.dtype)
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

    common = dict(sampler=sampler, num_inference_steps=steps, guidance_scale=w, eta=eta,
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
            x = renoise_jump(scheduler, x, _alpha_bar_at_position(scheduler, timesteps, p0),
                         _alpha_bar_at_position(scheduler, timesteps, p1), generator)
            continue
        # each stretch down is a plain run of the loop from x at step p0, with a fresh scheduler state
        start = None if x is None else loop.Start(x, p0)  # None: from pure noise x_T ~ N(0, I)
        run = loop.sample_steps(model, scheduler=model.make_scheduler(sampler), start=start, **common)
        rec = None
        for k, rec in zip(range(p1 - p0), run):
            p = p0 + k
            passes_at[p] = passes_at.get(p, 0) + 1
            pred = to_rgb(model, rec.pred_x0, "auto") if rec.pred_x0_rgb is None else rec.pred_x0_rgb
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
