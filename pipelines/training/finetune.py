"""Fine-tune a pretrained toy-sd on a shape it never saw (seed 000's fine-tuning; DreamBooth's lesson).

    python -m pipelines.training.finetune --steps 200 --prior 0.5 --out runs/toy-sd-heart

The data: captioned scenes of ``world.NEW_SHAPES`` (the heart), drawn on the fly and deterministic per
seed; with prior preservation a fraction ``prior`` of every batch is old scenes with their old
captions (Ruiz et al. 2023, DreamBooth, eq. 2: the prior term keeps the model's old classes).
The loss is train_unet's (DDPM Algorithm 1 with the model's v target and Min-SNR-gamma weights).
Only the UNet is trained; toy-clip stays frozen (its token features for "heart" are whatever its
BPE gives; the UNet learns to read them). The bundled weights are copied, never written.

Work runs in bounded chunks (:meth:`FineTuner.run`), so the app can run it through its compute thread.
Tensors: images ``[B, 3, 32, 32]`` in [-1, 1].
"""

from __future__ import annotations

import argparse
import copy
import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from pipelines import validation
from pipelines.models.tinyclip import text_token_features
from pipelines.serving import compute_thread
from pipelines.toyworld.train_unet import loss_target_and_weight
from pipelines.toyworld.world import NEW_SHAPES, make_batch, render_batch, sample_scene, training_caption


@dataclass(frozen=True)
class FineTuneConfig:
    """``prior``: fraction of each batch drawn from the old shapes (0 = no prior preservation)."""

    batch: int = 16
    lr: float = 2e-4
    prior: float = 0.5
    drop: float = 0.1  # caption dropout, so the unconditional branch CFG needs keeps training
    snr_gamma: float = 5.0
    seed: int = 0
    train: str = "all"  # which UNet parameters learn: one of TRAINABLE

    def __post_init__(self):
        validation.integer("batch", self.batch, 1, 256)
        validation.number("lr", self.lr, 1e-7, 1e-1)
        validation.number("prior preservation fraction", self.prior, 0.0, 0.9)
        validation.choice("trained layers", self.train, TRAINABLE)


TRAINABLE = ("all", "attention")  # attention: the UNet's attention blocks only (Custom Diffusion's cheaper variant)


def trainable(unet, which: str) -> list[torch.nn.Parameter]:
    """The parameters a fine-tune updates; the rest are frozen (``requires_grad`` off)."""
    unet.requires_grad_(which == "all")
    if which == "attention":
        for name, p in unet.named_parameters():
            p.requires_grad_(".attentions." in name)
    return [p for p in unet.parameters() if p.requires_grad]


def finetune_batch(step: int, n: int, prior: float, seed: int) -> tuple[torch.Tensor, list[str]]:
    """Batch ``step``: images ``[n, 3, 32, 32]`` in [-1, 1] and captions; ``round(prior * n)`` old scenes."""
    rng = random.Random(seed * 1_000_003 + step)
    n_old = round(prior * n)
    new = [sample_scene(rng, shapes=NEW_SHAPES) for _ in range(n - n_old)]
    old_x, old = make_batch(n_old, seed=rng.randrange(2**31)) if n_old else (None, [])
    x = render_batch(new)
    if old_x is not None:
        x = torch.cat([x, old_x])
    return x, [training_caption(s, rng) for s in new + old]


class FineTuner:
    """A session's fine-tune: its own copy of the UNet, optimiser and step counter."""

    def __init__(self, unet, clip, scheduler, cfg: FineTuneConfig):
        """``clip``: the frozen toy-clip (a ``ClipModel``) or a prompt encoder ``list[str] -> [B, L, D]``."""
        self.unet = copy.deepcopy(unet).train()  # the bundled model stays untouched
        # A loaded toy-sd carries a traced, frozen forward (pipelines.models.traced_unet): its graphs fold the
        # weights in, so the copy, whose weights change at every step, samples on the eager forward.
        self.unet.__dict__.pop("forward", None)
        self.clip, self.scheduler, self.cfg = clip, scheduler, cfg
        self.params = trainable(self.unet, cfg.train)
        self.opt = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=0.0)
        self.step, self.losses = 0, []
        self._features: dict[str, torch.Tensor] = {}

    @classmethod
    def from_model(cls, model, cfg: FineTuneConfig) -> "FineTuner":
        """A fine-tune of a loaded toy-sd (a :class:`pipelines.models.DiffusionModel`): a copy of its UNet, its
        prompt encoder (frozen) and a DDPM scheduler of its training config."""
        from diffusers import DDPMScheduler

        return cls(model.unet, model.encode_prompt, DDPMScheduler.from_config(model.scheduler_config), cfg)

    def features(self, captions: list[str]) -> torch.Tensor:
        """Frozen toy-clip token features ``[B, L, D]``, cached per caption."""
        missing = sorted({c for c in captions if c not in self._features})
        if len(self._features) + len(missing) > 1024:  # bounded: the toy world has thousands of captions
            self._features.clear()
            missing = sorted(set(captions))
        if missing:
            with torch.no_grad():
                feats = (text_token_features(self.clip.model, self.clip.tokenizer(missing))
                         if hasattr(self.clip, "tokenizer") else self.clip(missing))
            self._features.update(zip(missing, feats))
        return torch.stack([self._features[c] for c in captions])

    def run(self, n_steps: int) -> list[float]:
        """``n_steps`` optimiser steps (one bounded chunk); returns their losses. The UNet is left in eval
        mode, ready to sample."""
        cfg, out = self.cfg, []
        self.unet.train()
        for _ in range(n_steps):
            x0, caps = finetune_batch(self.step, cfg.batch, cfg.prior, cfg.seed)
            rng = random.Random(self.step)
            caps = ["" if rng.random() < cfg.drop else c for c in caps]
            g = torch.Generator().manual_seed(cfg.seed * 7919 + self.step)
            noise = torch.randn(x0.shape, generator=g)
            t = torch.randint(0, self.scheduler.config.num_train_timesteps, (x0.shape[0],), generator=g)
            x_t = self.scheduler.add_noise(x0, noise, t)  # q(x_t | x_0), DDPM eq. 4
            pred = self.unet(x_t, t, self.features(caps)).sample
            target, w = loss_target_and_weight(self.scheduler, x0, noise, t, cfg.snr_gamma)
            loss = (w * (pred - target).pow(2).mean(dim=(1, 2, 3))).mean()
            compute_thread.checkpoint()  # a step is ~0.9 s on one core: forward and backward are turns of their own
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            compute_thread.checkpoint()
            torch.nn.utils.clip_grad_norm_(self.params, 1.0)
            self.opt.step()
            self.step += 1
            out.append(loss.item())
        self.losses += out
        self.unet.eval()
        return out

    def release(self) -> None:
        """Drop the optimiser's moments, the gradients and the caption cache (3/4 of a session's memory); the next :meth:`run`
        starts Adam's moments afresh."""
        self.opt.state.clear()
        self.opt.zero_grad(set_to_none=True)
        self._features.clear()

    def train(self, n_steps: int) -> list[float]:
        """Alias of :meth:`run`: the interface the app's chunked trainers share (``trainer.train(n)``)."""
        return self.run(n_steps)

    def save(self, folder: str | Path, optimizer: bool = True) -> Path:
        """Write ``folder/unet`` (safetensors + config, ``from_pretrained``-loadable), the step counter and
        (``optimizer``) the optimiser's state, to resume."""
        folder = Path(folder)
        self.unet.save_pretrained(folder / "unet")
        self.scheduler.save_pretrained(folder / "scheduler")  # so load_toy_diffusion reads the folder as a toy-sd
        if optimizer:
            torch.save(self.opt.state_dict(), folder / "optimizer.pt")
        (folder / "finetune_state.json").write_text(json.dumps({"step": self.step, "config": self.cfg.__dict__}))
        return folder


RED_HEART = "a red heart on a white background"


def judge_rates(model, n: int = 32, seed: int = 0, scale: float = 4.0, steps: int = 30) -> dict[str, float]:
    """Rendering-judge figures for a toy-sd, ``n`` seeds per prompt set: ``heart`` = fraction of heart
    prompts (colour and background drawn per seed) judged as hearts; ``red_heart`` = the same for
    :data:`RED_HEART`; ``old`` = fraction of old-shape prompts judged right in shape and colour (the
    forgetting figure); ``roughness`` = mean |Laplacian| of the heart samples (0..255 units; rendered
    hearts give ``rendered_roughness``). Uses the app's sampling loop through ``evaluate.generate``."""
    from pipelines.guidance_judge import roughness
    from pipelines.toyworld.evaluate import generate
    from pipelines.toyworld.render_judge import classify_by_rendering

    rng = random.Random(seed)
    hearts = [sample_scene(rng, shapes=NEW_SHAPES) for _ in range(n)]
    old = [sample_scene(rng) for _ in range(n)]
    sets = {"heart": ([s.caption(with_size=False) for s in hearts], ["heart"] * n, [None] * n),
            "red_heart": ([RED_HEART] * n, ["heart"] * n, [None] * n),
            "old": ([s.caption(with_size=False) for s in old], [s.shape for s in old], [s.color for s in old])}
    out = {}
    for name, (prompts, shapes, colors) in sets.items():
        images = generate(model, prompts, scale, seed, steps)
        pred = classify_by_rendering(images)
        out[name] = sum(p["shape"] == s and c in (None, p["color"]) for p, s, c in zip(pred, shapes, colors)) / n
        if name == "heart":
            out["roughness"] = float(roughness(images).mean())
            out["rendered_roughness"] = float(roughness(render_batch(hearts)).mean())
    return out


def main(argv: list[str] | None = None) -> None:
    from accelerate import Accelerator
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from tqdm.auto import tqdm

    from pipelines.models import TOY_CLIP_DIR, load_toy_clip

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--prior", type=float, default=0.5, help="fraction of old scenes per batch (0: none)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--base", type=Path, default=Path(__file__).resolve().parents[2] / "assets/models/toy-sd")
    ap.add_argument("--clip", type=Path, default=TOY_CLIP_DIR)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--chunk", type=int, default=10)
    ap.add_argument("--eval", type=int, default=0, help="after training, judge this many samples per prompt set")
    args = ap.parse_args(argv)
    accelerator = Accelerator()
    clip = load_toy_clip(args.clip / "open_clip_model.safetensors", args.clip / "toy-clip.json", accelerator.device)
    state = args.out / "finetune_state.json"
    resume = state.exists()
    unet = UNet2DConditionModel.from_pretrained((args.out if resume else args.base) / "unet")
    scheduler = DDPMScheduler.from_pretrained(args.base / "scheduler")
    tuner = FineTuner(unet, clip, scheduler, FineTuneConfig(args.batch, args.lr, args.prior, seed=args.seed))
    if resume:
        tuner.step = json.loads(state.read_text())["step"]
        tuner.opt.load_state_dict(torch.load(args.out / "optimizer.pt", weights_only=True))
    bar = tqdm(total=args.steps, initial=tuner.step, desc="fine-tune")
    while tuner.step < args.steps:
        losses = tuner.run(min(args.chunk, args.steps - tuner.step))
        bar.update(len(losses))
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
        tuner.save(args.out)
    accelerator.print(f"done: {tuner.step} steps in {args.out}")
    if args.eval:
        from pipelines.models import load_toy_diffusion

        for name, folder in (("base", args.base), ("fine-tuned", args.out)):
            rates = judge_rates(load_toy_diffusion(folder, args.clip, accelerator.device, clip=clip), args.eval)
            accelerator.print(f"{name}: hearts {rates['heart']:.0%}, old prompts right {rates['old']:.0%}")


if __name__ == "__main__":
    main()
