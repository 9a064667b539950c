"""Theory section "Prediction targets" (seed 003): what should the model predict, ε, x0 or v?

UI only: the maths is :mod:`pipelines.theory.targets`. Every event builds its own generator.
"""

from __future__ import annotations

import functools
import math

import gradio as gr
import torch
from matplotlib.figure import Figure

from demos.common import image_file, user_errors
from demos.components import SafeImage, seed_input
from pipelines import images, validation
from pipelines.guidance import eps_to_image
from pipelines.theory import targets as T
from pipelines.toyworld.world import make_batch

TITLE = "Prediction targets"
SHOW_PX = 128
EPS_SCALE = 2.5  # ε and v have unit variance: ±2.5 spans black..white
CURVE_IMAGES, CURVE_TS = 4, 16

EXPLAIN = r"""
A noisy image is **x_t = α x0 + σ ε** (α = √ᾱ_t, σ = √(1−ᾱ_t)). Given x_t, knowing any one of **ε** (the noise),
**x0** (the clean image) or **v = α ε − σ x0** gives the other two, so a network can be trained on any of them.
They differ in how the network's error Δ in its own target reaches the others:

| trained on | error in ε̂ | error in x̂0 | bad where |
|---|---|---|---|
| ε (DDPM) | Δ | (σ/α)·Δ | **high noise**: α → 0, and at zero terminal SNR (α = 0) x̂0 is undefined |
| x0 | (α/σ)·Δ | Δ | **low noise**: σ → 0, ε̂ explodes |
| v (toy-sd) | α·Δ | σ·Δ | nowhere: α, σ ≤ 1 |

toy-sd predicts **v** because its schedule reaches pure noise (ᾱ = 0 at the last step, so the sampler starts from
true noise, Lin et al. 2024): an ε-model would be asked for x̂0 with α = 0. Below, the model's v̂ is converted to
ε̂ and x̂0 with the same formulas the sampler uses and compared with the true targets.
"""


def _source(upload, scene_seed, prompt, size: int):
    """(x0 ``[1, 3, size, size]`` in [-1, 1], prompt, what it is): the upload if any, else a rendered scene."""
    if upload:
        x0, label = images.load_working_tensor(upload, size), "your image"
        return x0, validation.prompt(prompt or ""), label
    x0, scenes = make_batch(1, validation.seed(scene_seed), size)
    cap = scenes[0].caption()
    return x0, validation.prompt(prompt) if prompt else cap, f"toy scene “{cap}”"


def _show(x: torch.Tensor, kind: str) -> str:
    """A target ``[1, 3, h, w]`` as an image: x0 as is, ε and v (unit variance) and all errors on ±2.5."""
    return image_file((x.clamp(-1, 1) if kind == "x0" else eps_to_image(x, EPS_SCALE))[0], SHOW_PX)


def compare(runtime, upload, scene_seed, prompt, t, noise_seed):
    """True / predicted / error for ε, x0 and v at t -> (gallery, markdown)."""
    model = runtime.diffusion(runtime.registry.diffusion_names("toy")[0])
    x0, prompt, label = _source(upload, scene_seed, prompt, model.image_size[0])
    view = T.targets_at(model, model.encode(x0), t, [prompt], validation.generator(noise_seed))
    gallery = []
    for k in T.TARGETS:
        sym = T.SYMBOLS[k]
        err = view.pred[k] - view.true[k]
        gallery += [(_show(view.true[k], k), f"true {sym}"), (_show(view.pred[k], k), f"predicted {sym}"),
                    (image_file(eps_to_image(err, EPS_SCALE if k != "x0" else 1.0)[0], SHOW_PX),
                     f"error in {sym}: MSE {view.mse[k]:.4f}")]
    a, s = math.sqrt(view.alpha_bar), math.sqrt(1 - view.alpha_bar)
    md = (f"{label}, conditioned on “{prompt or '(empty prompt)'}”; t = {view.t}, ᾱ = {view.alpha_bar:.4f} "
          f"(α = {a:.3f}, σ = {s:.3f}).\n\n| target | MSE |\n|---|---|\n" +
          "\n".join(f"| {T.SYMBOLS[k]} | {view.mse[k]:.4g} |" for k in T.TARGETS) +
          f"\n\nAll three come from one output v̂, so MSE(ε̂) = α²·MSE(v̂) = {a * a:.3f}·MSE(v̂) and "
          f"MSE(x̂0) = σ²·MSE(v̂) = {s * s:.3f}·MSE(v̂) (up to rounding). Errors: mid-grey = 0.")
    return gallery, md


def _curve_figure(res: dict) -> Figure:
    fig = Figure(figsize=(9, 3.4), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    for k, style in zip(T.TARGETS, ("o-", "s-", "^-")):
        ax1.plot(res["t"], res["mse"][k], style, ms=3, label=f"{T.SYMBOLS[k]}̂ (from the v-model)")
    ax1.set(yscale="log", xlabel="timestep t (0 = clean, right = pure noise)", ylabel="MSE",
            title=f"toy-sd's error in each target, {CURVE_IMAGES} scenes")
    names = {"eps->x0": "ε-model's error → x̂0: σ²/α²", "x0->eps": "x0-model's error → ε̂: α²/σ²",
             "v->x0": "v-model's error → x̂0: σ²", "v->eps": "v-model's error → ε̂: α²"}
    for k, lab in names.items():
        ys = [min(y, 1e4) for y in res["amplification"][k]]
        ax2.plot(res["t"], ys, "--" if k.startswith("v") else "-", label=lab)
    ax2.set(yscale="log", ylim=(1e-4, 1e4), xlabel="timestep t", ylabel="gain on squared error",
            title="how an error in the trained target spreads")
    for ax in (ax1, ax2):
        ax.legend(fontsize=7)
        ax.title.set_fontsize(9)
    return fig


def over_t(runtime, scene_seed, noise_seed, progress=gr.Progress()):
    """Each target's MSE over t for a few rendered scenes -> (plot, markdown)."""
    model = runtime.diffusion(runtime.registry.diffusion_names("toy")[0])
    x0, scenes = make_batch(CURVE_IMAGES, validation.seed(scene_seed), model.image_size[0])
    grid = T.timestep_grid(T.vp_scheduler(model), CURVE_TS)
    progress(0, desc="predicting at the first t")
    res = T.error_vs_t(model, model.encode(x0), [s.caption() for s in scenes], grid,
                       validation.generator(noise_seed), lambda d, n: progress(d / n, desc=f"t {d}/{n}"))
    lo = {k: res["t"][min(range(len(grid)), key=lambda i: res["mse"][k][i])] for k in T.TARGETS}
    hi = {k: res["t"][max(range(len(grid)), key=lambda i: res["mse"][k][i])] for k in T.TARGETS}
    md = ("| target | easiest at t | hardest at t |\n|---|---|---|\n" +
          "\n".join(f"| {T.SYMBOLS[k]} | {lo[k]} | {hi[k]} |" for k in T.TARGETS) +
          "\n\nε̂ is easy at high noise (x_t is almost all noise) and hard near clean images; x̂0 the other way round. "
          "On the right, the gains that make an ε-model's x̂0 blow up at high noise and an x0-model's ε̂ at low noise; "
          "a v-model's gains (dashed) never exceed 1.")
    return _curve_figure(res), md


def create(runtime) -> dict:
    bind = lambda fn: user_errors(functools.partial(fn, runtime))  # noqa: E731
    gr.Markdown("toy-sd is trained to predict **v**; from it, and the noisy image, follow its guesses of the noise "
                "**ε** and of the clean image **x0**. Pick a timestep and press **Compare**; the table below says "
                "why v.", elem_classes=["dl-intro"])
    with gr.Row(elem_classes=["dl-main"]):
        with gr.Column(scale=1, min_width=260, elem_classes=["dl-controls"]):
            scene_seed = seed_input("toy scene (seed)", min_width=120)
            upload = SafeImage(None, type="filepath", label="or your image (replaces the scene)", height=120,
                               sources=["upload"], elem_classes=["dl-pixelated"])
            prompt = gr.Textbox("", label="prompt (empty: the scene's caption)", max_lines=1)
            t = gr.Slider(0, 959, value=500, step=1, label="timestep t")
            with gr.Row(equal_height=False, elem_classes=["dl-runrow"]):
                noise_seed = seed_input("noise seed", min_width=120)
                run = gr.Button("Compare ε, x0, v", variant="primary", elem_id="theory-targets-run", size="lg",
                                min_width=120)  # the tab's run=1 button is the Langevin section's
        with gr.Column(scale=1, elem_classes=["dl-output"]):
            gallery = gr.Gallery(label="true | predicted | error, for ε, x0, v", columns=3, height="auto",
                                 object_fit="contain", elem_id="theory-targets-gallery",
                                 elem_classes=["dl-gallery", "dl-pixelated", "dl-big"])
            info = gr.Markdown(elem_id="theory-targets-info")
    gr.Markdown(EXPLAIN)
    with gr.Accordion("Error against t: where each target is easy or hard", open=True):
        curve_btn = gr.Button(f"Measure over t ({CURVE_IMAGES} scenes × {CURVE_TS} timesteps)",
                              elem_id="theory-targets-curve-run")
        curve = gr.Plot(label="MSE per target over t", elem_id="theory-targets-curve")
        curve_md = gr.Markdown()
    run.click(bind(compare), [upload, scene_seed, prompt, t, noise_seed], [gallery, info], api_name="theory_targets")
    t.release(bind(compare), [upload, scene_seed, prompt, t, noise_seed], [gallery, info],
              api_name="theory_targets_t", show_progress="hidden")
    curve_btn.click(bind(over_t), [scene_seed, noise_seed], [curve, curve_md], api_name="theory_targets_over_t")
    return {"scene": scene_seed, "target_t": t, "noise_seed": noise_seed}
