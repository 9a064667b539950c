"""Train toy-sd3 (a small SD3Transformer2DModel) with rectified flow on toy-vae latents.

    # the bundled model's two stages (patch 2 from scratch, then patch 1 from its weights):
    nohup nice -n 19 python -m pipelines.toyworld.train_sd3 --steps 28000 --out runs/toy-sd3-patch2 \
        > runs/train_sd3_patch2.log 2>&1 &
    nohup nice -n 19 python -m pipelines.toyworld.train_sd3 --patch-size 1 --init runs/toy-sd3-patch2 \
        --steps 11000 --threads 2 --out runs/toy-sd3-p1 > runs/train_sd3_p1.log 2>&1 &

Recipe (SD3, Esser et al. 2024, as diffusers' ``train_dreambooth_sd3.py`` does it):
- fresh 64 px scenes every step (held-out pairs excluded), encoded on the fly by the frozen toy-vae
  to normalised latents z = (E(x) - shift) * scale (a posterior sample; nothing cached on disk);
- σ from the logit-normal density (m = 0, s = 1: the paper's rf/lognorm(0.00, 1.00)), shifted by the
  scheduler's ``shift``; x_t = (1 - σ) z + σ ε; loss ||v̂ - (ε - z)||² (unweighted);
- text: toy-clip token features and pooled embedding (frozen), caption replaced by "" for ``--drop``
  of the samples so the same network gives the unconditional velocity CFG needs;
- EMA of the weights (the shipped model), AdamW with warm-up then cosine decay.

Resumable: ``--out/transformer`` holds the EMA weights in fp16 (what the app loads, and the EMA a
resume continues from), ``--out/resume`` the raw weights in bf16 and the step counter; the optimizer
state lives in ``runs/`` (tagged with its step: loaded only with the weights saved beside it). Checkpoints
every ``--save-minutes``; ``--stop-at`` ends a session early without changing the learning-rate schedule,
which ``--steps`` sets.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers import AutoencoderKL, SD3Transformer2DModel
from diffusers.training_utils import EMAModel, compute_density_for_timestep_sampling
from safetensors.torch import save_file
from tqdm.auto import tqdm

from pipelines.models import TOY_CLIP_NATURAL_DIR, load_toy_clip
from pipelines.toyworld.train_resume import load_optimizer, resume_with_ema, save_optimizer
from pipelines.toyworld.toy_sd3 import (TOY_SD3_DIR, encode_prompts, flow_match_pair, shift_sigmas,
                                        toy_scheduler_config, toy_transformer_config)
from pipelines.toyworld.toy_vae import IMAGE_SIZE, TOY_VAE_DIR, encode_latents
from pipelines.toyworld.train_unet import lr_factor
from pipelines.toyworld.captions import captions_for
from pipelines.toyworld.world import make_batch, training_caption

RUNS = Path(__file__).resolve().parents[2] / "runs"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=20000, help="total optimizer steps (sets the lr decay)")
    ap.add_argument("--stop-at", type=int, default=None, help="stop (and save) at this step; resume later")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--drop", type=float, default=0.1, help="caption dropout for CFG")
    ap.add_argument("--shift", type=float, default=1.0, help="timestep shift (scheduler config)")
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--save-minutes", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=TOY_SD3_DIR)
    ap.add_argument("--vae", type=Path, default=TOY_VAE_DIR)
    ap.add_argument("--clip", type=Path, default=TOY_CLIP_NATURAL_DIR)
    ap.add_argument("--patch-size", type=int, default=2, help="latent pixels per image token side (1: 256 tokens)")
    ap.add_argument("--init", type=Path, default=None,
                    help="a toy-sd3 folder whose EMA weights start a new run where names and shapes match "
                         "(a new patch size keeps the blocks and text embedders; ignored when --out resumes)")
    ap.add_argument("--captions", choices=("template", "natural"), default="natural",
                    help="'natural': captions as people write them (captions.py; held-out phrasings never used)")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)  # training script only: init reproducibility
    accelerator = Accelerator()
    device = accelerator.device
    clip = load_toy_clip(args.clip / "open_clip_model.safetensors", args.clip / "toy-clip.json", device)
    vae = AutoencoderKL.from_pretrained(args.vae).to(device).eval().requires_grad_(False)
    saved = args.out / "transformer" / "config.json"
    # a resume rebuilds the run's own architecture (its patch size), whatever --patch-size says
    model = (SD3Transformer2DModel.from_config(SD3Transformer2DModel.load_config(saved.parent)) if saved.exists()
             else SD3Transformer2DModel(**toy_transformer_config(patch_size=args.patch_size)))

    resume = args.out / "resume"
    if args.init is not None and not (resume / "train_state.json").exists():
        warm_start(model, args.init / "transformer", accelerator.print)
    start, wall0, ema = resume_with_ema(model, resume, "transformer_raw.safetensors", args.out / "transformer",
                                        args.ema, accelerator.print)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    opt_path = RUNS / f"{args.out.name}-optimizer.pt"  # toy-sd3-optimizer.pt for the shipped model
    warm_from = load_optimizer(opt, opt_path, start)
    model, opt = accelerator.prepare(model, opt)
    cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def text(captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:  # [B, L, 64], [B, 128]
        missing = sorted({c for c in captions if c not in cache})
        if missing:
            tok, pooled = encode_prompts(clip.model, clip.tokenizer, missing, device)
            cache.update({c: (tok[i], pooled[i]) for i, c in enumerate(missing)})
        return torch.stack([cache[c][0] for c in captions]), torch.stack([cache[c][1] for c in captions])

    def caption(scene, rng: random.Random) -> str:
        if args.captions == "natural":
            return captions_for([scene], rng, "natural")[0].text
        return training_caption(scene, rng)

    stop = min(args.stop_at or args.steps, args.steps)
    t0 = last_save = time.time()
    log: list[dict] = []
    bar = tqdm(range(start, stop), initial=start, total=args.steps, desc="toy-sd3", mininterval=30)
    for step in bar:
        g = torch.Generator().manual_seed(step)
        x, scenes = make_batch(args.batch, seed=40_000_000 + step * 104729 + args.seed, size=IMAGE_SIZE)
        with torch.no_grad():
            z0 = encode_latents(vae, x.to(device), generator=g)
        rng = random.Random(step)
        tokens, pooled = text(["" if rng.random() < args.drop else caption(s, rng) for s in scenes])
        u = compute_density_for_timestep_sampling("logit_normal", args.batch, logit_mean=0.0, logit_std=1.0,
                                                  generator=g)
        sigma = shift_sigmas(u, args.shift).to(device)
        noise = torch.randn(z0.shape, generator=g).to(device)
        z_t, target = flow_match_pair(z0, noise, sigma)
        for group in opt.param_groups:
            group["lr"] = args.lr * lr_factor(step, args.steps, args.warmup, warm_from)
        pred = model(z_t, encoder_hidden_states=tokens, pooled_projections=pooled, timestep=sigma * 1000).sample
        loss = F.mse_loss(pred.float(), target)
        opt.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema.step(model.parameters())
        bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
        log.append({"step": step + 1, "loss": round(loss.item(), 5)})
        if time.time() - last_save > 60 * args.save_minutes or step + 1 == stop:
            save(accelerator.unwrap_model(model), ema, opt, args, step + 1, wall0 + time.time() - t0, log)
            log, last_save = [], time.time()
            accelerator.print(f"saved step {step + 1}", flush=True)
    accelerator.print(f"stopped at step {stop} of {args.steps}, {(wall0 + time.time() - t0) / 60:.1f} min in all")


def warm_start(model: SD3Transformer2DModel, folder: Path, log=print) -> list[str]:
    """Copy every tensor of the transformer in ``folder`` whose name and shape match ``model``'s; returns the
    names left as initialised (with another patch size: the patch embedding and the output projection)."""
    src = SD3Transformer2DModel.from_pretrained(folder).state_dict()
    own = model.state_dict()
    same = {k: v.float() for k, v in src.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(same, strict=False)
    fresh = sorted(set(own) - set(same))
    log(f"warm start from {folder}: {len(same)} tensors copied, fresh: {', '.join(fresh) or 'none'}")
    return fresh


def save(model: SD3Transformer2DModel, ema: EMAModel, opt, args, step: int, wall: float, log: list[dict]) -> None:
    """EMA weights (fp16) -> out/transformer; scheduler config; raw bf16 weights + step -> out/resume."""
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    ema_model = SD3Transformer2DModel.from_config(model.config)
    # the EMA covers parameters only: buffers (the positional table, which --init may have copied) as trained
    ema_model.load_state_dict(model.state_dict())
    ema.copy_to(ema_model.parameters())
    # fp16 safetensors + config.json: the layout save_pretrained writes (from_pretrained upcasts to fp32)
    ema_model.save_config(out / "transformer")
    save_file({k: v.detach().to(torch.float16).contiguous() for k, v in ema_model.state_dict().items()},
              out / "transformer" / "diffusion_pytorch_model.safetensors")
    (out / "scheduler").mkdir(exist_ok=True)
    (out / "scheduler" / "scheduler_config.json").write_text(json.dumps(toy_scheduler_config(args.shift), indent=2))
    (out / "resume").mkdir(exist_ok=True)
    save_file({k: v.detach().to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()},
              out / "resume" / "transformer_raw.safetensors")
    (out / "resume" / "train_state.json").write_text(json.dumps({"step": step, "wall_seconds": round(wall, 1),
                                                                 "steps_total": args.steps}))
    with open(out / "resume" / "loss_log.jsonl", "a") as fh:
        for row in log:
            fh.write(json.dumps(row) + "\n")
    save_optimizer(opt, RUNS / f"{out.name}-optimizer.pt", step)


if __name__ == "__main__":
    main()
