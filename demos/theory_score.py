"""Theory section "Score and Langevin" (seed 002): ε̂ read as a score, annealed Langevin beside DDIM, and the
score field of a 2-D model.

UI only: the maths is :mod:`pipelines.theory.langevin`, :mod:`pipelines.theory.score2d` and the sampling loop.
Every event builds its own generator; the 2-D model trained here lives in ``gr.State``.
"""

from __future__ import annotations

import functools

import gradio as gr
import numpy as np
import torch
from matplotlib.figure import Figure

from demos.common import image_file, user_errors
from demos.components import seed_input
from pipelines import validation
from pipelines.diffusion.loop import sample_steps
from pipelines.guidance_judge import expected, roughness
from pipelines.theory import langevin as L
from pipelines.theory import score2d
from pipelines.toyworld.render_judge import classify_by_rendering

TITLE = "Score and Langevin"
SHOW_PX = 256
DEFAULT_PROMPT = "a red circle on a white background"
DEFAULT_DELTA = 1.5  # the δ scripts/langevin_eval.py measures (docs/measurements.md, "Theory (issue 21)")
TRAIN_STEPS = 800
STATE_TTL = 1800

EXPLAIN = r"""
**The denoiser is a score.** For x_t = √ᾱ_t x0 + √(1−ᾱ_t) ε, the best guess of the noise is tied to the gradient of the
log-density of noisy images (Tweedie): **s(x_t, t) = ∇ log p_t(x_t) = −ε̂(x_t, t) / √(1 − ᾱ_t)**. toy-sd predicts v;
it is turned into ε̂ with the same conversion every sampler uses, then into s.

**Annealed Langevin dynamics** (Song & Ermon 2019) samples with the score alone, no scheduler: start from noise and,
at each noise level from the largest to the smallest, take a few steps
**x ← x + (η/2)·s(x, t) + √η·z**, z ~ N(0, I), with η = δ·(1 − ᾱ_t) (the step shrinks with the level's variance).
The last level's leftover noise is removed with the model's own x̂0 (one extra call). DDIM runs the same model,
same prompt, same w and same starting noise, with as many model calls.
"""


def _verdict(image: torch.Tensor, prompt: str) -> str:
    """What the rendering judge reads in ``image`` ``[1, 3, H, W]``, against what the prompt names."""
    got, want = classify_by_rendering(image)[0], expected(prompt)
    ok = [k for k in ("color", "background") if want[k] is not None]
    mark = "right" if all(got[k] == want[k] for k in ok) else "wrong"
    return (f"colour and background **{mark}**: the judge reads **{got['color'] or 'no'} {got['shape'] or 'shape'}** "
            f"on **{got['background']}**; roughness {float(roughness(image)[0]):.1f}")


def langevin_vs_ddim(runtime, prompt, scale, levels, per_level, delta, seed):
    """Stream annealed Langevin (the chain's x and x̂0 per level), then DDIM at the same budget.
    Yields (Langevin image, DDIM image, markdown)."""
    model = runtime.diffusion(runtime.registry.diffusion_names("toy")[0])
    prompt = validation.prompt(prompt)
    w = validation.number("guidance scale", scale, 0.0, validation.MAX_GUIDANCE)
    s = validation.seed(seed)
    calls = L.model_calls(model.make_scheduler("DDIM"), levels, per_level)
    lat = torch.randn((1, *model.sample_shape), generator=torch.Generator().manual_seed(s))
    lines = []
    for rec in L.annealed_langevin(model, prompt, guidance_scale=w, n_levels=levels, steps_per_level=per_level,
                                   delta=delta, generator=validation.generator(s), latents=lat.clone()):
        head = (f"Langevin level {rec.level + 1}/{rec.n_levels}: t = {rec.t}, ᾱ = {rec.alpha_bar:.3g}, "
                f"η = {rec.eta:.3g}, score RMS {rec.score_norm:.3g}, {rec.calls} model calls")
        if rec.image is None:
            yield image_file(rec.x[0].clamp(-1, 1), SHOW_PX), gr.skip(), head
            continue
        lang = rec.image
        lines.append(f"**Langevin** ({rec.n_levels} levels × {per_level} steps + 1 denoising call = {rec.calls} "
                     f"calls): {_verdict(lang, prompt)}")
        yield image_file(lang[0], SHOW_PX), gr.skip(), "\n\n".join(lines + ["DDIM running…"])
    for rec in sample_steps(model, prompt, guidance_scale=w, num_inference_steps=calls, sampler="DDIM",
                            latents=lat.clone()):
        if rec.is_last:
            lines.append(f"**DDIM** ({calls} steps = {calls} calls, same x_T): {_verdict(rec.image, prompt)}")
            yield gr.skip(), image_file(rec.image[0], SHOW_PX), "\n\n".join(lines)
        elif rec.index % 5 == 0:
            yield gr.skip(), image_file(rec.pred_x0_rgb[0], SHOW_PX), "\n\n".join(lines + [f"DDIM step {rec.index + 1}/{calls}"])


# ------------------------------------------------------------------ 2-D


def _field_figure(tr, t: int, particles: np.ndarray | None) -> Figure:
    f = score2d.field(tr, t)
    pts, s = f["points"].numpy(), f["score"].numpy()
    mag = np.linalg.norm(s, axis=1)
    fig = Figure(figsize=(5.2, 4.6), layout="constrained")
    ax = fig.subplots()
    data = tr.data[:1500].numpy()
    ax.scatter(data[:, 0], data[:, 1], s=3, color="#bbbbbb", label="training data")
    u = s / np.maximum(mag, 1e-8)[:, None]  # unit arrows; colour is |s| (it spans decades)
    q = ax.quiver(pts[:, 0], pts[:, 1], u[:, 0], u[:, 1], np.log10(mag + 1e-8), cmap="viridis", angles="xy",
                  scale=28, width=0.004)
    fig.colorbar(q, ax=ax, shrink=0.8, label="log₁₀ |score|")
    if particles is not None:
        ax.scatter(particles[:, 0], particles[:, 1], s=4, color="#d62728", label="annealed Langevin samples")
    ax.set(xlim=(-2.6, 2.6), ylim=(-2.6, 2.6), aspect="equal",
           title=f"score s = −ε̂/√(1−ᾱ) at t = {t} (ᾱ = {f['alpha_bar']:.3f}, σ = {f['sigma']:.2f})")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7, loc="lower left")
    return fig


def field_2d(state, distribution, t, langevin, steps, seed):
    """Train the 2-D ε-model if needed (streamed), then draw the score field at t (+ Langevin samples).
    Yields (state, plot, markdown)."""
    t = validation.integer("t", t, 1, 999)
    steps = validation.integer("training steps", steps, 1, score2d.MAX_TRAIN_STEPS)
    key = (distribution, steps, validation.seed(seed))
    if state is None or state[0] != key:
        tr = None
        for tr, done in score2d.train(distribution, steps, key[2]):
            if done % 200 == 0 and done < steps:
                yield gr.skip(), _field_figure(tr, t, None), f"training the 2-D ε-model: step {done}/{steps}…"
        state = (key, tr)
    tr = state[1]
    parts = score2d.langevin(tr, seed=key[2]).numpy() if langevin else None
    note = (" Red: 800 particles after annealed Langevin (10 levels × 10 steps, δ = 0.2) with this score."
            if langevin else "")
    yield state, _field_figure(tr, t, parts), (
        f"{distribution}: ε-MLP trained {tr.step} steps. Arrows point up the density (towards data at small t, "
        f"towards the origin at large t, where p_t is nearly N(0, I)); colour = |s| ≈ distance / σ².{note}")


def create(runtime) -> dict:
    gr.Markdown("A denoiser's ε̂ is the gradient of the log-density of noisy images, so it can sample **without a "
                "scheduler**: annealed Langevin dynamics, beside DDIM with the same model calls. Press **Sample both**.",
                elem_classes=["dl-intro"])
    with gr.Row(elem_classes=["dl-main"]):
        with gr.Column(scale=1, min_width=280, elem_classes=["dl-controls"]):
            prompt = gr.Textbox(DEFAULT_PROMPT, label="prompt", max_lines=2, elem_id="theory-score-prompt")
            scale = gr.Slider(0, validation.MAX_GUIDANCE, value=5.0, step=0.5, label="guidance scale w (both samplers)")
            with gr.Row():
                levels = gr.Slider(1, 50, value=10, step=1, label="noise levels L", elem_id="theory-lv-levels")
                per_level = gr.Slider(1, L.MAX_STEPS_PER_LEVEL, value=3, step=1, label="steps per level K",
                                      elem_id="theory-lv-steps")
            delta = gr.Slider(0.05, 2.0, value=DEFAULT_DELTA, step=0.05, label="step size δ (η = δ·(1 − ᾱ_t))")
            with gr.Row(equal_height=False, elem_classes=["dl-runrow"]):
                seed = seed_input("seed", min_width=120)
                run = gr.Button("Sample both", variant="primary", elem_id="theory-langevin-run",
                                elem_classes=["dl-run"], size="lg", min_width=120)
        with gr.Column(scale=2, elem_classes=["dl-output"]):
            with gr.Row():
                lang_img = gr.Image(label="annealed Langevin (chain x while it runs)", interactive=False,
                                    height=240, elem_id="theory-langevin-image", elem_classes=["dl-pixelated", "dl-big"])
                ddim_img = gr.Image(label="DDIM, same calls, same x_T", interactive=False, height=240,
                                    elem_id="theory-ddim-image", elem_classes=["dl-pixelated", "dl-big"])
            info = gr.Markdown(elem_id="theory-langevin-info")
            gr.Markdown(EXPLAIN)
    with gr.Accordion("The score field on a 2-D slice", open=True):
        gr.Markdown("A small MLP learns ε on 2-D points (the Train-your-own playground's DDPM objective, trained "
                    "here in a few seconds); its ε̂ read as a score is drawn as arrows at the timestep you pick.")
        state = gr.State(None, time_to_live=STATE_TTL)
        with gr.Row():
            with gr.Column(scale=1, min_width=260):
                dist = gr.Dropdown(list(score2d.DISTRIBUTIONS), value="two moons", label="data")
                t2d = gr.Slider(1, 999, value=100, step=1, label="timestep t of the arrows")
                with_lv = gr.Checkbox(True, label="also sample with annealed Langevin")
                train_steps = gr.Slider(100, score2d.MAX_TRAIN_STEPS, value=TRAIN_STEPS, step=100,
                                        label="training steps (retrains when changed)")
                seed2d = seed_input("training seed", min_width=120)
                field_btn = gr.Button("Train (if needed) and draw", elem_id="theory-field-run")
            with gr.Column(scale=2):
                plot = gr.Plot(label="score field", elem_id="theory-field-plot")
                field_md = gr.Markdown()
    run.click(user_errors(functools.partial(langevin_vs_ddim, runtime)),
              [prompt, scale, levels, per_level, delta, seed], [lang_img, ddim_img, info], api_name="theory_langevin")
    fn = user_errors(field_2d)
    inputs = [state, dist, t2d, with_lv, train_steps, seed2d]
    field_btn.click(fn, inputs, [state, plot, field_md], api_name="theory_score_field")
    t2d.release(fn, inputs, [state, plot, field_md], api_name="theory_score_field_t", show_progress="hidden")
    return {"lv_prompt": prompt, "lv_w": scale, "lv_levels": levels, "lv_steps": per_level, "lv_delta": delta,
            "lv_seed": seed, "field_t": t2d}
