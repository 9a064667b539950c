"""Denoising experiments built on :mod:`pipelines.diffusion.loop`: three ways to denoise (CS180
1.2-1.4), the oracle that knows the true noise (DiffusionFastForward), the sampler race.

Images are ``[B, 3, H, W]`` in [-1, 1]; "model space" is pixels or VAE latents (see
:mod:`pipelines.diffusion.loop`). Randomness comes only from the generators passed in.
"""

from __future__ import annotations

import math
import time
from typing import Iterator

import torch
import torchvision.transforms.functional as TF

from pipelines.diffusion import forward, loop, maths
from pipelines.diffusion.previews import to_rgb
from pipelines.serving import compute_thread

BLUR_SIGMAS = (0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0)
SEED_KERNELS = (3, 5, 9)  # CS180 1.2's kernel sizes


def psnr(x: torch.Tensor, ref: torch.Tensor) -> float:
    """PSNR in dB of ``x`` against ``ref``, both in [-1, 1] (peak-to-peak 2): 10 log10(4 / MSE)."""
    mse = float(((x.float().clamp(-1, 1) - ref.float().clamp(-1, 1)) ** 2).mean())
    return math.inf if mse == 0 else 10.0 * math.log10(4.0 / mse)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of ``[B, C, H, W]`` with std ``sigma`` px (kernel 2*ceil(3σ)+1, reflect padding)."""
    k = 2 * math.ceil(3 * sigma) + 1
    return TF.gaussian_blur(x, [k, k], [sigma, sigma])


def blur_denoise(x_t: torch.Tensor, alpha_bar: float, clean: torch.Tensor | None = None,
                 sigma: float | None = None) -> tuple[torch.Tensor, float]:
    """The classical baseline (CS180 1.2): x_t / sqrt(ᾱ) (unbiased for x0) blurred with a Gaussian.

    With ``sigma`` None, the σ of :data:`BLUR_SIGMAS` with the best PSNR against ``clean`` is
    used (a generous baseline: it peeks at the answer). Returns ``(image, sigma)``.
    """
    x = x_t / math.sqrt(alpha_bar)  # E[x_t] = sqrt(ᾱ) x0 (DDPM eq. 4), so this is x0 + noise
    if sigma is None:
        if clean is None:
            raise ValueError("give either a blur sigma or the clean image to pick one")
        sigma = max(BLUR_SIGMAS, key=lambda s: psnr(gaussian_blur(x, s), clean))
    return gaussian_blur(x, sigma).clamp(-1, 1), float(sigma)


def fixed_kernel_blur(x_t: torch.Tensor, kernel: int) -> torch.Tensor:
    """The seed's baseline (CS180 1.2): blur x_t itself with a ``kernel`` × ``kernel`` Gaussian, σ from the
    kernel size as torchvision picks it (0.3 ((k − 1) / 2 − 1) + 0.8). No 1/√ᾱ_t rescale and no peek at x0:
    the result's mean is √ᾱ_t x0 (DDPM eq. 4), a faded picture. ``[B, C, H, W]`` -> same, clipped to [-1, 1]."""
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"the blur kernel size must be odd and positive, got {kernel}")
    return TF.gaussian_blur(x_t, [int(kernel), int(kernel)]).clamp(-1, 1)


def strided_timesteps(t: int, stride: int) -> list[int]:
    """t, t - stride, ..., down to 0 (0 always included): CS180's strided schedule."""
    if stride < 1:
        raise ValueError(f"stride must be at least 1, got {stride}")
    ts = list(range(int(t), -1, -int(stride)))
    return ts if ts[-1] == 0 else ts + [0]


def noise_to(model, x0: torch.Tensor, t: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """q(x_t | x_0) with the model's own schedule (DDPM eq. 4): -> (x_t, ε), model space."""
    sch = model.make_scheduler("DDPM")
    n = int(sch.config.num_train_timesteps)
    if not 0 <= int(t) < n:
        raise ValueError(f"t must be between 0 and {n - 1}, got {t}")
    return forward.q_sample(x0, int(t), sch.alphas_cumprod, generator=generator)


def three_ways(model, image: torch.Tensor, t: int, *, prompt: str = "", negative_prompt: str = "",
               guidance_scale: float = 1.0, stride: int = 50, generator: torch.Generator) -> dict:
    """Noise ``image`` to t, then denoise it three ways (CS180 1.2-1.4).

    * **blur**: Gaussian blur of x_t / sqrt(ᾱ_t) (best σ, an oracle); ``blur_k3/5/9``: the seed's fixed kernels
      on x_t (:func:`fixed_kernel_blur`);
    * **one step**: x̂0 = (x_t - sqrt(1-ᾱ_t) ε_θ) / sqrt(ᾱ_t) from a single model call;
    * **iterative**: DDPM steps t, t - stride, ..., 0 (the one-step x̂0 is that run's first record).

    Args:
        image: ``[1, 3, H, W]`` in [-1, 1] at the model's image size.
    Returns:
        dict of images ``[1, 3, H, W]`` in [-1, 1] (``clean``, ``noisy``, ``blur``, ``one_step``,
        ``iterative``), ``psnr`` (dB per method), ``t``, ``alpha_bar``, ``blur_sigma``, ``steps``.
    """
    if maths.space(model.make_scheduler()) == "flow":
        raise ValueError(f"{model.name} is a flow-matching model: this experiment walks DDPM's strided timesteps "
                         "(t, t − stride, …), which it has none of. Choose toy-sd here; the viewer, the sampler race and "
                         "SDEdit run it.")
    x0 = model.encode(image)
    x_t, noise = noise_to(model, x0, t, generator)
    ts = strided_timesteps(t, stride)
    recs = list(loop.sample_steps(model, prompt, negative_prompt=negative_prompt, sampler="DDPM",
                                      timesteps=ts, init_latents=x0, noise=noise, guidance_scale=guidance_scale,
                                      generator=generator, preview="none"))
    a = recs[0].alpha_bar
    compute_thread.checkpoint()  # the blur search and the comparisons: a turn of their own
    clean = model.decode(x0).clamp(-1, 1)
    blur, sigma = blur_denoise(x_t, a, x0)
    out = {
        "clean": clean,
        "noisy": to_rgb(model, x_t, pred_x0=False),
        "blur": model.decode(blur).clamp(-1, 1),
        "one_step": model.decode(recs[0].pred_x0).clamp(-1, 1),
        "iterative": recs[-1].image,
        **{f"blur_k{k}": model.decode(fixed_kernel_blur(x_t, k)).clamp(-1, 1) for k in SEED_KERNELS},
    }
    out["psnr"] = {k: psnr(out[k], clean) for k in ("blur", "one_step", "iterative",
                                                     *(f"blur_k{k}" for k in SEED_KERNELS))}
    out.update(t=int(t), alpha_bar=a, blur_sigma=sigma, steps=len(recs))
    return out


def oracle_denoiser(x0: torch.Tensor):
    """A "model" that knows x0: returns the true ε of the current sample,
    ε = (x_t - sqrt(ᾱ_t) x0) / sqrt(1 - ᾱ_t) (DDPM eq. 4 solved for ε; DiffusionFastForward's
    reverse step given the true noise). x0 is in model space ``[B, C, h, w]``."""

    def denoise(x_in: torch.Tensor, t, alpha_bar: float) -> torch.Tensor:
        return (x_in - math.sqrt(alpha_bar) * x0) / math.sqrt(1.0 - alpha_bar)

    return denoise


def oracle_vs_model(model, image: torch.Tensor, *, strength: float, sampler: str = "DDPM", steps: int = 50,
                    prompt: str = "", guidance_scale: float = 1.0, seed: int = 0) -> dict:
    """Reverse steps from the same x_t: with the true noise (recovers x0) and with the model.

    Returns images (``clean``, ``noisy``, ``oracle``, ``model``) ``[1, 3, H, W]`` in [-1, 1],
    ``oracle_x0``/``model_x0`` (x̂0 per step, lists of ``[1, 3, h, w]``), ``psnr``, ``t``, ``alpha_bar``.
    """
    x0 = model.encode(image)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(int(seed))).to(x0)
    runs = {}
    for name, den in (("oracle", oracle_denoiser(x0)), ("model", None)):
        runs[name] = list(loop.sample_steps(
            model, prompt, sampler=sampler, num_inference_steps=steps, init_latents=x0, strength=strength,
            noise=noise, denoiser=den, guidance_scale=guidance_scale,
            generator=torch.Generator().manual_seed(int(seed) + 1), preview="auto"))
    clean = model.decode(x0).clamp(-1, 1)
    first = runs["oracle"][0]
    out = {
        "clean": clean,
        "noisy": to_rgb(model, first.model_input, pred_x0=False),
        "oracle": runs["oracle"][-1].image,
        "model": runs["model"][-1].image,
        "oracle_x0": [r.pred_x0_rgb for r in runs["oracle"]],
        "model_x0": [r.pred_x0_rgb for r in runs["model"]],
        "t": first.t, "alpha_bar": first.alpha_bar, "steps": len(runs["oracle"]),
    }
    out["psnr"] = {k: psnr(out[k], clean) for k in ("oracle", "model")}
    out["max_abs_error"] = {k: float((out[k] - clean).abs().max()) for k in ("oracle", "model")}
    return out


def race(model, prompt: str, entries: list[tuple[str, int]], *, seed: int = 0, guidance_scale: float = 7.5,
         negative_prompt: str = "") -> Iterator[dict]:
    """The same x_T and prompt through each ``(sampler, steps)``; yields one result per entry:
    ``{sampler, steps, image [1, 3, H, W] in [-1, 1], seconds, model_calls}``.

    x_T is drawn once from ``seed``; each run's stochastic steps use a fresh generator seeded
    ``seed + 1`` (so DDPM runs are reproducible too).
    """
    if not 1 <= len(entries) <= 4:
        raise ValueError(f"race 1 to 4 samplers, got {len(entries)}")
    for sampler, _ in entries:  # a sampler the model cannot take is refused before any lane runs
        model.make_scheduler(sampler)
    x_T = torch.randn((1, *model.sample_shape), generator=torch.Generator().manual_seed(int(seed)))
    for sampler, steps in entries:
        t0 = time.perf_counter()
        img = loop.sample(model, prompt, negative_prompt=negative_prompt, sampler=sampler,
                              num_inference_steps=int(steps), guidance_scale=guidance_scale,
                              latents=x_T.to(model.device), generator=torch.Generator().manual_seed(int(seed) + 1))
        yield {"sampler": sampler, "steps": int(steps), "image": img, "seconds": time.perf_counter() - t0,
               "model_calls": int(steps)}
