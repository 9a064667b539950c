"""Tab "Noise tricks": visual anagrams and hybrid images, made by combining noise estimates.

UI only: the combiners are :mod:`pipelines.noise_tricks`, run by the one sampling loop
(:func:`pipelines.diffusion.loop.sample_steps`, ``combiner=``). Every event builds its own generator,
scheduler and combiner; nothing per-user lives in module globals.
Run alone for a quick look: ``python -m demos.noise_tricks``.
"""

from __future__ import annotations

import functools

import gradio as gr

from demos.common import conditional_model, conditional_names, image_file, user_errors
from demos.components import seed_input
from pipelines import noise_tricks as NT
from pipelines import validation
from pipelines.diffusion.loop import sample_steps

TITLE = "Noise tricks"
SHOW_PX = 256
MAX_STEPS = 100
STREAM_EVERY = 2  # stream x̂0 every this many steps
VIEW_CHOICES = [("upside down (vertical flip)", "flip"), ("rotated 90°", "rotate90"),
                ("colours negated", "negate")]
ANAGRAM_DEFAULT = ("a red circle on a black background", "a cyan square on a white background", "negate")
HYBRID_DEFAULT = ("a red circle on a black background", "a red square on a black background")


def _judge_text(runtime, model_name, verdicts: list[tuple[str, object, str]]) -> str:
    """What the rendering judge reads off each (label, image, prompt): toy-world models only."""
    if runtime.registry.spec(model_name or runtime.registry.default_diffusion()).kind != "toy":
        return ""
    from pipelines.toyworld.render_judge import classify_by_rendering
    from pipelines.toyworld.world import parse_caption

    rows = []
    for label, img, prompt in verdicts:
        got = classify_by_rendering(img)[0]
        want = {k: v for k, v in parse_caption(prompt).items() if v is not None}
        ok = all(got.get(k) == v for k, v in want.items())
        rows.append(f"| {label} | {got['color']} {got['shape']} on {got['background']} | {prompt} | "
                    f"{'yes' if ok else 'no'} |")
    return ("\n\nThe rendering judge (no learnt parts) reads:\n\n| view | reads | asked for | match |\n"
            "|---|---|---|---|\n" + "\n".join(rows))


def run_anagram(runtime, model_name, prompt_a, prompt_b, view_name, scale, steps, seed):
    """Stream a visual anagram: (gallery [as is, under the view], markdown)."""
    model = conditional_model(runtime, model_name)
    n = validation.integer("steps", steps, 1, MAX_STEPS)
    label = NT.VIEW_LABELS.get(view_name, view_name)
    comb = NT.anagram(model, prompt_a, prompt_b, view_name, scale)
    for rec in sample_steps(model, combiner=comb, num_inference_steps=n, generator=validation.generator(seed)):
        img = rec.image if rec.is_last else rec.pred_x0_rgb
        if not (rec.is_last or rec.index % STREAM_EVERY == 0):
            continue
        gallery = [(image_file(img[0], SHOW_PX), f"as is: {prompt_a}"),
                   (image_file(NT.views_of(img, view_name)[0], SHOW_PX), f"{label}: {prompt_b}")]
        if not rec.is_last:
            yield gallery, f"step {rec.index + 1}/{n}: the model's guess x̂0, and the same {label}"
            continue
        md = (f"**Done**: {n} steps, w = {float(scale):g} for both prompts, seed {validation.seed(seed)}. "
              f"Each step averaged ε of *{prompt_a}* on the image with ε of *{prompt_b}* on the image {label}, "
              "mapped back.")
        if model.vae is not None and view_name == "negate":
            md += " (A latent model: negating latents is not negating colours, so expect no clean reading.)"
        yield gallery, md + _judge_text(runtime, model_name, [("as is", img, prompt_a),
                                                              (label, NT.views_of(img, view_name), prompt_b)])


def run_hybrid(runtime, model_name, prompt_far, prompt_near, sigma, kernel, scale, steps, seed):
    """Stream a hybrid image: (gallery [close up, from afar, high-pass only], markdown)."""
    model = conditional_model(runtime, model_name)
    n = validation.integer("steps", steps, 1, MAX_STEPS)
    s = validation.number("blur sigma", sigma, 0.0, NT.MAX_SIGMA)
    k = validation.integer("blur kernel size", kernel, 0, 63) or None  # 0: 2·ceil(3σ)+1
    comb = NT.hybrid(model, prompt_far, prompt_near, sigma=s, kernel_size=k, guidance_scale=scale)
    # the views are shown on the decoded picture: σ is in model pixels, ×8 for SD's latents
    show_sigma = s * model.image_size[0] / model.sample_shape[-1]
    for rec in sample_steps(model, combiner=comb, num_inference_steps=n, generator=validation.generator(seed)):
        if not (rec.is_last or rec.index % STREAM_EVERY == 0):
            continue
        img = rec.image if rec.is_last else rec.pred_x0_rgb
        far = NT.far_view(img, show_sigma)
        gallery = [(image_file(img[0], SHOW_PX), f"close up: {prompt_near}"),
                   (image_file(far[0], SHOW_PX), f"from afar (blurred, ¼ size): {prompt_far}"),
                   (image_file(NT.near_view(img, show_sigma)[0], SHOW_PX), "its high frequencies only")]
        if not rec.is_last:
            yield gallery, f"step {rec.index + 1}/{n}: the model's guess x̂0"
            continue
        md = (f"**Done**: {n} steps, σ = {s:g} px, kernel {k or 'auto'}, w = {float(scale):g}, "
              f"seed {validation.seed(seed)}. Each step took the blurred ε of *{prompt_far}* plus the sharp "
              f"remainder (ε − blurred ε) of *{prompt_near}*. σ = 0 gives plain *{prompt_far}*.")
        yield gallery, md + _judge_text(runtime, model_name, [("close up", img, prompt_near),
                                                              ("from afar", far, prompt_far)])


INTRO = ("Two tricks built from nothing but the model's noise estimates (CS180 project 5). At every step the "
         "sampler asks the model for the noise ε twice, for two prompts, and **combines** the answers before "
         "stepping. The model is unchanged; only the ε the sampler uses is.")
MATHS = r"""
**Visual anagram** (Geng et al. 2024): with a view V (flip, 90° rotation, colour negation) and its inverse V⁻¹,

$$\hat\varepsilon = \tfrac12\left[\varepsilon_A(x_t) + V^{-1}\,\varepsilon_B(V x_t)\right]$$

each ε with its own classifier-free guidance. The picture is denoised towards A as it is, and towards B as seen
through V. It only works when both readings can share one picture: in the toy world circles, squares and crosses
look the same upside down or rotated, so flips cannot turn one into another, while negation turns colours into
other colours (red ↔ cyan, blue ↔ yellow, black ↔ white).

**Hybrid image** (Oliva et al. 2006, made with diffusion):
$\hat\varepsilon = \mathrm{lowpass}(\varepsilon_A) + \mathrm{highpass}(\varepsilon_B)$, a Gaussian blur of σ
pixels and its complement. Small or far away you see the coarse shapes and colours (A); close up, the edges (B).

**Any model output.** toy-sd predicts v = α ε − σ x, not ε. Every output type is ε and x mixed with fixed numbers
at a step, and the views and filters are linear, so combining the outputs equals combining ε and converting.
"""


def create(runtime) -> dict:
    """Build the tab inside the caller's ``gr.Blocks`` / ``gr.Tab``."""
    names = conditional_names(runtime)
    gr.Markdown(INTRO, elem_classes=["dl-intro"])
    gal = dict(object_fit="contain", elem_classes=["dl-gallery", "dl-pixelated"], height=330)
    bind = lambda f: user_errors(functools.partial(f, runtime))  # noqa: E731
    with gr.Tabs():
        with gr.Tab("Visual anagram", id="anagram"):
            with gr.Row(elem_classes=["dl-main"]):
                with gr.Column(scale=1, min_width=280, elem_classes=["dl-controls"]):
                    a_prompt = gr.Textbox(ANAGRAM_DEFAULT[0], label="prompt A (the picture as it is)",
                                          elem_id="tricks-a-prompt", max_lines=2)
                    b_prompt = gr.Textbox(ANAGRAM_DEFAULT[1], label="prompt B (the picture seen through the view)",
                                          elem_id="tricks-b-prompt", max_lines=2)
                    a_view = gr.Dropdown(VIEW_CHOICES, value=ANAGRAM_DEFAULT[2], label="view",
                                         elem_id="tricks-view")
                    with gr.Row(equal_height=False, elem_classes=["dl-runrow"]):
                        a_seed = seed_input("seed", min_width=120)
                        a_run = gr.Button("Make the anagram", variant="primary", elem_id="tricks-anagram-run",
                                          elem_classes=["dl-run"], size="lg", min_width=120)
                    with gr.Accordion("Advanced", open=False):
                        a_model = gr.Dropdown(names, value=names[0], label="diffusion model")
                        a_scale = gr.Slider(0, 15, value=3.0, step=0.5, label="guidance scale w (each prompt)")
                        a_steps = gr.Slider(2, MAX_STEPS, value=20, step=1, label="steps")
                with gr.Column(scale=2, elem_classes=["dl-output"]):
                    a_gallery = gr.Gallery(label="one picture, two ways of looking", columns=2,
                                           elem_id="tricks-anagram", **gal)
                    a_md = gr.Markdown(elem_id="tricks-anagram-md")
            a_inputs = [a_model, a_prompt, b_prompt, a_view, a_scale, a_steps, a_seed]
            gr.Examples([[names[0], *ANAGRAM_DEFAULT, 3.0, 20, 3],
                         [names[0], "a red circle on a black background", "a cyan circle on a white background",
                          "negate", 3.0, 20, 0],
                         [names[0], "a yellow cross on a navy background", "a yellow cross on a navy background",
                          "rotate90", 3.0, 20, 0],
                         [names[0], "a pink square on a gray background", "a pink circle on a gray background",
                          "flip", 3.0, 20, 0]],
                        a_inputs, [a_gallery, a_md], fn=bind(run_anagram), cache_examples=True, cache_mode="lazy",
                        label="examples (the last one shows where the trick fails: both shapes look the same "
                              "upside down)", elem_id="tricks-anagram-examples")
        with gr.Tab("Hybrid image", id="hybrid"):
            with gr.Row(elem_classes=["dl-main"]):
                with gr.Column(scale=1, min_width=280, elem_classes=["dl-controls"]):
                    h_far = gr.Textbox(HYBRID_DEFAULT[0], label="seen from afar (low frequencies)",
                                       elem_id="tricks-far-prompt", max_lines=2)
                    h_near = gr.Textbox(HYBRID_DEFAULT[1], label="seen close up (high frequencies)",
                                        elem_id="tricks-near-prompt", max_lines=2)
                    h_sigma = gr.Slider(0, 6, value=2.0, step=0.25, label="blur σ (pixels)", elem_id="tricks-sigma")
                    with gr.Row(equal_height=False, elem_classes=["dl-runrow"]):
                        h_seed = seed_input("seed", min_width=120)
                        h_run = gr.Button("Make the hybrid", variant="primary", elem_id="tricks-hybrid-run",
                                          elem_classes=["dl-run"], size="lg", min_width=120)
                    with gr.Accordion("Advanced", open=False):
                        h_model = gr.Dropdown(names, value=names[0], label="diffusion model")
                        h_kernel = gr.Slider(0, 31, value=0, step=1, label="blur kernel size (odd; 0 = 2·⌈3σ⌉+1)")
                        h_scale = gr.Slider(0, 15, value=3.0, step=0.5, label="guidance scale w (each prompt)")
                        h_steps = gr.Slider(2, MAX_STEPS, value=20, step=1, label="steps")
                with gr.Column(scale=2, elem_classes=["dl-output"]):
                    h_gallery = gr.Gallery(label="close up, from afar, and what only a close look sees", columns=3,
                                           elem_id="tricks-hybrid", **gal)
                    h_md = gr.Markdown(elem_id="tricks-hybrid-md")
            h_inputs = [h_model, h_far, h_near, h_sigma, h_kernel, h_scale, h_steps, h_seed]
            gr.Examples([[names[0], *HYBRID_DEFAULT, 2.0, 0, 3.0, 20, 0],
                         [names[0], "a blue square on a white background", "a yellow star on a white background",
                          2.0, 0, 3.0, 20, 0]],
                        h_inputs, [h_gallery, h_md], fn=bind(run_hybrid), cache_examples=True, cache_mode="lazy",
                        label="examples (click to run; cached after the first run)", elem_id="tricks-hybrid-examples")
    with gr.Accordion("The maths", open=False):
        gr.Markdown(MATHS)
    a_run.click(bind(run_anagram), a_inputs, [a_gallery, a_md], api_name="tricks_anagram")
    h_run.click(bind(run_hybrid), h_inputs, [h_gallery, h_md], api_name="tricks_hybrid")
    return {"model": a_model, "prompt_a": a_prompt, "prompt_b": b_prompt, "view": a_view, "seed": a_seed,
            "far": h_far, "near": h_near, "sigma": h_sigma}  # lecture-mode URL keys


if __name__ == "__main__":
    from pipelines.runtime import Runtime

    with gr.Blocks(title=TITLE) as demo:
        create(Runtime.create("auto"))
    demo.launch()
