"""Train toy-vae, the bundled latent autoencoder, on 64 px toy-world scenes.

    OMP_NUM_THREADS=1 nohup nice -n 19 python -m pipelines.toyworld.train_vae --steps 2000 \
        --out assets/models/toy-vae > runs/train_vae.log 2>&1 &

Recipe (as diffusers' research example ``train_autoencoderkl.py``, without its GAN and LPIPS terms):
- loss = MSE + L1 of the reconstruction (of a posterior *sample*, so the decoder tolerates the
  noise the KL term keeps in the latent) + ``--kl`` * KL(q(z|x) || N(0, I)) summed per image,
  averaged over the batch; the KL weight is small (1e-6), so the latent is near-deterministic and
  its scale is fixed afterwards by ``scaling_factor``/``shift_factor`` (measured at every save);
- fresh scenes every step (``world.make_batch``, held-out pairs excluded as for toy-sd), batch 32;
- EMA of the weights (the shipped model), AdamW with warm-up then cosine decay, channels_last.

Resumable: ``--out`` holds the EMA weights (a diffusers AutoencoderKL folder), ``--out/resume``
the raw weights in bf16 and the step counter; the optimizer state lives in ``runs/``. Checkpoints
every ``--save-minutes`` of wall time and at the end. Runs under ``accelerate``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers import AutoencoderKL
from diffusers.training_utils import EMAModel
from safetensors.torch import save_file
from tqdm.auto import tqdm

from pipelines.toyworld.train_resume import load_optimizer, resume_with_ema, save_optimizer
from pipelines.toyworld.toy_vae import IMAGE_SIZE, TOY_VAE_DIR, measure_latent_stats, toy_vae_config
from pipelines.toyworld.train_unet import lr_factor
from pipelines.toyworld.world import make_batch

RUNS = Path(__file__).resolve().parents[2] / "runs"


def vae_loss(vae: AutoencoderKL, x: torch.Tensor, kl_weight: float,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
    """Training loss of ``vae`` on images ``x`` ``[B, 3, H, W]`` in [-1, 1], and its parts."""
    dist = vae.encode(x).latent_dist
    y = vae.decode(dist.sample(generator)).sample
    mse = F.mse_loss(y.float(), x)
    l1 = F.l1_loss(y.float(), x)
    kl = dist.kl().mean()  # KL summed over latent elements, [B] -> mean
    return mse + l1 + kl_weight * kl, {"mse": mse.item(), "l1": l1.item(), "kl": kl.item()}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=2000, help="total optimizer steps")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--kl", type=float, default=1e-6, help="KL weight")
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--save-minutes", type=float, default=4.0)
    ap.add_argument("--stats-n", type=int, default=500, help="scenes that measure scale and shift at a save")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=TOY_VAE_DIR)
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)  # training script only: init reproducibility
    accelerator = Accelerator()
    device = accelerator.device
    vae = AutoencoderKL(**toy_vae_config())

    resume = args.out / "resume"
    start, wall0, ema = resume_with_ema(vae, resume, "vae_raw.safetensors", args.out, args.ema, accelerator.print)
    vae = vae.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(vae.parameters(), lr=args.lr, weight_decay=0.0)
    opt_path = RUNS / "toy-vae-optimizer.pt"
    warm_from = load_optimizer(opt, opt_path, start)
    vae, opt = accelerator.prepare(vae, opt)

    t0 = last_save = time.time()
    log: list[dict] = []
    bar = tqdm(range(start, args.steps), initial=start, total=args.steps, desc="toy-vae", mininterval=10)
    for step in bar:
        x, _ = make_batch(args.batch, seed=30_000_000 + step * 104729 + args.seed, size=IMAGE_SIZE)
        x = x.to(device, memory_format=torch.channels_last)
        for group in opt.param_groups:
            group["lr"] = args.lr * lr_factor(step, args.steps, args.warmup, warm_from)
        loss, parts = vae_loss(vae, x, args.kl, torch.Generator().manual_seed(step))
        opt.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        ema.step(vae.parameters())
        psnr = 10 * torch.log10(torch.tensor(4.0 / parts["mse"])).item()
        bar.set_postfix(loss=f"{loss.item():.4f}", psnr=f"{psnr:.1f}")
        log.append({"step": step + 1, "loss": round(loss.item(), 5), "mse": round(parts["mse"], 6),
                    "kl": round(parts["kl"], 1)})
        if time.time() - last_save > 60 * args.save_minutes or step + 1 == args.steps:
            save(accelerator.unwrap_model(vae), ema, opt, args.out, step + 1, wall0 + time.time() - t0, log,
                 args.stats_n)
            log, last_save = [], time.time()
            accelerator.print(f"saved step {step + 1}, train psnr {psnr:.2f} dB", flush=True)
    accelerator.print(f"done: {args.steps} steps, {(wall0 + time.time() - t0) / 60:.1f} min in all")


def save(vae: AutoencoderKL, ema: EMAModel, opt, out: Path, step: int, wall: float, log: list[dict],
         stats_n: int = 500) -> None:
    """EMA weights (with freshly measured scaling/shift) -> out; raw bf16 weights + step -> out/resume."""
    out.mkdir(parents=True, exist_ok=True)
    ema_vae = AutoencoderKL.from_config(vae.config)
    ema.copy_to(ema_vae.parameters())
    ema_vae.eval()
    ema_vae.register_to_config(scaling_factor=1.0, shift_factor=0.0)
    ema_vae.register_to_config(**measure_latent_stats(ema_vae, n=stats_n))
    ema_vae.save_pretrained(out)  # safetensors
    (out / "resume").mkdir(exist_ok=True)
    save_file({k: v.detach().to(torch.bfloat16).contiguous() for k, v in vae.state_dict().items()},
              out / "resume" / "vae_raw.safetensors")
    (out / "resume" / "train_state.json").write_text(json.dumps({"step": step, "wall_seconds": round(wall, 1)}))
    with open(out / "resume" / "loss_log.jsonl", "a") as fh:
        for row in log:
            fh.write(json.dumps(row) + "\n")
    save_optimizer(opt, RUNS / "toy-vae-optimizer.pt", step)


if __name__ == "__main__":
    main()
