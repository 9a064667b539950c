"""One step-by-step sampling loop over any diffusers scheduler, yielding a record per step.

Everything that samples runs :func:`sample_steps`. It follows diffusers'
``StableDiffusionPipeline.__call__`` (same random draws, same order), so its final image equals the
stock pipeline's (``tests/unit/test_sampling.py``), and it keeps every intermediate quantity. The
formulas live in :mod:`pipelines.diffusion.maths`; the loop is cut into stages (:func:`encode_prompts`,
:func:`prepare_start`, :class:`Predictor`, :func:`step`) that other features reuse.

=======================  ===============================================  ======================
code                     paper                                            shape / range
=======================  ===============================================  ======================
``x_t``                  the scheduler's sample at timestep t             [B, C, h, w] model space
``model_input``          x_t as the model sees it: α x0 + σ ε              [B, C, h, w]
``alpha_bar``            ᾱ_t (``alphas_cumprod[t]``, or from σ)            float in (0, 1]
``pred_eps``             ε_θ(x_t, t), after CFG and guidance              [B, C, h, w]
``pred_x0``              x̂_0 (``pred_original_sample``)                   [B, C, h, w] ~[-1, 1]
``eps_uncond/eps_cond``  ε_θ(x_t, t, ∅) and ε_θ(x_t, t, y) (CFG terms)    [B, C, h, w] or None
=======================  ===============================================  ======================

"Model space" is pixels for pixel models and scaled VAE latents for latent models.

Hooks (see :class:`GuidanceContext`)
------------------------------------
``replace_fn(ctx) -> x_t | None``
    Called on the sample at every step *before* the model, and once more on the final sample
    with ``ctx.t = None``. RePaint: ``m * ctx.x_t + (1 - m) * ctx.add_noise(x_orig)``.
``cond_fn(ctx) -> GuidanceOutput | None``
    Called after the model (and CFG), before ``scheduler.step``; ``ctx.predict(x)`` runs the
    model again with autograd. Return a gradient (classifier guidance), a moved sample or an ε.
``denoiser(x_in, t, alpha_bar) -> ε``
    Replaces the model and CFG entirely (the "oracle" that knows the true noise).
``combiner(predict, x_in, t) -> model output``
    Replaces CFG: combines (prompt, view) estimates from ``predict(x_in, emb)`` (:mod:`pipelines.noise_tricks`).

``start``: a :class:`Start` (x_t at step k of the plan) resumes a run mid-way with a fresh
scheduler state; RePaint's jumps use it. Randomness only comes from ``generator``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from pipelines import validation
from pipelines.diffusion import maths
from pipelines.diffusion.previews import PREVIEWS, to_rgb


@dataclass
class StepRecord:
    """What one denoising step saw and produced. Tensors are detached, on the model's device. Attributes:
        index: 0-based position of this step in the planned run (``num_steps`` steps in all).
        num_steps: steps in the run (after ``strength`` truncation; the full plan with ``start``).
        t: the scheduler's timestep (int for DDPM/DDIM/DPM, float for Euler/LMS/flow).
        alpha_bar: ᾱ_t of the sample the model saw (float in (0, 1]).
        x_t: the scheduler's sample before the step, ``[B, C, h, w]``.
        model_input: what the model saw (the VP sample for VP/σ schedulers), ``[B, C, h, w]``.
        pred_eps: the ε the step used (after CFG and guidance), ``[B, C, h, w]``.
        pred_x0: predicted clean sample in model space, ``[B, C, h, w]`` (~[-1, 1] for pixels).
        x_prev: the sample after the step (the next step's ``x_t``).
        eps_uncond, eps_cond: the two CFG terms (None without CFG).
        x_t_rgb, pred_x0_rgb: previews ``[B, 3, H, W]`` in [-1, 1] (None with ``preview="none"``).
        image: the final image ``[B, 3, H, W]`` in [-1, 1]; only on the last record.
    """

    index: int
    num_steps: int
    t: int | float
    alpha_bar: float
    x_t: torch.Tensor
    model_input: torch.Tensor
    pred_eps: torch.Tensor
    pred_x0: torch.Tensor
    x_prev: torch.Tensor
    eps_uncond: torch.Tensor | None = None
    eps_cond: torch.Tensor | None = None
    x_t_rgb: torch.Tensor | None = None
    pred_x0_rgb: torch.Tensor | None = None
    image: torch.Tensor | None = None

    @property
    def is_last(self) -> bool:
        return self.index == self.num_steps - 1

    @property
    def snr(self) -> float:  # ᾱ / (1 − ᾱ)
        return maths.snr(self.alpha_bar)


@dataclass
class GuidanceOutput:
    """What a ``cond_fn`` may change; leave a field None to keep it. Attributes:
        grad: ∇_{x_t} of a loss to *minimise* (already scaled). The loop applies classifier
            guidance (Dhariwal & Nichol 2021, Alg. 2): ε̂ = ε + σ_t ∇_{x_in} loss, ∇_{x_in} = ∇_{x_t} / c_in.
        x_t: a replacement sample to step from (the HF class's colour/CLIP guidance).
        eps: a replacement ε.
    """

    grad: torch.Tensor | None = None
    x_t: torch.Tensor | None = None
    eps: torch.Tensor | None = None


@dataclass
class GuidanceContext:
    """Everything a hook may need at one step. Treat tensors as read-only.
    The model's input is x_in = c_in · x_t = α x0 + σ ε (:func:`maths.coefficients`). ``eps``,
    ``pred_x0`` and the CFG terms are None in ``replace_fn`` calls; ``t`` is None in the final
    ``replace_fn`` call, where ``add_noise`` returns the clean x0.
    """

    index: int
    num_steps: int
    t: int | float | None
    alpha_bar: float
    c_in: float
    x_t: torch.Tensor
    scheduler: object
    generator: torch.Generator | None
    model: object
    alpha: float = 1.0
    sigma: float = 0.0
    eps: torch.Tensor | None = None
    pred_x0: torch.Tensor | None = None
    eps_uncond: torch.Tensor | None = None
    eps_cond: torch.Tensor | None = None
    _predict: Callable | None = None

    @property
    def model_input(self) -> torch.Tensor:
        return self.x_t * self.c_in

    def predict(self, x_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the model (with CFG) on sample ``x_t`` *with autograd*: -> (ε, x̂_0) in model space."""
        if self._predict is None:
            raise ValueError("predict() is only available in cond_fn (after the model ran)")
        return self._predict(x_t)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """x0 (model space) noised to this step, in the scheduler's space: (α x0 + σ ε) / c_in
        (DDPM eq. 4 for VP). ``noise`` is drawn from the request's generator when None; x0 itself
        when ``t`` is None (after the last step)."""
        if self.t is None:
            return x0
        if noise is None:
            noise = maths.randn(x0.shape, self.generator, x0.device, x0.dtype)
        return (self.alpha * x0 + self.sigma * noise) / self.c_in


@dataclass
class Start:
    """An explicit start point: the sample ``x_t`` (scheduler space) *before* step ``step_index``
    of the planned run (0 = the noisiest step)."""

    x_t: torch.Tensor
    step_index: int


@dataclass
class Conditioning:
    """Text features for one run: ``emb`` ``[B, L, D]``, or ``[2B, L, D]`` as [uncond, cond] with CFG."""

    batch: int
    emb: torch.Tensor | None
    do_cfg: bool


ReplaceFn = Callable[[GuidanceContext], "torch.Tensor | None"]
CondFn = Callable[[GuidanceContext], "GuidanceOutput | None"]
Denoiser = Callable[[torch.Tensor, "int | float", float], torch.Tensor]
Combiner = Callable[[Callable, torch.Tensor, "int | float"], torch.Tensor]
MAX_STEPS = 1000


# ------------------------------------------------------------------ stages


def encode_prompts(model, prompt, negative_prompt, guidance_scale: float, *, prompt_embeds=None,
                   negative_prompt_embeds=None, batch_size: int | None = None,
                   cfg_allowed: bool = True) -> Conditioning:
    """Stage 1: prompts -> :class:`Conditioning` (diffusers' ``encode_prompt``; prompts validated here).
    CFG runs whenever w != 1 (w = 0: unconditional; diffusers skips CFG for w <= 1)."""
    conditional = model.encode_prompt is not None or prompt_embeds is not None
    if not conditional:
        return Conditioning(int(batch_size or 1), None, False)
    if prompt_embeds is None:
        prompts = [prompt] if isinstance(prompt, str) or prompt is None else list(prompt)
        if not prompts:
            raise ValueError("give at least one prompt")
        prompt_embeds = model.encode_prompt([validation.prompt(p) for p in prompts])
    b = prompt_embeds.shape[0]
    do_cfg = cfg_allowed and guidance_scale != 1.0
    emb = prompt_embeds.to(model.device, model.unet.dtype)
    if do_cfg:
        if negative_prompt_embeds is None:
            neg = negative_prompt if negative_prompt is not None else ""
            negs = [neg] * b if isinstance(neg, str) else list(neg)
            if len(negs) != b:
                raise ValueError(f"{len(negs)} negative prompts for {b} prompts")
            negative_prompt_embeds = model.encode_prompt([validation.prompt(n, "negative prompt") for n in negs])
        emb = torch.cat([negative_prompt_embeds.to(model.device, model.unet.dtype), emb])
    return Conditioning(b, emb, do_cfg)


def prepare_start(model, scheduler, shape, timesteps, begin: int, generator, *, latents=None, x0=None,
                  noise=None) -> torch.Tensor:
    """Stage 2: the first sample. From ``x0`` (img2img / SDEdit): noised to ``timesteps[0]``
    (:func:`maths.noise_to_start`); else x_T = ``latents`` (drawn when None) × ``init_noise_sigma``."""
    device, dtype = model.device, model.unet.dtype
    if x0 is not None:
        x0 = x0.to(device, dtype)
        if x0.shape[0] == 1 and shape[0] > 1:
            x0 = x0.expand(shape[0], -1, -1, -1)
        if tuple(x0.shape) != tuple(shape):
            raise ValueError(f"start image has model-space shape {tuple(x0.shape)}, the model needs {tuple(shape)}")
        if noise is None:
            noise = maths.randn(shape, generator, device, dtype)
        return maths.noise_to_start(scheduler, x0, noise.to(device, dtype), timesteps[0], begin)
    if latents is None:
        latents = maths.randn(shape, generator, device, dtype)
    elif tuple(latents.shape) != tuple(shape):
        raise ValueError(f"initial latents have shape {tuple(latents.shape)}, the model needs {tuple(shape)}")
    return latents.to(device, dtype) * getattr(scheduler, "init_noise_sigma", 1.0)  # diffusers prepare_latents (flow: 1)


@dataclass
class Prediction:
    """Stage 3's result at one step: the scheduler's ``out``, ε, x̂0, the CFG terms and the input."""

    out: torch.Tensor
    eps: torch.Tensor
    x0: torch.Tensor
    eps_uncond: torch.Tensor | None
    eps_cond: torch.Tensor | None
    x_in: torch.Tensor


class Predictor:
    """Stage 3: the model (+ CFG, a ``combiner`` or a ``denoiser``) on a sample -> :class:`Prediction`.
    Autograd follows torch's grad mode, so ``cond_fn`` can differentiate through it."""

    def __init__(self, model, scheduler, cond: Conditioning, guidance_scale: float, denoiser: Denoiser | None = None,
                 combiner: Combiner | None = None):
        self.model, self.scheduler, self.cond, self.w, self.denoiser = model, scheduler, cond, guidance_scale, denoiser
        self.pred_type, self.combiner = model.prediction_type(scheduler), combiner

    def __call__(self, x_t, t, alpha_bar: float, alpha: float, sigma: float) -> Prediction:
        do_cfg = self.cond.do_cfg and self.denoiser is None
        x = torch.cat([x_t] * 2) if do_cfg else x_t
        x_in = self.scheduler.scale_model_input(x, t) if hasattr(self.scheduler, "scale_model_input") else x
        eps_u = eps_c = None
        if self.denoiser is not None:
            out = maths.from_eps(self.denoiser(x_in, t, alpha_bar), x_in, alpha, sigma, self.pred_type)
        elif self.combiner is not None:
            out = self.combiner(lambda x, emb: self.model.predict(x, t, emb), x_in, t)
        else:
            out = self.model.predict(x_in, t, self.cond.emb)
            if do_cfg:
                out_u, out_c = out.chunk(2)
                out = maths.cfg_combine(out_u, out_c, self.w)
                x_in = x_in[: self.cond.batch]
                eps_u = maths.to_eps_x0(out_u, x_in, alpha, sigma, self.pred_type)[0]
                eps_c = maths.to_eps_x0(out_c, x_in, alpha, sigma, self.pred_type)[0]
        eps, x0 = maths.to_eps_x0(out, x_in, alpha, sigma, self.pred_type)
        return Prediction(out, eps, x0, eps_u, eps_c, x_in)


def apply_guidance(g: GuidanceOutput | None, pred: Prediction, x: torch.Tensor, alpha: float, sigma: float,
                   c_in: float, pred_type: str) -> tuple[Prediction, torch.Tensor]:
    """Fold a ``cond_fn``'s :class:`GuidanceOutput` into the prediction; -> (prediction, sample to step from)."""
    if g is None or (g.eps is None and g.grad is None and g.x_t is None):
        return pred, x
    eps, x_in = pred.eps, pred.x_in
    if g.eps is not None:
        eps = g.eps.detach()
    if g.grad is not None:
        eps = eps + sigma * g.grad.detach() / c_in  # ε̂ = ε + σ_t ∇_{x_in} loss (Dhariwal & Nichol, Alg. 2)
    if g.x_t is not None:
        x = g.x_t.detach()
        x_in = x * c_in
    out = maths.from_eps(eps, x_in, alpha, sigma, pred_type)
    x0 = maths.x0_from_eps(eps, x_in, alpha, sigma)
    return Prediction(out, eps, x0, pred.eps_uncond, pred.eps_cond, x_in), x


def step(scheduler, pred: Prediction, t, x: torch.Tensor, extra: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage 4: ``scheduler.step`` -> (x_prev, x̂0); x̂0 from ε where the scheduler returns none (DPM-Solver)."""
    with torch.no_grad():
        res = scheduler.step(pred.out, t, x, **extra, return_dict=True)
    x0 = getattr(res, "pred_original_sample", None)
    return res.prev_sample, (pred.x0 if x0 is None else x0)


def step_kwargs(scheduler, eta: float, generator) -> dict:
    """The extra arguments this scheduler's ``step`` takes (η only for DDIM; a generator for stochastic ones)."""
    params = set(inspect.signature(scheduler.step).parameters)
    if eta != 0.0 and "eta" not in params:
        raise ValueError(f"eta applies to DDIM only; {type(scheduler).__name__} has no η (set it to 0)")
    extra = {"eta": eta} if "eta" in params else {}
    if "generator" in params:
        extra["generator"] = generator
    return extra


# ------------------------------------------------------------------ the loop


def sample_steps(
    model,
    prompt: str | list[str] = "",
    *,
    negative_prompt: str | list[str] | None = None,
    sampler: str | None = None,
    scheduler=None,
    num_inference_steps: int = 50,
    guidance_scale: float = 7.5,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
    latents: torch.Tensor | None = None,
    init_image: torch.Tensor | None = None,
    init_latents: torch.Tensor | None = None,
    strength: float = 1.0,
    noise: torch.Tensor | None = None,
    timesteps: list[int] | None = None,
    start: Start | None = None,
    prompt_embeds: torch.Tensor | None = None,
    negative_prompt_embeds: torch.Tensor | None = None,
    cond_fn: CondFn | None = None,
    replace_fn: ReplaceFn | None = None,
    denoiser: Denoiser | None = None,
    combiner: Combiner | None = None,
    preview: str = "auto",
) -> Iterator[StepRecord]:
    """Denoise step by step; yield a :class:`StepRecord` per step (the last carries ``image``).

    Args:
        model: a :class:`pipelines.models.DiffusionModel`.
        prompt: one prompt or a list (batch size = its length). Ignored by unconditional models.
        negative_prompt: replaces the empty prompt of the unconditional CFG branch.
        sampler / scheduler: a sampler name (None: the model's default, DDIM or flow Euler), or a fresh scheduler.
        num_inference_steps: 1..min(1000, num_train_timesteps).
        guidance_scale: w of CFG, ε = ε_u + w (ε_c − ε_u); the two passes are batched [uncond, cond].
        eta: η of DDIM (eq. 16; 0 = deterministic); refused for schedulers without it.
        generator: the request's ``torch.Generator`` (x_T, img2img noise, stochastic steps).
        batch_size: images for unconditional models (default 1).
        latents: the initial x_T in model space ``[B, C, h, w]`` (× ``init_noise_sigma``).
        init_image / init_latents: start from an image ``[B, 3, H, W]`` in [-1, 1] (encoded) or from
            model space ``[B, C, h, w]``, noised to the first kept step (SDEdit).
        strength: fraction of the steps to run from the image (1 = from pure noise).
        noise: the ε for noising the start image (drawn when None).
        timesteps: an explicit descending list (DDPM only; see :func:`maths.plan_timesteps`).
        start: resume from a :class:`Start` (overrides the other start options).
        prompt_embeds / negative_prompt_embeds: precomputed ``[B, L, D]`` text features.
        cond_fn, replace_fn, denoiser, combiner: hooks (module docstring); with a combiner, ``prompt``
            is ignored and the batch is ``combiner.batch``.
        preview: ``auto`` | ``linear`` | ``vae`` | ``none`` (:func:`pipelines.diffusion.previews.to_rgb`).

    Raises:
        ValueError: bad arguments (messages meant for the user).
    """
    if timesteps is not None:
        num_inference_steps = len(timesteps)
    steps = validation.integer("steps", num_inference_steps, 1, MAX_STEPS)
    w = validation.number("guidance scale", guidance_scale, 0.0, validation.MAX_GUIDANCE)
    eta = validation.number("eta", eta, 0.0, 1.0)
    strength = validation.number("strength", strength, 0.0, 1.0)
    if preview not in PREVIEWS:
        raise ValueError(f"preview must be one of {PREVIEWS}, got {preview!r}")
    if scheduler is None:
        scheduler = model.make_scheduler(sampler) if sampler else model.make_scheduler()
    n_train = int(scheduler.config.num_train_timesteps)
    if steps > n_train:
        raise ValueError(f"steps must be at most {n_train} (the model's training timesteps), got {steps}")
    extra = step_kwargs(scheduler, eta, generator)

    cond = Conditioning(int(combiner.batch), None, False) if combiner is not None else encode_prompts(
        model, prompt, negative_prompt, w, prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds,
        batch_size=batch_size, cfg_allowed=denoiser is None)
    from_image = init_image is not None or init_latents is not None
    shape = (cond.batch, *model.sample_shape)
    if start is not None:
        maths.plan_timesteps(scheduler, steps, 1.0, model.device, timesteps)
        ts, begin = maths.start_at(scheduler, validation.integer("start step", start.step_index, 0, steps - 1))
        x = start.x_t.to(model.device, model.unet.dtype)
        first = start.step_index
    else:
        ts, begin = maths.plan_timesteps(scheduler, steps, strength if from_image else 1.0, model.device, timesteps)
        x0 = (init_latents if init_latents is not None else model.encode(init_image)) if from_image else None
        x = prepare_start(model, scheduler, shape, ts, begin, generator, latents=latents, x0=x0, noise=noise)
        first, steps = 0, len(ts)

    predictor = Predictor(model, scheduler, cond, w, denoiser, combiner)
    kind = maths.space(scheduler)
    for k, t in enumerate(ts):
        i = first + k
        step_index = begin + k if kind != "vp" else None
        alpha_bar = maths.alpha_bar_at(scheduler, t, step_index)
        alpha, sigma, c_in = maths.coefficients(scheduler, alpha_bar, step_index)

        def ctx_for(x_t, **kw):
            return GuidanceContext(i, steps, t, alpha_bar, c_in, x_t, scheduler, generator, model, alpha, sigma, **kw)

        if replace_fn is not None:
            x = _apply(replace_fn(ctx_for(x)), x)
        with torch.no_grad():
            pred = predictor(x, t, alpha_bar, alpha, sigma)
        if cond_fn is not None:
            def predict(x_t, _t=t, _ab=alpha_bar, _a=alpha, _s=sigma):
                p = predictor(x_t, _t, _ab, _a, _s)
                return p.eps, p.x0

            g = cond_fn(ctx_for(x, eps=pred.eps, pred_x0=pred.x0, eps_uncond=pred.eps_uncond,
                                eps_cond=pred.eps_cond, _predict=predict))
            pred, x = apply_guidance(g, pred, x, alpha, sigma, c_in, predictor.pred_type)
        x_prev, pred_x0 = step(scheduler, pred, t, x, extra)
        x_in = pred.x_in.detach()
        rec = StepRecord(
            index=i, num_steps=steps, t=t.item() if torch.is_tensor(t) else t, alpha_bar=alpha_bar,
            x_t=x, model_input=x_in, pred_eps=pred.eps.detach(), pred_x0=pred_x0.detach(),
            x_prev=x_prev, eps_uncond=pred.eps_uncond, eps_cond=pred.eps_cond,
            x_t_rgb=to_rgb(model, x_in, preview, pred_x0=False),
            pred_x0_rgb=to_rgb(model, pred_x0.detach(), preview),
        )
        x = x_prev
        if k == len(ts) - 1:
            if replace_fn is not None:
                x = _apply(replace_fn(GuidanceContext(i, steps, None, 1.0, 1.0, x, scheduler, generator, model)), x)
                rec.x_prev = x
            with torch.no_grad():
                rec.image = model.decode(x).clamp(-1, 1)
        yield rec


def _apply(new, old):  # a hook's replacement sample, or the old one when it returned None
    return old if new is None else new.detach()


def sample(model, prompt: str | list[str] = "", **kwargs) -> torch.Tensor:
    """Run :func:`sample_steps` to the end -> the final image ``[B, 3, H, W]`` in [-1, 1]."""
    kwargs.setdefault("preview", "none")
    rec = None
    for rec in sample_steps(model, prompt, **kwargs):
        pass
    return rec.image
