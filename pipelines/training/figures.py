"""Matplotlib figures of the training tab, rendered to PIL images (no pyplot: safe in threads)."""

from __future__ import annotations

import io

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image

from pipelines.training import toy2d

LIM = 3.0
DATA_C, MODEL_C = "#9aa5b1", "#d1495b"


def to_image(fig: Figure, dpi: int = 80) -> Image.Image:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def _square(ax, title: str) -> None:
    ax.set(xlim=(-LIM, LIM), ylim=(-LIM, LIM), title=title, xticks=[], yticks=[])
    ax.set_aspect("equal")
    ax.title.set_fontsize(9)


def loss_axes(ax, losses: list[float], title: str = "training loss") -> None:
    """Loss per step (faint) and its running mean, log scale."""
    y = np.asarray(losses, np.float64)
    if len(y):
        ax.plot(y, color="#c0c8d0", lw=0.5)
        k = max(1, len(y) // 50)
        ax.plot(np.arange(k - 1, len(y)), np.convolve(y, np.ones(k) / k, "valid"), color="#1f4e79", lw=1.5)
        ax.set_yscale("log")
    ax.set(title=title, xlabel="step")
    ax.title.set_fontsize(9)


def playground(trainer: toy2d.Toy2DTrainer, field_t: float, n: int = 600, steps: int = 16,
               seed: int = 7) -> Image.Image:
    """Four panels: loss, samples vs data, arrows towards x̂0 at ``field_t``, particle trajectories."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(n, 2, generator=g)
    x, path = trainer.sample(noise, steps, keep_path=True)
    data = trainer.data[:n]
    pts, arrows = trainer.field(field_t)
    fig = Figure(figsize=(12, 3.2), layout="constrained")
    ax = fig.subplots(1, 4)
    loss_axes(ax[0], trainer.losses, f"loss ({trainer.cfg.objective}, step {trainer.step})")
    ax[1].scatter(data[:, 0], data[:, 1], s=2, c=DATA_C, label="data")
    ax[1].scatter(x[:, 0], x[:, 1], s=2, c=MODEL_C, label=f"samples ({steps} steps)")
    ax[1].legend(fontsize=7, loc="lower right", markerscale=4)
    _square(ax[1], "samples vs data")
    ax[2].scatter(data[:, 0], data[:, 1], s=1, c=DATA_C)
    ax[2].quiver(pts[:, 0], pts[:, 1], arrows[:, 0], arrows[:, 1], color="#1f4e79", angles="xy",
                 scale_units="xy", scale=max(1.0, float(arrows.norm(dim=1).max()) / 0.6), width=0.004)
    _square(ax[2], f"toward predicted x̂0 at t = {field_t:.2f}")
    ax[3].scatter(data[:, 0], data[:, 1], s=1, c=DATA_C)
    p = torch.stack(path)[:, :24]  # [steps + 1, 24, 2]
    ax[3].plot(p[:, :, 0], p[:, :, 1], color=MODEL_C, lw=0.8, alpha=0.8)
    ax[3].scatter(p[0, :, 0], p[0, :, 1], s=6, c="k", zorder=3)
    _square(ax[3], "trajectories (black: noise)")
    return to_image(fig)


def comparison(results: dict[str, dict]) -> Image.Image:
    """One row per model (name -> :func:`toy2d.evaluate` result): samples at each step count and the
    32-step trajectories, sliced-Wasserstein distance and straightness in the titles."""
    names = list(results)
    steps = list(next(iter(results.values()))["samples"])
    fig = Figure(figsize=(2.1 * (len(steps) + 1), 2.2 * len(names)), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(names), len(steps) + 1))
    for r, name in enumerate(names):
        res = results[name]
        for c, s in enumerate(steps):
            x = res["samples"][s]
            axes[r, c].scatter(x[:, 0], x[:, 1], s=1, c=MODEL_C)
            _square(axes[r, c], f"{name}: {s} step{'s' if s > 1 else ''}\nSWD {res['swd'][s]:.3f}")
        p = torch.stack(res["path"])
        axes[r, -1].plot(p[:, :, 0], p[:, :, 1], color="#1f4e79", lw=0.7)
        axes[r, -1].scatter(p[0, :, 0], p[0, :, 1], s=4, c="k", zorder=3)
        _square(axes[r, -1], f"paths ({max(steps)} steps)\nstraightness {res['straightness']:.3f}")
    return to_image(fig, dpi=72)


def loss_curve(losses: list[float], title: str) -> Image.Image:
    fig = Figure(figsize=(4.5, 2.8), layout="constrained")
    loss_axes(fig.subplots(), losses, title)
    return to_image(fig)
