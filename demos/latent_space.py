"""Tab "Latent space": what the VAE under a latent diffusion model (toy-sd3's toy-vae) does.

UI only; the compute is :mod:`pipelines.latent`. Sections: encode/decode any image (the toy world and the
sample photos) with its latent channels and reconstruction error; the same noise level in pixel and in latent
space; interpolation between two latents or two starting noises, lerp against slerp; the cheap linear
preview against the full decode at every step of a sampling run; the cost of one step, pixel vs latent.
"""

from __future__ import annotations

import functools

import gradio as gr

from demos.common import image_file, sample_paths, user_errors
from demos.components import SafeImage, seed_input
from demos.style import BIG, GALLERY, PAIRS, PIXELATED
from pipelines import images, latent, validation
from pipelines.toyworld.world import Scene, render

TITLE = "Latent space"
SHOW_PX = 192  # 64 px images shown upscaled (nearest)
STRIP_PX = 96
LATENT_KINDS = ("latent", "sd3")
DEFAULT_PROMPT = "a red circle on a white background"
STRIP_STEPS = 6  # preview vs decode thumbnails along the run
TOY = [("circle", "red", "navy", "large", 0.5, 0.5, 0.36), ("star", "yellow", "black", "large", 0.5, 0.5, 0.4),
       ("square", "blue", "white", "medium", 0.45, 0.55, 0.3)]

INTRO = ("Big diffusion models (Stable Diffusion, SD3, Flux) do not denoise pixels: an autoencoder (VAE) first "
         "squeezes the picture into a small grid of numbers, the latent, and the denoiser works there. Encode a "
         "picture and decode it back, see the latent's channels, noise it, walk between two latents, and compare "
         "the cheap previews live UIs show with the real decode.")
MATHS = """
**Encode, decode.** The encoder E maps a 64×64×3 image to a 16×16×4 latent (12× fewer numbers); the diffusion model
sees it normalised, z = (E(x) − shift)·scale, so z has mean ≈ 0 and variance ≈ 1, like the noise it is mixed
with; the decoder D gets z/scale + shift back. PSNR = 10·log10(2² / MSE) for images in [−1, 1].

**Noise.** Flow matching noises x_s = (1 − s)·x0 + s·ε (SD3 eq. 2). The same s in latent space hides more: every
latent number stands for a 4×4 patch, so latent noise decodes to blotches, not grain.

**Lerp and slerp.** lerp(a, b, t) = (1 − t)·a + t·b. slerp(a, b, t) = sin((1 − t)θ)/sin θ · a + sin(tθ)/sin θ · b,
cos θ = ⟨a, b⟩ / (|a||b|). Two independent Gaussian noises are nearly orthogonal, so lerp's midpoint has only
1/√2 of their length, a noise level the model never starts from; slerp keeps the length.

**Cheap preview.** rgb ≈ M·[z; 1], one 5×3 matrix fitted by least squares on toy-world images (their latents
against the images averaged down to 16×16): what live SD UIs show at every step instead of running the decoder.
"""


def _names(runtime) -> list[str]:
    reg = runtime.registry
    return [n for n in reg.diffusion_names() if reg.spec(n).kind in LATENT_KINDS]


def _model(runtime, name):
    reg = runtime.registry
    names = _names(runtime)
    if not names:
        raise ValueError("no latent model is registered")
    name = name or names[0]
    if reg.spec(name).kind not in LATENT_KINDS:
        raise ValueError(f"{name} works in pixel space: it has no latent space to show; choose one of {names}")
    return reg.diffusion(name)


def toy_paths() -> list[str]:
    """Toy-world scenes rendered once per process (server-chosen paths), beside the sample photos."""
    import tempfile
    from pathlib import Path

    folder = Path(tempfile.gettempdir()) / "diffusion-lab-latent-scenes"
    folder.mkdir(exist_ok=True)
    out = []
    for spec in TOY:
        p = folder / ("_".join(map(str, spec[:3])) + ".png")
        if not p.exists():
            render(Scene(*spec), size=256).save(p)
        out.append(str(p))
    return out


def _image(model, path):
    if not path:
        raise ValueError("give an image (upload one or click an example)")
    return images.load_working_tensor(path, model.image_size[0]).to(model.device)


def _show(x, px=SHOW_PX):
    return image_file(x[0] if x.ndim == 4 else x, px)


def encode_decode(runtime, model_name, path):
    """-> (gallery [image, reconstruction, |error|×4, cheap preview], channels gallery, markdown)."""
    model = _model(runtime, model_name)
    r = latent.round_trip(model, _image(model, path))
    gal = [(_show(r.image), f"the image at {model.image_size[0]} px"), (_show(r.recon), "decoded D(E(x))"),
           (_show((r.error * 4 - 1).clamp(-1, 1)), "|error| × 4"),
           (_show(r.preview), "cheap preview (no decoder)")]
    ch = [(_show(c), f"channel {k + 1}") for k, c in enumerate(latent.channel_images(r.latents))]
    c, h, w = r.latents.shape[1:]
    md = (f"**Reconstruction PSNR {r.psnr_db:.1f} dB.** The image's {r.image.numel():,} numbers became a "
          f"{h}×{w}×{c} latent of {r.latents.numel():,} ({r.compression:.0f}× fewer). A VAE trained on coloured "
          "shapes keeps shapes nearly exactly (about 30 dB) and turns a photo into blobs of colour: it can only "
          "draw what it has seen. Channels: ±3 → black … white.")
    return gal, ch, md


def noise_view(runtime, model_name, path, s, seed):
    """-> (gallery [pixel-space x_s, latent z_s decoded, z_s cheap preview], markdown)."""
    model = _model(runtime, model_name)
    d = latent.noise_both(model, _image(model, path), s, validation.generator(seed))
    gal = [(_show(d["pixel"]), f"pixel space, s = {d['s']:.2f}"), (_show(d["latent"]), "latent space, decoded"),
           (_show(d["latent_preview"]), "latent space, cheap preview")]
    md = (f"Noise level s = {d['s']:.2f} (ᾱ = {d['alpha_bar']:.3f} at the same SNR) in both spaces. PSNR against the "
          f"clean image: pixel {d['psnr_pixel']:.1f} dB, latent decoded {d['psnr_latent']:.1f} dB. Latent noise "
          "decodes to smooth blotches: each latent number stands for a 4×4 patch of pixels.")
    return gal, md


def interpolate(runtime, model_name, mode, path_a, path_b, prompt, seed_a, seed_b, frames):
    """-> (lerp gallery, slerp gallery, markdown with the norms along each path)."""
    model = _model(runtime, model_name)
    n = validation.integer("frames", frames, 3, latent.MAX_INTERPOLATION)
    if mode == "noise":
        o = latent.interpolate_noise(model, validation.prompt(prompt), validation.seed(seed_a),
                                     validation.seed(seed_b), n)
        what = f"two starting noises (seeds {validation.seed(seed_a)} and {validation.seed(seed_b)}), each sampled"
    else:
        o = latent.interpolate_images(model, _image(model, path_a), _image(model, path_b), n)
        what = "the latents of image A and image B, decoded"
    cap = lambda k: f"t = {k / (n - 1):.2f}"  # noqa: E731
    galleries = [[(_show(x, STRIP_PX * 2), cap(k)) for k, x in enumerate(o[m])] for m in ("lerp", "slerp")]
    norms = lambda m: " → ".join(f"{v:.2f}" for v in o["norm_" + m])  # noqa: E731
    md = (f"Paths between {what}. Length |z|/√n along the path: **lerp** {norms('lerp')}; **slerp** {norms('slerp')}."
          " Lerp cuts the corner: its middle is shorter (for noise, ~0.71 of a real noise sample).")
    return *galleries, md


def preview_run(runtime, model_name, prompt, steps, guidance, seed):
    """Stream (cheap preview, decoded x_t, decoded x̂0, markdown), then the strip (gallery) along the run."""
    model = _model(runtime, model_name)
    n = validation.integer("steps", steps, 1, 100)
    w = validation.number("guidance scale", guidance, 0.0, validation.MAX_GUIDANCE)
    picks = {round(k * (n - 1) / (STRIP_STEPS - 1)) for k in range(STRIP_STEPS)} if n > 1 else {0}
    strip, cheap_ms, dec_ms = [], [], []
    for st in latent.preview_vs_decode(model, validation.prompt(prompt), steps=n, guidance_scale=w,
                                       generator=validation.generator(seed)):
        cheap_ms.append(st.preview_ms)
        dec_ms.append(st.decode_ms)
        if st.index in picks:
            strip += [(_show(st.preview, STRIP_PX), f"step {st.index + 1}: preview"),
                      (_show(st.decoded, STRIP_PX), f"step {st.index + 1}: decoded")]
        md = (f"**step {st.index + 1} / {st.num_steps}** (t = {st.t:.0f}) · cheap preview {st.preview_ms:.2f} ms · "
              f"full decode {st.decode_ms:.1f} ms")
        if st.image is not None:
            mean = lambda v: sum(v) / len(v)  # noqa: E731
            md = (f"**Done**, {st.num_steps} steps. Per step: cheap preview **{mean(cheap_ms):.2f} ms**, full decode "
                  f"**{mean(dec_ms):.1f} ms** ({mean(dec_ms) / max(mean(cheap_ms), 1e-6):.0f}× more; measured now, "
                  "on this machine). The preview is blurry (16×16, one linear map) but shows where the picture is "
                  "going; the decoder draws it.")
        yield _show(st.preview), _show(st.decoded), _show(st.pred_x0), md, strip if st.image is not None else gr.skip()


def costs(runtime):
    """-> markdown table: one denoiser call with CFG, pixel (toy-sd) vs latent (toy-sd3), and the decode."""
    reg = runtime.registry
    picks = reg.diffusion_names(kind="toy")[:1] + _names(runtime)[:1]  # toy-sd (pixels) and toy-sd3 (latents)
    models = {n: reg.diffusion(n) for n in picks}
    rows = latent.step_costs(models)
    lines = ["| model | numbers denoised | pixels drawn | one step (CFG, batch 2) | decode |", "|---|---|---|---|---|"]
    for r in rows:
        dec = "—" if r["decode_ms"] is None else f"{r['decode_ms']:.1f} ms (once per image)"
        lines.append(f"| {r['model']} | {r['model_numbers']:,} | {r['image_numbers']:,} | {r['call_ms']:.1f} ms | {dec} |")
    return "\n".join(lines) + ("\n\nMedians of 5 calls, measured now on this machine (other users' work counts). "
                               "The latent model denoises fewer numbers for a 4× larger picture. Whole-sample "
                               "figures: `scripts/benchmark.py --only latent`.")


def create(runtime) -> dict:
    """Build the tab inside the caller's ``gr.Blocks`` / ``gr.Tab``."""
    names = _names(runtime)
    examples = toy_paths() + sample_paths()
    bind = lambda fn: user_errors(functools.partial(fn, runtime))  # noqa: E731
    gal = dict(object_fit="contain", elem_classes=[GALLERY, PIXELATED], allow_preview=True)
    gr.Markdown(INTRO, elem_classes=["dl-intro"])
    with gr.Row(elem_classes=["dl-main"]):
        with gr.Column(scale=1, min_width=260, elem_classes=["dl-controls"]):
            image = SafeImage(examples[0], type="filepath", label="image", height=180, sources=["upload"],
                              elem_id="latent-image")
            gr.Examples([[p] for p in examples], [image], label="toy world and photos", elem_id="latent-examples")
            run = gr.Button("Encode → decode", variant="primary", elem_id="latent-run", elem_classes=["dl-run"])
            with gr.Accordion("Advanced", open=False):
                model = gr.Dropdown(names, value=names[0] if names else None, label="latent model",
                                    elem_id="latent-model")
        with gr.Column(scale=2, elem_classes=["dl-output"]):
            rt_gallery = gr.Gallery(label="through the VAE", columns=4, elem_id="latent-roundtrip",
                                    **{**gal, "elem_classes": [GALLERY, PIXELATED, BIG, PAIRS]})
            rt_md = gr.Markdown(elem_id="latent-info")
            ch_gallery = gr.Gallery(label="the latent's channels", columns=4, elem_id="latent-channels",
                                    **gal)
    with gr.Accordion("Noise at the same level: pixel space vs latent space", open=False):
        with gr.Row():
            s = gr.Slider(0, 1, value=0.4, step=0.05, label="noise level s")
            n_seed = seed_input("noise seed")
            n_btn = gr.Button("Noise both", elem_id="latent-noise-run")
        n_gallery = gr.Gallery(label="same s, same image", columns=3, elem_id="latent-noise", **gal)
        n_md = gr.Markdown()
    with gr.Accordion("Interpolation: lerp vs slerp", open=False):
        with gr.Row():
            mode = gr.Radio([("between two images (their latents)", "images"),
                             ("between two starting noises, sampled", "noise")], value="images", label="walk")
            frames = gr.Slider(3, latent.MAX_INTERPOLATION, value=7, step=1, label="frames")
        with gr.Row():
            image_b = SafeImage(examples[1], type="filepath", label="image B (A is the image above)", height=120,
                                sources=["upload"])
            i_prompt = gr.Textbox(DEFAULT_PROMPT, label="prompt (noise walk)", max_lines=1)
            seed_a, seed_b = seed_input("seed A"), seed_input("seed B")
        i_btn = gr.Button("Interpolate", elem_id="latent-interp-run")
        lerp_g = gr.Gallery(label="lerp", columns=latent.MAX_INTERPOLATION, elem_id="latent-lerp", **gal)
        slerp_g = gr.Gallery(label="slerp", columns=latent.MAX_INTERPOLATION, elem_id="latent-slerp", **gal)
        i_md = gr.Markdown()
    with gr.Accordion("Cheap preview vs full decode, at every step", open=False):
        with gr.Row():
            p_prompt = gr.Textbox(DEFAULT_PROMPT, label="prompt", max_lines=1)
            p_steps = gr.Slider(2, 100, value=28, step=1, label="steps")
            p_w = gr.Slider(0, validation.MAX_GUIDANCE, value=3.0, step=0.5, label="guidance w")
            p_seed = seed_input("seed")
        p_btn = gr.Button("Sample and compare", elem_id="latent-preview-run")
        with gr.Row():
            img = dict(interactive=False, height=200, elem_classes=[PIXELATED])
            p_cheap = gr.Image(label="x_t: cheap preview (linear map)", **img)
            p_dec = gr.Image(label="x_t: decoded by the VAE", **img)
            p_x0 = gr.Image(label="x̂0: decoded", **img)
        p_md = gr.Markdown()
        p_strip = gr.Gallery(label="along the run: preview | decoded", columns=2 * STRIP_STEPS,
                             elem_id="latent-preview-strip", **gal)
    with gr.Accordion("Cost per step: pixel vs latent", open=False):
        c_btn = gr.Button("Measure", elem_id="latent-cost-run")
        c_md = gr.Markdown()
    with gr.Accordion("The maths", open=False):
        gr.Markdown(MATHS)

    run.click(bind(encode_decode), [model, image], [rt_gallery, ch_gallery, rt_md], api_name="latent_round_trip")
    n_btn.click(bind(noise_view), [model, image, s, n_seed], [n_gallery, n_md], api_name="latent_noise")
    i_btn.click(bind(interpolate), [model, mode, image, image_b, i_prompt, seed_a, seed_b, frames],
                [lerp_g, slerp_g, i_md], api_name="latent_interpolate")
    p_btn.click(bind(preview_run), [model, p_prompt, p_steps, p_w, p_seed], [p_cheap, p_dec, p_x0, p_md, p_strip],
                api_name="latent_preview_run")
    c_btn.click(bind(costs), None, c_md, api_name="latent_costs")
    return {"model": model, "s": s, "mode": mode, "frames": frames, "prompt": p_prompt, "steps": p_steps,
            "scale": p_w, "seed": p_seed}  # lecture-mode URL keys


if __name__ == "__main__":
    from pipelines.runtime import Runtime

    with gr.Blocks(title=TITLE) as demo:
        create(Runtime.create())
    demo.launch()
