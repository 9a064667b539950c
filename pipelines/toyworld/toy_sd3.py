"""toy-sd3: a tiny Stable Diffusion 3 (MMDiT + rectified flow) on toy-vae latents, and its maths.

The pieces, as in SD3 (Esser et al. 2024, "Scaling Rectified Flow Transformers"):
- denoiser: ``diffusers.SD3Transformer2DModel``, joint attention over text and image tokens
  (16x16x4 latents; the bundled model: patch 1 -> 256 image tokens, warm-started from a patch-2 run with
  64; 16 text tokens);
- text: toy-clip's per-token features (``[B, 16, 64]``, the ``encoder_hidden_states``) and its pooled,
  projected embedding (``[B, 128]``, the ``pooled_projections``); "" is the unconditional prompt;
- flow: x_t = (1 - σ) x0 + σ ε, the network predicts v = ε - x0 (SD3 eq. 2 with a_t = 1 - t,
  b_t = t; diffusers' ``FlowMatchEulerDiscreteScheduler.scale_noise`` and ``step``); the timestep the
  transformer sees is 1000 σ;
- sampling: ``FlowMatchEulerDiscreteScheduler`` (config in :func:`toy_scheduler_config`) with CFG,
  then ``toy_vae.decode_latents``.

:func:`sample` runs the app's one sampling loop on the parts (the registry's ``toy-sd3`` is the same
model, :mod:`pipelines.models.sd3`), and :func:`adherence` judges samples at 64 px with ``render_judge``::

    python -m pipelines.toyworld.toy_sd3 --model assets/models/toy-sd3 --n 4 --w 1 3 5
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel

from pipelines.diffusion import loop
from pipelines.models.sd3 import from_parts, pack_text, toy_clip_text
from pipelines.toyworld.render_judge import classify_by_rendering
from pipelines.toyworld.toy_vae import TOY_VAE_DIR
from pipelines.toyworld.world import BACKGROUNDS, COLORS, HELD_OUT, SHAPES, Scene

TOY_SD3_DIR = Path(__file__).resolve().parents[2] / "assets" / "models" / "toy-sd3"


def toy_transformer_config(num_layers: int = 5, width: int = 128, heads: int = 4, latent_size: int = 16,
                           latent_channels: int = 4, text_dim: int = 64, pooled_dim: int = 128,
                           patch_size: int = 2) -> dict:
    """SD3Transformer2DModel config: ``width`` = heads x head dim, text projected to the same width
    (joint attention needs ``caption_projection_dim`` = inner dim); SD3.0 blocks (no dual attention);
    (``latent_size`` / ``patch_size``)² image tokens."""
    if width % heads:
        raise ValueError(f"width {width} is not a multiple of heads {heads}")
    return dict(
        sample_size=latent_size, patch_size=patch_size, in_channels=latent_channels, out_channels=latent_channels,
        num_layers=num_layers, attention_head_dim=width // heads, num_attention_heads=heads,
        joint_attention_dim=text_dim, caption_projection_dim=width, pooled_projection_dim=pooled_dim,
        pos_embed_max_size=latent_size,
    )


def toy_scheduler_config(shift: float = 1.0) -> dict:
    """FlowMatchEulerDiscreteScheduler config. ``shift`` 1: no resolution shift (SD3 uses 3.0 for
    128x128 latents; ours have 16x16)."""
    return {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": shift}


encode_prompts = toy_clip_text  # prompts -> (tokens [B, L, 64], pooled [B, 128]); one definition, in the registry's


def shift_sigmas(sigma: torch.Tensor, shift: float) -> torch.Tensor:
    """SD3's timestep shift (eq. 23), as FlowMatchEulerDiscreteScheduler applies it: σ' = sσ / (1 + (s-1)σ)."""
    return shift * sigma / (1 + (shift - 1) * sigma)


def flow_match_pair(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rectified-flow training pair: x_t = (1 - σ) x0 + σ ε and the target velocity v = ε - x0.
    ``x0``, ``noise`` ``[B, C, h, w]``; ``sigma`` ``[B]`` in [0, 1]."""
    s = sigma.view(-1, *([1] * (x0.ndim - 1))).to(x0.dtype)
    return (1 - s) * x0 + s * noise, noise - x0


def load(folder: Path = TOY_SD3_DIR, vae_folder: Path = TOY_VAE_DIR):
    """(transformer, vae, scheduler) from a toy-sd3 folder laid out like a hub repo."""
    transformer = SD3Transformer2DModel.from_pretrained(folder / "transformer").eval().requires_grad_(False)
    vae = AutoencoderKL.from_pretrained(vae_folder).eval().requires_grad_(False)
    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(folder / "scheduler")
    return transformer, vae, scheduler


@torch.no_grad()
def sample(transformer: SD3Transformer2DModel, vae: AutoencoderKL, scheduler_config: dict,
           cond: tuple[torch.Tensor, torch.Tensor], uncond: tuple[torch.Tensor, torch.Tensor],
           generator: torch.Generator | None, steps: int = 28, guidance: float = 3.0,
           latents: torch.Tensor | None = None) -> torch.Tensor:
    """Text-to-image as ``StableDiffusion3Pipeline``, run by the app's one loop
    (:func:`pipelines.diffusion.loop.sample`): z_1 ~ N(0, I), ``steps`` Euler steps of the flow with CFG
    (v = v_u + w (v_c - v_u)), then the VAE decode. ``cond``/``uncond``: (tokens ``[B, L, 64]``, pooled
    ``[B, 128]``) from :func:`encode_prompts`; ``latents``: z_1 ``[B, 4, 16, 16]`` instead of a draw from
    ``generator``. Returns images ``[B, 3, 64, 64]`` clamped to [-1, 1]."""
    model = from_parts(transformer, vae, scheduler_config, "toy-sd3", transformer.device)
    b = cond[0].shape[0]
    return loop.sample(model, prompt_embeds=pack_text(*cond),
                       negative_prompt_embeds=pack_text(uncond[0].expand(b, -1, -1), uncond[1].expand(b, -1)),
                       sampler="Euler", num_inference_steps=steps, guidance_scale=guidance, generator=generator,
                       latents=latents)


def eval_pairs(held_out: bool) -> list[tuple[str, str]]:
    """(colour, shape) pairs: the held-out ones, or all the others (seen in training)."""
    return [(c, s) for c in COLORS for s in SHAPES if ((c, s) in HELD_OUT) == held_out]


@torch.no_grad()
def adherence(transformer, vae, scheduler_config: dict, clip, guidance: float, n_per_pair: int = 4,
              steps: int = 28, seed: int = 0, held_out: bool = False) -> dict:
    """Prompt adherence judged by rendering (``render_judge``, 64 px): for each (colour, shape) pair,
    ``n_per_pair`` samples of "a {colour} {shape} on a {bg} background" (bg drawn per sample).
    "match": shape and colour as the prompt (toy-sd's figure); "background"; "all": the three.
    ``clip``: the loaded toy-clip (``pipelines.models.ClipModel``)."""
    rng = random.Random(seed)
    g = torch.Generator().manual_seed(seed)
    uncond = encode_prompts(clip.model, clip.tokenizer, [""])
    ok = {"match": 0, "shape": 0, "color": 0, "background": 0, "all": 0}
    total = 0
    for color, shape in eval_pairs(held_out):
        bgs = [rng.choice(list(BACKGROUNDS)) for _ in range(n_per_pair)]
        prompts = [Scene(shape, color, bg, "medium", 0.5, 0.5, 0.3).caption(with_size=False) for bg in bgs]
        imgs = sample(transformer, vae, scheduler_config, encode_prompts(clip.model, clip.tokenizer, prompts),
                      uncond, g, steps, guidance)
        for bg, got in zip(bgs, classify_by_rendering(imgs)):
            hit = {"shape": got["shape"] == shape, "color": got["color"] == color, "background": got["background"] == bg}
            hit["match"] = hit["shape"] and hit["color"]
            hit["all"] = hit["match"] and hit["background"]
            for k, v in hit.items():
                ok[k] += int(v)
            total += 1
    return {"guidance": guidance, "held_out": held_out, "n": total, **{k: round(v / total, 3) for k, v in ok.items()}}


@torch.no_grad()
def diversity(transformer, vae, scheduler_config: dict, clip, guidance: float, prompt: str = "a red circle",
              k: int = 8, steps: int = 28, seed: int = 7) -> float:
    """Mean pairwise (1 - cosine) between toy-clip image embeddings of ``k`` samples of one prompt
    (toy-sd's diversity figure; toy-clip sees the 64 px samples resized to 32 px)."""
    cond = encode_prompts(clip.model, clip.tokenizer, [prompt] * k)
    uncond = encode_prompts(clip.model, clip.tokenizer, [""])
    imgs = sample(transformer, vae, scheduler_config, cond, uncond, torch.Generator().manual_seed(seed), steps, guidance)
    f = clip.encode_image(imgs)
    return float((1 - (f @ f.T)[~torch.eye(k, dtype=torch.bool)]).mean())


def main(argv: list[str] | None = None) -> None:
    from pipelines.models import TOY_CLIP_NATURAL_DIR, load_toy_clip

    ap = argparse.ArgumentParser(description="Prompt adherence of toy-sd3 (render judge, 64 px)")
    ap.add_argument("--model", type=Path, default=TOY_SD3_DIR)
    ap.add_argument("--vae", type=Path, default=TOY_VAE_DIR)
    ap.add_argument("--n", type=int, default=4, help="samples per (colour, shape) pair")
    ap.add_argument("--w", type=float, nargs="+", default=[1.0, 3.0, 5.0])
    ap.add_argument("--steps", type=int, default=28)
    ap.add_argument("--shift", type=float, default=None, help="override the scheduler's shift")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clip", type=Path, default=TOY_CLIP_NATURAL_DIR, help="the toy-clip folder it was trained on")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    transformer, vae, scheduler = load(args.model, args.vae)
    cfg = dict(scheduler.config)
    if args.shift is not None:
        cfg["shift"] = args.shift
    clip = load_toy_clip(args.clip / "open_clip_model.safetensors", args.clip / "toy-clip.json", "cpu")
    for w in args.w:
        for held in (False, True):
            r = adherence(transformer, vae, cfg, clip, w, args.n, args.steps, held_out=held)
            print(json.dumps({"shift": cfg["shift"], **r}), flush=True)
        d = diversity(transformer, vae, cfg, clip, w, steps=args.steps)
        print(json.dumps({"shift": cfg["shift"], "guidance": w, "diversity_red_circle": round(d, 3)}), flush=True)


if __name__ == "__main__":
    main()
