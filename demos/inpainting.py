"""Tab "Inpainting": paint a mask on an image and let the model fill it in (RePaint), and turn a
rough drawing into an image (SDEdit).

UI only: the maths is :mod:`pipelines.inpainting` (on top of :mod:`pipelines.diffusion.loop`); images
are validated by :mod:`pipelines.images`. Each event builds its own generator and scheduler.
Run alone for a quick look: ``python -m demos.inpainting``.

The canvas is a ``gr.ImageEditor`` (RGBA, numpy): its value is
``{"background": HxWx4, "layers": [HxWx4, ...], "composite": HxWx4}``; the mask is where the
paint layer's alpha is non-zero (the colour of the brush does not matter).
"""

from __future__ import annotations

import functools

import gradio as gr
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageOps

from demos import player
from demos.common import i_start_note, image_file, png, sample_paths, sampler_follows_model, user_errors
from demos.components import SafeImageEditor, seed_input
from pipelines import sketch
from pipelines import masks
from pipelines import images, validation
from pipelines import inpainting as ip
from pipelines.models import SAMPLERS
from pipelines.toyworld.world import Scene, render

TITLE = "Inpainting"
WORK_PX = 256  # working / display size; the toy model itself runs at 32 px (8x smaller)
HUGE_SIDE = 2048  # larger uploads get a visible warning (they are resized to the working size anyway)
MAX_STEPS = 100
MAX_SCALE = validation.MAX_GUIDANCE
BRUSH = ("#ff00ff", 0.55)  # translucent magenta: the image stays visible under the paint
SKETCH_COLOURS = ["#dc1e1e", "#ff8c00", "#fae114", "#1eaa32", "#00d2e6", "#1e46eb", "#8c32c8", "#ff78c8",
                  "#0c0c0c", "#7d7d7d", "#f5f5f5"]  # the toy world's colours, then black/gray/white
RESAMPLING_HELP = ("**Resampling** (RePaint): after every *jump length* steps, re-noise the sample back up and "
                   "denoise that stretch again, *resamples* passes in all. Each pass lets the new content re-adapt "
                   "to the pixels that are kept, so seams and colours blend better, at the cost of more UNet calls.")
TOY_SCENES = [
    Scene("circle", "red", "navy", "large", 0.5, 0.5, 0.36),
    Scene("star", "yellow", "black", "large", 0.5, 0.5, 0.38),
    Scene("square", "blue", "white", "large", 0.5, 0.5, 0.34),
    Scene("triangle", "green", "gray", "large", 0.5, 0.5, 0.36),
    Scene("cross", "pink", "navy", "large", 0.5, 0.5, 0.36),
]


# ------------------------------------------------------------------ helpers (UI side only)


def toy_sample_images() -> list[Image.Image]:
    """Toy-world scenes rendered directly at the working size (what the toy model knows)."""
    return [render(s, size=WORK_PX) for s in TOY_SCENES]


def red_blob_sketch(size: int = WORK_PX, seed: int = 0) -> Image.Image:
    """A hand-drawn-looking red blob on white, for the sketch demo (the evaluation uses the same)."""
    return sketch.blob_sketch(size, seed)


def work_size(model) -> int:
    return max(WORK_PX, max(model.image_size))


def _size_notes(w: int, h: int, work: int) -> list[str]:
    notes = []
    if max(w, h) > HUGE_SIDE:
        notes.append(f"Your image is large ({w}×{h} px); it was resized to {work}×{work} px for this demo.")
    elif (w, h) != (work, work):
        notes.append(f"The image ({w}×{h} px) was centre-cropped to a square and resized to {work}×{work} px.")
    return notes


def editor_image_and_mask(value, work: int) -> tuple[torch.Tensor, np.ndarray, list[str]]:
    """ImageEditor value -> (image ``[1, 3, work, work]`` in [-1, 1], mask ``[work, work]`` in {0, 1}, notes)."""
    if not value or value.get("background") is None:
        raise ValueError("No image on the canvas: upload one or pick a sample first.")
    pil = images.load_image(value["background"])  # validates size; transparency composited on white
    sizes = value.get("sizes") or {}
    w, h = sizes.get("background") or pil.size  # as uploaded (the editor decodes reduced)
    notes = _size_notes(w, h, work)
    layers = [a for a in (value.get("layers") or []) if a is not None]
    layer_sizes = [tuple(s) for s in sizes.get("layers", []) if s] or [np.asarray(a).shape[1::-1] for a in layers]
    if any(tuple(s) != (w, h) for s in layer_sizes):
        notes.append(f"The paint layer's size differs from the image's ({w}×{h} px); the mask was resized to it.")
    w, h = pil.size
    mask = masks.mask_from_layers(layers, size=(h, w))  # [h, w] in {0, 1}
    img = images.to_working_size(pil, work)
    mask_im = ImageOps.fit(Image.fromarray((mask * 255).astype(np.uint8), "L"), (work, work),
                           method=Image.Resampling.NEAREST, centering=(0.5, 0.5))
    return images.pil_to_tensor(img), (np.asarray(mask_im) > 127).astype(np.float32), notes


def mask_png(mask: np.ndarray) -> str:
    return png(Image.fromarray((mask * 255).astype(np.uint8), "L").convert("RGB"))


def editor_value(path: str, layer: str | None = None) -> dict:
    """An ImageEditor value: the image, and optionally one paint layer (RGBA; alpha > 0 = mask)."""
    return {"background": path, "layers": [layer] if layer else [], "composite": path}


def centre_disc_layer(size: int = WORK_PX, radius: float = 0.44) -> Image.Image:
    """A paint layer with a translucent brush-coloured disc in the centre (covers TOY_SCENES' shapes)."""
    layer = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    r, c = radius * size, size / 2
    rgb = tuple(int(BRUSH[0][i:i + 2], 16) for i in (1, 3, 5))
    ImageDraw.Draw(layer).ellipse([c - r, c - r, c + r, c + r], fill=(*rgb, int(255 * BRUSH[1])))
    return layer


# ------------------------------------------------------------------ events


def preview_mask(value):
    """Canvas changed -> (mask image, coverage markdown). Nothing heavy: no model."""
    if not value or value.get("background") is None:
        return None, "No image yet."
    _, mask, notes = editor_image_and_mask(value, WORK_PX)
    cov = float(mask.mean())
    msg = f"Mask covers **{cov:.0%}** of the image (white = replace)."
    if cov == 0:
        msg = "Mask is empty: paint over the region to replace."
    elif cov == 1:
        msg = "Everything is masked: that is plain text-to-image generation."
    return mask_png(mask), " ".join([msg] + notes)


def run_inpaint(runtime, model_name, value, prompt, negative, scale, steps, sampler, seed, resamples, jump):
    """Stream (composite, x_t, mask, markdown) per UNet step; the last composite is a lossless PNG."""
    model = runtime.registry.diffusion(model_name or None)  # ModelUnavailable is a ValueError
    n = validation.integer("steps", steps, 1, MAX_STEPS)
    w = validation.number("guidance scale", scale, 0.0, MAX_SCALE)
    r = validation.integer("resamples", resamples, 1, ip.MAX_RESAMPLES)
    j = validation.integer("jump length", jump, 1, MAX_STEPS)
    work = work_size(model)
    image, mask, notes = editor_image_and_mask(value, work)
    prep = masks.prepare(image, mask)  # empty mask -> ValueError; full -> plain generation (note)
    notes += prep.notes
    hm, wm = model.image_size
    if (hm, wm) != (work, work):
        notes.append(f"The model works at {wm}×{hm} px: image and mask are downsized for it, the result is "
                     f"upscaled back and pasted into the original outside the mask.")
    mpath = mask_png(mask)
    head = " ".join(notes)
    gen = validation.generator(seed)
    frames = []  # (composite, x_t, text) per UNet call: file paths already written, so a replay costs nothing
    for st in ip.inpaint_steps(model, prep.image, prep.mask, validation.prompt(prompt), negative_prompt=validation.prompt(negative, "negative prompt"),
                               sampler=sampler, num_inference_steps=n, guidance_scale=w, generator=gen,
                               jump_length=j, resamples=r):
        phase = f", {st.phase} of this stretch" if st.phase else ""
        xt = image_file(st.x_t_rgb[0], fmt="jpeg") if st.x_t_rgb is not None else None
        if st.image is not None:
            md = (f"**Done**: {st.total} UNet calls ({n} {sampler} steps, {r} resample pass(es), jump length {j}); "
                  f"mask {prep.coverage:.0%}; seed {validation.seed(seed)}. Outside the mask the pixels are the input's. {head}")
            frames.append((image_file(st.image[0]), xt, md))
            yield (*frames[-1][:2], mpath, md, {"frames": frames})
        else:
            md = (f"UNet call {st.index + 1}/{st.total}: step {st.position}/{n} (t = {st.t}){phase}. "
                  f"Showing the predicted x̂0 inside the mask. {head}")
            frames.append((image_file(st.composite[0], fmt="jpeg"), xt, md))
            yield (*frames[-1][:2], mpath, md, gr.skip())


def _count(traj) -> int:
    return len(traj["frames"]) if traj else 0


def show_call(traj, k: int):
    """Recorded UNet call ``k`` (1-based) -> (result, x_t, info). No model call."""
    return traj["frames"][k - 1]


def scrub(traj, k):
    if not traj:
        raise ValueError("Inpaint first: there is no recorded run in this session yet.")
    return show_call(traj, min(validation.integer("UNet call", k, 1, 10**6), _count(traj)))


def _sketch_tensor(value) -> torch.Tensor:
    if not value:
        raise ValueError("The sketch canvas is empty: draw something first.")
    src = value.get("composite")
    if src is None:
        src = value.get("background")
    if src is None:
        raise ValueError("The sketch canvas is empty: draw something first.")
    return images.pil_to_tensor(images.to_working_size(images.load_image(src), WORK_PX))


def run_sketch(runtime, model_name, value, prompt, strength, scale, steps, seed):
    """SDEdit on the drawing: stream (result, markdown); the predicted x̂0 per step, then the image."""
    model = runtime.registry.diffusion(model_name or None)
    n = validation.integer("steps", steps, 1, MAX_STEPS)
    s = validation.number("strength", strength, 0.0, 1.0)
    w = validation.number("guidance scale", scale, 0.0, MAX_SCALE)
    first = sketch.start_step(s, n)
    drawing = _sketch_tensor(value)
    work = work_size(model)
    gen = validation.generator(seed)
    for rec in sketch.sketch_steps(model, drawing, validation.prompt(prompt), strength=s, num_inference_steps=n,
                               guidance_scale=w, generator=gen):
        if rec.index == 0:
            t0 = rec.t
        if rec.image is not None:
            md = (f"**Done**: strength {s:g} → the drawing was noised to t = {t0} (step {first + 1}/{n}) and "
                  f"denoised for {n - first} steps; seed {validation.seed(seed)}. {i_start_note(s, n)} "
                  f"The model works at {model.image_size[0]} px (shown upscaled).")
            yield image_file(rec.image[0], work, fmt='jpeg'), md
        else:
            yield image_file(rec.pred_x0_rgb[0], work, fmt='jpeg'), (f"step {first + rec.index + 1}/{n} (started at t = {t0}): "
                                                    f"predicted x̂0")


def run_strip(runtime, model_name, value, prompt, scale, steps, seed):
    """The same drawing, prompt and seed at strengths 0.3 … 1.0 -> gallery [(image, caption)]."""
    model = runtime.registry.diffusion(model_name or None)
    low = min(sketch.SKETCH_STRENGTHS)  # its lowest strength must keep a step: int(n * low) >= 1
    n = validation.integer("steps", steps, next(k for k in range(1, MAX_STEPS + 1) if int(k * low) >= 1), MAX_STEPS)
    w = validation.number("guidance scale", scale, 0.0, MAX_SCALE)
    seed = validation.seed(seed)
    drawing = _sketch_tensor(value)
    work = work_size(model)
    out = [(image_file(drawing[0], fmt='jpeg'), "your drawing")]
    for s, img in sketch.sketch_strip(model, drawing, validation.prompt(prompt), seed=seed, num_inference_steps=n,
                                  guidance_scale=w):
        out.append((image_file(img[0], work, fmt='jpeg'), f"strength {s:g} = 1 − i_start/N, i_start {sketch.start_step(s, n)}/{n}"))
    return out


# ------------------------------------------------------------------ layout


MATHS = f"""
**Noise, then put back what you keep.** A diffusion model denoises from pure noise step by step. Inpainting
(RePaint, Lugmayr et al. 2022) runs the same loop, but after every step the region you did *not* paint is
replaced by your picture noised to the same level t:

x_t ← m·x_t + (1 − m)·(√ᾱ_t·x_orig + √(1−ᾱ_t)·ε)

with m = 1 on the painted region and 0 elsewhere (ᾱ_t: the share of the picture left at step t; ε: Gaussian
noise). So the model always sees a consistent picture and fills the hole to match its surroundings.

**Resampling.** Every *jump length* steps the sample is re-noised back up and that stretch is denoised again,
*resamples* passes in all: new content gets several chances to blend with what is kept, at the cost of more
model calls. The bundled toy model knows only coloured shapes and works at 32×32 px: the picture and mask are
downsized for it and the result is upscaled back to {WORK_PX} px and pasted in outside the mask.

**Sketch to image** (SDEdit, Meng et al. 2022) noises your drawing to the level the strength picks and
denoises from there: low strength keeps the drawing, strength 1 ignores it.
"""


def create(runtime) -> dict:
    """Build the tab inside the caller's ``gr.Blocks`` / ``gr.Tab``."""
    reg = runtime.registry
    names = [n for n in reg.diffusion_names() if reg.spec(n).kind in ("toy", "latent", "sd3")]
    toy_paths = [png(im) for im in toy_sample_images()]
    samples = toy_paths + sample_paths()
    blob = png(red_blob_sketch())
    blank = png(Image.new("RGB", (WORK_PX, WORK_PX), (245, 245, 245)))
    bind = lambda fn: user_errors(functools.partial(fn, runtime))  # noqa: E731

    gr.Markdown(
        "Paint over the part of the picture that should change, say what should be there, and press **Inpaint**: "
        "the model fills in the painted region while the rest stays put. Not sure where to start? Press "
        "**Example**.", elem_classes=["dl-intro"])
    with gr.Row(elem_classes=["dl-main"]):
        with gr.Column(scale=3, elem_classes=["dl-controls"]):
            editor = SafeImageEditor(
                value=editor_value(toy_paths[0]), type="numpy", image_mode="RGBA", sources=("upload", "clipboard"),
                brush=gr.Brush(default_size=24, colors=[BRUSH], default_color=BRUSH, color_mode="fixed"),
                eraser=gr.Eraser(default_size=24), layers=False, transforms=(), canvas_size=(WORK_PX, WORK_PX),
                label="paint the region to replace (eraser to undo paint)", elem_id="inpaint-editor", height=330)
            mask_info = gr.Markdown("Paint over the region to replace.", elem_id="inpaint-mask-info")
            with gr.Row(equal_height=False, elem_classes=["dl-runrow"]):
                prompt = gr.Textbox("a yellow star on a navy background", label="what goes in the painted region",
                                    max_lines=1, scale=3, elem_id="inpaint-prompt")
                run = gr.Button("Inpaint", variant="primary", elem_id="inpaint-run", elem_classes=["dl-run"],
                                size="lg", scale=1, min_width=110)
            example_btn = gr.Button("Example: mask the red circle, ask for a yellow star, inpaint", size="sm",
                                    elem_id="inpaint-example", elem_classes=["dl-autorun"])  # run=1 presses it
            with gr.Accordion("Advanced", open=False, elem_id="inpaint-advanced"):
                model = gr.Dropdown(names, value=names[0], label="diffusion model")
                negative = gr.Textbox("", label="negative prompt")
                with gr.Row():
                    steps = gr.Slider(1, MAX_STEPS, value=40, step=1, label="steps", elem_id="inpaint-steps")
                    sampler = gr.Dropdown(list(SAMPLERS), value="DDIM", label="sampler")
                with gr.Row():
                    scale = gr.Slider(0, MAX_SCALE, value=5.0, step=0.5, label="guidance scale w")
                    seed = seed_input("seed")
                gr.Markdown(RESAMPLING_HELP)
                with gr.Row():
                    resamples = gr.Slider(1, 10, value=3, step=1, label="resamples r (1 = off)")
                    jump = gr.Slider(1, 20, value=5, step=1, label="jump length j (steps)")
            gallery = gr.Gallery(value=samples, label="…or pick another picture (toy-world scenes first)", columns=9,
                                 height=90, allow_preview=False, elem_id="inpaint-samples")
        with gr.Column(scale=2, elem_classes=["dl-output"]):
            result = gr.Image(label="result: the model's guess inside the mask, your picture outside",
                              interactive=False, elem_id="inpaint-result", height=300, format="png",
                              elem_classes=["dl-big"], buttons=["fullscreen"])
            info = gr.Markdown(elem_id="inpaint-info")
            traj = gr.State(None, time_to_live=900)
            # any call count until the first run sets the range, so an API client may play or scrub at once
            call = gr.Slider(1, MAX_STEPS * ip.MAX_RESAMPLES, value=1, step=1, interactive=False, visible=False,
                             label="UNet call: scrub or play the recorded run", elem_id="inpaint-scrub")
            play = player.controls("inpaint")
            with gr.Row(elem_classes=["dl-panels"]):
                mask_img = gr.Image(label="mask (white = replace)", interactive=False, elem_id="inpaint-mask",
                                    height=170, min_width=120)
                xt_img = gr.Image(label="x_t: the noisy image the model sees", interactive=False,
                                  elem_id="inpaint-xt", height=170, min_width=120, elem_classes=["dl-pixelated"])
    with gr.Accordion("The maths", open=False):
        gr.Markdown(MATHS)

    gr.Markdown("### Sketch to image (SDEdit)\nDraw with a few colours (or on an existing image), pick a strength and "
                "a prompt. The drawing is noised to the step the strength picks and denoised from there: low "
                "strength keeps your drawing, strength 1 ignores it.")
    with gr.Row():
        with gr.Column(scale=3):
            sketch = SafeImageEditor(
                value=editor_value(blob), type="numpy", image_mode="RGBA", sources=("upload", "clipboard"),
                brush=gr.Brush(default_size=20, colors=SKETCH_COLOURS, color_mode="defaults"),
                eraser=gr.Eraser(default_size=20), layers=False, transforms=(), canvas_size=(WORK_PX, WORK_PX),
                label="sketch (the toy model's colours are in the palette)", elem_id="sketch-editor", height=420)
            with gr.Row():
                blank_btn = gr.Button("Blank canvas", size="sm")
                blob_btn = gr.Button("Example: a red blob", size="sm")
                from_btn = gr.Button("Draw on the inpainting image", size="sm")
        with gr.Column(scale=2):
            sk_prompt = gr.Textbox("a red circle", label="prompt")
            sk_strength = gr.Slider(0.05, 1.0, value=0.7, step=0.05, label="strength (fraction of steps run)")
            sk_i_start = gr.Markdown(i_start_note(0.7, 40), elem_id="sketch-i-start")
            with gr.Row():
                sk_steps = gr.Slider(1, MAX_STEPS, value=40, step=1, label="steps")
                sk_scale = gr.Slider(0, MAX_SCALE, value=5.0, step=0.5, label="guidance scale")
                sk_seed = seed_input("seed")
            with gr.Row():
                sk_run = gr.Button("Sketch → image", variant="primary", elem_id="sketch-run")
                strip_run = gr.Button("Strip across strengths", elem_id="sketch-strip-run")
            sk_result = gr.Image(label="result", interactive=False, elem_id="sketch-result", height=260)
            sk_info = gr.Markdown()
    strip = gr.Gallery(label="same drawing, prompt and seed; only the strength changes", columns=8,
                       object_fit="contain", elem_id="sketch-strip", elem_classes=["dl-gallery", "dl-pixelated"])

    def pick(evt: gr.SelectData) -> dict:
        return editor_value(samples[int(evt.index)])  # the server picks the path; the client sends an index

    def from_inpaint(value):
        if not value or value.get("background") is None:
            raise ValueError("The inpainting canvas has no image.")
        pil = images.to_working_size(images.load_image(value["background"]), WORK_PX)
        return editor_value(png(pil))

    gallery.select(pick, None, editor, api_name="inpaint_pick_sample", api_visibility="private")
    # a brush stroke fires .input (the first one fires no .change); a picked sample fires .change
    gr.on([editor.change, editor.input], user_errors(preview_mask), editor, [mask_img, mask_info],
          api_name="inpaint_mask", trigger_mode="always_last", show_progress="hidden")
    sampler_follows_model(runtime, model, sampler)
    inpaint_in = [model, editor, prompt, negative, scale, steps, sampler, seed, resamples, jump]
    inpaint_out = [result, xt_img, mask_img, info, traj]

    def scrubber(tr):
        n = _count(tr)
        return gr.Slider(maximum=max(n, 2), value=n, interactive=n > 1, visible=True)  # shown once there is a run

    run.click(bind(run_inpaint), inpaint_in, inpaint_out, api_name="inpaint").success(
        scrubber, traj, call, api_visibility="private", show_progress="hidden")
    example_value = editor_value(toy_paths[0], png(centre_disc_layer()))
    example_btn.click(lambda: (example_value, "a yellow star on a navy background"), None, [editor, prompt],
                      api_name="inpaint_example", api_visibility="private").then(
        bind(run_inpaint), inpaint_in, inpaint_out, api_visibility="private").success(
        scrubber, traj, call, api_visibility="private", show_progress="hidden")
    call.input(player.errors(scrub), [traj, call], [result, xt_img, info], api_name="inpaint_scrub",
               show_progress="hidden", trigger_mode="always_last", concurrency_limit=None)
    player.wire(play, "inpaint", show_call, _count, traj, call, [result, xt_img, info])
    blank_btn.click(lambda: editor_value(blank), None, sketch, api_name="sketch_blank", api_visibility="private")
    blob_btn.click(lambda: editor_value(blob), None, sketch, api_name="sketch_example", api_visibility="private")
    from_btn.click(user_errors(from_inpaint), editor, sketch, api_name="sketch_from_inpaint",
                   api_visibility="private")
    sk_run.click(bind(run_sketch), [model, sketch, sk_prompt, sk_strength, sk_scale, sk_steps, sk_seed],
                 [sk_result, sk_info], api_name="sketch")
    gr.on([sk_strength.change, sk_steps.change], user_errors(i_start_note), [sk_strength, sk_steps], sk_i_start,
          api_name="sketch_i_start", show_progress="hidden", trigger_mode="always_last")
    strip_run.click(bind(run_strip), [model, sketch, sk_prompt, sk_scale, sk_steps, sk_seed], strip,
                    api_name="sketch_strip")
    return {"model": model, "prompt": prompt, "negative": negative, "steps": steps, "sampler": sampler,
            "scale": scale, "seed": seed, "resamples": resamples, "jump": jump, "sketch_prompt": sk_prompt,
            "strength": sk_strength}  # lecture-mode URL keys


if __name__ == "__main__":
    from pipelines.runtime import Runtime

    with gr.Blocks(title=TITLE) as demo:
        create(Runtime.create())
    demo.launch()
