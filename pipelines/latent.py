"""Latent-space tools (the Latent space tab): what a VAE does to an image, noise in pixel vs latent space,
interpolation (lerp vs slerp), the cheap linear preview against the full decode, and the cost per step.

Images are ``[B, 3, H, W]`` in [-1, 1] at the model's image size; latents ``[B, C, h, w]`` are in model space,
z = (E(x) − shift) · scale (``DiffusionModel.encode``; about unit variance), decoded by D(z / scale + shift).
Noise uses the flow-matching forward process x_s = (1 − s) x0 + s ε (SD3 eq. 2;
:func:`pipelines.toyworld.toy_sd3.flow_match_pair`), in pixels and in latents at the same s.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from typing import Iterator

import torch

from pipelines import validation
from pipelines.diffusion import loop, maths
from pipelines.diffusion.previews import latent_to_rgb_linear
from pipelines.toyworld.toy_sd3 import flow_match_pair
from pipelines.toyworld.toy_vae import psnr

CHANNEL_SCALE = 3.0  # latent channels shown with ±3 (unit-variance latents) mapped to black … white
MAX_INTERPOLATION = 9


def require_latent(model) -> None:
    """ValueError unless ``model`` works in a VAE's latent space."""
    if getattr(model, "vae", None) is None:
        raise ValueError(f"{model.name} works in pixel space: it has no VAE, so no latent space to show; "
                         "choose a latent model (toy-sd3)")


def preview(model, z: torch.Tensor) -> torch.Tensor:
    """The cheap preview: latents ``[B, C, h, w]`` -> RGB ``[B, 3, h, w]`` by one affine map (no decoder)."""
    return latent_to_rgb_linear(z, getattr(model, "latent_rgb", None))


def channel_images(z: torch.Tensor, scale: float = CHANNEL_SCALE) -> torch.Tensor:
    """One latent ``[1, C, h, w]`` -> ``C`` grey images ``[C, 3, h, w]`` in [-1, 1] (±``scale`` -> black … white)."""
    return (z[0] / scale).clamp(-1, 1)[:, None].expand(-1, 3, -1, -1)


@dataclass
class RoundTrip:
    """An image through the VAE: ``latents`` ``[1, C, h, w]``, ``recon`` and ``preview`` (decoded / linear),
    ``error`` |x − D(E(x))| ``[1, 3, H, W]`` in [0, 2], ``psnr_db`` of the reconstruction."""

    image: torch.Tensor
    latents: torch.Tensor
    recon: torch.Tensor
    preview: torch.Tensor
    error: torch.Tensor
    psnr_db: float

    @property
    def compression(self) -> float:
        """Numbers in the image over numbers in the latent."""
        return self.image.numel() / self.latents.numel()


@torch.no_grad()
def round_trip(model, image: torch.Tensor) -> RoundTrip:
    """Encode (posterior mode) and decode ``image`` ``[1, 3, H, W]`` at ``model.image_size``."""
    require_latent(model)
    if tuple(image.shape[-2:]) != tuple(model.image_size):
        raise ValueError(f"image is {tuple(image.shape[-2:])}, the VAE takes {model.image_size}")
    x = image.to(model.device, torch.float32)
    z = model.encode(x)
    recon = model.decode(z).float()
    return RoundTrip(x, z, recon, preview(model, z), (x - recon).abs(), float(psnr(x, recon)[0]))


@torch.no_grad()
def noise_both(model, image: torch.Tensor, s: float, generator: torch.Generator) -> dict:
    """The same noise level s in pixel space and in latent space: x_s = (1 − s) x0 + s ε on the image, and
    z_s = (1 − s) z0 + s ε' on its latent, decoded. -> dict of images ``[1, 3, H, W]`` (``pixel``, ``latent``
    decoded, ``latent_preview`` at the latent grid), their PSNR against the image (``psnr_*``), ``alpha_bar``
    (ᾱ of the same SNR, :func:`maths.alpha_bar_from_flow`)."""
    require_latent(model)
    s = validation.number("noise level s", s, 0.0, 1.0)
    x0 = image.to(model.device, torch.float32)
    z0 = model.encode(x0)
    sigma = torch.tensor([s])
    x_s = flow_match_pair(x0, maths.randn(x0.shape, generator, x0.device, x0.dtype), sigma)[0].clamp(-1, 1)
    z_s = flow_match_pair(z0, maths.randn(z0.shape, generator, z0.device, z0.dtype), sigma)[0]
    dec = model.decode(z_s).float()
    return {"pixel": x_s, "latent": dec, "latent_preview": preview(model, z_s), "s": s,
            "alpha_bar": maths.alpha_bar_from_flow(s), "psnr_pixel": float(psnr(x0, x_s)[0]),
            "psnr_latent": float(psnr(x0, dec)[0])}


def lerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """(1 − t) a + t b."""
    return (1.0 - t) * a + t * b


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation per sample (Shoemake 1985): sin((1 − t)θ)/sin θ · a + sin(tθ)/sin θ · b with
    cos θ = <a, b> / (|a| |b|), over each sample's flattened ``[C, h, w]``; lerp where a ∥ b."""
    fa, fb = a.flatten(1).double(), b.flatten(1).double()
    cos = (fa * fb).sum(1) / (fa.norm(dim=1) * fb.norm(dim=1)).clamp_min(1e-12)
    theta = torch.arccos(cos.clamp(-1, 1))
    sin = torch.sin(theta)
    safe = sin.abs() > 1e-6
    wa = torch.where(safe, torch.sin((1 - t) * theta) / torch.where(safe, sin, 1.0), torch.full_like(sin, 1 - t))
    wb = torch.where(safe, torch.sin(t * theta) / torch.where(safe, sin, 1.0), torch.full_like(sin, t))
    return (wa[:, None] * fa + wb[:, None] * fb).view_as(a).to(a.dtype)


def _path(a: torch.Tensor, b: torch.Tensor, n: int, fn) -> torch.Tensor:  # [n, C, h, w] from a to b
    return torch.cat([fn(a, b, k / (n - 1)) for k in range(n)])


@torch.no_grad()
def interpolate_images(model, image_a: torch.Tensor, image_b: torch.Tensor, n: int = 7) -> dict:
    """Decoded paths between the latents of two images ``[1, 3, H, W]``: ``lerp`` and ``slerp`` ``[n, 3, H, W]``,
    and each path's latent norms ``|z| / sqrt(numel)`` (``norm_lerp``, ``norm_slerp``: lists of n floats)."""
    require_latent(model)
    n = validation.integer("frames", n, 3, MAX_INTERPOLATION)
    za, zb = model.encode(image_a.to(model.device)), model.encode(image_b.to(model.device))
    out = {}
    for name, fn in (("lerp", lerp), ("slerp", slerp)):
        z = _path(za, zb, n, fn)
        out[name] = model.decode(z).float()
        out["norm_" + name] = [float(v) for v in z.flatten(1).norm(dim=1) / math.sqrt(z[0].numel())]
    return out


@torch.no_grad()
def interpolate_noise(model, prompt: str, seed_a: int, seed_b: int, n: int = 7, steps: int = 28,
                      guidance_scale: float = 3.0) -> dict:
    """Paths between two starting noises x_T (seeds), each point sampled with ``prompt``: ``lerp`` and
    ``slerp`` images ``[n, 3, H, W]`` and x_T norms. Lerp's midpoint of two independent Gaussians has norm
    ~1/√2 of theirs, a noise level the model never saw; slerp keeps it."""
    n = validation.integer("frames", n, 3, MAX_INTERPOLATION)
    shape = (1, *model.sample_shape)
    xa, xb = (maths.randn(shape, validation.generator(s), model.device, model.unet.dtype) for s in (seed_a, seed_b))
    out = {}
    for name, fn in (("lerp", lerp), ("slerp", slerp)):
        x_T = _path(xa, xb, n, fn)
        out[name] = loop.sample(model, [prompt] * n, num_inference_steps=steps, guidance_scale=guidance_scale,
                                latents=x_T, generator=validation.generator(seed_a))
        out["norm_" + name] = [float(v) for v in x_T.flatten(1).norm(dim=1) / math.sqrt(x_T[0].numel())]
    return out


@dataclass
class PreviewStep:
    """One step of :func:`preview_vs_decode`: x_t after the step as the cheap ``preview`` ``[1, 3, h, w]`` and
    ``decoded`` ``[1, 3, H, W]``, the decoded x̂0, and the milliseconds each took."""

    index: int
    num_steps: int
    t: float
    preview: torch.Tensor
    decoded: torch.Tensor
    pred_x0: torch.Tensor
    preview_ms: float
    decode_ms: float
    image: torch.Tensor | None = None


@torch.no_grad()
def preview_vs_decode(model, prompt: str, *, steps: int = 28, guidance_scale: float = 3.0,
                      generator: torch.Generator | None = None) -> Iterator[PreviewStep]:
    """Sample with the loop; at every step show x_t both ways and time them (the live-preview trade-off)."""
    require_latent(model)
    for rec in loop.sample_steps(model, prompt, num_inference_steps=steps, guidance_scale=guidance_scale,
                                 generator=generator, preview="none"):
        t0 = time.perf_counter()
        cheap = preview(model, rec.x_prev)
        t1 = time.perf_counter()
        dec = model.decode(rec.x_prev).float()
        t2 = time.perf_counter()
        yield PreviewStep(rec.index, rec.num_steps, float(rec.t), cheap, dec, model.decode(rec.pred_x0).float(),
                          1000 * (t1 - t0), 1000 * (t2 - t1), rec.image)


@torch.no_grad()
def step_costs(models: dict, prompt: str = "a red circle", repeats: int = 5) -> list[dict]:
    """Per model (name -> DiffusionModel): numbers per sample in model space and in the image, the median ms of
    one denoiser call with CFG (batch 2), and of one decode (latent models). Measured now, on this machine."""
    rows = []
    for name, model in models.items():
        repeats = validation.integer("repeats", repeats, 1, 50)
        x = torch.randn((2, *model.sample_shape), generator=torch.Generator().manual_seed(0)).to(model.device)
        emb = model.encode_prompt(["", prompt]) if model.encode_prompt is not None else None
        sched = model.make_scheduler()
        sched.set_timesteps(10)
        t = sched.timesteps[5]
        call, dec = [], []
        for _ in range(repeats + 1):  # the first is a warm-up
            t0 = time.perf_counter()
            model.predict(x, t, emb)
            t1 = time.perf_counter()
            if model.vae is not None:
                model.decode(x[:1])
            call.append(1000 * (t1 - t0))
            dec.append(1000 * (time.perf_counter() - t1))
        h, w = model.image_size
        rows.append({"model": name, "model_numbers": int(math.prod(model.sample_shape)), "image_numbers": 3 * h * w,
                     "call_ms": statistics.median(call[1:]),
                     "decode_ms": statistics.median(dec[1:]) if model.vae is not None else None})
    return rows
