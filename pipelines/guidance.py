"""Classifier-free guidance made visible: the two terms at one step, and adherence against diversity.

CFG itself lives in the loop (ε = ε_u + w (ε_c − ε_u), Ho & Salimans 2022, eq. 6, both passes batched;
:func:`pipelines.diffusion.maths.cfg_combine`). This module adds what a lesson needs around it:
:func:`cfg_decomposition` (ε_u, ε_c, their difference and the combination at one step, with norms) and
:func:`adherence_diversity` (the fidelity/diversity trade-off measured on a small batch). Loss guidance
(colour, CLIP) is :mod:`pipelines.loss_guidance`. Never imports gradio; generators come from the caller.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import torch

from pipelines import validation
from pipelines.diffusion import maths
from pipelines.diffusion.loop import sample_steps
from pipelines.serving import compute_thread

CFG_GRID_SCALES: tuple[float, ...] = (0.0, 1.0, 3.0, 7.5, 15.0)


# ======================================================================================
# Classifier-free guidance
# ======================================================================================


def rms(x: torch.Tensor) -> torch.Tensor:
    """Root mean square per image: ``[B, ...]`` -> ``[B]`` (≈ 1 for unit Gaussian noise)."""
    return x.flatten(1).pow(2).mean(1).sqrt()


@dataclass
class CfgDecomposition:
    """The CFG terms at one step of one run. Tensors ``[B, C, h, w]`` in model space, on CPU.

    ``norms`` maps each of ``eps_uncond``, ``eps_cond``, ``difference``, ``combined`` to the
    per-image L2 norm and RMS (RMS ≈ 1 for unit noise; the difference is typically small).
    """

    index: int
    num_steps: int
    t: int | float
    alpha_bar: float
    guidance_scale: float
    x_t: torch.Tensor
    pred_x0: torch.Tensor
    eps_uncond: torch.Tensor
    eps_cond: torch.Tensor
    difference: torch.Tensor
    combined: torch.Tensor
    norms: dict[str, dict[str, float]] = field(default_factory=dict)


def _eps_from_unet(model, x_in: torch.Tensor, t, emb: torch.Tensor, alpha_bar: float, prediction_type: str):
    """One model pass on the VP input ``x_in`` -> ε (used when the loop ran without CFG)."""
    with torch.no_grad():
        out = model.predict(x_in, t, emb.to(x_in.device, x_in.dtype))
    return maths.to_eps_x0(out, x_in, math.sqrt(alpha_bar), math.sqrt(1.0 - alpha_bar), prediction_type)[0]


def cfg_decomposition(model, prompt: str, *, step_index: int, guidance_scale: float = 7.5,
                      negative_prompt: str | None = None, **sample_kwargs) -> CfgDecomposition:
    """Run the sampler up to step ``step_index`` (0-based) and return the CFG terms there.

    The run is the ordinary CFG run at ``guidance_scale`` (same seed -> same trajectory as a
    full sample). At w = 1 the loop skips the unconditional pass (ε̃ = ε_c); the ε_u shown
    then comes from one extra UNet pass on the same input.

    Raises ValueError for an unconditional model or a step outside the run.
    """
    if model.encode_prompt is None:
        raise ValueError("classifier-free guidance needs a text-conditional model; this one is unconditional")
    steps = int(sample_kwargs.get("num_inference_steps", 50))
    step_index = validation.integer("step", step_index, 0, max(steps - 1, 0))
    w = float(guidance_scale)
    rec = None
    for rec in sample_steps(model, prompt, negative_prompt=negative_prompt, guidance_scale=w,
                            preview="none", **sample_kwargs):
        if rec.index == step_index:
            break
    if rec is None or rec.index != step_index:
        raise ValueError(f"step {step_index} is outside the run of {steps} steps")
    eps_u, eps_c = rec.eps_uncond, rec.eps_cond
    if eps_u is None:  # w == 1: no CFG in the loop; the step used ε_c
        sampler = sample_kwargs.get("sampler")
        sched = model.make_scheduler(sampler) if sampler else model.make_scheduler()
        ptype = model.prediction_type(sched)
        neg = model.encode_prompt([validation.prompt(negative_prompt, "negative prompt")] * rec.x_t.shape[0])
        eps_u = _eps_from_unet(model, rec.model_input, rec.t, neg, rec.alpha_bar, ptype)
        eps_c = rec.pred_eps
    diff = eps_c - eps_u
    comb = maths.cfg_combine(eps_u, eps_c, w)
    terms = {"eps_uncond": eps_u, "eps_cond": eps_c, "difference": diff, "combined": comb}
    norms = {k: {"l2": float(v.flatten(1).norm(dim=1).mean()), "rms": float(rms(v).mean())} for k, v in terms.items()}
    cpu = lambda v: v.detach().float().cpu()  # noqa: E731
    return CfgDecomposition(rec.index, rec.num_steps, rec.t, rec.alpha_bar, w, cpu(rec.model_input),
                            cpu(rec.pred_x0), cpu(eps_u), cpu(eps_c), cpu(diff), cpu(comb), norms)


def eps_to_image(eps: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """Show an ε-like tensor ``[B, C, h, w]`` as an image in [-1, 1]: divide by ``scale``
    (default 2.5 × its RMS, so ±2.5σ spans the range) and keep the first 3 channels."""
    x = eps[:, :3] if eps.shape[1] >= 3 else eps[:, :1].expand(-1, 3, -1, -1)
    s = scale if scale is not None else float(2.5 * rms(eps).mean().clamp_min(1e-8))
    return (x / s).clamp(-1, 1)


# ======================================================================================
# Adherence and diversity (the fidelity / diversity trade-off)
# ======================================================================================


@torch.no_grad()
def clip_scores(clip, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
    """Cosine similarity between each image ``[B, 3, H, W]`` in [-1, 1] and its prompt -> ``[B]``."""
    img = clip.encode_image(images)  # [B, D], unit
    txt = clip.encode_text(list(prompts))  # [B, D], unit
    return (img * txt).sum(-1)


@torch.no_grad()
def pairwise_diversity(clip, images: torch.Tensor) -> float:
    """Mean (1 − cos) between the CLIP embeddings of every pair of images ``[k, 3, H, W]``; 0 = identical."""
    k = images.shape[0]
    if k < 2:
        return 0.0
    f = clip.encode_image(images)
    sim = f @ f.T
    return float((1 - sim[~torch.eye(k, dtype=torch.bool, device=sim.device)]).mean())


@torch.no_grad()
def attribute_match(clip, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
    """1.0 where the tiny-CLIP zero-shot classifier reads the prompt's shape and colour (and
    background, when named) off the image, else 0.0 -> ``[B]``. Prompts naming none of the toy
    world's attributes count as NaN (no verdict)."""
    from pipelines.toyworld.evaluate import classify
    from pipelines.toyworld.world import parse_caption

    pred = classify(clip, images)
    out = []
    for p, prompt in zip(pred, prompts):
        want = {k: v for k, v in parse_caption(prompt).items() if v is not None}
        out.append(float(all(p[k] == v for k, v in want.items())) if want else float("nan"))
    return torch.tensor(out)


def adherence_diversity(model, clip, prompts: Sequence[str], scales: Iterable[float], *, samples: int = 4,
                        seed: int = 0, negative_prompt: str | None = None,
                        callback: Callable[[int, int], None] | None = None, scorer: Callable | None = None,
                        **sample_kwargs) -> list[dict]:
    """Prompt adherence and diversity against the CFG scale, from a small batch per scale.

    For each scale, ``samples`` images of every prompt are drawn with the *same* initial noise
    (one generator seeded ``seed`` per scale), so only w changes. Returns one dict per scale:
    ``scale``, ``match`` (fraction of images whose tiny-CLIP attributes match the prompt; NaN
    when no prompt names toy-world attributes), ``clip_score`` (mean cosine image/prompt) and
    ``diversity`` (mean pairwise 1 − cos between images of the same prompt).
    ``callback(done, total)`` is called after each scale. ``scorer(images, prompts, k) -> (match, clip_score,
    diversity)`` replaces the tiny-CLIP scores (the digits: :func:`pipelines.training.digit_judge.cfg_scores`).
    """
    from pipelines.diffusion.loop import sample

    prompts = [str(p) for p in prompts]
    scales = [float(s) for s in scales]
    if not prompts or not scales:
        raise ValueError("give at least one prompt and one scale")
    k = validation.integer("samples per prompt", samples, 1, 64)
    batch = [p for p in prompts for _ in range(k)]  # [P * k]: prompt-major
    rows = []
    for j, w in enumerate(scales):
        gen = torch.Generator("cpu").manual_seed(int(seed))
        with torch.no_grad():
            imgs = sample(model, batch, guidance_scale=w, negative_prompt=negative_prompt, generator=gen,
                          **sample_kwargs).clamp(-1, 1)
        # each scoring pass is a turn of its own on the compute thread (serving/compute_thread.py)
        compute_thread.checkpoint()
        if scorer is not None:
            match_f, score, diversity = scorer(imgs, batch, k)
        else:
            match = attribute_match(clip, imgs, batch)
            compute_thread.checkpoint()
            div = [pairwise_diversity(clip, imgs[i * k:(i + 1) * k]) for i in range(len(prompts))]
            compute_thread.checkpoint()
            match_f = float(match.nanmean()) if not torch.isnan(match).all() else float("nan")
            score, diversity = float(clip_scores(clip, imgs, batch).mean()), sum(div) / len(div)
        rows.append({"scale": w, "match": match_f, "clip_score": score, "diversity": diversity, "images": imgs.cpu()})
        if callback is not None:
            callback(j + 1, len(scales))
    return rows
