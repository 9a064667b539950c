"""Tab "CLIP guidance": steer any diffusion model towards a prompt with an open_clip model.

UI only: the loss, cutouts, gradient and per-step scaling are :mod:`pipelines.guidance`; the
loop is :mod:`pipelines.diffusion.loop`. Run alone: ``python -m demos.clip_guidance``.
"""

from __future__ import annotations

import functools

import gradio as gr
import numpy as np
import torch
from matplotlib.figure import Figure

from demos.common import image_file, loss_figure, user_errors
from demos.components import seed_input
from pipelines import loss_guidance as LG
from pipelines import validation

TITLE = "CLIP guidance"
MAX_CLIP_SCALE = 2000.0
MAX_CFG = validation.MAX_GUIDANCE
MAX_STEPS = 100
SHOW_PX = 256  # the toy model's 32 px images, upscaled (nearest)
HEATMAP_PANELS = 8
STREAM_EVERY = 3  # redraw the plots every this many steps
BASE_MODES = ["unconditional (empty prompt)", "conditional (base prompt + CFG)"]


def heatmap_figure(history: list[LG.GuidanceStep], n_steps: int) -> Figure:
    """Per-pixel |s · factor · ∇_{x_t} L| at up to 8 evenly spaced steps, plus the RMS per step."""
    fig = Figure(figsize=(9, 3.2), layout="constrained")
    gs = fig.add_gridspec(2, HEATMAP_PANELS, height_ratios=[3, 2])
    kept = [h for h in history if h.grad_map is not None]
    if kept:
        idx = sorted(set(np.linspace(0, len(kept) - 1, min(HEATMAP_PANELS, len(kept))).round().astype(int)))
        for j, i in enumerate(idx):
            h = kept[i]
            ax = fig.add_subplot(gs[0, j])
            m = h.grad_map[0].numpy()
            ax.imshow(m, cmap="magma", vmin=0, vmax=max(float(m.max()), 1e-12), interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_title(f"step {h.index + 1}\nmax {float(m.max()):.2g}", fontsize=7)
        ax = fig.add_subplot(gs[1, :])
        ax.semilogy([h.index + 1 for h in kept], [max(h.update_rms, 1e-12) for h in kept], ".-", label="RMS of update")
        ax.set(xlabel="step", xlim=(0.5, n_steps + 0.5))
        ax.legend(fontsize=7)
    fig.suptitle("gradient magnitude per pixel (each panel on its own scale)", fontsize=9)
    return fig


def clip_run(runtime, clip_name, model_name, prompt, base_mode, base_prompt, cfg_scale, n_cutouts, scale,
             scaling, steps, seed):
    """Unguided, then CLIP-guided at the same seed. Streams (gallery, loss plot, heatmap, markdown)."""
    clip = runtime.registry.clip(clip_name or None)  # hub CLIP offline -> ModelUnavailable (ValueError)
    model = runtime.registry.diffusion(model_name or None)
    s = validation.number("CLIP guidance scale", scale, 0.0, MAX_CLIP_SCALE)
    cuts = validation.integer("cutouts", n_cutouts, 1, 32)
    w = validation.number("CFG scale", cfg_scale, 0.0, MAX_CFG)
    n, sd = validation.integer("steps", steps, 1, MAX_STEPS), validation.seed(seed)
    if not validation.prompt(prompt).strip():
        raise ValueError("Type a prompt for CLIP to steer towards.")
    if base_mode not in BASE_MODES:
        raise ValueError(f"base model mode must be one of {BASE_MODES}")
    conditional = base_mode == BASE_MODES[1]
    if conditional and not model.conditional:
        raise ValueError(f"{model_name} is unconditional; choose 'unconditional' as the base mode")
    base_text = (validation.prompt(base_prompt, "base prompt").strip() or validation.prompt(prompt)) if conditional else ""
    w = w if conditional else 1.0  # unconditional: one pass with the empty prompt (= ε_u)

    def make_hook(guide_scale):
        return LG.clip_guidance(clip, validation.prompt(prompt), guide_scale, n_cutouts=cuts, scaling=scaling,
                               generator=torch.Generator("cpu").manual_seed(sd), keep_maps=guide_scale > 0)

    base = guided = ref = hook = None
    for base, ref, guided, hook in LG.guided_vs_unguided(model, base_text, make_hook, s, guidance_scale=w,
                                                        num_inference_steps=n,
                                                        generator_fn=lambda: validation.generator(sd)):
        if guided.is_last or guided.index % STREAM_EVERY == 0:
            img = guided.image[0] if guided.is_last else guided.pred_x0_rgb[0]
            cap = "with CLIP guidance" if guided.is_last else f"with: step {guided.index + 1}/{n}, x̂0"
            curves = {"without": ref.losses(), "with": hook.losses()}
            yield ([(image_file(base.image[0], SHOW_PX, fmt='jpeg'), "without CLIP guidance"),
                    (image_file(img, SHOW_PX, fmt='jpeg'), cap)],
                   loss_figure(curves, "CLIP loss of x̂0 (cutouts) per step", "loss", log=False),
                   heatmap_figure(hook.history, n), f"step {guided.index + 1}/{n}…")
    gal = [(image_file(base.image[0], SHOW_PX, fmt='jpeg'), "without CLIP guidance")]
    f0 = float(LG.final_clip_loss(clip, base.image, validation.prompt(prompt))[0])
    f1 = float(LG.final_clip_loss(clip, guided.image, validation.prompt(prompt))[0])
    base_desc = f"conditional on “{base_text}”, CFG w = {w:g}" if conditional else "unconditional (empty prompt)"
    md = (f"Base model {base_desc}; {n} DDIM steps; seed {sd}; {cuts} cutouts; scale {s:g}; "
          f"per-step factor {LG.SCALINGS[scaling]} with ᾱ of the timestep t.\n\n"
          f"Final CLIP loss (whole image, 2·arcsin(‖a−b‖/2)²): without **{f0:.4f}**, with **{f1:.4f}** "
          f"({'lower' if f1 < f0 else 'not lower'}).")
    curves = {"without": ref.losses(), "with": hook.losses()}
    yield (gal + [(image_file(guided.image[0], SHOW_PX, fmt='jpeg'), "with CLIP guidance")],
           loss_figure(curves, "CLIP loss of x̂0 (cutouts) per step", "loss", log=False),
           heatmap_figure(hook.history, n), md)


def create(runtime) -> dict:
    """Build the tab inside the caller's ``gr.Blocks`` / ``gr.Tab``."""
    reg = runtime.registry
    gr.Markdown(
        "A CLIP model scores the predicted x̂0 against a prompt: the squared great-circle distance "
        "2·arcsin(‖a − b‖/2)² between unit embeddings, averaged over *n* random cutouts (crops + flips). "
        "Its gradient with respect to x_t, times a per-step factor and the scale, nudges x_t before each "
        "step. The factor uses ᾱ of the **timestep t** (the seed notebook used the loop counter, a bug). "
        "Hub models need a network; offline, the bundled tiny CLIP and toy model work."
    )
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            clip_name = gr.Dropdown(reg.clip_names(), value=reg.default_clip, label="CLIP model")
            model = gr.Dropdown(reg.diffusion_names(), value=reg.default_diffusion, label="diffusion model")
            prompt = gr.Textbox("a red circle on a white background", label="CLIP prompt (what to steer towards)")
            base_mode = gr.Radio(BASE_MODES, value=BASE_MODES[0], label="base model")
            with gr.Row():
                base_prompt = gr.Textbox("", label="base prompt (conditional; empty = the CLIP prompt)")
                cfg = gr.Slider(0, MAX_CFG, value=3.0, step=0.5, label="CFG w (conditional)")
            with gr.Row():
                cuts = gr.Slider(1, 32, value=4, step=1, label="cutouts n")
                scale = gr.Slider(0, MAX_CLIP_SCALE, value=200, step=5, label="CLIP guidance scale")
            scaling = gr.Dropdown([(f"{v}  ({k})", k) for k, v in LG.SCALINGS.items()], value="sqrt_alpha_bar",
                                  label="gradient × per step")
            with gr.Row():
                steps = gr.Slider(2, 100, value=30, step=1, label="steps (DDIM)")
                seed = seed_input("seed")
            run = gr.Button("Run with and without", variant="primary", elem_id="clip-run")
        with gr.Column(scale=2):
            gallery = gr.Gallery(label="same seed: without | with", columns=2, height=300, elem_id="clip-gallery")
            md = gr.Markdown()
            loss_plot = gr.Plot(label="loss per step")
            heat = gr.Plot(label="gradient magnitude")
    # Run on click, cached server-side after the first run (deterministic: same seed, same images).
    clip0, model0 = reg.default_clip, reg.default_diffusion
    gr.Examples([[clip0, model0, "a red circle on a white background", BASE_MODES[0], "", 3.0, 4, 200,
                  "sqrt_alpha_bar", 30, 0],
                 [clip0, model0, "a blue square on a black background", BASE_MODES[0], "", 3.0, 4, 400,
                  "sqrt_alpha_bar", 30, 1],
                 [clip0, model0, "a yellow star", BASE_MODES[1], "", 3.0, 4, 200, "one_minus_alpha_bar", 30, 2]],
                [clip_name, model, prompt, base_mode, base_prompt, cfg, cuts, scale, scaling, steps, seed],
                [gallery, loss_plot, heat, md], fn=user_errors(functools.partial(clip_run, runtime)),
                cache_examples=True, cache_mode="lazy", label="examples (click to run; cached after the first run)",
                elem_id="clip-examples")
    run.click(user_errors(functools.partial(clip_run, runtime)),
              [clip_name, model, prompt, base_mode, base_prompt, cfg, cuts, scale, scaling, steps, seed],
              [gallery, loss_plot, heat, md], api_name="clip_guidance_run")
    return {"clip": clip_name, "model": model, "prompt": prompt, "base": base_mode, "base_prompt": base_prompt,
            "cfg": cfg, "cutouts": cuts, "scale": scale, "scaling": scaling, "steps": steps,
            "seed": seed}  # lecture-mode URL keys


if __name__ == "__main__":
    from pipelines.runtime import Runtime

    with gr.Blocks(title=TITLE) as demo:
        create(Runtime.create("auto"))
    demo.launch()
