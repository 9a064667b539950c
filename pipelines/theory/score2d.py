"""The score field on a 2-D slice: a small ε-prediction MLP (the Train-your-own playground's, DDPM objective)
read as s(x, t) = −ε̂ / √(1 − ᾱ_t), and annealed Langevin with that score (:mod:`pipelines.theory.langevin`).

Points are ``[N, 2]`` float32 roughly in [-2.5, 2.5]² (:mod:`pipelines.training.toy2d`).
"""

from __future__ import annotations

from typing import Iterator

import torch

from pipelines import validation
from pipelines.diffusion import maths
from pipelines.theory.langevin import level_plan, run_chain
from pipelines.theory.score import score_from_output
from pipelines.training import toy2d
from pipelines.training.objectives import T_TRAIN

DISTRIBUTIONS = ("two moons", "8 gaussians", "ring", "swiss roll", "smiley")
MAX_TRAIN_STEPS = 4000


def train(distribution: str, steps: int, seed: int = 0, chunk: int = 100) -> Iterator[tuple[toy2d.Toy2DTrainer, int]]:
    """Train a DDPM (ε) MLP on ``distribution``; yields ``(trainer, steps done)`` after every ``chunk`` steps."""
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"unknown distribution {distribution!r}; choose one of {', '.join(DISTRIBUTIONS)}")
    steps = validation.integer("training steps", steps, 1, MAX_TRAIN_STEPS)
    tr = toy2d.Toy2DTrainer(toy2d.Toy2DConfig(distribution=distribution, objective="ddpm", seed=validation.seed(seed)))
    done = 0
    while done < steps:
        n = min(chunk, steps - done)
        tr.train(n)
        done += n
        yield tr, done


def _alpha_bar(trainer: toy2d.Toy2DTrainer, t: int) -> float:
    t = validation.integer("t", t, 1, T_TRAIN - 1)  # t = 0 has ᾱ = 1: no noise, no score
    return float(trainer.cfg.obj.alphas_cumprod()[t])


@torch.no_grad()
def score_at(trainer: toy2d.Toy2DTrainer, x: torch.Tensor, t: int) -> torch.Tensor:
    """s(x, t) ``[N, 2]`` at points ``x`` ``[N, 2]`` and integer timestep 1 ≤ t ≤ 999 (score.py's −ε̂/√(1 − ᾱ_t))."""
    if trainer.cfg.objective != "ddpm":
        raise ValueError("the score field needs an ε-prediction (DDPM) model")
    ab = _alpha_bar(trainer, t)
    eps = trainer.ema.eval()(x, torch.full((len(x),), float(t)))
    return score_from_output(eps, x, ab, "epsilon")


def grid(lim: float = 2.5, n: int = 21) -> torch.Tensor:
    """An ``n × n`` grid of points ``[n², 2]`` over [-lim, lim]²."""
    ax = torch.linspace(-lim, lim, n)
    return torch.stack(torch.meshgrid(ax, ax, indexing="xy"), -1).reshape(-1, 2)


def field(trainer: toy2d.Toy2DTrainer, t: int, lim: float = 2.5, n: int = 21) -> dict:
    """``{"points" [n², 2], "score" [n², 2], "alpha_bar", "sigma"}``: the learnt score on a grid at timestep t."""
    pts = grid(lim, n)
    ab = _alpha_bar(trainer, t)
    return {"points": pts, "score": score_at(trainer, pts, t), "alpha_bar": ab, "sigma": (1 - ab) ** 0.5}


@torch.no_grad()
def langevin(trainer: toy2d.Toy2DTrainer, n_points: int = 800, n_levels: int = 10, steps_per_level: int = 10,
             delta: float = 0.2, seed: int = 0) -> torch.Tensor:
    """Annealed Langevin samples ``[n_points, 2]`` from N(0, I) with the MLP's score (the same chain as the images)."""
    n_points = validation.integer("particles", n_points, 1, 5000)
    k = validation.integer("steps per level", steps_per_level, 1, 100)
    g = torch.Generator().manual_seed(validation.seed(seed))
    plan = level_plan(trainer.cfg.obj.scheduler(), validation.integer("noise levels", n_levels, 1, 100),
                      validation.number("step size δ", delta, 1e-4, 2.0))
    x = maths.randn((n_points, 2), g, torch.device("cpu"), torch.float32)
    return run_chain(lambda x, i: score_at(trainer, x, plan[i][0]), x, [eta for _, _, eta in plan], k, g)
