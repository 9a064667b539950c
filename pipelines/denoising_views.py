"""Small views on the reverse process: the power spectrum of x̂0 per step (coarse to fine), DDPM's two
reverse variances (β vs β̃, Ho et al. 2020 §3.2) and sampling a model at a size it was not trained at.

Images are ``[B, 3, H, W]`` in [-1, 1]. Nothing here samples on its own: callers run
:func:`pipelines.diffusion.loop.sample_steps` (with :func:`at_resolution` or a scheduler from
:func:`ddpm_scheduler`) and pass the results in.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F

from pipelines import validation
from pipelines.models import DiffusionModel
from pipelines.theory import elbo
from pipelines.toyworld.render_judge import JUDGE_SIZE, locate_by_rendering

VARIANCE_TYPES = {"β̃ (posterior, fixed_small)": "fixed_small", "β (forward, fixed_large)": "fixed_large"}
SIZES = (32, 48, 64)
BANDS = ("low", "mid", "high")


# ------------------------------------------------------------------ power spectrum (coarse to fine)


def radial_power_spectrum(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged power spectrum of images ``[B, C, H, W]`` (H = W = S, any range).

    P(u, v) = |DFT(x)(u, v)|² / S² (so Σ_uv P = Σ_pixels x², Parseval), averaged over channels and
    over the frequencies with the same integer radius r = round(√(u² + v²)), u, v in cycles per
    image (``fftfreq`` × S). Returns ``(r [F], power [B, F])`` for r = 0 … S // 2 (0 = the mean colour).
    """
    b, c, h, w = x.shape
    if h != w:
        raise ValueError(f"radial_power_spectrum needs square images, got {h}x{w}")
    p = (torch.fft.fft2(x.double()).abs() ** 2).mean(1) / (h * w)  # [B, S, S]
    f = torch.fft.fftfreq(h, d=1.0 / h, dtype=torch.float64)
    r = torch.sqrt(f[:, None] ** 2 + f[None, :] ** 2).round().long()  # [S, S]
    n = h // 2 + 1
    keep = r < n  # the corners beyond the Nyquist circle are left out
    idx = r[keep]
    total = torch.zeros(b, n, dtype=torch.float64).index_add_(1, idx, p[:, keep])
    count = torch.bincount(idx, minlength=n).double()
    return np.arange(n), (total / count).numpy()


def band_of(r: np.ndarray, size: int) -> np.ndarray:
    """Band index per radius: 0 low (r ≤ S/8, shapes and colours), 1 mid (≤ S/4), 2 high (edges, noise)."""
    return np.digitize(r, [size / 8 + 1e-9, size / 4 + 1e-9])


def coarse_to_fine(pred_x0: torch.Tensor, final: torch.Tensor, threshold: float = 0.1) -> dict:
    """How each frequency band of x̂0 settles on the final image over the steps.

    Args:
        pred_x0: x̂0 per step ``[N, 3, S, S]`` in [-1, 1]; final: the result ``[1, 3, S, S]``.
        threshold: a band counts as settled from the first step after which the power of the error
            x̂0_k − final in that band stays below ``threshold`` × the final image's power there.
    Returns:
        ``r`` [F], ``spectra`` [N, F] of x̂0, ``final_spectrum`` [F], ``band_error`` [N, 3] (relative
        error power per band), ``settled`` {band: 1-based step or None}.
    """
    size = pred_x0.shape[-1]
    r, spectra = radial_power_spectrum(pred_x0)
    _, err = radial_power_spectrum(pred_x0 - final)
    _, fin = radial_power_spectrum(final)
    band = band_of(r, size)
    rel = np.stack([err[:, band == k].sum(1) / max(fin[0, band == k].sum(), 1e-12) for k in range(3)], 1)
    settled = {}
    for k, name in enumerate(BANDS):
        above = np.nonzero(rel[:, k] >= threshold)[0]
        last = int(above[-1]) + 1 if above.size else 0  # 0-based index of the first step that stays below
        settled[name] = last + 1 if last < len(rel) else None
    return {"r": r, "spectra": spectra, "final_spectrum": fin[0], "band_error": rel, "settled": settled}


# ------------------------------------------------------------------ DDPM reverse variance: β vs β̃


def ddpm_scheduler(model, variance: str):
    """A fresh DDPM scheduler with reverse variance ``variance`` (a key or value of :data:`VARIANCE_TYPES`)."""
    v = VARIANCE_TYPES.get(variance, variance)
    validation.choice("reverse variance", v, tuple(VARIANCE_TYPES.values()))
    return model.make_scheduler("DDPM", variance_type=v)


def reverse_variances(alphas_cumprod: torch.Tensor, timesteps) -> dict[str, np.ndarray]:
    """σ_t² of each planned DDPM step t -> t_prev, both choices (Ho et al. 2020 §3.2):

    β_t = 1 − ᾱ_t / ᾱ_prev (the forward variance of the whole stride) and
    β̃_t = (1 − ᾱ_prev) / (1 − ᾱ_t) · β_t (the posterior q(x_prev | x_t, x0)'s, DDPM eq. 7),
    with ᾱ_prev = 1 after the last step. ``timesteps``: the descending plan; returns ``t``,
    ``beta``, ``beta_tilde`` as arrays [N].
    """
    ac = alphas_cumprod.double()
    ts = [int(t) for t in timesteps]
    pairs = [(float(ac[t]), float(ac[p]) if p >= 0 else 1.0) for t, p in zip(ts, ts[1:] + [-1])]
    return {"t": np.array(ts), **{c: np.array([elbo.reverse_variance(a, ap, c) for a, ap in pairs])
                                  for c in ("beta", "beta_tilde")}}


# ------------------------------------------------------------------ sampling at another size


@dataclasses.dataclass
class ResizedModel(DiffusionModel):
    """The same shared denoiser asked for samples of another side (a convolutional UNet accepts any
    multiple of its down-sampling factor). Only ``sample_shape`` changes; nothing is copied."""

    side: int = 0

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        c, _, _ = DiffusionModel.sample_shape.fget(self)
        return (c, self.side, self.side)


def at_resolution(model: DiffusionModel, size: int) -> DiffusionModel:
    """``model`` generating ``size`` × ``size`` pixels (model space scaled alike for latent models)."""
    _, h, _ = model.sample_shape
    factor = model.image_size[0] // h  # 1 for pixel models, 8 for SD's VAE
    levels = len(model.unet.config.block_out_channels) - 1
    step = factor * 2 ** levels
    size = validation.integer("size", size, step, 4 * model.image_size[0])
    if size % step:
        raise ValueError(f"size must be a multiple of {step} for this model (its UNet halves {levels} times)")
    if size // factor == h:
        return model
    fields = {f.name: getattr(model, f.name) for f in dataclasses.fields(DiffusionModel)}
    return ResizedModel(**fields, side=size // factor)


def roughness(x: torch.Tensor) -> float:
    """Image-quality figure: mean |Laplacian| (5-point stencil) of ``[B, 3, H, W]`` in [-1, 1] (0 = flat)."""
    k = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).to(x)
    lap = F.conv2d(x.flatten(0, 1)[:, None], k[None, None])
    return float(lap.abs().mean())


def judge_at_any_size(image: torch.Tensor) -> dict:
    """The rendering judge on ``[1, 3, S, S]`` in [-1, 1] after an area resize to 32 px, plus ``blobs``:
    how many separate regions (8-connected, ≥ 2 px at the image's size) stand out from the background."""
    from scipy import ndimage

    small = F.interpolate(image.float().cpu(), size=(JUDGE_SIZE, JUDGE_SIZE), mode="area")
    verdict = locate_by_rendering(small)[0]
    x = (image[0].float().cpu().clamp(-1, 1) + 1) * 127.5  # [3, S, S]
    border = torch.cat([x[:, :2].flatten(1), x[:, -2:].flatten(1), x[:, :, :2].flatten(1), x[:, :, -2:].flatten(1)], 1)
    bg = border.median(dim=1).values[:, None, None]
    fg = ((x - bg).norm(dim=0) > 60.0).numpy()  # 60 of 255: far from the background colour
    labels, n = ndimage.label(fg, structure=np.ones((3, 3)))
    sizes = np.bincount(labels.ravel())[1:]
    return {"shape": verdict["shape"], "color": verdict["color"], "background": verdict["background"],
            "blobs": int((sizes >= 2).sum()), "roughness": roughness(image.float().cpu())}


def size_note(size: int, native: int) -> str:
    """What a convolutional denoiser sees at another size, in one sentence (UI-independent text)."""
    ratio = size / native
    return (f"{size} px is {ratio:g}× the {native} px it was trained on: every layer's receptive field covers "
            f"{1 / ratio ** 2:.0%} of the picture it used to, so it paints shapes of the trained pixel size "
            "(often more than one) instead of one scene scaled up.") if ratio != 1 else "the trained size."


def radial_frequency_label(r: int, size: int) -> str:
    """``r`` cycles per image as a wavelength in pixels (∞ for the mean colour)."""
    return "mean" if r == 0 else f"{size / r:.3g} px" if math.isfinite(size / r) else "∞"
