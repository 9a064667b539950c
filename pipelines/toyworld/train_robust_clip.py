"""Train an adversarially robust CLIP image tower for guidance (``toy-clip-robust``).

    python -m pipelines.toyworld.train_robust_clip --steps 1600 --eps 1 --out runs/toy-clip-robust
    python -m pipelines.toyworld.train_robust_clip --eval-only --out runs/toy-clip-robust

Why: CLIP guidance follows the image tower's gradient. A plainly trained tower is fooled by tiny
per-pixel patterns, so its gradient draws adversarial noise (issue 15's "fooled CLIP"). A tower trained
to keep its answer under the worst small perturbation (Madry et al. 2018, PGD adversarial training)
has *perceptually aligned* gradients (Santurkar et al. 2019, "Image Synthesis with a Single Robust
Classifier"): lowering its loss changes what the picture shows, because nothing smaller moves it.

Training: toy-clip-natural's image tower (init) against its frozen text tower (captions as people write
them, the multi-positive InfoNCE of ``train_clip``). Inputs are what guidance feeds the tower: half
clean toy-world images, half toy-sd's unconditional x̂0 of them at t ~ U(0, ``--t-max``) (DDPM eq. 15;
blurry, low-contrast early), both through one random cutout (guidance scores cutouts). Each batch is
replaced by its PGD adversary: ``--pgd-steps`` steps of normalised L2 ascent on the loss within an L2
ball of radius ``--eps`` per image ([-1, 1] units over 3 × 32 × 32 values). Only the image tower is
stored (``image_tower.safetensors``, fp16; the text tower is toy-clip-natural's). Resumable
(``--out``: weights, ``train_state.json``, ``loss_log.jsonl``).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from pipelines.clip_loss import make_cutouts
from pipelines.diffusion.maths import x0_from_eps
from pipelines.models.registry import ClipModel, load_toy_clip, toy_clip_config
from pipelines.models.specs import TOY_CLIP_DIR, TOY_CLIP_NATURAL_DIR, TOY_SD_DIR
from pipelines.models.tinyclip import load_image_tower, normalize_for_clip, text_token_features
from pipelines.toyworld.captions import captions_for
from pipelines.toyworld.train_clip import compatible_captions, multi_positive_nce
from pipelines.toyworld.train_noisy_clip import add_noise, tokenize
from pipelines.toyworld.world import all_captions, make_batch, parse_caption

TOWER_FILE = "image_tower.safetensors"


def l2_pgd(loss_fn, x: torch.Tensor, eps: float, steps: int, generator: torch.Generator) -> torch.Tensor:
    """Per-image L2 PGD: maximise ``loss_fn(x + δ)`` (a scalar) over ‖δ_i‖₂ ≤ ``eps``.

    Random start in the ball, then ``steps`` ascent steps of length 2.5 ε / steps along the
    per-image normalised gradient, each projected back onto the ball (Madry et al. 2018).
    ``x``: ``[B, 3, H, W]`` in [-1, 1]; returns x + δ clamped to [-1, 1], detached.
    """
    if eps <= 0 or steps <= 0:
        return x.detach()
    b = x.shape[0]

    def project(d):
        norm = d.flatten(1).norm(dim=1).clamp_min(1e-12).view(b, 1, 1, 1)
        return d * (eps / norm).clamp(max=1.0)

    delta = project(torch.randn(x.shape, generator=generator) * eps / math.sqrt(x[0].numel()))
    alpha = 2.5 * eps / steps
    for _ in range(steps):
        delta.requires_grad_(True)
        (grad,) = torch.autograd.grad(loss_fn((x + delta).clamp(-1, 1)), delta)
        step = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(b, 1, 1, 1)
        delta = project(delta.detach() + alpha * step)
    return (x + delta).clamp(-1, 1).detach()


def load_clip(folder: Path = TOY_CLIP_NATURAL_DIR) -> ClipModel:
    """toy-clip(-natural) through the project's loader (float32, frozen; training unfreezes the image tower)."""
    folder = Path(folder)
    return load_toy_clip(folder / "open_clip_model.safetensors", toy_clip_config(folder), torch.device("cpu"))


@torch.no_grad()
def predicted_x0(unet, scheduler, x0: torch.Tensor, t: torch.Tensor, cond: torch.Tensor,
                 generator: torch.Generator) -> torch.Tensor:
    """toy-sd's x̂0 (DDPM eq. 15) of x_t = q(x_t | x0), clamped to [-1, 1]: ``[B, 3, H, W]``."""
    x_t = add_noise(scheduler, x0, t, generator)
    eps = unet(x_t, t, encoder_hidden_states=cond.expand(x0.shape[0], -1, -1)).sample
    ab = scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    return x0_from_eps(eps, x_t, ab.sqrt(), (1 - ab).sqrt()).clamp(-1, 1)


@torch.no_grad()
def accuracy(clip: ClipModel, images: torch.Tensor, scenes, eps: float = 0.0, steps: int = 5, seed: int = 0) -> float:
    """Zero-shot accuracy over the 160 full captions (shape, colour and background all right), optionally
    under an L2 PGD attack of radius ``eps`` on each image."""
    labels = all_captions()
    text = clip.encode_text(labels)  # [160, D], unit
    parsed = [parse_caption(c) for c in labels]
    want = torch.tensor([parsed.index({"shape": s.shape, "color": s.color, "background": s.background})
                         for s in scenes])

    def loss_fn(x):
        return F.cross_entropy(100 * clip.encode_image(x) @ text.T, want)

    with torch.enable_grad():
        x = l2_pgd(loss_fn, images, eps, steps, torch.Generator().manual_seed(seed))
    return float(((clip.encode_image(x) @ text.T).argmax(1) == want).float().mean())


def main(argv: list[str] | None = None) -> None:
    from diffusers import DDPMScheduler, UNet2DConditionModel

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=1600)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--eps", type=float, default=1.0, help="L2 radius of the adversary, [-1, 1] units")
    ap.add_argument("--pgd-steps", type=int, default=3)
    ap.add_argument("--t-max", type=int, default=600, help="x̂0 of x_t for t up to this")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("runs/toy-clip-robust"))
    ap.add_argument("--save-every", type=int, default=50)
    ap.add_argument("--eval-only", action="store_true")
    args = ap.parse_args(argv)

    torch.manual_seed(args.seed)  # training script only
    clip = load_clip()
    model, size = clip.model, clip.image_size
    state_path = args.out / "train_state.json"
    start, wall0 = 0, 0.0
    if state_path.exists():
        load_image_tower(model, args.out / TOWER_FILE)
        prev = json.loads(state_path.read_text())
        start, wall0 = prev["step"], prev["wall_seconds"]
        print(f"resuming at step {start}", flush=True)
    if args.eval_only:
        report(clip, args.eps)
        return
    unet = UNet2DConditionModel.from_pretrained(TOY_SD_DIR / "unet").eval().requires_grad_(False)
    scheduler = DDPMScheduler.from_pretrained(TOY_SD_DIR / "scheduler")
    empty = text_token_features(load_clip(TOY_CLIP_DIR).model, tokenize([""]))  # [1, L, width]: toy-sd reads toy-clip
    visual = model.visual.train().requires_grad_(True)
    opt = torch.optim.AdamW(visual.parameters(), lr=args.lr, weight_decay=0.05)
    logit_scale = model.logit_scale.exp().clamp(max=100).item()
    t0, log = time.time(), []
    for step in range(start, args.steps):
        x0, scenes = make_batch(args.batch, seed=40_000_000 + step * 7919 + args.seed)
        g = torch.Generator().manual_seed(step)
        half = args.batch // 2
        t = torch.randint(0, args.t_max + 1, (half,), generator=g)
        x = torch.cat([x0[:half], predicted_x0(unet, scheduler, x0[half:2 * half], t, empty, g), x0[2 * half:]])
        x = make_cutouts(x, 1, size, g)
        rng = random.Random(step)
        caps = list({c.text: c for c in captions_for(scenes, rng, "natural")}.values())
        pos = compatible_captions(scenes, caps)
        text = clip.encode_text([c.text for c in caps])  # [U, D], unit, no gradient

        def loss_fn(img):
            f = F.normalize(model.encode_image(normalize_for_clip(img, size)), dim=-1)
            return multi_positive_nce(logit_scale * f @ text.T, pos)

        x_adv = l2_pgd(loss_fn, x, args.eps, args.pgd_steps, g)
        f = F.normalize(model.encode_image(normalize_for_clip(x_adv, size)), dim=-1)
        logits = logit_scale * f @ text.T  # [B, U]
        loss = 0.5 * (multi_positive_nce(logits, pos) + multi_positive_nce(logits.T, pos.T))
        lr = args.lr * min(1.0, (step + 1) / args.warmup) * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        log.append(loss.item())
        if (step + 1) % args.save_every == 0 or step + 1 == args.steps:
            wall = wall0 + time.time() - t0
            save(visual, args.out, step + 1, wall, sum(log) / len(log), args)
            log = []
            print(f"step {step + 1}: adversarial loss {loss.item():.4f}, {wall / 60:.1f} min", flush=True)
    visual.eval().requires_grad_(False)
    report(clip, args.eps)


def save(visual, out: Path, step: int, wall: float, loss: float, args) -> None:
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().half().contiguous() for k, v in visual.state_dict().items()}, out / TOWER_FILE)
    (out / "train_state.json").write_text(json.dumps({"step": step, "wall_seconds": round(wall, 1)}))
    (out / "config.json").write_text(json.dumps({"base": "toy-clip-natural", "eps": args.eps,
                                                 "pgd_steps": args.pgd_steps, "t_max": args.t_max}, indent=2))
    with open(out / "loss_log.jsonl", "a") as fh:  # one row per save: the mean since the last
        fh.write(json.dumps({"step": step, "loss": round(loss, 4)}) + "\n")


def report(clip: ClipModel, eps: float, n: int = 300) -> None:
    """Clean and attacked zero-shot accuracy on fresh images (held-out pairs included)."""
    x, scenes = make_batch(n, seed=123_456, allow_held_out=True)
    for e in (0.0, eps / 2, eps):
        print(f"zero-shot accuracy, L2 attack ε = {e:g}: {accuracy(clip, x, scenes, e):.0%}", flush=True)


if __name__ == "__main__":
    main()
