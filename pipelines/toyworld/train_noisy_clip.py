"""Train (and evaluate) the noise-aware CLIP image tower ``toy-clip-noisy`` (see ``noisy_clip.py``).

    python -m pipelines.toyworld.train_noisy_clip --steps 600 --out assets/models/toy-clip-noisy
    python -m pipelines.toyworld.train_noisy_clip --eval-only          # accuracy vs noise level

Training: toy-world images x0 (held-out colour-shape pairs excluded), t uniform over toy-sd's 960
steps, x_t = sqrt(ᾱ_t) x0 + sqrt(1 - ᾱ_t) ε (DDPM eq. 4, toy-sd's schedule); captions as people write
them (``captions.py``), embedded by toy-clip's frozen text tower; the multi-positive InfoNCE of
``train_clip`` between f(x_t, t) and the captions, toy-clip's logit scale. At high t no image can
be told apart, the loss there is ~log(#captions) and the tower learns the prior; what matters is
that its score is meaningful over the range of t where guidance acts.

Evaluation: zero-shot accuracy (shape, colour, background all right; 160 full captions) on x_t of
fresh images with held-out pairs, at several t, for toy-clip on x_t and for toy-clip-noisy.
Resumable (``--out``: weights, ``train_state.json``, ``loss_log.jsonl``).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from safetensors.torch import load_file

from pipelines.toyworld import noisy_clip
from pipelines.toyworld.captions import captions_for
from pipelines.models.tinyclip import WEIGHTS_PATH, normalize_for_clip
from pipelines.toyworld.train_clip import compatible_captions, multi_positive_nce
from pipelines.toyworld.unet_config import toy_scheduler_config
from pipelines.toyworld.world import all_captions, make_batch, parse_caption

EVAL_T = (0, 100, 200, 300, 400, 500, 600, 700, 800, 900)


def add_noise(scheduler: DDPMScheduler, x0: torch.Tensor, t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """x_t = sqrt(ᾱ_t) x0 + sqrt(1 - ᾱ_t) ε (DDPM eq. 4): ``[B, 3, H, W]``."""
    return scheduler.add_noise(x0, torch.randn(x0.shape, generator=generator), t)


@torch.no_grad()
def accuracy_vs_noise(image_fn, clip, scheduler, n: int = 300, seed: int = 123_456,
                      ts: tuple[int, ...] = EVAL_T) -> dict[int, float]:
    """Zero-shot accuracy (all three attributes) of ``image_fn(x_t, t) -> [B, D]`` unit embeddings."""
    x0, scenes = make_batch(n, seed=seed, allow_held_out=True)
    labels = all_captions()
    text = F.normalize(clip.encode_text(tokenize(labels)), dim=-1)  # [160, D]
    parsed = [parse_caption(c) for c in labels]
    out = {}
    for t in ts:
        g = torch.Generator().manual_seed(seed + t)
        tt = torch.full((n,), t, dtype=torch.long)
        x_t = add_noise(scheduler, x0, tt, g)
        best = (image_fn(x_t, tt) @ text.T).argmax(dim=1).tolist()
        out[t] = sum(parsed[j] == {"shape": s.shape, "color": s.color, "background": s.background}
                     for j, s in zip(best, scenes)) / n
    return out


@lru_cache(maxsize=1)
def _tokenizer():
    import open_clip

    return open_clip.get_tokenizer(noisy_clip.register(noisy_clip.CONFIG_PATH))


def tokenize(texts: list[str]) -> torch.Tensor:
    """Texts -> toy-clip token ids ``[B, 16]``."""
    return _tokenizer()(texts)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--clip", type=Path, default=WEIGHTS_PATH, help="toy-clip weights (text tower and init)")
    ap.add_argument("--out", type=Path, default=noisy_clip.NOISY_DIR)
    ap.add_argument("--save-every", type=int, default=50)
    ap.add_argument("--eval-only", action="store_true")
    ap.add_argument("--eval-n", type=int, default=300)
    args = ap.parse_args(argv)

    torch.manual_seed(args.seed)  # training script only: init reproducibility
    encoder, clip = noisy_clip.build(args.clip)
    clip.requires_grad_(False).eval()
    scheduler = DDPMScheduler.from_config(toy_scheduler_config())
    state_path = args.out / "train_state.json"
    start, wall0 = 0, 0.0
    if state_path.exists():
        encoder.load_state_dict({k: v.float() for k, v in load_file(args.out / "image_tower.safetensors").items()})
        prev = json.loads(state_path.read_text())
        start, wall0 = prev["step"], prev["wall_seconds"]
        print(f"resuming at step {start}")
    if args.eval_only:
        evaluate(encoder, clip, scheduler, args.eval_n)
        return
    opt = torch.optim.AdamW(encoder.parameters(), lr=args.lr, weight_decay=0.05)
    logit_scale = clip.logit_scale.exp().clamp(max=100).item()
    t0, log = time.time(), []
    for step in range(start, args.steps):
        x0, scenes = make_batch(args.batch, seed=30_000_000 + step * 7919 + args.seed)
        rng = random.Random(step)
        caps = list({c.text: c for c in captions_for(scenes, rng, "natural")}.values())
        pos = compatible_captions(scenes, caps)
        g = torch.Generator().manual_seed(step)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (args.batch,), generator=g)
        x_t = add_noise(scheduler, x0, t, g)
        with torch.no_grad():
            text = F.normalize(clip.encode_text(tokenize([c.text for c in caps])), dim=-1)
        logits = logit_scale * encoder(x_t, t) @ text.T  # [B, U]
        loss = 0.5 * (multi_positive_nce(logits, pos) + multi_positive_nce(logits.T, pos.T))
        lr = args.lr * min(1.0, (step + 1) / args.warmup) * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        log.append({"step": step + 1, "loss": round(loss.item(), 4)})
        if (step + 1) % args.save_every == 0 or step + 1 == args.steps:
            wall = wall0 + time.time() - t0
            noisy_clip.save(encoder, args.out)  # fp16: what ships, and what a resume starts from
            state_path.write_text(json.dumps({"step": step + 1, "wall_seconds": round(wall, 1)}))
            with open(args.out / "loss_log.jsonl", "a") as fh:
                # one row per save: the mean over the steps since, keeps the log small
                fh.write(json.dumps({"step": step + 1, "loss": round(sum(r["loss"] for r in log) / len(log), 4)}) + "\n")
            log = []
            print(f"step {step + 1}: loss {loss.item():.4f}, {wall / 60:.1f} min", flush=True)
    evaluate(noisy_clip.load(args.out), clip, scheduler, args.eval_n)  # the stored (fp16) weights


def evaluate(encoder, clip, scheduler, n: int) -> None:
    size = encoder.image_size
    plain = accuracy_vs_noise(lambda x, t: F.normalize(clip.encode_image(normalize_for_clip(x, size)), dim=-1),
                              clip, scheduler, n)
    noisy = accuracy_vs_noise(encoder, clip, scheduler, n)
    print("zero-shot accuracy (shape+colour+background, 160 captions) on x_t, by t (ᾱ_t):")
    print("| t | " + " | ".join(str(t) for t in EVAL_T) + " |")
    print("|---|" + "---|" * len(EVAL_T))
    print("| ᾱ_t | " + " | ".join(f"{float(scheduler.alphas_cumprod[t]):.3g}" for t in EVAL_T) + " |")
    print("| toy-clip | " + " | ".join(f"{plain[t]:.0%}" for t in EVAL_T) + " |")
    print("| toy-clip-noisy | " + " | ".join(f"{noisy[t]:.0%}" for t in EVAL_T) + " |")


if __name__ == "__main__":
    main()
