"""Tab "Denoising viewer": watch a sampler turn noise into an image, step by step, and what the
model believes the final image is at every step (the predicted x0); scrub the history after.

UI only: the loop is :func:`pipelines.diffusion.loop.sample_steps`, the experiments are in
:mod:`pipelines.denoising`. Per-user state (the recorded trajectory, uint8 at the model's
native size) lives in a ``gr.State``; nothing per-user in module globals.

Sub-sections: *Watch it denoise* (with *Start from an image*, SDEdit; a run is replayed by
:mod:`demos.player`), then the experiments of :mod:`demos.denoising_viewer_experiments`.
Step numbers are 1-based everywhere the user sees them (text, scrubber, filmstrip): frame k shows x_t
*after* step k (the last is the final image), and the x̂0 and ε̂ the model predicted in step k.
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

from demos import denoising_viewer_experiments as experiments
from demos import denoising_viewer_views as views
from demos import player
from demos.common import (file_digest, i_start_note, image_file, prompt_note, room_limit, room_note,
                          sampler_follows_model, session_of, snr_text, user_errors)
from demos.components import SafeImage, seed_input
from demos.style import BIG, GALLERY, NOTE, PIXELATED
from pipelines import denoising_views, images, validation
from pipelines.diffusion import loop, maths
from pipelines.diffusion.previews import to_rgb
from pipelines.models import SAMPLERS, DiffusionModel
from pipelines.models.specs import SESSION_DIGITS

TITLE = "Denoising viewer"
DISPLAY_PX = 256  # streamed images are upscaled (nearest) to this side
STRIP_PX = 96  # filmstrip / gallery thumbnails
FRAME_INTERVAL = 0.25  # s between streamed frames (the last step is always sent); docs/measurements.md
FILMSTRIP_LEN = 7  # + the final image: 8 thumbnails, ~100 px each at 1366 px
MAX_STEPS = 200
DDPM_BETA = "DDPM, σ² = β (fixed_large)"  # DDPM's other reverse variance (plain "DDPM" uses β̃, diffusers' default)
SAMPLER_NAMES = [*SAMPLERS, DDPM_BETA]
LATENT_KINDS = ("latent", "sd3")  # registry kinds whose x_t is a VAE latent
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


def _scheduler(model, name: str):
    """A fresh scheduler for the viewer's sampler ``name`` (:data:`DDPM_BETA`: DDPM with σ_t² = β_t)."""
    if _sampler(name) == DDPM_BETA:
        return denoising_views.ddpm_scheduler(model, "fixed_large")
    return model.make_scheduler(name)


def _sampler(name: str) -> str:
    if name not in SAMPLER_NAMES:
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


def start_info(runtime, model_name, sampler, steps, strength, use_image, request: gr.Request = None) -> str:
    """Markdown: where an SDEdit run starts (t, sqrt(ᾱ_t), SNR), or that it starts from noise."""
    if not use_image:
        return "Starts from pure noise. Tick **start from an image** to run SDEdit."
    steps = validation.integer("steps", steps, 1, MAX_STEPS)
    strength = validation.number("strength", strength, 0.0, 1.0)
    model = runtime.diffusion(model_name, session_of(request))
    sch = _scheduler(model, sampler)
    ts, begin = maths.plan_timesteps(sch, steps, strength)
    a = maths.alpha_bar_at(sch, ts[0], begin)
    return (f"The image is noised to **t = {float(ts[0]):.0f}**, then **{len(ts)} of {steps}** steps run. Signal "
            f"left: **√ᾱ_t = {math.sqrt(a):.3f}**, noise √(1−ᾱ_t) = {math.sqrt(1 - a):.3f}, SNR = {snr_text(a)}. "
            + i_start_note(strength, steps))


def _frame(model, rec, after_rgb: torch.Tensor) -> np.ndarray:
    """Step ``rec`` as uint8 ``[3 panels, h, w, 3]``: x_t after the step (``after_rgb``; the final image after
    the last), and the x̂0 and ε̂ the model predicted in it. Latent models: ``[4, H, W, 3]`` at the image size,
    x_t after the step decoded (the decode of the last is the final image), x̂0 decoded, ε̂ and x_t's cheap
    linear preview (:func:`to_rgb` ``linear``), the latter two upscaled from the latent grid (nearest)."""
    if model.vae is None:
        panels = torch.cat([after_rgb, rec.pred_x0_rgb, _eps_rgb(model, rec.pred_eps)])  # [3, 3, h, w]
        return images.tensor_to_uint8(panels)  # one conversion for the three (fewer tiny torch ops per step)
    def up(x):
        return torch.nn.functional.interpolate(x.float(), size=model.image_size, mode="nearest")
    with torch.no_grad():
        decoded = model.decode(rec.x_prev)
    panels = [decoded, rec.pred_x0_rgb, _eps_rgb(model, rec.pred_eps), to_rgb(model, rec.x_prev, "linear", pred_x0=False)]
    return images.tensor_to_uint8(torch.cat([up(p) for p in panels]))  # [4, H, W, 3]


def _info(meta: dict) -> str:
    return (f"**step {meta['index'] + 1} / {meta['n']}** · noise level t = {meta['t']:.0f} · "
            f"signal √ᾱ_t = {math.sqrt(meta['a']):.3f} · SNR = {snr_text(meta['a'])}")


def _stream_png(arr: np.ndarray) -> str:
    """A streamed panel: small images (the toy model's 32 px) go out at native size and the browser
    upscales them without smoothing (CSS ``image-rendering: pixelated``, class ``dl-pixelated``):
    ~64x fewer pixels to encode and send per frame than a 256 px upscale. Large ones are downsized."""
    return image_file(arr, min(arr.shape[1], DISPLAY_PX), compress_level=1)


def _panels(frame: np.ndarray) -> tuple[str, str, str, str | None]:
    """x_t, x̂0, ε̂ and (latent models) x_t's cheap preview, as files."""
    return (_stream_png(frame[0]), _stream_png(frame[1]), _stream_png(frame[2]),
            _stream_png(frame[3]) if len(frame) > 3 else None)


def is_latent(runtime, model_name) -> bool:
    """Whether ``model_name`` denoises VAE latents (its x_t is shown decoded and as a cheap preview)."""
    return runtime.registry.spec(model_name).kind in LATENT_KINDS


def preview_visible(runtime, model_name):
    """A model switch shows the cheap-preview panel for latent models only."""
    return gr.Image(visible=is_latent(runtime, model_name))


def run_viewer(runtime, model_name, prompt, negative_prompt, sampler, steps, eta, seed, guidance_scale,
               use_image, image, strength, request: gr.Request = None):
    """Generator: stream (x_t, x̂0, ε̂, preview, info) at most every FRAME_INTERVAL s; the last message also
    carries the trajectory (gr.State), which :func:`finish_view` turns into the scrubber and filmstrip.

    Through the runtime's replay cache (``pipelines.serving.replay``): a run identical to one already done is
    replayed, and identical runs in flight are computed once and streamed to all (a room on one slide's
    preset). The key holds everything that determines the frames; a session's own trained model is not shared."""
    args = (model_name, prompt, negative_prompt, sampler, steps, eta, seed, guidance_scale, use_image, image, strength)
    k = None
    if model_name != SESSION_DIGITS:
        from pipelines.serving import replay

        k = replay.key(tab="viewer", model=model_name, prompt=prompt, negative_prompt=negative_prompt,
                       sampler=sampler, steps=steps, eta=eta, seed=seed, w=guidance_scale, use_image=bool(use_image),
                       image=file_digest(image) if use_image else None, strength=strength if use_image else None)
    t_start = time.perf_counter()
    skip = gr.skip()  # only for the State: a skipped *component* costs gradio a rebuild of its config per message
    for panels, text, traj in runtime.replay.stream(k, lambda: _FRAMES(runtime, *args, request=request)):
        if traj is None and len(panels) == 1:  # x_T, before the first model call (this run's next item is in line)
            from pipelines.serving import compute_thread

            yield (_stream_png(panels[0]), None, None, None, text + room_note(compute_thread.waiting() - 1), skip)
        elif traj is None:
            yield (*_panels(panels), text, skip)
        else:  # the whole streamed run, sending (or waiting for a shared run) included
            yield (*_panels(panels), text + f" · done in {time.perf_counter() - t_start:.2f} s", traj)


def viewer_frames(runtime, model_name, prompt, negative_prompt, sampler, steps, eta, seed, guidance_scale,
                  use_image, image, strength, request: gr.Request = None):
    """Generator of the run's frames (uint8 panels, info, trajectory on the last): what the replay cache keeps.
    A step's frame is complete when the next step starts (its x_t is the step's output)."""
    steps = validation.integer("steps", steps, 1, MAX_STEPS)
    eta = validation.number("eta", eta, 0.0, 1.0)
    guidance_scale = validation.number("guidance scale", guidance_scale, 0.0, validation.MAX_GUIDANCE)
    strength = validation.number("strength", strength, 0.0, 1.0)
    prompt, negative_prompt = validation.prompt(prompt), validation.prompt(negative_prompt, "negative prompt")
    model = runtime.diffusion(model_name, session_of(request))  # a shared model, or this session's digits
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
    if model.vae is not None:  # the noise decoded: what a latent x_T looks like in pixels
        with torch.no_grad():
            first = _u8(model.decode(kw["latents"])) if not use_image else first
    yield ((first,), f"**step 0 / {steps}** · {'start image' if use_image else 'pure noise'} · running the model…",
           None)
    records = loop.sample_steps(model, prompt or "", negative_prompt=negative_prompt or "",
                                scheduler=_scheduler(model, sampler), num_inference_steps=steps, guidance_scale=guidance_scale,
                                eta=eta, generator=gen, preview="vae" if model.vae is not None else "auto", **kw)
    frames, meta = [], []
    last_sent, prev = -math.inf, None
    for rec in records:
        if prev is not None:
            frames.append(_frame(model, prev, rec.x_t_rgb))  # uint8 at native size: ~9 kB per step for 32 px
            meta.append({"index": prev.index, "n": prev.num_steps, "t": float(prev.t), "a": prev.alpha_bar})
        prev = rec
        if rec.is_last:
            break
        now = time.perf_counter()
        if frames and now - last_sent >= FRAME_INTERVAL:
            last_sent = now
            yield frames[-1], _info(meta[-1]), None
    frames.append(_frame(model, rec, rec.image))
    meta.append({"index": rec.index, "n": rec.num_steps, "t": float(rec.t), "a": rec.alpha_bar})
    yield frames[-1], _info(meta[-1]), {"frames": np.stack(frames), "meta": meta, "final": _u8(rec.image)}


_FRAMES = user_errors(viewer_frames)  # on the compute thread, step by step


def finish_view(traj):
    """After a run (chained on its success): the scrubber over the recorded steps (1 … n) and the filmstrip
    of x̂0. A separate event so that the streamed messages carry only the panels (docs/measurements.md)."""
    if not traj:
        raise ValueError("Run the sampler first: there is no recorded trajectory in this session yet.")
    frames, meta, final = traj["frames"], traj["meta"], traj["final"]
    n = len(frames)
    picks = np.unique(np.linspace(0, n - 1, min(FILMSTRIP_LEN, n)).round().astype(int))
    strip = [(image_file(frames[i][1], STRIP_PX, compress_level=1), f"step {i + 1} · t={meta[i]['t']:.0f}")
             for i in picks]
    strip.append((image_file(final, STRIP_PX, compress_level=1), "final image"))
    slider = gr.Slider(minimum=1, maximum=max(n, 2), value=n, step=1, interactive=n > 1,
                       label=f"step (1 … {n}): scrub or play the recorded run")
    return slider, strip


def _count(traj) -> int:
    return len(traj["frames"]) if traj else 0


def show_step(traj, k: int):
    """Recorded step ``k`` (1-based) -> (x_t, x̂0, ε̂, x_t preview, info). No model call."""
    return (*_panels(traj["frames"][k - 1]), _info(traj["meta"][k - 1]))


def scrub(traj, index):
    """Scrubber: show recorded step ``index`` (1-based, as in the text) from the session's trajectory."""
    n = _count(traj)
    if not n:
        raise ValueError("Run the sampler first: there is no recorded trajectory in this session yet.")
    i = validation.integer("step", index, 1, max(n, MAX_STEPS))
    return show_step(traj, min(i, n))


# ----------------------------------------------------------------------------- layout

INTRO = ("A diffusion model makes a picture by starting from pure noise and removing a little of it at every "
         "step. Press **Denoise** and watch the noisy image x_t turn into a picture, next to the model's running "
         "guess of the finished picture x̂0; then press **▶ Play** to watch it again slowly.")
MATHS = """
**Symbols.** x_t is the noisy image at noise level t (t counts down from ~1000, pure noise, to 0, clean). ᾱ_t
("alpha-bar") is the share of the picture's *power* left at level t, so x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε with ε
Gaussian noise. ε̂ is the model's estimate of ε, and x̂0 the clean picture that estimate implies:

x̂0 = (x_t − √(1−ᾱ_t)·ε̂) / √ᾱ_t

**A step** (DDIM, η = 0) keeps x̂0 and re-noises it to the next, lower level:
x_(t−1) = √ᾱ_(t−1)·x̂0 + √(1−ᾱ_(t−1))·ε̂. DDPM adds fresh noise at each step (η = 1), DPM-Solver++ and Euler
use the last few ε̂ to take longer strides. **Guidance w** (classifier-free guidance) runs the model with and
without the prompt and extrapolates, ε̂ = ε̂_u + w·(ε̂_c − ε̂_u) (Guidance tab). The ε̂ panel maps ±3 standard
deviations to black … white. SNR = ᾱ_t / (1−ᾱ_t), the signal-to-noise ratio.
"""


def create(runtime) -> dict:
    """Build the tab inside the caller's ``gr.Blocks`` / ``gr.Tab``."""
    names = runtime.registry.diffusion_names(digits=True)
    scenes = toy_scene_paths()
    bind = lambda fn: user_errors(functools.partial(fn, runtime))  # noqa: E731

    gr.Markdown(INTRO, elem_classes=["dl-intro"])
    with gr.Tabs():
        with gr.Tab("Watch it denoise"):
            traj = gr.State(None, time_to_live=900)
            with gr.Row(elem_classes=["dl-main"]):
                with gr.Column(scale=1, min_width=280, elem_classes=["dl-controls"]):
                    prompt = gr.Textbox(DEFAULT_PROMPT, label="prompt", max_lines=2, elem_id="viewer-prompt")
                    prompt_info = gr.Markdown("", elem_id="viewer-prompt-note", elem_classes=[NOTE])
                    with gr.Row():
                        steps = gr.Slider(1, MAX_STEPS, value=30, step=1, label="steps", elem_id="viewer-steps")
                        guidance = gr.Slider(0, validation.MAX_GUIDANCE, value=4.0, step=0.5,
                                             label="guidance w")
                    with gr.Row(equal_height=False, elem_classes=["dl-runrow"]):
                        seed = seed_input("seed", min_width=120)
                        run = gr.Button("Denoise", variant="primary", elem_id="viewer-run", elem_classes=["dl-run"],
                                        min_width=120, size="lg")
                    with gr.Accordion("Advanced", open=False):
                        model_name = gr.Dropdown(names, value=names[0], label="model (every sub-tab)",
                                                 elem_id="viewer-model", info="digits models: the prompt is a "
                                                 "digit 0-9 (empty: no label)")
                        sampler = gr.Dropdown(SAMPLER_NAMES, value="DDIM", label="sampler", info="DDPM adds noise "
                                              "of variance β̃_t per step; the last entry adds β_t (sub-tab β or β̃)")
                        negative = gr.Textbox("", label="negative prompt (what to steer away from)", max_lines=1)
                        eta = gr.Slider(0, 1, value=0.0, step=0.05, label="η: fresh noise per step (0 … 1)")
                    with gr.Accordion("Start from an image (SDEdit)", open=False):
                        use_image = gr.Checkbox(False, label="start from an image")
                        image = SafeImage(scenes[0], type="filepath", label="start image", height=140,
                                          sources=["upload"], elem_classes=[PIXELATED])
                        gr.Examples([[p] for p in scenes], [image], label="toy-world images")
                        strength = gr.Slider(0.05, 1.0, value=0.6, step=0.05, label="strength (fraction of steps run)")
                        info_start = gr.Markdown(start_info(None, None, None, None, None, False),
                                                 elem_id="viewer-start-info")
                with gr.Column(scale=2, elem_classes=["dl-output"]):
                    with gr.Row(elem_classes=["dl-panels"]):
                        img = dict(interactive=False, height=250, min_width=150, buttons=["fullscreen"])
                        xt_img = gr.Image(label="x_t: the noisy image", elem_id="viewer-xt",
                                          elem_classes=[PIXELATED, BIG], **img)
                        x0_img = gr.Image(label="x̂0: the model's guess of the end result", elem_id="viewer-x0",
                                          elem_classes=[PIXELATED, BIG], **img)
                        eps_img = gr.Image(label="ε̂: the noise it sees", elem_id="viewer-eps",
                                           elem_classes=[PIXELATED, "dl-optional"], **img)
                        prev_img = gr.Image(label="x_t, cheap preview: latent → RGB by one linear map, no decoder",
                                            elem_id="viewer-preview", visible=is_latent(runtime, names[0]),
                                            elem_classes=[PIXELATED, "dl-optional"], **img)
                    info = gr.Markdown("Press **Denoise**.", elem_id="viewer-info")
                    # The range is set after each run (finish_view); until then it admits any step count, so an
                    # API client may scrub right after /viewer_run (steps past the run's end show its last step).
                    scrub_slider = gr.Slider(1, MAX_STEPS, value=1, step=1, interactive=False,
                                             elem_id="viewer-scrub", label="step: scrub or play the recorded run")
                    play = player.controls("viewer")
                    strip = gr.Gallery(label="the model's guess x̂0 along the run", columns=FILMSTRIP_LEN + 1,
                                       allow_preview=True, elem_id="viewer-strip", object_fit="contain",
                                       elem_classes=[GALLERY, PIXELATED])
            examples = gr.Examples(EXAMPLES, [prompt, sampler, steps, guidance, seed], elem_id="viewer-examples",
                                   label="click to run · the toy model knows shapes (circle, square, triangle, star, "
                                         "cross), colours (red, orange, yellow, green, cyan, blue, purple, pink), "
                                         "backgrounds (black, white, gray, navy), sizes (small, large)")
            views.build_spectrum(traj)
            with gr.Accordion("The maths", open=False):
                gr.Markdown(MATHS)
        exp_keys = experiments.build(runtime, model_name, scenes)
        views.build(runtime, model_name)

    # ---- events
    model_name.change(bind(preview_visible), model_name, prev_img, api_visibility="private", show_progress="hidden")
    sampler_follows_model(runtime, model_name, sampler)
    sampler.change(lambda s: gr.Slider(interactive=True) if s in SAMPLERS and DiffusionModel.takes_eta(s) else gr.Slider(
        interactive=False, value=0.0), sampler, eta, api_visibility="private", show_progress="hidden")
    gr.on([use_image.change, strength.change, steps.change, sampler.change, model_name.change],
          bind(start_info), [model_name, sampler, steps, strength, use_image], info_start,
          api_name="viewer_start_info", show_progress="hidden", trigger_mode="always_last")
    gr.on([prompt.change, model_name.change], bind(prompt_note), [model_name, prompt], prompt_info,
          api_name="viewer_prompt_note", show_progress="hidden", trigger_mode="always_last")
    viewer_io = dict(
        fn=player.errors(functools.partial(run_viewer, runtime)),
        inputs=[model_name, prompt, negative, sampler, steps, eta, seed, guidance, use_image, image, strength],
        outputs=[xt_img, x0_img, eps_img, prev_img, info, traj], show_progress="minimal", **room_limit(runtime))
    finish_io = dict(fn=user_errors(finish_view), inputs=[traj], outputs=[scrub_slider, strip], show_progress="hidden")
    run.click(**viewer_io, api_name="viewer_run").success(**finish_io, api_name="viewer_filmstrip")
    # An example fills the inputs, then runs at once (streams like the button; not cached: the run *is* the demo).
    examples.load_input_event.then(**viewer_io, api_visibility="private").success(**finish_io,
                                                                                  api_visibility="private")
    scrub_slider.input(user_errors(scrub), [traj, scrub_slider], [xt_img, x0_img, eps_img, prev_img, info],
                       api_name="viewer_scrub", show_progress="hidden", trigger_mode="always_last")
    player.wire(play, "viewer", show_step, _count, traj, scrub_slider, [xt_img, x0_img, eps_img, prev_img, info])
    return {"model": model_name, "prompt": prompt, "negative": negative, "sampler": sampler, "steps": steps,
            "scale": guidance, "eta": eta, "seed": seed, "use_image": use_image, "strength": strength,
            **exp_keys}  # lecture-mode URL keys


if __name__ == "__main__":
    from pipelines.runtime import Runtime

    with gr.Blocks(title=TITLE) as demo:
        create(Runtime.create())
    demo.launch()
