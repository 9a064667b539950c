"""Train the bundled text-conditional UNet (toy-sd) on the toy world.

    python -m pipelines.toyworld.train_unet --steps 6000 --out assets/models/toy-sd
    # captions as people write them, read through a fine-tuned toy-clip text tower:
    python -m pipelines.toyworld.train_unet --captions natural --clip runs/toy-clip-natural \
        --init assets/models/toy-sd --out runs/toy-sd-natural --steps 1000 --lr 2e-4 --warmup 50

Recipe (DDPM training, Ho et al. 2020, Algorithm 1, with these refinements):
- the model's ``prediction_type`` (``toy_scheduler_config``: v-prediction on the cosine schedule
  rescaled to zero terminal SNR), loss weighted by Min-SNR-gamma (Hang et al. 2023):
  w_t = min(SNR_t, gamma) / SNR_t for epsilon, min(SNR_t + 1, gamma) / (SNR_t + 1) for v
  (as diffusers' train_text_to_image: finite at SNR = 0), gamma = 5;
- text conditioning: frozen tiny-CLIP token features, caption replaced by "" for
  ``--drop`` of the samples, so the same network also learns the unconditional
  eps(x_t, "") that classifier-free guidance needs;
- EMA of the weights (the shipped model), AdamW with warm-up then cosine decay;
- channels_last; bf16 autocast is available (--bf16) but measured no faster here.

``--init DIR`` starts a new run from another toy-sd's EMA weights: how the bundled model went
from epsilon- to v-prediction (steps 1-7000 epsilon, then a v-prediction fine-tune).

Resumable: ``--out/unet`` holds the EMA weights (what the app loads), ``--out/resume``
the raw weights in bf16 and the step counter (small enough to commit). Optimizer state
is kept out of the repo, in ``runs/`` (when it is missing a resume restarts the
optimizer with a short warm-up; a state saved at another step, e.g. another run's, is not used).
Runs under ``accelerate``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from diffusers import DDPMScheduler, UNet2DConditionModel
from diffusers.training_utils import EMAModel, compute_snr
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from pipelines.models import TOY_CLIP_DIR, load_toy_clip
from pipelines.models.tinyclip import text_token_features
from pipelines.toyworld.unet_config import toy_scheduler_config, toy_unet_config
from pipelines.toyworld.captions import captions_for
from pipelines.toyworld.world import make_batch
from pipelines.toyworld.train_resume import load_optimizer, save_optimizer

RUNS = Path(__file__).resolve().parents[2] / "runs"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=3000, help="total optimizer steps")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--drop", type=float, default=0.15, help="caption dropout for CFG")
    ap.add_argument("--snr-gamma", type=float, default=5.0)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--save-every", type=int, default=250)
    ap.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=False,
                    help="bf16 autocast (measured no faster than fp32 for this UNet on 2 cores)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[2] / "assets/models/toy-sd")
    ap.add_argument("--clip", type=Path, default=TOY_CLIP_DIR)
    ap.add_argument("--init", type=Path, default=None,
                    help="toy-sd folder whose EMA weights start a new run (ignored when --out resumes)")
    ap.add_argument("--captions", choices=("template", "natural"), default="template",
                    help="'natural': captions as people write them (captions.py; held-out phrasings never used)")
    args = ap.parse_args(argv)

    torch.manual_seed(args.seed)  # training script only: init reproducibility
    accelerator = Accelerator(mixed_precision="bf16" if args.bf16 else "no")
    device = accelerator.device
    clip = load_toy_clip(args.clip / "open_clip_model.safetensors", args.clip / "toy-clip.json", device)
    unet = UNet2DConditionModel(**toy_unet_config())
    noise_scheduler = DDPMScheduler.from_config(toy_scheduler_config())

    resume = args.out / "resume"
    start, wall0 = 0, 0.0
    if (resume / "train_state.json").exists():
        state = json.loads((resume / "train_state.json").read_text())
        start, wall0 = state["step"], state["wall_seconds"]
        raw = load_file(resume / "unet_raw.safetensors")
        unet.load_state_dict({k: v.float() for k, v in raw.items()})
        accelerator.print(f"resuming at step {start} ({wall0 / 60:.0f} min so far)")
    elif args.init is not None:
        unet.load_state_dict(UNet2DConditionModel.from_pretrained(args.init / "unet").state_dict())
        accelerator.print(f"starting from the weights in {args.init}")
    ema = EMAModel(unet.parameters(), decay=args.ema, use_ema_warmup=True, power=2 / 3,
                   model_cls=UNet2DConditionModel, model_config=unet.config)
    if start:  # the EMA continues from the saved one (with --init it starts at the init weights)
        ema_unet = UNet2DConditionModel.from_pretrained(args.out / "unet")
        ema.shadow_params = [p.clone().detach() for p in ema_unet.parameters()]
        ema.optimization_step = start
    unet = unet.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=0.01)
    opt_path = RUNS / f"{args.out.name}-optimizer.pt"  # toy-sd-optimizer.pt for the bundled model
    warm_from = load_optimizer(opt, opt_path, start)

    unet, opt = accelerator.prepare(unet, opt)
    feature_cache: dict[str, torch.Tensor] = {}

    def features(captions: list[str]) -> torch.Tensor:  # [B, L, D], cached per caption
        missing = sorted({c for c in captions if c not in feature_cache})
        if missing:
            feats = text_token_features(clip.model, clip.tokenizer(missing).to(device))
            feature_cache.update(zip(missing, feats))
        return torch.stack([feature_cache[c] for c in captions])

    t0 = time.time()
    log: list[dict] = []
    bar = tqdm(range(start, args.steps), initial=start, total=args.steps, desc="toy-sd")
    for step in bar:
        x0, scenes = make_batch(args.batch, seed=20_000_000 + step * 104729 + args.seed)
        rng = random.Random(step)
        caps = ["" if rng.random() < args.drop else captions_for([s], rng, args.captions)[0].text for s in scenes]
        x0 = x0.to(device, memory_format=torch.channels_last)
        cond = features(caps)
        g = torch.Generator().manual_seed(step)
        noise = torch.randn(x0.shape, generator=g).to(device)
        t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (x0.shape[0],), generator=g).to(device)
        x_t = noise_scheduler.add_noise(x0, noise, t)  # q(x_t | x_0), DDPM eq. 4
        for group in opt.param_groups:
            group["lr"] = args.lr * lr_factor(step, args.steps, args.warmup, warm_from)
        with accelerator.autocast():
            pred = unet(x_t, t, cond).sample
        target, w = loss_target_and_weight(noise_scheduler, x0, noise, t, args.snr_gamma)
        loss = (w * (pred.float() - target).pow(2).mean(dim=(1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        ema.step(unet.parameters())
        bar.set_postfix(loss=f"{loss.item():.4f}")
        log.append({"step": step + 1, "loss": round(loss.item(), 5)})
        if (step + 1) % args.save_every == 0 or step + 1 == args.steps:
            save(accelerator.unwrap_model(unet), ema, opt, args.out, step + 1, wall0 + time.time() - t0, log)
            log = []
    accelerator.print(f"done: {args.steps} steps, {(wall0 + time.time() - t0) / 60:.1f} min in all")


def loss_target_and_weight(scheduler, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor,
                           gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Regression target ``[B, C, H, W]`` and Min-SNR-gamma weight ``[B]`` for ``scheduler``'s
    ``prediction_type``.

    epsilon: target ε, weight min(SNR, gamma) / SNR. v_prediction: target
    v = sqrt(ᾱ_t)·ε - sqrt(1 - ᾱ_t)·x0 (Salimans & Ho 2022, "Progressive Distillation", sec. 4),
    weight min(SNR + 1, gamma) / (SNR + 1). Since v̂ - v = (ε̂ - ε) / sqrt(ᾱ_t), the v-loss is
    (SNR + 1) / SNR times the ε-loss, and min(SNR, gamma) / (SNR + 1) on it would be Min-SNR's
    ε weighting exactly; that is 0 at zero terminal SNR, so (as diffusers' train_text_to_image
    does) SNR + 1 replaces SNR in the numerator: weight 1 at SNR_T ~ 1e-6.
    """
    snr = compute_snr(scheduler, t)  # ᾱ_t / (1 - ᾱ_t), [B]
    ptype = scheduler.config.prediction_type
    if ptype == "epsilon":
        return noise, torch.clamp(snr, max=gamma) / snr
    if ptype == "v_prediction":
        return scheduler.get_velocity(x0, noise, t), torch.clamp(snr + 1, max=gamma) / (snr + 1)
    raise ValueError(f"unsupported prediction_type {ptype!r}")


def lr_factor(step: int, total: int, warmup: int, warm_from: int = 0) -> float:
    """Learning-rate multiplier at ``step``: cosine decay from 1 to 5% over ``total`` steps, times a
    linear warm-up over ``warmup`` steps from ``warm_from`` (0; or the resume step when the optimizer
    state is missing and Adam's moments start again from zero).

    The warm-up scales the cosine value, so a late resume ramps up to the rate the schedule is at
    (~7e-5 at step 6000 of 7500), not to the peak: warming up to the peak raised the 100-step mean
    loss from 0.0045 to 0.0067 after the resume at step 4500 (``resume/loss_log.jsonl``)."""
    p = min(1.0, step / max(1, total))
    cosine = 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * p))
    return cosine * min(1.0, (step - warm_from + 1) / max(1, warmup))


def save(unet, ema: EMAModel, opt, out: Path, step: int, wall: float, log: list[dict]) -> None:
    """EMA weights -> out/unet (shipped); raw bf16 weights + step -> out/resume."""
    out.mkdir(parents=True, exist_ok=True)
    ema_unet = UNet2DConditionModel.from_config(unet.config)
    ema.copy_to(ema_unet.parameters())
    ema_unet.save_pretrained(out / "unet")  # safetensors
    (out / "scheduler").mkdir(exist_ok=True)
    (out / "scheduler" / "scheduler_config.json").write_text(json.dumps(toy_scheduler_config(), indent=2))
    (out / "resume").mkdir(exist_ok=True)
    save_file({k: v.detach().to(torch.bfloat16).contiguous() for k, v in unet.state_dict().items()},
              out / "resume" / "unet_raw.safetensors")
    (out / "resume" / "train_state.json").write_text(json.dumps({"step": step, "wall_seconds": round(wall, 1)}))
    with open(out / "resume" / "loss_log.jsonl", "a") as fh:
        for row in log:
            fh.write(json.dumps(row) + "\n")
    save_optimizer(opt, RUNS / f"{out.name}-optimizer.pt", step)


if __name__ == "__main__":
    main()
