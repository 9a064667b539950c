"""Tab "Denoising viewer": watch a sampler turn noise into an image, step by step, and what the
model believes the final image is at every step (the predicted x0); scrub the history after.

UI only: the loop is :func:`pipelines.diffusion.loop.sample_steps`, the experiments are in
:mod:`pipelines.denoising`. Per-user state (the recorded trajectory, uint8 at the model's
native size) lives in a ``gr.State``; nothing per-user in module globals.

Sub-sections: *Watch it denoise* (with *Start from an image*, SDEdit), *Denoising three
ways* (CS180 1.2-1.4), *Sampler race*, *Oracle mode* (DiffusionFastForward).
Run alone for a quick look: ``python -m demos.denoising_viewer``.
"""

from __future__ import annotations

import functools
import math
import tempfile
import time
from pathlib import Path

import gradio as gr
import numpy as np
import torch

from demos.common import image_file, snr_text, user_errors
from demos.components import SafeImage, seed_input
from pipelines import denoising, images, validation
from pipelines.diffusion import loop, maths
from pipelines.diffusion.previews import to_rgb
from pipelines.models import SAMPLERS, DiffusionModel

TITLE = "Denoising viewer"
DISPLAY_PX = 256  # streamed images are upscaled (nearest) to this side
STRIP_PX = 96  # filmstrip / gallery thumbnails
FRAME_INTERVAL = 0.25  # s between streamed frames (the last step is always sent); docs/measurements.md
FILMSTRIP_LEN = 10
MAX_STEPS = 200
SAMPLER_NAMES = list(SAMPLERS)
DEFAULT_PROMPT = "a red circle on a navy background"
EXAMPLES = [
    [DEFAULT_PROMPT, "DDIM", 30, 4.0, 0],
    ["a large yellow star on a black background", "DPM-Solver++", 20, 5.0, 1],
    ["a small cyan triangle on a white background", "Euler", 30, 4.0, 2],
    ["a pink cross on a gray background", "DDPM", 50, 4.0, 3],
]
TOY_SCENES = [  # (shape, colour, background, size, cx, cy, r) rendered as start images
    ("circle", "red", "navy", "large", 0.5, 0.5, 0.38),
    ("square", "blue", "white", "medium", 0.45, 0.55, 0.3),
    ("star", "yellow", "black", "large", 0.5, 0.5, 0.4),
    ("triangle", "green", "gray", "medium", 0.5, 0.52, 0.3),
]


# ----------------------------------------------------------------------------- helpers


def _u8(x: torch.Tensor) -> np.ndarray:
    """``[1, 3, h, w]`` in [-1, 1] -> uint8 ``[h, w, 3]``."""
    return images.tensor_to_uint8(x[0])


def _sampler(name: str) -> str:
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {SAMPLER_NAMES}")
    return name


def _load_image(model, path) -> torch.Tensor:
    """A server-side image path -> ``[1, 3, S, S]`` in [-1, 1] at the model's image size."""
    return images.load_working_tensor(path, model.image_size[0]).to(model.device)


def _eps_rgb(model, eps: torch.Tensor) -> torch.Tensor:
    """ε shown with ±3σ mapped to black..white (latents: linear preview)."""
    return to_rgb(model, eps / 3.0, "linear", pred_x0=False)


def toy_scene_paths() -> list[str]:
    """Render the toy-world start images once per process into a temp folder (server-chosen paths)."""
    from pipelines.toyworld.world import Scene, render

    folder = Path(tempfile.gettempdir()) / "diffusion-lab-toy-scenes"
    folder.mkdir(exist_ok=True)
    paths = []
    for spec in TOY_SCENES:
        p = folder / ("_".join(map(str, spec[:3])) + ".png")
        if not p.exists():
            render(Scene(*spec), size=128).save(p)
        paths.append(str(p))
    return paths


# ----------------------------------------------------------------------------- viewer


def start_info(runtime, model_name, sampler, steps, strength, use_image) -> str:
    """Markdown: where an SDEdit run starts (t, sqrt(ᾱ_t), SNR), or that it starts from noise."""
    if not use_image:
        return "Starts from pure noise x_T. Tick **start from an image** to run SDEdit."
    steps = validation.integer("steps", steps, 1, MAX_STEPS)
    strength = validation.number("strength", strength, 0.0, 1.0)
    model = runtime.registry.diffusion(model_name)
    sch = model.make_scheduler(_sampler(sampler))
    ts, begin = maths.plan_timesteps(sch, steps, strength)
    a = maths.alpha_bar_at(sch, ts[0], begin)
    return (f"Noised to **t = {float(ts[0]):.0f}**, then **{len(ts)} of {steps}** steps. Signal left: "
            f"**√ᾱ_t = {math.sqrt(a):.3f}**, noise √(1−ᾱ_t) = {math.sqrt(1 - a):.3f}, SNR = {snr_text(a)}.")


def _frame(model, rec) -> np.ndarray:
    """One step as uint8 ``[3 panels, h, w, 3]``: x_t (as the UNet sees it), x̂0, ε̂."""
    panels = torch.cat([rec.x_t_rgb, rec.pred_x0_rgb, _eps_rgb(model, rec.pred_eps)])  # [3, 3, h, w]
    return images.tensor_to_uint8(panels)  # one conversion for the three (fewer tiny torch ops per step)


def _info(meta: dict) -> str:
    return (f"**step {meta['index'] + 1} / {meta['n']}** · t = {meta['t']:.0f} · √ᾱ_t = {math.sqrt(meta['a']):.3f} · "
            f"SNR = {snr_text(meta['a'])}")


def _stream_png(arr: np.ndarray) -> str:
    """A streamed panel: small images (the toy model's 32 px) go out at native size and the browser
    upscales them without smoothing (CSS ``image-rendering: pixelated``, class ``dl-pixelated``):
    ~64x fewer pixels to encode and send per frame than a 256 px upscale. Large ones are downsized."""
    return image_file(arr, min(arr.shape[1], DISPLAY_PX), compress_level=1)


def _panels(frame: np.ndarray) -> tuple[str, str, str]:
    return _stream_png(frame[0]), _stream_png(frame[1]), _stream_png(frame[2])


def run_viewer(runtime, model_name, prompt, negative_prompt, sampler, steps, eta, seed, guidance_scale,
               use_image, image, strength):
    """Generator: stream (x_t, x̂0, ε̂, info) at most every FRAME_INTERVAL s; the last message also
    carries the trajectory (gr.State), which :func:`finish_view` turns into the scrubber and filmstrip."""
    steps = validation.integer("steps", steps, 1, MAX_STEPS)
    eta = validation.number("eta", eta, 0.0, 1.0)
    guidance_scale = validation.number("guidance scale", guidance_scale, 0.0, validation.MAX_GUIDANCE)
    strength = validation.number("strength", strength, 0.0, 1.0)
    prompt, negative_prompt = validation.prompt(prompt), validation.prompt(negative_prompt, "negative prompt")
    t_start = time.perf_counter()
    model = runtime.registry.diffusion(model_name)
    gen = validation.generator(seed)
    if use_image:
        if image is None:
            raise ValueError("Tick off 'start from an image' or give an image.")
        kw = dict(init_image=_load_image(model, image), strength=strength)
        first = _u8(kw["init_image"])
    else:
        # Draw x_T here (the very draw the loop would make: randn_tensor on the request's generator)
        # so the first frame goes out before the first model call.
        x_T = torch.randn((1, *model.sample_shape), generator=gen, dtype=model.unet.dtype).to(model.device)
        kw = dict(latents=x_T)
        first = _u8(to_rgb(model, x_T, pred_x0=False))
    skip = gr.skip()  # only for the State: a skipped *component* costs gradio a rebuild of its config per message
    yield (_stream_png(first), None, None, f"**step 0 / {steps}** · {'start image' if use_image else 'x_T ~ N(0, I)'} · "
           "running the model…", skip)
    records = loop.sample_steps(model, prompt or "", negative_prompt=negative_prompt or "",
                                    sampler=_sampler(sampler), num_inference_steps=steps, guidance_scale=guidance_scale,
                                    eta=eta, generator=gen, preview="auto", **kw)
    frames, meta = [], []
    last_sent = -math.inf
    for rec in records:
        frames.append(_frame(model, rec))  # uint8 at native size: ~9 kB per step for 32 px
        meta.append({"index": rec.index, "n": rec.num_steps, "t": float(rec.t), "a": rec.alpha_bar})
        now = time.perf_counter()
        if rec.is_last:
            break
        if now - last_sent >= FRAME_INTERVAL:
            last_sent = now
            yield (*_panels(frames[-1]), _info(meta[-1]), skip)
    traj = {"frames": np.stack(frames), "meta": meta, "final": _u8(rec.image)}
    took = time.perf_counter() - t_start  # the whole streamed run, sending included
    yield (*_panels(frames[-1]), _info(meta[-1]) + f" · done in {took:.2f} s", traj)


def finish_view(traj):
    """After a run (chained on its success): the scrub slider over the recorded steps and the filmstrip
    of x̂0. A separate event so that the streamed messages carry only the panels (docs/measurements.md)."""
    if not traj:
        raise ValueError("Run the sampler first: there is no recorded trajectory in this session yet.")
    frames, meta, final = traj["frames"], traj["meta"], traj["final"]
    n = len(frames)
    picks = np.unique(np.linspace(0, n - 1, min(FILMSTRIP_LEN, n)).round().astype(int))
    strip = [(image_file(frames[i][1], STRIP_PX, compress_level=1), f"x̂0 @ t={meta[i]['t']:.0f}") for i in picks]
    strip.append((image_file(final, STRIP_PX, compress_level=1), "final image"))
    slider = gr.Slider(minimum=0, maximum=max(n - 1, 1), value=n - 1, step=1, interactive=n > 1,
                       label=f"scrub the {n} recorded steps (no recomputation)")
    return slider, strip


def scrub(traj, index):
    """Slider: show recorded step ``index`` from the session's trajectory (no model call)."""
    if not traj:
        raise ValueError("Run the sampler first: there is no recorded trajectory in this session yet.")
    n = len(traj["frames"])
    i = validation.integer("step", index, 0, max(n - 1, 1))
    i = min(i, n - 1)
    return (*_panels(traj["frames"][i]), _info(traj["meta"][i]))


# ----------------------------------------------------------------------------- experiments


def run_three_ways(runtime, model_name, image, t, stride, prompt, guidance_scale, seed):
    model = runtime.registry.diffusion(model_name)
    n_train = int(model.scheduler_config.get("num_train_timesteps", 1000))
    t = validation.integer("t", t, 1, max(999, n_train - 1))
    clamp_note = ""
    if t > n_train - 1:  # the slider spans 1..999; the bundled model's schedule ends at 959
        clamp_note = f" (the slider asked for {t}; this model's schedule ends at t = {n_train - 1})"
        t = n_train - 1
    stride = validation.integer("stride", stride, 1, n_train)
    guidance_scale = validation.number("guidance scale", guidance_scale, 0.0, validation.MAX_GUIDANCE)
    if image is None:
        raise ValueError("Pick or upload an image first.")
    r = denoising.three_ways(model, _load_image(model, image), t, prompt=validation.prompt(prompt), guidance_scale=guidance_scale,
                             stride=stride, generator=validation.generator(seed))
    p = r["psnr"]
    gallery = [
        (image_file(r["clean"], 192, compress_level=1), "clean x0"),
        (image_file(r["noisy"], 192, compress_level=1), f"noisy x_t, t={t}"),
        (image_file(r["blur"], 192, compress_level=1), f"Gaussian blur σ={r['blur_sigma']:g}: {p['blur']:.1f} dB"),
        (image_file(r["one_step"], 192, compress_level=1), f"one step: {p['one_step']:.1f} dB"),
        (image_file(r["iterative"], 192, compress_level=1), f"iterative ({r['steps']} steps): {p['iterative']:.1f} dB"),
    ]
    md = (f"t = {t}{clamp_note}: √ᾱ_t = {math.sqrt(r['alpha_bar']):.3f}, SNR = {snr_text(r['alpha_bar'])}.\n\n"
          "| method | what it does | PSNR vs clean |\n|---|---|---|\n"
          f"| Gaussian blur | blur x_t/√ᾱ_t (σ = {r['blur_sigma']:g} px, the best of a few, chosen with the clean "
          f"image) | {p['blur']:.2f} dB |\n"
          f"| one step | x̂0 = (x_t − √(1−ᾱ_t) ε̂) / √ᾱ_t, one model call | {p['one_step']:.2f} dB |\n"
          f"| iterative | DDPM steps t, t−{stride}, …, 0 ({r['steps']} model calls) | {p['iterative']:.2f} dB |")
    return gallery, md


def _race_entries(*rows) -> list[tuple[str, int]]:
    entries = []
    for k in range(0, len(rows), 3):
        on, sampler, steps = rows[k:k + 3]
        if on:
            entries.append((_sampler(sampler), validation.integer(f"steps of race lane {k // 3 + 1}", steps, 1,
                                                                  MAX_STEPS)))
    if not 2 <= len(entries) <= 4:
        raise ValueError(f"Tick 2 to 4 samplers for the race (got {len(entries)}).")
    return entries


def run_race(runtime, model_name, prompt, guidance_scale, seed, *rows, progress=gr.Progress()):
    entries = _race_entries(*rows)
    guidance_scale = validation.number("guidance scale", guidance_scale, 0.0, validation.MAX_GUIDANCE)
    seed = int(validation.generator(seed).initial_seed())
    model = runtime.registry.diffusion(model_name)
    gallery, lines = [], []
    progress(0, desc="racing")
    for k, r in enumerate(denoising.race(model, validation.prompt(prompt), entries, seed=seed, guidance_scale=guidance_scale)):
        gallery.append((image_file(r["image"], 192, compress_level=1), f"{r['sampler']}, {r['steps']} steps, {r['seconds']:.2f} s"))
        lines.append(f"| {r['sampler']} | {r['steps']} | {r['seconds']:.2f} s | {1000 * r['seconds'] / r['steps']:.0f} ms |")
        progress((k + 1) / len(entries), desc=f"{r['sampler']} done")
    md = ("Same x_T (seed {}) and prompt for every lane.\n\n| sampler | steps | wall time | per step |\n|---|---|---|---|\n"
          .format(seed) + "\n".join(lines))
    return gallery, md


def run_oracle(runtime, model_name, image, strength, sampler, steps, prompt, guidance_scale, seed):
    steps = validation.integer("steps", steps, 1, MAX_STEPS)
    strength = validation.number("strength", strength, 0.0, 1.0)
    guidance_scale = validation.number("guidance scale", guidance_scale, 0.0, validation.MAX_GUIDANCE)
    seed = int(validation.generator(seed).initial_seed())
    if image is None:
        raise ValueError("Pick or upload an image first.")
    model = runtime.registry.diffusion(model_name)
    r = denoising.oracle_vs_model(model, _load_image(model, image), strength=strength, sampler=_sampler(sampler),
                                  steps=steps, prompt=validation.prompt(prompt), guidance_scale=guidance_scale, seed=seed)
    p, e = r["psnr"], r["max_abs_error"]
    fmt = lambda v: "∞" if math.isinf(v) else f"{v:.1f}"
    gallery = [
        (image_file(r["clean"], 192, compress_level=1), "clean x0"),
        (image_file(r["noisy"], 192, compress_level=1), f"x_t, t={r['t']:.0f}"),
        (image_file(r["oracle"], 192, compress_level=1), f"oracle (true ε): {fmt(p['oracle'])} dB"),
        (image_file(r["model"], 192, compress_level=1), f"model: {fmt(p['model'])} dB"),
    ]
    idx = np.unique(np.linspace(0, r["steps"] - 1, min(6, r["steps"])).round().astype(int))
    strip = [(image_file(r["oracle_x0"][i], STRIP_PX, compress_level=1), f"oracle x̂0, step {i + 1}") for i in idx]
    strip += [(image_file(r["model_x0"][i], STRIP_PX, compress_level=1), f"model x̂0, step {i + 1}") for i in idx]
    md = (f"Both runs start from the **same x_t** (t = {r['t']:.0f}, √ᾱ_t = {math.sqrt(r['alpha_bar']):.3f}) and take "
          f"{r['steps']} {sampler} steps. The oracle's ε is the true noise of the current sample, "
          "ε = (x_t − √ᾱ_t x0) / √(1−ᾱ_t), so every x̂0 it predicts *is* x0 and the chain lands on it: max |error| = "
          f"{e['oracle']:.1e} (PSNR {fmt(p['oracle'])} dB). The model has to guess ε: max |error| = {e['model']:.3f}, "
          f"PSNR {fmt(p['model'])} dB.")
    return gallery, strip, md


# ----------------------------------------------------------------------------- layout


def create(runtime) -> dict:
    """Build the tab inside the caller's ``gr.Blocks`` / ``gr.Tab``."""
    names = runtime.registry.diffusion_names()
    scenes = toy_scene_paths()
    bind = lambda fn: user_errors(functools.partial(fn, runtime))  # noqa: E731

    gr.Markdown("A sampler turns noise into an image in steps. At every step the model predicts the noise ε̂ in "
                "x_t, which also gives its current guess of the clean image, x̂0 = (x_t − √(1−ᾱ_t) ε̂) / √ᾱ_t.")
    model_name = gr.Dropdown(names, value=names[0], label="model", elem_id="viewer-model")
    with gr.Tabs():
        with gr.Tab("Watch it denoise"):
            traj = gr.State(None, time_to_live=900)
            with gr.Row():
                with gr.Column(scale=1, min_width=280):
                    prompt = gr.Textbox(DEFAULT_PROMPT, label="prompt", max_lines=2, elem_id="viewer-prompt")
                    negative = gr.Textbox("", label="negative prompt (replaces the empty prompt in CFG)", max_lines=1)
                    with gr.Row():
                        sampler = gr.Dropdown(SAMPLER_NAMES, value="DDIM", label="sampler")
                        steps = gr.Slider(1, MAX_STEPS, value=30, step=1, label="steps", elem_id="viewer-steps")
                    with gr.Row():
                        guidance = gr.Slider(0, validation.MAX_GUIDANCE, value=4.0, step=0.5, label="guidance scale w (CFG)")
                        eta = gr.Slider(0, 1, value=0.0, step=0.05, label="η (stochasticity; samplers that have it)")
                    seed = seed_input("seed")
                    with gr.Accordion("Start from an image (SDEdit)", open=False):
                        use_image = gr.Checkbox(False, label="start from an image")
                        image = SafeImage(scenes[0], type="filepath", label="start image", height=160,
                                         sources=["upload"])
                        gr.Examples([[p] for p in scenes], [image], label="toy-world images")
                        strength = gr.Slider(0.05, 1.0, value=0.6, step=0.05, label="strength (fraction of steps run)")
                        info_start = gr.Markdown(start_info(None, None, None, None, None, False),
                                                 elem_id="viewer-start-info")
                    run = gr.Button("Denoise", variant="primary", elem_id="viewer-run")
                with gr.Column(scale=2):
                    with gr.Row():
                        xt_img = gr.Image(label="x_t (as the UNet sees it)", interactive=False, elem_id="viewer-xt",
                                          elem_classes=["dl-pixelated"], height=DISPLAY_PX)
                        x0_img = gr.Image(label="predicted x0", interactive=False, elem_id="viewer-x0",
                                          elem_classes=["dl-pixelated"], height=DISPLAY_PX)
                        eps_img = gr.Image(label="predicted noise ε (±3σ)", interactive=False, elem_id="viewer-eps",
                                           elem_classes=["dl-pixelated"], height=DISPLAY_PX)
                    info = gr.Markdown("Press **Denoise**.", elem_id="viewer-info")
                    # The range is set after each run (finish_view); until then it admits any step count, so an
                    # API client may scrub right after /viewer_run (indices past the run's end show its last step).
                    scrub_slider = gr.Slider(0, MAX_STEPS - 1, value=0, step=1, interactive=False,
                                             elem_id="viewer-scrub", label="scrub the recorded steps (after a run)")
                    strip = gr.Gallery(label="filmstrip: predicted x0 along the run", columns=FILMSTRIP_LEN + 1,
                                       height=150, allow_preview=True, elem_id="viewer-strip")
            examples = gr.Examples(EXAMPLES, [prompt, sampler, steps, guidance, seed], elem_id="viewer-examples",
                                   label="click to run · prompts the toy model knows "
                        "(shapes circle/square/triangle/star/cross; colours red/orange/yellow/green/cyan/blue/purple/"
                        "pink; backgrounds black/white/gray/navy; sizes small/large)")

        with gr.Tab("Denoising three ways"):
            gr.Markdown("Noise an image to t, then denoise it with a classical Gaussian blur, with **one** model call "
                        "(x̂0 from ε̂) and **iteratively** (strided DDPM steps), and compare with the clean image.")
            with gr.Row():
                with gr.Column(scale=1, min_width=260):
                    tw_image = SafeImage(scenes[1], type="filepath", label="image", height=160, sources=["upload"])
                    gr.Examples([[p] for p in scenes], [tw_image], label="toy-world images")
                    tw_t = gr.Slider(1, 999, value=500, step=1, label="noise to timestep t")
                    tw_stride = gr.Slider(1, 200, value=50, step=1, label="stride of the iterative run")
                    tw_prompt = gr.Textbox("a blue square on a white background", label="prompt", max_lines=1)
                    with gr.Row():
                        tw_guidance = gr.Slider(0, validation.MAX_GUIDANCE, value=1.0, step=0.5, label="guidance scale")
                        tw_seed = seed_input("seed")
                    tw_run = gr.Button("Denoise three ways", variant="primary")
                with gr.Column(scale=2):
                    tw_gallery = gr.Gallery(label="clean | noisy | blur | one step | iterative", columns=5, height=260)
                    tw_md = gr.Markdown()

        with gr.Tab("Sampler race"):
            gr.Markdown("The same starting noise x_T and prompt through several samplers, each with its own step "
                        "count. Fewer, smarter steps (DPM-Solver++) against many simple ones (DDPM).")
            with gr.Row():
                rc_prompt = gr.Textbox(DEFAULT_PROMPT, label="prompt", max_lines=1)
                rc_guidance = gr.Slider(0, validation.MAX_GUIDANCE, value=4.0, step=0.5, label="guidance scale")
                rc_seed = seed_input("seed")
            lanes = []
            defaults = [("DDPM", 100, True), ("DDIM", 25, True), ("DPM-Solver++", 10, True), ("Euler", 25, False)]
            with gr.Row():
                for s, n, on in defaults:
                    with gr.Column(min_width=160):
                        lanes += [gr.Checkbox(on, label="race"), gr.Dropdown(SAMPLER_NAMES, value=s, label="sampler"),
                                  gr.Slider(1, MAX_STEPS, value=n, step=1, label="steps")]
            rc_run = gr.Button("Race", variant="primary")
            rc_gallery = gr.Gallery(label="results", columns=4, height=260)
            rc_md = gr.Markdown()

        with gr.Tab("Oracle mode"):
            gr.Markdown("If the model knew the true noise, reverse steps would recover x0 exactly. Here an oracle "
                        "that knows x0 supplies the true ε; then the model tries from the same x_t.")
            with gr.Row():
                with gr.Column(scale=1, min_width=260):
                    or_image = SafeImage(scenes[2], type="filepath", label="image x0", height=160, sources=["upload"])
                    gr.Examples([[p] for p in scenes], [or_image], label="toy-world images")
                    or_strength = gr.Slider(0.05, 1.0, value=0.8, step=0.05, label="strength (how far to noise)")
                    with gr.Row():
                        or_sampler = gr.Dropdown(SAMPLER_NAMES, value="DDPM", label="sampler")
                        or_steps = gr.Slider(1, MAX_STEPS, value=50, step=1, label="steps")
                    or_prompt = gr.Textbox("a large yellow star on a black background", label="prompt (model run)",
                                           max_lines=1)
                    with gr.Row():
                        or_guidance = gr.Slider(0, validation.MAX_GUIDANCE, value=1.0, step=0.5, label="guidance scale")
                        or_seed = seed_input("seed")
                    or_run = gr.Button("Run oracle and model", variant="primary")
                with gr.Column(scale=2):
                    or_gallery = gr.Gallery(label="clean | x_t | oracle | model", columns=4, height=230)
                    or_strip = gr.Gallery(label="x̂0 along the way: oracle (top) vs model", columns=6, height=220)
                    or_md = gr.Markdown()

    # ---- events
    sampler.change(lambda s: gr.Slider(interactive=True) if DiffusionModel.takes_eta(s) else gr.Slider(
        interactive=False, value=0.0), sampler, eta, api_visibility="private", show_progress="hidden")
    gr.on([use_image.change, strength.change, steps.change, sampler.change, model_name.change],
          bind(start_info), [model_name, sampler, steps, strength, use_image], info_start,
          api_name="viewer_start_info", show_progress="hidden", trigger_mode="always_last")
    viewer_io = dict(
        fn=user_errors(functools.partial(run_viewer, runtime)),
        inputs=[model_name, prompt, negative, sampler, steps, eta, seed, guidance, use_image, image, strength],
        outputs=[xt_img, x0_img, eps_img, info, traj], show_progress="minimal")
    finish_io = dict(fn=user_errors(finish_view), inputs=[traj], outputs=[scrub_slider, strip], show_progress="hidden")
    run.click(**viewer_io, api_name="viewer_run").success(**finish_io, api_name="viewer_filmstrip")
    # An example fills the inputs, then runs at once (streams like the button; not cached: the run *is* the demo).
    examples.load_input_event.then(**viewer_io, api_visibility="private").success(**finish_io,
                                                                                  api_visibility="private")
    scrub_slider.input(user_errors(scrub), [traj, scrub_slider], [xt_img, x0_img, eps_img, info],
                       api_name="viewer_scrub", show_progress="hidden", trigger_mode="always_last")
    tw_run.click(bind(run_three_ways), [model_name, tw_image, tw_t, tw_stride, tw_prompt, tw_guidance, tw_seed],
                 [tw_gallery, tw_md], api_name="three_ways")
    rc_run.click(bind(run_race), [model_name, rc_prompt, rc_guidance, rc_seed, *lanes], [rc_gallery, rc_md],
                 api_name="sampler_race")
    or_run.click(bind(run_oracle), [model_name, or_image, or_strength, or_sampler, or_steps, or_prompt, or_guidance,
                                    or_seed], [or_gallery, or_strip, or_md], api_name="oracle")
    return {"model": model_name, "prompt": prompt, "negative": negative, "sampler": sampler, "steps": steps,
            "scale": guidance, "eta": eta, "seed": seed, "use_image": use_image, "strength": strength,
            "t": tw_t, "stride": tw_stride}  # lecture-mode URL keys


if __name__ == "__main__":
    from pipelines.runtime import Runtime

    with gr.Blocks(title=TITLE) as demo:
        create(Runtime.create())
    demo.launch()
