"""Tab "Guidance playground": classifier-free guidance made visible, plus colour-loss guidance.

UI only: the maths is :mod:`pipelines.guidance` and :mod:`pipelines.diffusion.loop`. Every event
builds its own generator and scheduler; nothing per-user lives in module globals.
Run alone for a quick look: ``python -m demos.guidance``.
"""

from __future__ import annotations

import functools
import time

import gradio as gr
import numpy as np
import torch
from matplotlib.figure import Figure

from demos.common import (conditional_model, conditional_names, image_file, loss_figure, prompt_note,
                          sampler_follows_model, session_of, user_errors)
from demos.components import seed_input
from demos.style import NOTE
from pipelines import guidance_judge as J
from pipelines import loss_guidance as LG
from pipelines import guidance as G
from pipelines import images, validation
from pipelines.models import SAMPLERS
from pipelines.diffusion.loop import sample_steps
from pipelines.diffusion.previews import to_rgb
from pipelines.serving import compute_thread

TITLE = "Guidance playground"
SHOW_PX = 256  # the toy model makes 32 px images; shown upscaled (nearest) to this side
MAX_STEPS = 100
MAX_SCALE = validation.MAX_GUIDANCE
MAX_COLOUR_SCALE = 500.0
DEFAULT_PROMPT = "a yellow star on a navy background"
COLOUR_DEFAULT = {"colour": "#00d2e6", **LG.COLOUR_PRESETS["default"]}  # the toy world's cyan
PLOT_EVERY = 5  # redraw streamed plots every this many steps (matplotlib is not free)


# ------------------------------------------------------------------ CFG


def generate(runtime, model_name, prompt, negative, scale, steps, sampler, seed, request: gr.Request = None):
    """Stream one CFG sample: x̂0 at every step, then the final image. Yields (image, markdown)."""
    model = conditional_model(runtime, model_name, session_of(request))
    w = validation.number("guidance scale", scale, 0.0, MAX_SCALE)
    n = validation.integer("steps", steps, 1, MAX_STEPS)
    gen = validation.generator(seed)
    for rec in sample_steps(model, validation.prompt(prompt), negative_prompt=validation.prompt(negative, "negative prompt"), guidance_scale=w,
                            num_inference_steps=n, sampler=sampler, generator=gen):
        if rec.is_last:
            yield image_file(rec.image[0], SHOW_PX, fmt='jpeg'), (f"**Done**: {n} {sampler} steps, w = {w:g}, seed {validation.seed(seed)}. "
                                            "Same seed + same settings = the same image." + _digit_note(model, rec.image))
        else:
            yield image_file(rec.pred_x0_rgb[0], SHOW_PX, fmt='jpeg'), f"step {rec.index + 1}/{n} (t = {rec.t}): predicted x̂0"


def _digit_note(model, image) -> str:
    """For a digits model, what the separately trained digit judge reads in ``image`` ``[1, 3, H, W]``."""
    if model.kind != "digits":
        return ""
    from pipelines.training.digit_judge import load_judge

    p = load_judge()(image[:, :1].float().cpu()).softmax(1)[0]
    return f" The digit judge reads **{int(p.argmax())}** (probability {float(p.max()):.2f})."


def scale_grid(runtime, model_name, prompt, negative, steps, sampler, seed, request: gr.Request = None):
    """Same seed, scales 0, 1, 3, 7.5, 15: streams the gallery as each finishes."""
    model = conditional_model(runtime, model_name, session_of(request))
    n, s = validation.integer("steps", steps, 1, MAX_STEPS), validation.seed(seed)
    out = []
    for w in G.CFG_GRID_SCALES:
        gen = validation.generator(s)  # same initial noise for every scale
        rec = None
        for rec in sample_steps(model, validation.prompt(prompt), negative_prompt=validation.prompt(negative, "negative prompt"), guidance_scale=w,
                                num_inference_steps=n, sampler=sampler, generator=gen, preview="none"):
            pass
        label = {0.0: "w = 0 (unconditional)", 1.0: "w = 1 (conditional, no guidance)"}.get(w, f"w = {w:g}")
        out.append((image_file(rec.image[0], SHOW_PX, fmt='jpeg'), label))
        yield out


def decompose(runtime, model_name, prompt, negative, scale, steps, sampler, seed, step, request: gr.Request = None):
    """The CFG terms at one step -> (gallery, markdown table)."""
    model = conditional_model(runtime, model_name, session_of(request))
    w = validation.number("guidance scale", scale, 0.0, MAX_SCALE)
    n = validation.integer("steps", steps, 1, MAX_STEPS)
    k = validation.integer("step", step, 1, n) - 1
    d = G.cfg_decomposition(model, validation.prompt(prompt), step_index=k, guidance_scale=w, negative_prompt=validation.prompt(negative, "negative prompt"),
                            num_inference_steps=n, sampler=sampler, generator=validation.generator(seed))
    common = float(2.5 * G.rms(d.eps_cond).mean())  # ε_u, ε_c, combined on one scale; the difference on its own
    nm = d.norms
    gallery = [
        (image_file(to_rgb(model, d.x_t, pred_x0=False)[0], SHOW_PX, fmt='jpeg'), f"x_t: the noisy image, t = {d.t}"),
        (image_file(G.eps_to_image(d.eps_uncond, common)[0], SHOW_PX, fmt='jpeg'), f"ε_u  ‖·‖ = {nm['eps_uncond']['l2']:.2f}"),
        (image_file(G.eps_to_image(d.eps_cond, common)[0], SHOW_PX, fmt='jpeg'), f"ε_c  ‖·‖ = {nm['eps_cond']['l2']:.2f}"),
        (image_file(G.eps_to_image(d.difference)[0], SHOW_PX, fmt='jpeg'), f"ε_c − ε_u (own scale)  ‖·‖ = {nm['difference']['l2']:.2f}"),
        (image_file(G.eps_to_image(d.combined, common)[0], SHOW_PX, fmt='jpeg'), f"ε_u + w(ε_c − ε_u)  ‖·‖ = {nm['combined']['l2']:.2f}"),
        (image_file(to_rgb(model, d.pred_x0.to(model.device), "vae")[0].cpu(), SHOW_PX, fmt='jpeg'),
         "x̂0 from the combined ε"),  # latent models: x_t as the cheap preview, x̂0 decoded
    ]
    rows = "\n".join(f"| {lab} | {nm[k_]['l2']:.3f} | {nm[k_]['rms']:.4f} |" for k_, lab in
                     (("eps_uncond", "ε_u (empty / negative prompt)"), ("eps_cond", "ε_c (prompt)"),
                      ("difference", "ε_c − ε_u (the guidance direction)"),
                      ("combined", f"ε_u + {w:g}·(ε_c − ε_u)")))
    md = (f"Step **{k + 1}/{n}**, timestep t = {d.t}, ᾱ_t = {d.alpha_bar:.4f}, w = {w:g}.\n\n"
          "| term | L2 norm | RMS per element |\n|---|---|---|\n" + rows +
          f"\n\nThe difference is {nm['difference']['rms'] / max(nm['eps_cond']['rms'], 1e-12):.1%} of ε_c's size: "
          "guidance amplifies a small direction w times. ε images: ±2.5 RMS of ε_c spans black..white; "
          "the difference uses its own scale.")
    return gallery, md


def tradeoff(runtime, model_name, prompt, negative, steps, sampler, seed, samples, request: gr.Request = None,
             progress=gr.Progress()):
    """Adherence (tiny-CLIP; digits: the digit judge) and diversity vs scale from a small batch -> (plot, table)."""
    model = conditional_model(runtime, model_name, session_of(request))
    n = validation.integer("steps", steps, 1, MAX_STEPS)
    k = validation.integer("samples per scale", samples, 2, 8)
    digits = model.kind == "digits"
    clip = None if digits else runtime.registry.clip()
    if digits:
        from pipelines.training.digit_judge import cfg_scores
    scales = (0.0, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0)
    progress(0, desc="sampling the first scale")
    rows = G.adherence_diversity(model, clip, [validation.prompt(prompt)], scales, samples=k, seed=validation.seed(seed),
                                 negative_prompt=validation.prompt(negative, "negative prompt"), num_inference_steps=n, sampler=sampler,
                                 callback=lambda d, t: progress(d / t, desc=f"scale {d}/{t}"),
                                 scorer=cfg_scores if digits else None)
    score_name, match_name = (("digit judge: P(digit asked)", "labelled as asked (digit judge)") if digits
                              else ("tiny-CLIP score (cos)", "attributes match"))
    ws = [r["scale"] for r in rows]
    compute_thread.checkpoint()  # the figure is a turn of its own (it runs on the compute thread too)
    fig = Figure(figsize=(8, 3.4), layout="constrained")
    ax1, ax3 = fig.subplots(1, 2, width_ratios=[3, 2])
    ax1.plot(ws, [r["clip_score"] for r in rows], "o-", color="tab:blue", label=score_name)
    if not np.isnan(rows[0]["match"]):
        ax1.plot(ws, [r["match"] for r in rows], "s--", color="tab:green", label=f"{match_name} (fraction)")
    ax2 = ax1.twinx()
    ax2.plot(ws, [r["diversity"] for r in rows], "^-", color="tab:red", label="diversity (1 − cos)")
    ax1.set(xlabel="guidance scale w", ylabel="adherence")
    ax2.set_ylabel("diversity", color="tab:red")
    h1, l1 = ax1.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax1.legend(h1 + h2, l1 + l2, fontsize=8, loc="best")
    ax1.set_title(f"{k} samples per scale, same seeds")
    # a thumbnail strip: first sample of each scale
    strip = torch.cat([r["images"][0] for r in rows], dim=-1)  # [3, H, len*W]
    ax3.imshow(images.tensor_to_uint8(strip), interpolation="nearest")
    ax3.set_xticks([(i + 0.5) * rows[0]["images"].shape[-1] for i in range(len(ws))], [f"{w:g}" for w in ws],
                   fontsize=7)
    ax3.set_yticks([])
    ax3.set_title("first sample at each w")
    pct = lambda v: "—" if np.isnan(v) else f"{v:.0%}"  # noqa: E731
    md = f"| w | {match_name} | {score_name} | diversity |\n|---|---|---|---|\n" + "\n".join(
        f"| {r['scale']:g} | {pct(r['match'])} | {r['clip_score']:.3f} | {r['diversity']:.3f} |" for r in rows)
    return fig, md


# ------------------------------------------------------------------ colour guidance


def colour_run(runtime, model_name, prompt, colour, loss_scale, scaling, steps, seed, through_unet=False,
               request: gr.Request = None):
    """Unguided then colour-guided at the same seed; streams (gallery, loss plot, markdown).
    ``through_unet``: the gradient flows through the UNet (seed 000: x.requires_grad_() before the model call),
    one extra forward and backward pass per step; otherwise ε is held fixed (cheap)."""
    model = runtime.diffusion(model_name or None, session_of(request))
    if model.kind == "digits":
        raise ValueError("colour guidance steers the colours of toy-world pictures; the digits are gray. Pick toy-sd.")
    rgb = LG.parse_color(colour)
    s = validation.number("colour loss scale", loss_scale, 0.0, MAX_COLOUR_SCALE)
    n, sd = validation.integer("steps", steps, 1, MAX_STEPS), validation.seed(seed)
    w = 3.0 if model.conditional else 1.0
    target = LG.color_target(rgb)
    through = bool(through_unet)

    base = guided = ref = hook = None
    clock = {"base": 0.0, "guided": 0.0}
    t0 = time.perf_counter()
    for base, ref, guided, hook in LG.guided_vs_unguided(
            model, validation.prompt(prompt),
            lambda scale: LG.color_guidance(rgb, scale, scaling=scaling, through_unet=through), s,
            guidance_scale=w, num_inference_steps=n, generator_fn=lambda: validation.generator(sd),
            on_base_step=lambda rec: clock.__setitem__("base", time.perf_counter() - t0)):
        if guided.is_last or guided.index % PLOT_EVERY == 0:
            img = guided.image[0] if guided.is_last else guided.pred_x0_rgb[0]
            cap = "with colour guidance" if guided.is_last else f"with: step {guided.index + 1}/{n}, x̂0"
            fig = loss_figure({"without": ref.losses(), "with": hook.losses()},
                              "colour loss mean|x̂0 − target| per step", "loss")
            yield ([(image_file(base.image[0], SHOW_PX, fmt='jpeg'), "without colour guidance"),
                    (image_file(img, SHOW_PX, fmt='jpeg'), cap)], fig, f"step {guided.index + 1}/{n}…")
    clock["guided"] = time.perf_counter() - t0 - clock["base"]  # the unguided run ends before the guided one
    gal = [(image_file(base.image[0], SHOW_PX, fmt='jpeg'), "without colour guidance")]
    m0, m1 = LG.mean_color(base.image)[0], LG.mean_color(guided.image)[0]
    t = torch.tensor(rgb)
    d0, d1 = float((m0 - t).norm()), float((m1 - t).norm())
    fmt = lambda c: "(" + ", ".join(f"{float(v):.2f}" for v in c) + ")"  # noqa: E731
    v = J.judge(base.image, guided.image, validation.prompt(prompt), [sd], target_color=J.nearest_colour(rgb))[0]
    md = (f"**Judged by rendering**: the shape's colour without → *{v.plain['color']}*, with → "
          f"**{v.guided['color']}** (target ≈ {v.target_color} {'✓' if v.color_ok else '✗'}); shape "
          f"{v.plain['shape']} → {v.guided['shape']}; roughness {v.rough_plain:.0f} → **{v.rough_guided:.0f}** "
          f"({'clean' if v.clean else 'rougher than 2x: not clean'}).\n\n"
          f"Target {fmt(t)} (RGB in 0..1). Mean colour without: {fmt(m0)}, distance {d0:.3f}; "
          f"with: {fmt(m1)}, distance **{d1:.3f}** ({'closer' if d1 < d0 else 'not closer'}). "
          f"Final colour loss: {float(LG.color_loss(base.image, target)[0]):.3f} → "
          f"{float(LG.color_loss(guided.image, target)[0]):.3f}.\n\n"
          f"Gradient {'through the UNet (the seed’s way)' if through else 'with ε held fixed'}: this run took "
          f"{clock['guided']:.1f} s guided vs {clock['base']:.1f} s unguided "
          f"({clock['guided'] / max(clock['base'], 1e-6):.1f}x; wall time on a shared machine).")
    fig = loss_figure({"without": ref.losses(), "with": hook.losses()},
                      "colour loss mean|x̂0 − target| per step", "loss")
    yield gal + [(image_file(guided.image[0], SHOW_PX, fmt='jpeg'), "with colour guidance")], fig, md


# ------------------------------------------------------------------ layout


MATHS = """
**Two predictions per step.** At every step the model predicts the noise ε in the noisy image x_t twice: once
with your prompt (ε_c, *conditional*) and once with an empty prompt, or the negative prompt (ε_u,
*unconditional*); both run as one batch. Classifier-free guidance (Ho & Salimans 2022, eq. 6) combines them:

$$\\hat\\varepsilon = \\varepsilon_u + w\\,(\\varepsilon_c - \\varepsilon_u)$$

w = 0 ignores the prompt, w = 1 is the plain conditional model, w > 1 pushes further along the direction the
prompt adds: pictures follow the prompt more closely and vary less from seed to seed. The sampler then uses ε̂
as usual; x̂0 = (x_t − √(1−ᾱ_t)·ε̂)/√ᾱ_t is the clean picture it implies (ᾱ_t: the share of the picture left
at step t).

**Loss guidance** (colour, CLIP): at every step, score x̂0 with a loss L, take its gradient with respect to x_t
and move x_t a little downhill before the step, x_t ← x_t − s·g(ᾱ_t)·∇L (classifier guidance with a loss in
place of a classifier; s is the scale, g a per-step factor).
"""


def create(runtime) -> dict:
    """Build the tab inside the caller's ``gr.Blocks`` / ``gr.Tab``."""
    names = conditional_names(runtime, digits=True)
    gr.Markdown(
        "The prompt tells the model what to draw, and the guidance scale **w** says how hard to listen. Type a "
        "prompt and press **Generate**, then try w = 0, 1 and 15 with the same seed and compare.",
        elem_classes=["dl-intro"])
    with gr.Row(elem_classes=["dl-main"]):
        with gr.Column(scale=1, min_width=280, elem_classes=["dl-controls"]):
            prompt = gr.Textbox(DEFAULT_PROMPT, label="prompt", elem_id="guidance-prompt", max_lines=2)
            prompt_info = gr.Markdown("", elem_id="guidance-prompt-note", elem_classes=[NOTE])
            scale = gr.Slider(0, MAX_SCALE, value=5.0, step=0.5, label="guidance scale w", elem_id="guidance-w")
            with gr.Row(equal_height=False, elem_classes=["dl-runrow"]):
                seed = seed_input("seed", min_width=120)
                run = gr.Button("Generate", variant="primary", elem_id="guidance-run", elem_classes=["dl-run"],
                                size="lg", min_width=120)
            with gr.Accordion("Advanced", open=False, elem_id="guidance-advanced"):
                model = gr.Dropdown(names, value=names[0], label="diffusion model",
                                    info="digits models: the prompt is a digit 0-9")
                negative = gr.Textbox("", label="negative prompt (replaces the empty prompt of ε_u)")
                with gr.Row():
                    steps = gr.Slider(2, MAX_STEPS, value=30, step=1, label="steps", elem_id="guidance-steps")
                    sampler = gr.Dropdown(list(SAMPLERS), value="DDIM", label="sampler")
        with gr.Column(scale=1, elem_classes=["dl-output"]):
            image = gr.Image(label="sample (the model's guess x̂0 while it runs)", interactive=False,
                             elem_id="guidance-image", height=300, elem_classes=["dl-pixelated", "dl-big"],
                             buttons=["fullscreen"])
            info = gr.Markdown()
    # Examples run on click and are cached server-side after their first use (same seed, same image),
    # so a click during a talk answers at once the second time.
    gr.Examples([[names[0], "a yellow star on a navy background", "", 5.0, 30, "DDIM", 0],
                 [names[0], "a red circle on a white background", "", 7.5, 30, "DDIM", 1],
                 [names[0], "a blue square on a black background", "a blue square", 3.0, 30, "DDIM", 2],
                 [names[0], "a green cross on a gray background", "", 0.0, 30, "DDIM", 3]],
                [model, prompt, negative, scale, steps, sampler, seed], [image, info],
                fn=user_errors(functools.partial(generate, runtime)), cache_examples=True, cache_mode="lazy",
                label="examples (click to run; cached after the first run)", elem_id="guidance-examples")
    gal = dict(object_fit="contain", elem_classes=["dl-gallery", "dl-pixelated"])
    with gr.Accordion("Same seed, different scales", open=True):
        with gr.Row():
            grid_btn = gr.Button("Run the grid (w = 0, 1, 3, 7.5, 15)", elem_id="guidance-grid-run")
        grid = gr.Gallery(label="same seed and steps; only w changes", columns=5, elem_id="guidance-grid", **gal)
    with gr.Accordion("Inside one step: ε_u, ε_c, their difference, the combination", open=False):
        with gr.Row():
            step = gr.Slider(1, 30, value=10, step=1, label="step (1 = first, noisiest)", elem_id="guidance-step")
            dec_btn = gr.Button("Decompose", elem_id="guidance-decompose-run")
        dec_gallery = gr.Gallery(label="decomposition", columns=6, elem_id="guidance-decomposition", **gal)
        dec_md = gr.Markdown()
    with gr.Accordion("Fidelity vs diversity: adherence and diversity against w", open=False):
        gr.Markdown("A few samples per scale (the same seeds at every scale) are scored by the bundled tiny CLIP: "
                    "how well it thinks each picture matches the prompt, whether it reads the prompt's shape and "
                    "colour off the picture, and how different the samples are from each other.")
        with gr.Row():
            samples = gr.Slider(2, 8, value=4, step=1, label="samples per scale")
            trade_btn = gr.Button("Measure (8 scales)", elem_id="guidance-tradeoff-run")
        trade_plot = gr.Plot(label="adherence and diversity vs w", elem_id="guidance-tradeoff")
        trade_md = gr.Markdown()
    gr.Markdown("## Colour guidance\nSteer a picture towards a colour without any prompt words: at every step the "
                "model's guess x̂0 is compared with the colour and the noisy image is nudged to bring them closer.")
    with gr.Row():
        with gr.Column(scale=1, min_width=280):
            colour = gr.ColorPicker(COLOUR_DEFAULT["colour"], label="target colour")
            loss_scale = gr.Slider(0, MAX_COLOUR_SCALE, value=COLOUR_DEFAULT["scale"], step=1,
                                   label="how hard to steer (colour loss scale s)")
            with gr.Accordion("Advanced", open=False):
                scaling = gr.Dropdown([(f"{v}  ({k})", k) for k, v in LG.SCALINGS.items() if k != "seed_bug"],
                                      value=COLOUR_DEFAULT["scaling"], label="gradient × per step (ᾱ of timestep t)")
                through = gr.Checkbox(False, label="gradient through the UNet (seed 000's way; ~2–3x the cost per "
                                                   "step: one more forward and backward pass)")
            col_btn = gr.Button("Run with and without", variant="primary", elem_id="guidance-colour-run")
        with gr.Column(scale=2):
            col_gallery = gr.Gallery(label="same seed: without | with", columns=2, elem_id="guidance-colour", **gal)
            col_plot = gr.Plot(label="loss per step")
            col_md = gr.Markdown(elem_id="guidance-colour-info")
    bind = lambda f: user_errors(functools.partial(f, runtime))  # noqa: E731
    seed_p = LG.COLOUR_PRESETS["seed"]
    gr.Examples([[names[0], DEFAULT_PROMPT, COLOUR_DEFAULT["colour"], COLOUR_DEFAULT["scale"], COLOUR_DEFAULT["scaling"],
                  30, 0, False],
                 [names[0], DEFAULT_PROMPT, COLOUR_DEFAULT["colour"], seed_p["scale"], seed_p["scaling"], 30, 0, True]],
                [model, prompt, colour, loss_scale, scaling, steps, seed, through], [col_gallery, col_plot, col_md],
                fn=bind(colour_run), cache_examples=True, cache_mode="lazy", elem_id="guidance-colour-examples",
                example_labels=["defaults (chosen by the judge)", "the seed's: through the UNet, scale 40, factor 1"],
                label="colour-guidance examples (click to run; cached after the first run)")
    with gr.Accordion("The maths", open=False):
        gr.Markdown(MATHS)

    base = [model, prompt, negative]
    sampler_follows_model(runtime, model, sampler)
    gr.on([prompt.change, model.change], bind(prompt_note), [model, prompt], prompt_info,
          api_name="guidance_prompt_note", show_progress="hidden", trigger_mode="always_last")
    run.click(bind(generate), base + [scale, steps, sampler, seed], [image, info], api_name="guidance_generate")
    grid_btn.click(bind(scale_grid), base + [steps, sampler, seed], grid, api_name="guidance_grid")
    # the decomposition's step can only be one of the run's steps
    steps.change(lambda n, k: gr.Slider(maximum=int(n), value=min(int(k), int(n))), [steps, step], step,
                 api_visibility="private", show_progress="hidden", queue=False)
    dec_btn.click(bind(decompose), base + [scale, steps, sampler, seed, step], [dec_gallery, dec_md],
                  api_name="guidance_decompose")
    trade_btn.click(bind(tradeoff), base + [steps, sampler, seed, samples], [trade_plot, trade_md],
                    api_name="guidance_tradeoff")
    col_in = [model, prompt, colour, loss_scale, scaling, steps, seed, through]
    col_btn.click(bind(colour_run), col_in, [col_gallery, col_plot, col_md], api_name="guidance_colour")
    return {"model": model, "prompt": prompt, "negative": negative, "scale": scale, "steps": steps,
            "sampler": sampler, "seed": seed, "step": step, "samples": samples, "colour": colour,
            "loss_scale": loss_scale, "scaling": scaling}  # lecture-mode URL keys


if __name__ == "__main__":
    from pipelines.runtime import Runtime

    with gr.Blocks(title=TITLE) as demo:
        create(Runtime.create("auto"))
    demo.launch()
