"""One step-by-step sampling loop over any diffusers scheduler, yielding a record per step.

Everything that samples (the denoising viewer, guidance, inpainting, the sampler race)
runs :func:`sample_steps`; nothing copies the loop. It follows diffusers'
``StableDiffusionPipeline.__call__`` line for line (same random draws, same order), so its
final image equals the stock pipeline's for the same model, scheduler, steps and generator
(``tests/test_sampling.py`` checks it to 1e-4 in fp32), and adds what a teaching UI needs:
every intermediate quantity, and hooks.

=======================  ===============================================  ======================
code                     paper                                            shape / range
=======================  ===============================================  ======================
``x_t``                  the scheduler's sample at timestep t             [B, C, h, w] model space
``model_input``          x_t as the UNet sees it: sqrt(ᾱ)x0+sqrt(1-ᾱ)ε     [B, C, h, w], ~unit var
``alpha_bar``            ᾱ_t (``alphas_cumprod[t]``, or 1/(1+σ²))         float in (0, 1]
``pred_eps``             ε_θ(x_t, t), after CFG and guidance              [B, C, h, w]
``pred_x0``              x̂_0 (``pred_original_sample``)                   [B, C, h, w] ~[-1, 1]
``eps_uncond/eps_cond``  ε_θ(x_t, t, ∅) and ε_θ(x_t, t, y) (CFG terms)    [B, C, h, w] or None
=======================  ===============================================  ======================

"Model space" is pixels for pixel models and VAE latents (x ``latent_scale``) for latent
models. Two kinds of scheduler sample live in diffusers:

* **VP** (DDPM, DDIM, DPM-Solver++): x_t = sqrt(ᾱ_t) x0 + sqrt(1-ᾱ_t) ε (DDPM eq. 4), and
  ``scale_model_input`` is the identity.
* **σ-space** (Euler, LMS; Karras et al. 2022): x_t = x0 + σ_t ε with σ_t² = (1-ᾱ_t)/ᾱ_t;
  the UNet is given x_t / sqrt(σ_t² + 1), which is the VP sample again.

:attr:`StepRecord.model_input` is always the VP sample, which is what to display and what
the x0 formula uses: x̂_0 = (x_in - sqrt(1-ᾱ_t) ε) / sqrt(ᾱ_t) (DDPM eq. 15, rearranged).

Hooks (see :class:`GuidanceContext`)
------------------------------------
``replace_fn(ctx) -> x_t | None``
    Called on the sample at every timestep *before* the UNet, and once more on the final
    sample with ``ctx.t = None``. Return a replacement sample (same space as ``ctx.x_t``).
    RePaint: ``m * ctx.x_t + (1 - m) * ctx.add_noise(x_orig, noise)``.
``cond_fn(ctx) -> GuidanceOutput | None``
    Called *after* the UNet (and CFG), before ``scheduler.step``. ``ctx.predict(x)`` runs
    the UNet again, differentiably, so a loss on the predicted x0 can be differentiated
    w.r.t. x_t. Return ``GuidanceOutput(grad=...)`` (classifier-guidance style: the loop
    shifts ε), ``GuidanceOutput(x_t=...)`` (the HF class's colour/CLIP guidance: step from a
    moved sample) or ``GuidanceOutput(eps=...)``.
``denoiser(x_in, t, alpha_bar) -> ε``
    Replaces the UNet and CFG entirely (the "oracle" that knows the true noise).

Randomness only comes from the ``generator`` argument; one scheduler per call.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

from pipelines import validation

# --------------------------------------------------------------------------------------
# Records and hook types
# --------------------------------------------------------------------------------------


@dataclass
class StepRecord:
    """What one denoising step saw and produced. Tensors are detached, on the model's device.

    Attributes:
        index: 0-based position of this step in the run (``num_steps`` steps in all).
        num_steps: number of steps in the run (after ``strength`` truncation).
        t: the scheduler's timestep (int for DDPM/DDIM/DPM, float for Euler/LMS).
        alpha_bar: ᾱ_t of the sample the UNet saw (float in (0, 1]).
        x_t: the scheduler's sample before the step, ``[B, C, h, w]`` (σ-space for Euler/LMS).
        model_input: the VP sample sqrt(ᾱ)x0 + sqrt(1-ᾱ)ε the UNet saw, ``[B, C, h, w]``.
        pred_eps: the ε the step used (after CFG and guidance), ``[B, C, h, w]``.
        pred_x0: predicted clean sample in model space, ``[B, C, h, w]`` (~[-1, 1] for pixels):
            the scheduler's ``pred_original_sample`` where it returns one, else from ε.
        x_prev: the sample after the step (the next step's ``x_t``).
        eps_uncond, eps_cond: the two CFG terms ``[B, C, h, w]`` (None without CFG).
        x_t_rgb, pred_x0_rgb: previews in image space ``[B, 3, H, W]`` in [-1, 1] (None when
            ``preview="none"``; approximate for latent models with ``preview="linear"``).
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
    extras: dict = field(default_factory=dict)

    @property
    def is_last(self) -> bool:
        return self.index == self.num_steps - 1

    @property
    def snr(self) -> float:
        """SNR(t) = ᾱ_t / (1 - ᾱ_t) (Kingma et al. 2021, eq. 1); inf at ᾱ = 1."""
        return self.alpha_bar / (1.0 - self.alpha_bar) if self.alpha_bar < 1.0 else math.inf

    @property
    def sigma(self) -> float:
        """σ_t = sqrt((1 - ᾱ_t) / ᾱ_t), the noise level in σ-space (Karras et al. 2022)."""
        return math.sqrt((1.0 - self.alpha_bar) / self.alpha_bar)


@dataclass
class GuidanceOutput:
    """What a ``cond_fn`` may change; leave a field None to keep it.

    Attributes:
        grad: ∇_{x_t} of a loss to *minimise* (already scaled), w.r.t. ``ctx.x_t``. The loop
            applies classifier guidance (Dhariwal & Nichol 2021, Alg. 2; Song et al. 2021):
            ε̂ = ε + sqrt(1-ᾱ_t) ∇_{x_in} loss, with ∇_{x_in} = ∇_{x_t} / c_in.
        x_t: a replacement sample to step from (the HF class's colour-loss guidance:
            x_t - scale * ∇ loss); the step uses the (possibly updated) ε.
        eps: a replacement ε.
    """

    grad: torch.Tensor | None = None
    x_t: torch.Tensor | None = None
    eps: torch.Tensor | None = None


@dataclass
class GuidanceContext:
    """Everything a hook may need at one step. Treat tensors as read-only.

    ``c_in`` is the factor ``scale_model_input`` applies (x_in = c_in * x_t): 1 for VP
    schedulers, 1/sqrt(σ²+1) for Euler/LMS. ``eps``, ``pred_x0`` and the CFG terms are
    None in ``replace_fn`` calls (the UNet has not run yet); ``t`` is None in the final
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
    eps: torch.Tensor | None = None
    pred_x0: torch.Tensor | None = None
    eps_uncond: torch.Tensor | None = None
    eps_cond: torch.Tensor | None = None
    _predict: Callable | None = None

    @property
    def model_input(self) -> torch.Tensor:
        return self.x_t * self.c_in

    def predict(self, x_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the model (with CFG) on sample ``x_t`` *with autograd*: -> (ε, x̂_0).

        ``x_t`` is in the same space as ``ctx.x_t``; make it ``requires_grad_()`` and
        differentiate a loss on x̂_0 (``[B, C, h, w]``, model space) w.r.t. it.
        """
        if self._predict is None:
            raise ValueError("predict() is only available in cond_fn (after the model ran)")
        return self._predict(x_t)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """x0 (model space) noised to this step's timestep, in the scheduler's space.

        VP: sqrt(ᾱ)x0 + sqrt(1-ᾱ)ε (DDPM eq. 4); σ-space: x0 + σε. ``noise`` is drawn from
        the request's generator when None. Returns x0 itself when ``t`` is None (the end).
        """
        if self.t is None:
            return x0
        if noise is None:
            noise = _randn(tuple(x0.shape), self.generator, x0.device, x0.dtype)
        a = self.alpha_bar
        x_in = math.sqrt(a) * x0 + math.sqrt(1.0 - a) * noise
        return x_in / self.c_in


ReplaceFn = Callable[[GuidanceContext], "torch.Tensor | None"]
CondFn = Callable[[GuidanceContext], "GuidanceOutput | None"]
Denoiser = Callable[[torch.Tensor, "int | float", float], torch.Tensor]

# --------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------

# Linear latent -> RGB approximation for Stable Diffusion 1.x latents (scaled by 0.18215),
# the community "latent preview" factors: rgb = latents^T @ M, roughly in [-1, 1].
SD_LATENT_RGB = torch.tensor([
    [0.298, 0.207, 0.208],
    [0.187, 0.286, 0.173],
    [-0.158, 0.189, 0.264],
    [-0.184, -0.271, -0.473],
])

MAX_STEPS = 1000
PREVIEWS = ("auto", "linear", "vae", "none")


def _randn(shape, generator, device, dtype) -> torch.Tensor:
    from diffusers.utils.torch_utils import randn_tensor

    return randn_tensor(shape, generator=generator, device=device, dtype=dtype)


def _finite(name: str, value, lo: float | None = None, hi: float | None = None) -> float:
    """A finite float in [lo, hi] (see :func:`pipelines.validation.number`)."""
    return validation.number(name, value, lo, hi)


def is_sigma_space(scheduler) -> bool:
    """True for schedulers whose sample is x0 + σε (Euler, LMS, Heun, ...): their
    ``init_noise_sigma`` is σ_max (> 1); VP schedulers start from unit variance."""
    return float(scheduler.init_noise_sigma) != 1.0


def latent_to_rgb_linear(latents: torch.Tensor) -> torch.Tensor:
    """Cheap preview: SD latents ``[B, 4, h, w]`` -> approx. RGB ``[B, 3, h, w]`` in [-1, 1].

    Other channel counts fall back to the first three channels (or a gray repeat).
    """
    c = latents.shape[1]
    if c == 4:
        m = SD_LATENT_RGB.to(latents.device, latents.dtype)
        rgb = torch.einsum("bchw,cr->brhw", latents, m)
    elif c >= 3:
        rgb = latents[:, :3]
    else:
        rgb = latents[:, :1].expand(-1, 3, -1, -1)
    return rgb.clamp(-1, 1)


def to_rgb(model, x: torch.Tensor, mode: str = "auto", *, pred_x0: bool = True) -> torch.Tensor | None:
    """Model-space ``[B, C, h, w]`` -> display image ``[B, 3, H, W]`` in [-1, 1].

    Pixel models: the tensor itself, clamped. Latent models: ``linear`` (default for
    ``auto``) is :func:`latent_to_rgb_linear` at latent resolution; ``vae`` decodes (slow;
    only used for ``pred_x0``, noisy latents get the linear preview); ``none`` -> None.
    """
    if mode == "none":
        return None
    if getattr(model, "vae", None) is None:
        return x.clamp(-1, 1)
    if mode == "vae" and pred_x0:
        with torch.no_grad():
            return model.decode(x)
    return latent_to_rgb_linear(x)


@torch.no_grad()
def encode_image(model, image: torch.Tensor) -> torch.Tensor:
    """Image ``[B, 3, H, W]`` in [-1, 1] -> model space (VAE latent mean x ``latent_scale``
    for latent models; the image itself for pixel models)."""
    if getattr(model, "vae", None) is None:
        return image
    vae = model.vae
    lat = vae.encode(image.to(model.device, vae.dtype)).latent_dist.mode()
    return lat * model.latent_scale


def alpha_bar_at(scheduler, t, step_index: int | None = None) -> float:
    """ᾱ of the sample the UNet sees at timestep ``t``.

    σ-space schedulers: 1 / (1 + σ²) with σ = ``sigmas[step_index]`` (exact, also for
    Karras sigmas); VP schedulers: ``alphas_cumprod[t]``.
    """
    if is_sigma_space(scheduler):
        if step_index is None:
            step_index = scheduler.index_for_timestep(t)
        s = float(scheduler.sigmas[step_index])
        return 1.0 / (1.0 + s * s)
    return float(scheduler.alphas_cumprod[int(t)])


def plan_timesteps(scheduler, num_inference_steps: int, strength: float = 1.0, device=None,
                   timesteps: list[int] | None = None):
    """``set_timesteps`` then keep the last ``strength`` fraction (diffusers' img2img rule).

    ``timesteps``: an explicit descending list (e.g. CS180's strided 990, 960, ..., 0), for
    schedulers whose ``set_timesteps`` accepts one (DDPM); ``num_inference_steps`` is then
    its length. Returns ``(timesteps, begin_index)``: ``timesteps`` is what the loop walks (1-D tensor),
    ``begin_index`` its offset into ``scheduler.timesteps``. Raises ValueError when
    ``strength`` leaves no step.
    """
    if timesteps is not None:
        timesteps = [int(v) for v in timesteps]
        n_train = int(scheduler.config.num_train_timesteps)
        if not timesteps or any(a <= b for a, b in zip(timesteps, timesteps[1:])) or not 0 <= timesteps[-1] \
                or timesteps[0] >= n_train:
            raise ValueError(f"timesteps must be a strictly descending list within [0, {n_train - 1}]")
        if "timesteps" not in inspect.signature(scheduler.set_timesteps).parameters:
            raise ValueError(f"{type(scheduler).__name__} does not take an explicit list of timesteps; use DDPM")
        scheduler.set_timesteps(timesteps=timesteps, device=device)
        num_inference_steps = len(timesteps)
    else:
        scheduler.set_timesteps(num_inference_steps, device=device)
    init = min(int(num_inference_steps * strength), num_inference_steps)
    if init < 1:
        raise ValueError(f"strength {strength:g} with {num_inference_steps} steps leaves no denoising step; "
                         f"raise the strength to at least {1 / num_inference_steps:.3g} or use more steps")
    begin = (num_inference_steps - init) * scheduler.order
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(begin)
    return scheduler.timesteps[begin:], begin


def noise_to_start(scheduler, x0: torch.Tensor, noise: torch.Tensor, t, begin_index: int = 0) -> torch.Tensor:
    """x0 (model space ``[B, C, h, w]``) jumped to timestep ``t`` in the scheduler's space.

    VP: :func:`pipelines.forward.q_sample` (DDPM eq. 4). σ-space: x0 + σ ε, the same jump
    divided by sqrt(ᾱ). Equals ``scheduler.add_noise`` (tested).
    """
    from pipelines import forward

    if is_sigma_space(scheduler):
        sigma = scheduler.sigmas[begin_index].to(x0.device, x0.dtype)
        return x0 + sigma * noise
    x_t, _ = forward.q_sample(x0, torch.as_tensor(int(t)), scheduler.alphas_cumprod, noise=noise)
    return x_t


def _eps_to_model_output(eps, x_in, alpha_bar: float, prediction_type: str):
    """ε -> what ``scheduler.step`` expects (epsilon / v_prediction / sample)."""
    a, s = math.sqrt(alpha_bar), math.sqrt(1.0 - alpha_bar)
    if prediction_type == "epsilon":
        return eps
    if prediction_type == "v_prediction":  # v = a ε - s x0 = (ε - s x_in) / a (Salimans & Ho 2022)
        return (eps - s * x_in) / a
    if prediction_type == "sample":
        return (x_in - s * eps) / a
    raise ValueError(f"unsupported prediction_type {prediction_type!r}")


def _model_output_to_eps_x0(out, x_in, alpha_bar: float, prediction_type: str):
    """Model output -> (ε, x̂_0), given the VP input x_in = a x0 + s ε."""
    a, s = math.sqrt(alpha_bar), math.sqrt(1.0 - alpha_bar)
    if prediction_type == "epsilon":
        eps = out
        x0 = (x_in - s * eps) / a  # DDPM eq. 15 rearranged (eq. 4 solved for x0)
    elif prediction_type == "v_prediction":
        x0 = a * x_in - s * out
        eps = a * out + s * x_in
    elif prediction_type == "sample":
        x0 = out
        eps = (x_in - a * x0) / max(s, 1e-12)
    else:
        raise ValueError(f"unsupported prediction_type {prediction_type!r}")
    return eps, x0


def _call_unet(unet, x, t, emb):
    if emb is None:
        return unet(x, t, return_dict=False)[0]
    return unet(x, t, encoder_hidden_states=emb, return_dict=False)[0]


# --------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------


def sample_steps(
    model,
    prompt: str | list[str] = "",
    *,
    negative_prompt: str | list[str] | None = None,
    sampler: str = "DDIM",
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
    prompt_embeds: torch.Tensor | None = None,
    negative_prompt_embeds: torch.Tensor | None = None,
    cond_fn: CondFn | None = None,
    replace_fn: ReplaceFn | None = None,
    denoiser: Denoiser | None = None,
    preview: str = "auto",
) -> Iterator[StepRecord]:
    """Denoise step by step; yield a :class:`StepRecord` per step (the last carries ``image``).

    Args:
        model: a :class:`pipelines.models.DiffusionModel` (``unet``, ``encode_prompt``,
            ``vae``/``decode``, ``make_scheduler``, ``sample_shape``, ``device``).
        prompt: one prompt or a list (batch size = its length). Ignored by unconditional models.
        negative_prompt: replaces the empty prompt of the unconditional CFG branch.
        sampler: a name of :data:`pipelines.models.SAMPLERS` (used when ``scheduler`` is None).
        scheduler: a fresh diffusers scheduler instance to use instead (never share one).
        num_inference_steps: 1..min(1000, num_train_timesteps).
        guidance_scale: w of CFG, ε = ε_u + w (ε_c - ε_u) (Ho & Salimans 2022, eq. 6). The
            conditional and unconditional passes are batched ([uncond, cond], as diffusers).
            CFG runs whenever w != 1 (w = 0: unconditional model; diffusers skips CFG for
            w <= 1, so only w > 1 is comparable with its pipelines).
        eta: η of DDIM (eq. 16; 0 = deterministic). Only for schedulers whose ``step``
            takes ``eta`` (DDIM); a non-zero η elsewhere raises ValueError.
        generator: the request's ``torch.Generator``: the initial noise and every
            stochastic step (DDPM, DDIM η > 0) draw from it, in diffusers' order.
        batch_size: images for unconditional models (default 1).
        latents: the initial x_T in model space ``[B, C, h, w]`` (unit variance; scaled by
            ``init_noise_sigma`` like diffusers). Drawn from ``generator`` when None.
        init_image: start from an image (SDEdit / img2img): ``[B, 3, H, W]`` in [-1, 1],
            encoded to model space, then noised to the first kept timestep.
        init_latents: the same, already in model space ``[B, C, h, w]``.
        strength: fraction of the steps to run from the image (1 = from pure noise).
        noise: the ε for noising the init image ``[B, C, h, w]`` (drawn when None).
        timesteps: an explicit descending list of timesteps (DDPM only; see
            :func:`plan_timesteps`); overrides ``num_inference_steps``.
        prompt_embeds / negative_prompt_embeds: precomputed ``[B, L, D]`` text features.
        cond_fn, replace_fn, denoiser: hooks; see the module docstring.
        preview: ``auto`` | ``linear`` | ``vae`` | ``none`` (see :func:`to_rgb`).

    Yields:
        one :class:`StepRecord` per step.

    Raises:
        ValueError: for bad arguments (with a message meant for the user).
    """
    if timesteps is not None:
        num_inference_steps = len(timesteps)
    steps = int(_finite("steps", num_inference_steps, 1, MAX_STEPS))
    w = _finite("guidance scale", guidance_scale, 0.0, 100.0)
    eta = _finite("eta", eta, 0.0, 1.0)
    strength = _finite("strength", strength, 0.0, 1.0)
    if preview not in PREVIEWS:
        raise ValueError(f"preview must be one of {PREVIEWS}, got {preview!r}")
    if scheduler is None:
        scheduler = model.make_scheduler(sampler)
    n_train = int(scheduler.config.num_train_timesteps)
    if steps > n_train:
        raise ValueError(f"steps must be at most {n_train} (the model's training timesteps), got {steps}")
    step_params = set(inspect.signature(scheduler.step).parameters)
    if eta != 0.0 and "eta" not in step_params:
        raise ValueError(f"eta applies to DDIM only; {type(scheduler).__name__} has no η (set it to 0)")
    device, unet = model.device, model.unet
    dtype = unet.dtype
    pred_type = scheduler.config.get("prediction_type", "epsilon")

    # 1. Text conditioning (diffusers encode_prompt): [B, L, D] each.
    conditional = model.encode_prompt is not None or prompt_embeds is not None
    if conditional:
        if prompt_embeds is None:
            prompts = [prompt] if isinstance(prompt, str) else list(prompt)
            if not prompts:
                raise ValueError("give at least one prompt")
            prompts = [validation.prompt(p) for p in prompts]  # length cap, control characters
            prompt_embeds = model.encode_prompt(prompts)
        b = prompt_embeds.shape[0]
    else:
        b = int(batch_size or 1)
    do_cfg = conditional and w != 1.0 and denoiser is None
    emb = None
    if conditional:
        emb = prompt_embeds.to(device, dtype)
        if do_cfg:
            if negative_prompt_embeds is None:
                neg = negative_prompt if negative_prompt is not None else ""
                negs = [neg] * b if isinstance(neg, str) else list(neg)
                negs = [validation.prompt(n, "negative prompt") for n in negs]
                if len(negs) != b:
                    raise ValueError(f"{len(negs)} negative prompts for {b} prompts")
                negative_prompt_embeds = model.encode_prompt(negs)
            emb = torch.cat([negative_prompt_embeds.to(device, dtype), emb])  # [2B, L, D]: [uncond, cond]

    # 2. Timesteps (img2img keeps the last `strength` of them).
    from_image = init_image is not None or init_latents is not None
    timesteps, begin = plan_timesteps(scheduler, steps, strength if from_image else 1.0, device, timesteps)
    extra = {}
    if "eta" in step_params:
        extra["eta"] = eta
    if "generator" in step_params:
        extra["generator"] = generator

    # 3. Initial sample.
    shape = (b, *model.sample_shape)
    if from_image:
        x0 = init_latents if init_latents is not None else encode_image(model, init_image)
        x0 = x0.to(device, dtype)
        if x0.shape[0] == 1 and b > 1:
            x0 = x0.expand(b, -1, -1, -1)
        if tuple(x0.shape) != shape:
            raise ValueError(f"start image has model-space shape {tuple(x0.shape)}, the model needs {shape}")
        if noise is None:
            noise = _randn(shape, generator, device, dtype)
        x = noise_to_start(scheduler, x0, noise.to(device, dtype), timesteps[0], begin)
    else:
        if latents is None:
            latents = _randn(shape, generator, device, dtype)
        elif tuple(latents.shape) != shape:
            raise ValueError(f"initial latents have shape {tuple(latents.shape)}, the model needs {shape}")
        x = latents.to(device, dtype) * scheduler.init_noise_sigma  # diffusers prepare_latents

    sigma_space = is_sigma_space(scheduler)
    n = len(timesteps)

    def model_eps(x_t, t, alpha_bar, c_in):
        """UNet (+CFG) on sample x_t -> (model output, ε, x̂0, ε_u, ε_c). Autograd follows torch's mode."""
        x_in = scheduler.scale_model_input(torch.cat([x_t] * 2) if do_cfg else x_t, t)
        if denoiser is not None:
            eps_d = denoiser(x_in, t, alpha_bar)
            out = _eps_to_model_output(eps_d, x_in, alpha_bar, pred_type)
            eps_u = eps_c = None
        else:
            out = _call_unet(unet, x_in, t, emb)
            eps_u = eps_c = None
            if do_cfg:
                out_u, out_c = out.chunk(2)
                out = out_u + w * (out_c - out_u)  # CFG (Ho & Salimans 2022, eq. 6)
                x_in = x_in[:b]
                eps_u = _model_output_to_eps_x0(out_u, x_in, alpha_bar, pred_type)[0]
                eps_c = _model_output_to_eps_x0(out_c, x_in, alpha_bar, pred_type)[0]
        eps, x0 = _model_output_to_eps_x0(out, x_in, alpha_bar, pred_type)
        return out, eps, x0, eps_u, eps_c, x_in

    for i, t in enumerate(timesteps):
        # For σ-space schedulers, scale_model_input initialises step_index; do it once up front.
        if sigma_space and getattr(scheduler, "step_index", None) is None:
            scheduler._init_step_index(t)  # noqa: SLF001 - same call scale_model_input makes
        step_index = getattr(scheduler, "step_index", None) if sigma_space else None
        alpha_bar = alpha_bar_at(scheduler, t, step_index)
        c_in = 1.0 / math.sqrt(1.0 + (1.0 - alpha_bar) / alpha_bar) if sigma_space else 1.0

        def ctx_for(x_t, **kw):
            return GuidanceContext(i, n, t, alpha_bar, c_in, x_t, scheduler, generator, model, **kw)

        if replace_fn is not None:
            x = _apply(replace_fn(ctx_for(x)), x)

        with torch.no_grad():
            out, eps, x0_hat, eps_u, eps_c, x_in = model_eps(x, t, alpha_bar, c_in)

        if cond_fn is not None:
            def predict(x_t, _t=t, _a=alpha_bar, _c=c_in):
                _, e, x0p, _, _, _ = model_eps(x_t, _t, _a, _c)
                return e, x0p

            g = cond_fn(ctx_for(x, eps=eps, pred_x0=x0_hat, eps_uncond=eps_u, eps_cond=eps_c, _predict=predict))
            if g is not None:
                if g.eps is not None:
                    eps = g.eps.detach()
                if g.grad is not None:
                    # classifier guidance in ε form: ε̂ = ε + sqrt(1-ᾱ) ∇_{x_in} loss, ∇_{x_in} = ∇_{x_t} / c_in
                    eps = eps + math.sqrt(1.0 - alpha_bar) * g.grad.detach() / c_in
                if g.x_t is not None:
                    x = g.x_t.detach()
                    x_in = x * c_in
                if g.eps is not None or g.grad is not None or g.x_t is not None:
                    out = _eps_to_model_output(eps, x_in, alpha_bar, pred_type)
                    x0_hat = (x_in - math.sqrt(1.0 - alpha_bar) * eps) / math.sqrt(alpha_bar)

        with torch.no_grad():
            res = scheduler.step(out, t, x, **extra, return_dict=True)
        x_prev = res.prev_sample
        pred_x0 = getattr(res, "pred_original_sample", None)
        if pred_x0 is None:  # DPM-Solver returns none: use x̂0 from ε
            pred_x0 = x0_hat
        rec = StepRecord(
            index=i, num_steps=n, t=t.item() if torch.is_tensor(t) else t, alpha_bar=alpha_bar,
            x_t=x, model_input=x_in.detach(), pred_eps=eps.detach(), pred_x0=pred_x0.detach(),
            x_prev=x_prev, eps_uncond=eps_u, eps_cond=eps_c,
            x_t_rgb=to_rgb(model, x_in.detach(), preview, pred_x0=False),
            pred_x0_rgb=to_rgb(model, pred_x0.detach(), preview),
        )
        x = x_prev
        if i == n - 1:
            if replace_fn is not None:
                x = _apply(replace_fn(GuidanceContext(i, n, None, 1.0, 1.0, x, scheduler, generator, model)), x)
                rec.x_prev = x
            with torch.no_grad():
                rec.image = model.decode(x).clamp(-1, 1)
        yield rec


def _apply(new, old):
    return old if new is None else new.detach()


def sample(model, prompt: str | list[str] = "", **kwargs) -> torch.Tensor:
    """Run :func:`sample_steps` to the end; return the final image ``[B, 3, H, W]`` in [-1, 1]."""
    kwargs.setdefault("preview", "none")
    rec = None
    for rec in sample_steps(model, prompt, **kwargs):
        pass
    return rec.image
