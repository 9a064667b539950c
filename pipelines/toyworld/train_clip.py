"""Contrastive training of the bundled tiny CLIP on the toy world.

    python -m pipelines.toyworld.train_clip --steps 800 --out assets/models/toy-clip
    # captions as people write them (captions.py), text tower only, old-template features kept:
    python -m pipelines.toyworld.train_clip --captions natural --freeze-vision --preserve 1.0 \
        --init assets/models/toy-clip --out runs/toy-clip-natural --steps 400 --lr 3e-4

Captions in a batch repeat and partial captions ("a red star") match many images, so the
plain CLIP loss (one positive per row) would punish true matches. We use the
multi-positive InfoNCE instead: for image i the positives are every caption in the batch
whose named attributes all agree with image i, and symmetrically for captions:

    L_img = -mean_i log( sum_{j in P(i)} softmax_j(s * <f_i, g_j>) )

Runs under ``accelerate`` (the same script scales to several GPUs), resumes from
``--out`` if weights are there, shows tqdm progress and writes a loss log.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from pipelines.toyworld.captions import Caption, captions_for
from pipelines.models.tinyclip import CONFIG_PATH, normalize_for_clip, register, text_token_features, token_features
from pipelines.toyworld.world import COLORS, SHAPES, Scene, make_batch, parse_caption


def compatible(scenes: list[Scene], captions: list[str]) -> torch.Tensor:
    """``[B_img, B_txt]`` bool: caption j's named attributes all hold for image i."""
    parsed = [parse_caption(c) for c in captions]
    sizes = [next((w for w in ("small", "large") if w in c.split()), "medium") for c in captions]
    out = torch.zeros(len(scenes), len(captions), dtype=torch.bool)
    for i, s in enumerate(scenes):
        for j, p in enumerate(parsed):
            ok = p["shape"] == s.shape and p["color"] == s.color
            ok = ok and (p["background"] is None or p["background"] == s.background)
            # Size words are optional: a caption without one names no size.
            ok = ok and (sizes[j] == "medium" or sizes[j] == s.size)
            out[i, j] = ok
    return out


def compatible_captions(scenes: list[Scene], captions: list[Caption]) -> torch.Tensor:
    """``[B_img, B_txt]`` bool from the attributes each generated caption names (no parsing)."""
    return torch.tensor([[c.matches(s) for c in captions] for s in scenes], dtype=torch.bool)


def template_captions() -> list[str]:
    """Every caption the old template can write (with and without size and background): 600."""
    out = []
    for shape in SHAPES:
        for color in COLORS:
            for size in ("small", "medium", "large"):
                for bg in (None, "black", "white", "gray", "navy"):
                    s = Scene(shape, color, bg or "black", size, 0.5, 0.5, 0.3)
                    out.append(s.caption(with_size=True, with_background=bg is not None))
    return out


def multi_positive_nce(logits: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """-log of the softmax mass on the positives, averaged over rows. ``logits, pos: [N, M]``."""
    log_p = logits.log_softmax(dim=-1)
    return -(torch.logsumexp(log_p.masked_fill(~pos, -1e4), dim=-1)).mean()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--batch", type=int, default=192)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=CONFIG_PATH.parent)
    ap.add_argument("--freeze-text", action="store_true",
                    help="train the vision tower only: keeps the text features the UNet was trained on")
    ap.add_argument("--noise-aug", type=float, default=0.0,
                    help="add Gaussian noise of std U(0, this) (in [-1, 1] units) to half the images, "
                         "so the CLIP judges slightly grainy generated samples by their shape")
    ap.add_argument("--freeze-vision", action="store_true",
                    help="train the text tower only (the image features stay as they are)")
    ap.add_argument("--captions", choices=("template", "natural"), default="template",
                    help="'natural': captions as people write them (captions.py; held-out phrasings never used)")
    ap.add_argument("--preserve", type=float, default=0.0,
                    help="weight of an MSE that keeps the per-token text features of the old template's "
                         "captions at the --init (or starting) model's, so toy-sd, which reads them, still can")
    ap.add_argument("--init", type=Path, default=None,
                    help="toy-clip folder whose weights start a new run (ignored when --out resumes)")
    args = ap.parse_args(argv)

    torch.manual_seed(args.seed)  # training script only: weight init reproducibility
    accelerator = Accelerator()
    name = register()
    model, _, _ = open_clip.create_model_and_transforms(name)
    tokenizer = open_clip.get_tokenizer(name)
    weights = args.out / "open_clip_model.safetensors"
    state_path = args.out / "train_state.json"
    start, base_wall = 0, 0.0
    if weights.exists() and state_path.exists():
        model.load_state_dict(load_file(weights))
        prev = json.loads(state_path.read_text())
        start, base_wall = prev["step"], prev.get("wall_seconds", 0.0)
        accelerator.print(f"resuming from step {start}")
    elif args.init is not None:
        model.load_state_dict(load_file(args.init / "open_clip_model.safetensors"))
        accelerator.print(f"starting from the weights in {args.init}")
    ref_feats = ref_tokens = None
    if args.preserve > 0:  # the features to keep come from --init (or these weights, on a fresh run)
        ref_model, _, _ = open_clip.create_model_and_transforms(name)
        src = args.init / "open_clip_model.safetensors" if args.init is not None else None
        ref_model.load_state_dict(load_file(src) if src is not None else model.state_dict())
        ref_tokens = tokenizer(template_captions())  # [600, L]
        ref_feats = text_token_features(ref_model.eval(), ref_tokens)  # [600, L, width]
        del ref_model
    if args.freeze_text:
        for n, p in model.named_parameters():
            if not n.startswith("visual.") and n != "logit_scale":
                p.requires_grad_(False)
    if args.freeze_vision:
        for n, p in model.named_parameters():
            if n.startswith("visual."):
                p.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.05)

    def lr_at(step: int) -> float:  # linear warm-up, then cosine decay to 5%
        if step < args.warmup:
            return (step + 1) / args.warmup
        p = (step - args.warmup) / max(1, args.steps - args.warmup)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, p)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at, last_epoch=-1)
    for _ in range(start):
        sched.step()
    model, opt = accelerator.prepare(model, opt)
    image_size = 32
    log = []
    t0 = time.time()
    for step in tqdm(range(start, args.steps), initial=start, total=args.steps, desc="toy-clip"):
        x, scenes = make_batch(args.batch, seed=10_000_000 + step * 7919 + args.seed)
        rng = random.Random(step)
        caps = list({c.text: c for c in captions_for(scenes, rng, args.captions)}.values())
        captions = [c.text for c in caps]
        pos = compatible_captions(scenes, caps).to(accelerator.device)
        # Light augmentation: small random translations keep shapes' identity.
        shift = rng.randint(-2, 2), rng.randint(-2, 2)
        x = torch.roll(x, shifts=shift, dims=(2, 3))
        if args.noise_aug > 0:  # per image: std ~ U(0, noise_aug) on a random half, else 0
            g = torch.Generator().manual_seed(step)
            std = torch.rand(x.shape[0], 1, 1, 1, generator=g) * args.noise_aug
            std = std * (torch.rand(x.shape[0], 1, 1, 1, generator=g) < 0.5)
            x = (x + std * torch.randn(x.shape, generator=g)).clamp(-1, 1)
        img = normalize_for_clip(x.to(accelerator.device), image_size)
        tok = tokenizer(captions).to(accelerator.device)
        unwrapped = accelerator.unwrap_model(model)
        with torch.set_grad_enabled(not args.freeze_vision):
            f = F.normalize(unwrapped.encode_image(img), dim=-1)  # [B, D]
        g = F.normalize(unwrapped.encode_text(tok), dim=-1)  # [U, D]
        logits = unwrapped.logit_scale.exp().clamp(max=100) * f @ g.T  # [B, U]
        loss = 0.5 * (multi_positive_nce(logits, pos) + multi_positive_nce(logits.T, pos.T))
        row = {}
        if ref_feats is not None:
            idx = torch.randperm(len(ref_tokens), generator=torch.Generator().manual_seed(step))[:64]
            feats = token_features(unwrapped, ref_tokens[idx].to(accelerator.device))
            keep = (feats - ref_feats[idx].to(feats.device)).pow(2).mean()
            row["keep"] = round(keep.item(), 6)
            loss = loss + args.preserve * keep
        opt.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        opt.step()
        sched.step()
        log.append({"step": step + 1, "loss": round(loss.item(), 5), "lr": sched.get_last_lr()[0], **row})
        if (step + 1) % 100 == 0 or step + 1 == args.steps:
            save(accelerator.unwrap_model(model), args.out, step + 1, log, base_wall + time.time() - t0)
            log = []
    accelerator.print(f"done in {time.time() - t0:.0f}s")


def save(model: torch.nn.Module, out: Path, step: int, log: list[dict], seconds: float) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if not (out / CONFIG_PATH.name).exists():  # the folder loads on its own (load_toy_clip)
        (out / CONFIG_PATH.name).write_text(CONFIG_PATH.read_text())
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()},
              out / "open_clip_model.safetensors")
    (out / "train_state.json").write_text(json.dumps({"step": step, "wall_seconds": round(seconds, 1)}))
    with open(out / "loss_log.jsonl", "a") as fh:
        for row in log:
            fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
