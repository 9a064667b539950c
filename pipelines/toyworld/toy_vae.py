"""toy-vae: the bundled latent autoencoder (a small ``diffusers.AutoencoderKL``) and its maths.

64x64x3 images in [-1, 1] <-> 16x16x4 latents (4x down). The latents the diffusion model sees are
normalised the way diffusers' SD3 pipeline does it, with the two numbers in the VAE's config:

    encode: z = (E(x) - shift_factor) * scaling_factor
    decode: x = D(z / scaling_factor + shift_factor)

``shift_factor`` is the mean and ``scaling_factor`` 1 / std of E(x) over toy-world images
(:func:`measure_latent_stats`), so z has about zero mean and unit variance, like the noise.

Evaluation: PSNR and SSIM of the reconstruction on fresh scenes (:func:`evaluate`), run as

    python -m pipelines.toyworld.toy_vae --vae assets/models/toy-vae --n 1000
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL

from pipelines.toyworld.world import HELD_OUT, make_batch

TOY_VAE_DIR = Path(__file__).resolve().parents[2] / "assets" / "models" / "toy-vae"
IMAGE_SIZE = 64
EVAL_SEED = 9_100_000  # fresh scenes: training draws from seeds 30_000_000 + step * 104729
STATS_SEED = 9_200_000


def toy_vae_config(block_out_channels: tuple[int, ...] = (16, 32, 64), norm_num_groups: int = 4,
                   latent_channels: int = 4) -> dict:
    """AutoencoderKL config: one downsample per block after the first (3 blocks: 4x down),
    1 resnet per encoder block, no attention in the mid block and no quant convs (as SD3's VAE).
    GroupNorm groups of >= 4 channels: with one channel per group the decoder's last norm removes
    each channel's mean over the image, which for flat shapes is their colour."""
    n = len(block_out_channels)
    return dict(
        in_channels=3, out_channels=3, latent_channels=latent_channels,
        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(block_out_channels), layers_per_block=1, norm_num_groups=norm_num_groups,
        sample_size=IMAGE_SIZE, mid_block_add_attention=False, use_quant_conv=False, use_post_quant_conv=False,
        scaling_factor=1.0, shift_factor=0.0,
    )


def encode_latents(vae: AutoencoderKL, x: torch.Tensor, generator: torch.Generator | None = None,
                   sample: bool = True) -> torch.Tensor:
    """Images ``[B, 3, H, W]`` in [-1, 1] -> normalised latents ``[B, C, H/f, W/f]``:
    (z - shift) * scale, as ``StableDiffusion3Pipeline.prepare_latents`` (img2img) does.
    ``sample``: draw from the posterior (with ``generator``) or take its mean."""
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected images [B, 3, H, W], got {tuple(x.shape)}")
    dist = vae.encode(x).latent_dist
    z = dist.sample(generator) if sample else dist.mode()
    return (z - vae.config.shift_factor) * vae.config.scaling_factor


def decode_latents(vae: AutoencoderKL, z: torch.Tensor) -> torch.Tensor:
    """Normalised latents ``[B, C, h, w]`` -> images ``[B, 3, h*f, w*f]`` (about [-1, 1], not clamped):
    z / scale + shift, then the decoder, as ``StableDiffusion3Pipeline.__call__`` does."""
    return vae.decode(z / vae.config.scaling_factor + vae.config.shift_factor).sample


@torch.no_grad()
def measure_latent_stats(vae: AutoencoderKL, n: int = 1000, seed: int = STATS_SEED, batch: int = 100) -> dict:
    """Mean and std of raw posterior samples E(x) over ``n`` fresh scenes (all latent elements):
    ``{"shift_factor": mean, "scaling_factor": 1 / std}``."""
    g = torch.Generator().manual_seed(seed)
    total, total_sq, count = 0.0, 0.0, 0
    for i in range(0, n, batch):
        x, _ = make_batch(min(batch, n - i), seed=seed + i, size=IMAGE_SIZE, allow_held_out=True)
        z = vae.encode(x).latent_dist.sample(g).double()
        total, total_sq, count = total + z.sum().item(), total_sq + z.pow(2).sum().item(), count + z.numel()
    mean = total / count
    std = math.sqrt(total_sq / count - mean * mean)
    return {"shift_factor": round(mean, 5), "scaling_factor": round(1.0 / std, 5)}


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per image, ``[B]``, of images in [-1, 1] (peak-to-peak 2), after clamping y."""
    mse = (x - y.clamp(-1, 1)).pow(2).flatten(1).mean(dim=1)
    return 10 * torch.log10(4.0 / mse.clamp_min(1e-12))


def ssim(x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """SSIM per image, ``[B]`` (Wang et al. 2004, eq. 13): Gaussian window 11, sigma 1.5,
    K1 = 0.01, K2 = 0.03, on [0, 1] intensities per channel, mean over valid positions and channels
    (the convention of skimage's ``structural_similarity(gaussian_weights=True)``)."""
    a, b = (x.double() + 1) / 2, (y.double().clamp(-1, 1) + 1) / 2
    c = a.shape[1]
    coords = torch.arange(window, dtype=torch.float64) - (window - 1) / 2
    g1 = torch.exp(-coords.pow(2) / (2 * sigma**2))
    g1 = g1 / g1.sum()
    kernel = (g1[:, None] * g1[None, :]).expand(c, 1, window, window)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, kernel, groups=c)  # valid positions only

    mu_a, mu_b = blur(a), blur(b)
    # skimage uses the unbiased (sample) covariance: factor n / (n - 1), n = window^2.
    cov = window * window / (window * window - 1)
    var_a = cov * (blur(a * a) - mu_a**2)
    var_b = cov * (blur(b * b) - mu_b**2)
    cov_ab = cov * (blur(a * b) - mu_a * mu_b)
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov_ab + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.flatten(1).mean(dim=1).float()


@torch.no_grad()
def evaluate(vae: AutoencoderKL, n: int = 1000, seed: int = EVAL_SEED, batch: int = 100) -> dict:
    """Reconstruction (posterior mean, decoded) of ``n`` fresh 64 px scenes, held-out pairs included:
    mean PSNR (dB) and SSIM, also over the held-out (colour, shape) pairs alone."""
    ps, ss, held = [], [], []
    for i in range(0, n, batch):
        x, scenes = make_batch(min(batch, n - i), seed=seed + i, size=IMAGE_SIZE, allow_held_out=True)
        y = decode_latents(vae, encode_latents(vae, x, sample=False))
        ps.append(psnr(x, y))
        ss.append(ssim(x, y))
        held += [(s.color, s.shape) in HELD_OUT for s in scenes]
    p, s, h = torch.cat(ps), torch.cat(ss), torch.tensor(held)
    return {
        "n": n, "psnr_db": round(p.mean().item(), 2), "psnr_db_min": round(p.min().item(), 2),
        "ssim": round(s.mean().item(), 4), "n_held_out": int(h.sum()),
        "psnr_db_held_out": round(p[h].mean().item(), 2) if h.any() else None,
        "ssim_held_out": round(s[h].mean().item(), 4) if h.any() else None,
    }


@torch.no_grad()
def reconstruction_figure(vae: AutoencoderKL, n: int = 8, seed: int = EVAL_SEED, scale: int = 2):
    """PIL grid: fresh scenes (top), reconstructions (middle), |error| x 4 (bottom), upscaled ``scale``x."""
    from PIL import Image

    x, _ = make_batch(n, seed=seed, size=IMAGE_SIZE, allow_held_out=True)
    y = decode_latents(vae, encode_latents(vae, x, sample=False)).clamp(-1, 1)
    err = ((x - y).abs() * 4 - 1).clamp(-1, 1)  # |error| x 4 on the same 0..255 scale
    rows = torch.cat([torch.cat(list(t), dim=2) for t in (x, y, err)], dim=1)  # [3, 3*64, n*64]
    arr = ((rows.permute(1, 2, 0) + 1) * 127.5).round().byte().numpy()
    img = Image.fromarray(arr)
    return img.resize((img.width * scale, img.height * scale), Image.NEAREST)


def save_fp16(model, folder: Path) -> None:
    """``model``'s config and fp16 weights in the ``save_pretrained`` layout (``from_pretrained`` upcasts)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    model.save_config(folder)
    save_file({k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()},
              folder / "diffusion_pytorch_model.safetensors")


def rounded_to_fp16(vae: AutoencoderKL) -> AutoencoderKL:
    """A copy of ``vae`` whose weights are rounded to fp16 (and computed in fp32): what shipping fp16 gives."""
    out = AutoencoderKL.from_config(vae.config).eval()
    out.load_state_dict({k: v.half().float() for k, v in vae.state_dict().items()})
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Evaluate toy-vae: PSNR / SSIM on fresh scenes, latent stats")
    ap.add_argument("--vae", type=Path, default=TOY_VAE_DIR)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--figure", type=Path, default=None, help="also save a reconstruction grid (PNG) here")
    ap.add_argument("--fp16", action="store_true",
                    help="also evaluate the weights rounded to fp16, and if no figure changes, rewrite them in fp16")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    vae = AutoencoderKL.from_pretrained(args.vae).eval()
    if args.figure is not None:
        reconstruction_figure(vae).save(args.figure, optimize=True)
    out = evaluate(vae, args.n)
    stats = measure_latent_stats(vae, args.n)
    out["config"] = {k: vae.config[k] for k in ("scaling_factor", "shift_factor")}
    out["measured_now"] = stats
    if args.fp16:
        half = evaluate(rounded_to_fp16(vae), args.n)
        out["fp16_weights"] = half
        if all(half[k] == out[k] for k in ("psnr_db", "ssim", "psnr_db_held_out", "ssim_held_out")):
            save_fp16(vae, args.vae)
            out["rewritten_in_fp16"] = True
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
