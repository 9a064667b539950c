"""Model space -> something to look at: pixels as they are, latents decoded or previewed cheaply.

A live SD UI cannot afford a VAE decode per step, so it shows a linear map of the latent channels
to RGB (the community "latent preview"); :func:`to_rgb` picks that or the decode.
"""

from __future__ import annotations

import torch

# Linear latent -> RGB for Stable Diffusion 1.x latents (scaled by 0.18215): rgb = latents^T @ M, ~[-1, 1].
SD_LATENT_RGB = torch.tensor([
    [0.298, 0.207, 0.208],
    [0.187, 0.286, 0.173],
    [-0.158, 0.189, 0.264],
    [-0.184, -0.271, -0.473],
])

PREVIEWS = ("auto", "linear", "vae", "none")


def latent_to_rgb_linear(latents: torch.Tensor, matrix: torch.Tensor | None = None) -> torch.Tensor:
    """Cheap preview: latents ``[B, C, h, w]`` -> approx. RGB ``[B, 3, h, w]`` in [-1, 1].

    ``matrix`` ``[C, 3]`` (default: SD 1.x's for 4 channels), or ``[C + 1, 3]`` whose last row is a
    bias (:func:`fit_latent_rgb`); other channel counts without one fall back to the first three
    channels (or a gray repeat).
    """
    c = latents.shape[1]
    if matrix is None and c == 4:
        matrix = SD_LATENT_RGB
    if matrix is not None:
        m = matrix.to(latents.device, latents.dtype)
        rgb = torch.einsum("bchw,cr->brhw", latents, m[:c])
        if m.shape[0] == c + 1:
            rgb = rgb + m[c].view(1, 3, 1, 1)
    elif c >= 3:
        rgb = latents[:, :3]
    else:
        rgb = latents[:, :1].expand(-1, 3, -1, -1)
    return rgb.clamp(-1, 1)


def fit_latent_rgb(latents: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Least-squares affine map latent -> RGB, the live-preview matrix: ``[C + 1, 3]`` (last row the bias).

    ``latents`` ``[N, C, h, w]`` (model space) and the ``images`` ``[N, 3, H, W]`` in [-1, 1] they encode;
    each image is area-averaged to the latent grid, then min ‖[z, 1] M − rgb‖² over all N·h·w cells.
    """
    c, (h, w) = latents.shape[1], latents.shape[-2:]
    target = torch.nn.functional.adaptive_avg_pool2d(images.float(), (h, w))  # [N, 3, h, w]
    a = latents.float().permute(0, 2, 3, 1).reshape(-1, c)  # [N*h*w, C]
    a = torch.cat([a, torch.ones(a.shape[0], 1, device=a.device)], dim=1)  # [N*h*w, C + 1]
    return torch.linalg.lstsq(a, target.to(a.device).permute(0, 2, 3, 1).reshape(-1, 3)).solution  # [C + 1, 3]


def to_rgb(model, x: torch.Tensor, mode: str = "auto", *, pred_x0: bool = True) -> torch.Tensor | None:
    """Model-space ``[B, C, h, w]`` -> display image ``[B, 3, H, W]`` in [-1, 1].

    Pixel models: the tensor itself, clamped (one channel repeated to three). Latent models: ``linear`` (default for ``auto``) is
    :func:`latent_to_rgb_linear` at latent resolution; ``vae`` decodes (slow; only for ``pred_x0``,
    noisy latents get the linear preview); ``none`` -> None.
    """
    if mode not in PREVIEWS:
        raise ValueError(f"preview must be one of {PREVIEWS}, got {mode!r}")
    if mode == "none":
        return None
    if getattr(model, "vae", None) is None:  # pixels; a gray model's one channel is shown as gray RGB
        return (x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x).clamp(-1, 1)
    if mode == "vae" and pred_x0:
        with torch.no_grad():
            return model.decode(x)
    return latent_to_rgb_linear(x, getattr(model, "latent_rgb", None))
