"""The 2-D playground: point clouds, a small MLP denoiser, DDPM and flow matching trained in chunks.

Points are ``[N, 2]`` float32, scaled to fit roughly in [-2, 2]² (the noise N(0, I) covers the same
box). The model is ``fn(x [B, 2], model_time [B]) -> [B, 2]`` (ε or v, see :mod:`.objectives`).
Everything random comes from a ``torch.Generator`` seeded by the config, so a run is repeatable.
"""

from __future__ import annotations

import copy
import functools
import math
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from pipelines.training.objectives import Objective, straightness

DISTRIBUTIONS = ("two moons", "swiss roll", "8 gaussians", "ring", "smiley", "word", "your points")
SAMPLE_STEPS = (1, 2, 4, 8, 32)
MAX_POINTS = 5000  # user points accepted
MAX_WORD = 12
DATA_BOX = 2.5  # every distribution fits in [-DATA_BOX, DATA_BOX]²; DDIM clips x̂0 to it


# ---------------------------------------------------------------- data


def _moons(n, g):
    t = torch.rand(n, generator=g) * math.pi
    upper = torch.rand(n, generator=g) < 0.5
    x = torch.where(upper, torch.cos(t), 1 - torch.cos(t))
    y = torch.where(upper, torch.sin(t), 0.5 - torch.sin(t))
    return torch.stack([x - 0.5, y - 0.25], 1) * 1.4 + 0.06 * torch.randn(n, 2, generator=g)


def _swiss(n, g):
    t = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=g))
    return torch.stack([t * torch.cos(t), t * torch.sin(t)], 1) / 7.0 + 0.04 * torch.randn(n, 2, generator=g)


def _gaussians(n, g):
    k = torch.randint(0, 8, (n,), generator=g).float() * (math.pi / 4)
    return 1.6 * torch.stack([torch.cos(k), torch.sin(k)], 1) + 0.1 * torch.randn(n, 2, generator=g)


def _ring(n, g):
    a = torch.rand(n, generator=g) * 2 * math.pi
    r = 1.5 + 0.08 * torch.randn(n, generator=g)
    return torch.stack([r * torch.cos(a), r * torch.sin(a)], 1)


def _smiley(n, g):
    part = torch.multinomial(torch.tensor([0.5, 0.1, 0.1, 0.3]), n, replacement=True, generator=g)
    a = torch.rand(n, generator=g) * 2 * math.pi
    face = 1.7 * torch.stack([torch.cos(a), torch.sin(a)], 1)
    eye = 0.12 * torch.randn(n, 2, generator=g)
    m = math.pi * (1.2 + 0.6 * torch.rand(n, generator=g))  # mouth: the lower arc from 216° to 324°
    mouth = 1.0 * torch.stack([torch.cos(m), torch.sin(m)], 1) + torch.tensor([0.0, 0.1])
    pts = torch.where((part == 0)[:, None], face, mouth)
    pts = torch.where((part == 1)[:, None], eye + torch.tensor([-0.6, 0.6]), pts)
    pts = torch.where((part == 2)[:, None], eye + torch.tensor([0.6, 0.6]), pts)
    return pts + 0.04 * torch.randn(n, 2, generator=g)


@functools.lru_cache(maxsize=16)
def word_mask(word: str) -> np.ndarray:
    """Coordinates ``[M, 2]`` (x right, y up; float) of the ink pixels of ``word`` rendered with PIL."""
    from PIL import Image, ImageDraw, ImageFont

    try:
        font = ImageFont.load_default(size=48)
    except TypeError:  # Pillow < 10.1 has only the bitmap font
        font = ImageFont.load_default()
    box = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), word, font=font)
    im = Image.new("L", (box[2] + 4, box[3] + 4))
    ImageDraw.Draw(im).text((2, 2), word, fill=255, font=font)
    ys, xs = np.nonzero(np.asarray(im) > 127)
    return np.stack([xs, -ys], 1).astype(np.float32)


def normalise_points(pts: torch.Tensor, half_width: float = 1.9) -> tuple[torch.Tensor, float]:
    """Centre ``[M, 2]`` points and scale their larger extent to [-half_width, half_width]:
    (points, the scale factor applied)."""
    pts = pts - (pts.max(0).values + pts.min(0).values) / 2
    scale = half_width / float(pts.abs().max().clamp_min(1e-6))
    return pts * scale, scale


def points_from_image(rgba: np.ndarray) -> np.ndarray:
    """A drawing (uint8 ``[H, W, 3 or 4]``, dark or opaque strokes on white / transparent) -> the stroke
    pixels as points ``[M, 2]`` (x right, y up), at most ``MAX_POINTS`` (evenly thinned)."""
    a = np.asarray(rgba)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise ValueError("expected an RGB or RGBA drawing")
    ink = a[..., :3].astype(np.float32).mean(-1) < 128
    if a.shape[2] == 4 and (a[..., 3] < 255).any():  # transparent canvas: strokes are the opaque pixels
        ink = a[..., 3] > 127
    ys, xs = np.nonzero(ink)
    if len(xs) == 0:
        raise ValueError("draw something on the canvas first (no strokes found)")
    step = max(1, len(xs) // MAX_POINTS)
    return np.stack([xs, -ys], 1)[::step].astype(np.float32)


def sample_data(name: str, n: int, generator: torch.Generator, word: str = "DIFFUSION",
                points: np.ndarray | None = None) -> torch.Tensor:
    """``n`` points ``[n, 2]`` of distribution ``name`` (one of DISTRIBUTIONS)."""
    makers = {"two moons": _moons, "swiss roll": _swiss, "8 gaussians": _gaussians, "ring": _ring,
              "smiley": _smiley}
    if name in makers:
        return makers[name](n, generator).float()
    if name == "word":
        word = (word or "").strip()
        if not 1 <= len(word) <= MAX_WORD:
            raise ValueError(f"the word must have 1 to {MAX_WORD} characters, got {len(word)}")
        src, jitter = torch.from_numpy(word_mask(word)), 0.5  # jitter in pixels, before scaling
    elif name == "your points":
        if points is None or len(points) < 3:
            raise ValueError("give at least 3 points (draw on the canvas)")
        src = torch.as_tensor(np.asarray(points, np.float32)[:MAX_POINTS])
        if src.ndim != 2 or src.shape[1] != 2 or not torch.isfinite(src).all():
            raise ValueError("points must be finite (x, y) pairs")
        jitter = 0.01 * float((src.max(0).values - src.min(0).values).max().clamp_min(1e-6))
    else:
        raise ValueError(f"unknown distribution {name!r}; choose one of {', '.join(DISTRIBUTIONS)}")
    base, scale = normalise_points(src)
    idx = torch.randint(0, len(base), (n,), generator=generator)
    return base[idx] + jitter * scale * torch.randn(n, 2, generator=generator)


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, n_proj: int = 128, seed: int = 0) -> float:
    """Sliced 1-Wasserstein distance between point clouds ``[N, 2]`` and ``[M, 2]``: the mean over
    ``n_proj`` fixed random directions of W1 between the projections (quantile matching)."""
    g = torch.Generator().manual_seed(seed)
    d = F.normalize(torch.randn(n_proj, a.shape[1], generator=g), dim=1)
    q = torch.linspace(0, 1, min(len(a), len(b)))
    pa = torch.quantile((a.float() @ d.T), q, dim=0)  # [Q, n_proj]
    pb = torch.quantile((b.float() @ d.T), q, dim=0)
    return float((pa - pb).abs().mean())


# ---------------------------------------------------------------- model


class MLP(nn.Module):
    """x ``[B, 2]`` and model time ``[B]`` (0..1000) -> ``[B, 2]``: sinusoidal time features, SiLU MLP."""

    def __init__(self, hidden: int = 128, layers: int = 3, t_dim: int = 16):
        super().__init__()
        self.t_dim = t_dim
        dims = [2 + t_dim] + [hidden] * layers
        self.body = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims[:-1], dims[1:]))
        self.out = nn.Linear(hidden, 2)

    def time_features(self, t: torch.Tensor) -> torch.Tensor:
        """Fourier features of s = t / 1000 in [0, 1] with frequencies π·2^k: smooth in t at low k."""
        half = self.t_dim // 2
        freqs = math.pi * 2.0 ** torch.arange(half).clamp_max(8)
        ang = (t.float() / 1000.0)[:, None] * freqs[None]
        return torch.cat([ang.sin(), ang.cos()], 1)

    def forward(self, x, t):
        h = torch.cat([x, self.time_features(t)], 1)
        for lin in self.body:
            h = F.silu(lin(h))
        return self.out(h)


@dataclass(frozen=True)
class Toy2DConfig:
    distribution: str = "two moons"
    objective: str = "flow"
    schedule: str = "cosine"
    logit_normal: bool = False
    word: str = "DIFFUSION"
    hidden: int = 128
    batch_size: int = 256
    lr: float = 3e-3
    n_data: int = 8000  # the training set: a fixed draw of this many points
    ema_decay: float = 0.995  # samples come from an exponential moving average of the weights
    seed: int = 0

    @property
    def obj(self) -> Objective:
        return Objective(self.objective, self.schedule, self.logit_normal, clip=DATA_BOX)


class Toy2DTrainer:
    """One model, its optimiser and its data; :meth:`train` runs a chunk of steps.

    ``pairs`` (after :meth:`reflow`) replaces independent (data, noise) draws with the couplings
    (x0 = sample(ε), ε) of the previous model: rectified flow's second pass (Liu et al. 2022, §2.2)."""

    def __init__(self, cfg: Toy2DConfig, points: np.ndarray | None = None):
        cfg.obj  # validates objective and schedule
        self.cfg = cfg
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.points = points  # the user's points (distribution "your points"), else None
        self.data = sample_data(cfg.distribution, cfg.n_data, self.gen, cfg.word, points)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.model = MLP(cfg.hidden)
        self.ema = copy.deepcopy(self.model).requires_grad_(False)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.step, self.losses, self.reflows = 0, [], 0
        self.pairs: tuple[torch.Tensor, torch.Tensor] | None = None

    def train(self, steps: int) -> list[float]:
        """``steps`` optimiser steps; returns their losses."""
        out = []
        self.model.train()
        for _ in range(int(steps)):
            idx = torch.randint(0, self.cfg.n_data, (self.cfg.batch_size,), generator=self.gen)
            if self.pairs is None:
                x_t, t, target = self.cfg.obj.training_pair(self.data[idx], self.gen)
            else:
                x_t, t, target = self.cfg.obj.training_pair(self.pairs[0][idx], self.gen, noise=self.pairs[1][idx])
            loss = F.mse_loss(self.model(x_t, t), target)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.step += 1
            with torch.no_grad():  # EMA with warm-up (1 + n) / (10 + n)
                d = min(self.cfg.ema_decay, (1 + self.step) / (10 + self.step))
                for pe, pm in zip(self.ema.parameters(), self.model.parameters()):
                    pe.lerp_(pm, 1.0 - d)
            out.append(float(loss.detach()))
        self.losses.extend(out)
        return out

    @torch.no_grad()
    def sample(self, noise: torch.Tensor, steps: int, keep_path: bool = False):
        """(x0 ``[B, 2]``, path) from ``noise`` ``[B, 2]`` in ``steps`` model calls."""
        return self.cfg.obj.sample(self.ema.eval(), noise, steps, keep_path)

    def reflow(self, steps: int = 32) -> None:
        """Replace the training couplings with (sample(ε), ε) for ``n_data`` fresh ε (flow only)."""
        if self.cfg.objective != "flow":
            raise ValueError("reflow straightens a flow-matching model; train with the flow objective first")
        noise = torch.randn(self.cfg.n_data, 2, generator=self.gen)
        x0, _ = self.sample(noise, steps)
        self.pairs = (x0, noise)
        self.reflows += 1
        self.model.load_state_dict(self.ema.state_dict())  # fine-tune the averaged weights
        self.opt = torch.optim.Adam(self.model.parameters(), lr=self.cfg.lr / 3)

    @torch.no_grad()
    def field(self, t: float, lim: float = 3.0, n: int = 17) -> tuple[torch.Tensor, torch.Tensor]:
        """(grid points ``[n², 2]``, direction to the predicted x̂0 ``[n², 2]``) at time ``t`` in [0, 1]
        (flow σ = t; DDPM timestep round(t·(T−1))): x̂0 − x_t = −σ v for flow."""
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"t must be in [0, 1], got {t}")
        ax = torch.linspace(-lim, lim, n)
        pts = torch.stack(torch.meshgrid(ax, ax, indexing="xy"), -1).reshape(-1, 2)
        model = self.ema.eval()
        if self.cfg.objective == "flow":
            return pts, -t * model(pts, torch.full((len(pts),), t * 1000.0))
        k = round(t * 999)
        ab = float(self.cfg.obj.alphas_cumprod()[k])
        eps = model(pts, torch.full((len(pts),), float(k)))
        x0 = (pts - math.sqrt(1 - ab) * eps) / math.sqrt(ab)  # DDPM eq. 15 rearranged
        return pts, x0 - pts


def evaluate(trainer: Toy2DTrainer, n: int = 1000, steps=SAMPLE_STEPS, seed: int = 1234) -> dict:
    """Sample quality and straightness: ``{"swd": {steps: distance}, "baseline": distance between two
    independent data draws of n, "straightness": mean ratio at the most steps, "samples": {steps: [n, 2]},
    "path": path at the most steps (first 24 particles)}``. Fixed noise, so runs compare."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(n, 2, generator=g)
    cfg = trainer.cfg
    ref = sample_data(cfg.distribution, n, g, cfg.word, trainer.points)
    ref2 = sample_data(cfg.distribution, n, g, cfg.word, trainer.points)
    out = {"swd": {}, "samples": {}, "baseline": sliced_wasserstein(ref, ref2)}
    for s in steps:
        x, path = trainer.sample(noise, s, keep_path=s == max(steps))
        out["samples"][s] = x
        out["swd"][s] = sliced_wasserstein(x, ref)
        if path:
            out["straightness"] = float(straightness(path).mean())
            out["path"] = [p[:24] for p in path]
    return out


def with_objective(cfg: Toy2DConfig, objective: str) -> Toy2DConfig:
    return replace(cfg, objective=objective)
