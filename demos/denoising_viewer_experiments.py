"""The Denoising viewer's experiment sub-tabs: *Denoising three ways* (CS180 1.2-1.4), *Sampler race*
and *Oracle mode* (DiffusionFastForward). UI only; the compute is :mod:`pipelines.denoising`.
Built by :func:`build` inside the viewer tab (a helper of that tab, not a tab of its own).
"""

from __future__ import annotations

import functools
import math

import gradio as gr
import numpy as np

from demos.common import image_file, session_of, snr_text, user_errors
from demos.components import SafeImage, seed_input
from demos.style import GALLERY, PIXELATED
from pipelines import denoising, images, validation
from pipelines.models import FLOW_SAMPLERS, SAMPLERS
from pipelines.serving import compute_thread

MAX_STEPS = 200
STRIP_PX = 96
SHOW_PX = 192
SAMPLER_NAMES = list(SAMPLERS)
FLOW_NAMES = list(FLOW_SAMPLERS)
DEFAULT_PROMPT = "a red circle on a navy background"
# the race's four lanes (sampler, steps, ticked): ε/v models, and flow-matching models (toy-sd3, flow digits)
RACE_LANES = [("DDPM", 100, True), ("DDIM", 25, True), ("DPM-Solver++", 10, True), ("Euler", 25, False)]
FLOW_RACE_LANES = [("Euler", 28, True), ("Euler", 8, True), ("Euler, shift 3", 8, True), ("Euler, stochastic", 28, False)]


def _sampler(name: str, what: str = "sampler") -> str:
    # the race's lane dropdowns take typed values (flow names), so gradio does not check them
    if not isinstance(name, str) or (name not in SAMPLERS and name not in FLOW_SAMPLERS):
        raise ValueError(f"{what}: unknown sampler {name!r}; choose one of {SAMPLER_NAMES} (flow models: {FLOW_NAMES})")
    return name


def _load_image(model, path):
    """A server-side image path -> ``[1, 3, S, S]`` in [-1, 1] at the model's image size."""
    return images.load_working_tensor(path, model.image_size[0]).to(model.device)




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
    r = denoising.three_ways(model, _load_image(model, image), t, prompt=prompt or "", guidance_scale=guidance_scale,
                             stride=stride, generator=validation.generator(seed))
    p = r["psnr"]
    compute_thread.checkpoint()  # encoding the eight pictures: a turn of its own (serving/compute_thread.py)
    gallery = [
        (image_file(r["clean"], SHOW_PX, compress_level=1), "clean x0"),
        (image_file(r["noisy"], SHOW_PX, compress_level=1), f"noisy x_t, t={t}"),
        (image_file(r["blur"], SHOW_PX, compress_level=1), f"Gaussian blur σ={r['blur_sigma']:g}: {p['blur']:.1f} dB"),
        (image_file(r["one_step"], SHOW_PX, compress_level=1), f"one step: {p['one_step']:.1f} dB"),
        (image_file(r["iterative"], SHOW_PX, compress_level=1), f"iterative ({r['steps']} steps): {p['iterative']:.1f} dB"),
        *((image_file(r[f"blur_k{k}"], SHOW_PX, compress_level=1), f"seed's blur of x_t, kernel {k}: "
           f"{p[f'blur_k{k}']:.1f} dB") for k in denoising.SEED_KERNELS),
    ]
    md = (f"t = {t}{clamp_note}: √ᾱ_t = {math.sqrt(r['alpha_bar']):.3f}, SNR = {snr_text(r['alpha_bar'])}.\n\n"
          "| method | what it does | PSNR vs clean |\n|---|---|---|\n"
          f"| Gaussian blur | blur x_t/√ᾱ_t (σ = {r['blur_sigma']:g} px, the best of a few, chosen with the clean "
          f"image) | {p['blur']:.2f} dB |\n"
          f"| one step | x̂0 = (x_t − √(1−ᾱ_t) ε̂) / √ᾱ_t, one model call | {p['one_step']:.2f} dB |\n"
          f"| iterative | DDPM steps t, t−{stride}, …, 0 ({r['steps']} model calls) | {p['iterative']:.2f} dB |\n"
          + "".join(f"| seed's blur, kernel {k} | " + ("CS180 1.2: x_t itself blurred with a fixed k×k Gaussian (no "
                    "1/√ᾱ_t, so it stays faded; no peek at x0)" if i == 0 else f"the same, {k}×{k}")
                    + f" | {p[f'blur_k{k}']:.2f} dB |\n" for i, k in enumerate(denoising.SEED_KERNELS)))
    return gallery, md


def _race_entries(*rows) -> list[tuple[str, int]]:
    entries = []
    for k in range(0, len(rows), 3):
        on, sampler, steps = rows[k:k + 3]
        if on:
            entries.append((_sampler(sampler, f"sampler of race lane {k // 3 + 1}"), validation.integer(f"steps of race lane {k // 3 + 1}", steps, 1,
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
    for k, r in enumerate(denoising.race(model, prompt or "", entries, seed=seed, guidance_scale=guidance_scale)):
        compute_thread.checkpoint()  # between a lane's last step and the encoding of its picture
        gallery.append((image_file(r["image"], SHOW_PX, compress_level=1), f"{r['sampler']}, {r['steps']} steps, {r['seconds']:.2f} s"))
        lines.append(f"| {r['sampler']} | {r['steps']} | {r['seconds']:.2f} s | {1000 * r['seconds'] / r['steps']:.0f} ms |")
        progress((k + 1) / len(entries), desc=f"{r['sampler']} done")
    md = ("Same x_T (seed {}) and prompt for every lane.\n\n| sampler | steps | wall time | per step |\n|---|---|---|---|\n"
          .format(seed) + "\n".join(lines))
    if model.samplers == FLOW_NAMES:
        md += (f"\n\n{model.name} is a flow-matching model: every lane is Euler on the flow ODE "
               "(FlowMatchEulerDiscreteScheduler), x_{σ'} = x_σ + (σ' − σ)·v. **shift 3** (SD3's) re-spaces the σ "
               "grid, σ → 3σ / (1 + 2σ), so more of the steps fall at high noise; **stochastic** re-noises "
               "x̂0 = x_σ − σ·v with a fresh ε to the next σ at every step (the flow counterpart of DDPM).")
    return gallery, md


def race_lanes(runtime, model_name, *samplers, request: gr.Request = None):
    """The race's lanes follow the model: flow-matching models get the flow samplers (Euler with its shift, shift 3,
    stochastic) and ε/v models the VP ones, each with its default steps; lanes already valid for the model stay."""
    flow = runtime.flow_only(model_name, session_of(request))
    names, defaults = (FLOW_NAMES, FLOW_RACE_LANES) if flow else (SAMPLER_NAMES, RACE_LANES)
    if all(s in names for s in samplers):
        return [gr.skip()] * (3 * len(samplers))
    out = []
    for s, n, on in defaults:
        out += [gr.Checkbox(value=on), gr.Dropdown(choices=names, value=s), gr.Slider(value=n)]
    return out


def run_oracle(runtime, model_name, image, strength, sampler, steps, prompt, guidance_scale, seed):
    steps = validation.integer("steps", steps, 1, MAX_STEPS)
    strength = validation.number("strength", strength, 0.0, 1.0)
    guidance_scale = validation.number("guidance scale", guidance_scale, 0.0, validation.MAX_GUIDANCE)
    seed = int(validation.generator(seed).initial_seed())
    if image is None:
        raise ValueError("Pick or upload an image first.")
    model = runtime.registry.diffusion(model_name)
    r = denoising.oracle_vs_model(model, _load_image(model, image), strength=strength, sampler=_sampler(sampler),
                                  steps=steps, prompt=prompt or "", guidance_scale=guidance_scale, seed=seed)
    p, e = r["psnr"], r["max_abs_error"]
    fmt = lambda v: "∞" if math.isinf(v) else f"{v:.1f}"
    gallery = [
        (image_file(r["clean"], SHOW_PX, compress_level=1), "clean x0"),
        (image_file(r["noisy"], SHOW_PX, compress_level=1), f"x_t, t={r['t']:.0f}"),
        (image_file(r["oracle"], SHOW_PX, compress_level=1), f"oracle (true ε): {fmt(p['oracle'])} dB"),
        (image_file(r["model"], SHOW_PX, compress_level=1), f"model: {fmt(p['model'])} dB"),
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


def build(runtime, model_name, scenes: list[str]) -> dict:
    """The three experiment sub-tabs (inside the viewer's ``gr.Tabs``); returns their URL keys."""
    bind = lambda fn: user_errors(functools.partial(fn, runtime))  # noqa: E731
    gal = dict(elem_classes=[GALLERY, PIXELATED], object_fit="contain", allow_preview=True)
    with gr.Tab("Denoising three ways"):
        gr.Markdown("Noise a picture, then try to clean it up three ways: blur it, ask the model once, or let the "
                    "model take many small steps. The numbers say how close each gets to the original (PSNR, "
                    "higher is better).", elem_classes=["dl-intro"])
        with gr.Row(elem_classes=["dl-main"]):
            with gr.Column(scale=1, min_width=260, elem_classes=["dl-controls"]):
                tw_image = SafeImage(scenes[1], type="filepath", label="image", height=140, sources=["upload"],
                                     elem_classes=[PIXELATED])
                tw_t = gr.Slider(1, 999, value=500, step=1, label="how much noise: timestep t (1 … 999)")
                tw_run = gr.Button("Denoise three ways", variant="primary", elem_id="three-ways-run")
                with gr.Accordion("Advanced", open=False):
                    gr.Examples([[p] for p in scenes], [tw_image], label="toy-world images")
                    tw_stride = gr.Slider(1, 200, value=50, step=1, label="stride of the iterative run")
                    tw_prompt = gr.Textbox("a blue square on a white background", label="prompt", max_lines=1)
                    with gr.Row():
                        tw_guidance = gr.Slider(0, validation.MAX_GUIDANCE, value=1.0, step=0.5,
                                                label="guidance scale w")
                        tw_seed = seed_input("seed")
            with gr.Column(scale=2, elem_classes=["dl-output"]):
                tw_gallery = gr.Gallery(label="clean | noisy | blur | one step | iterative; below: the seed's blurs "
                                        "(kernel 3, 5, 9)", columns=5,
                                        elem_id="three-ways-gallery", **gal)
                tw_md = gr.Markdown()

    with gr.Tab("Sampler race"):
        gr.Markdown("The same starting noise and prompt through several samplers, each with its own number of "
                    "steps. Compare the pictures and the time: fewer, smarter steps against many simple ones.",
                    elem_classes=["dl-intro"])
        with gr.Row():
            rc_prompt = gr.Textbox(DEFAULT_PROMPT, label="prompt", max_lines=1)
            rc_guidance = gr.Slider(0, validation.MAX_GUIDANCE, value=4.0, step=0.5, label="guidance scale w")
            rc_seed = seed_input("seed")
        lanes = []
        with gr.Row(elem_classes=["dl-lanes"]):
            for s, n, on in RACE_LANES:
                with gr.Column(min_width=160):
                    # custom values: the choices follow the model (race_lanes); run_race checks the name
                    lanes += [gr.Checkbox(on, label="race"),
                              gr.Dropdown(SAMPLER_NAMES, value=s, label="sampler", allow_custom_value=True),
                              gr.Slider(1, MAX_STEPS, value=n, step=1, label="steps")]
        rc_run = gr.Button("Race", variant="primary", elem_id="race-run")
        rc_gallery = gr.Gallery(label="results", columns=4, elem_id="race-gallery", **gal)
        rc_md = gr.Markdown()

    with gr.Tab("Oracle mode"):
        gr.Markdown("If the model knew the true noise, undoing it would give back the picture exactly. An oracle "
                    "that knows the answer shows that; then the real model tries from the same noisy start.",
                    elem_classes=["dl-intro"])
        with gr.Row(elem_classes=["dl-main"]):
            with gr.Column(scale=1, min_width=260, elem_classes=["dl-controls"]):
                or_image = SafeImage(scenes[2], type="filepath", label="image x0", height=140, sources=["upload"],
                                     elem_classes=[PIXELATED])
                or_strength = gr.Slider(0.05, 1.0, value=0.8, step=0.05, label="strength (how far to noise)")
                or_run = gr.Button("Run oracle and model", variant="primary", elem_id="oracle-run")
                with gr.Accordion("Advanced", open=False):
                    gr.Examples([[p] for p in scenes], [or_image], label="toy-world images")
                    with gr.Row():
                        or_sampler = gr.Dropdown(SAMPLER_NAMES, value="DDPM", label="sampler")
                        or_steps = gr.Slider(1, MAX_STEPS, value=50, step=1, label="steps")
                    or_prompt = gr.Textbox("a large yellow star on a black background", label="prompt (model run)",
                                           max_lines=1)
                    with gr.Row():
                        or_guidance = gr.Slider(0, validation.MAX_GUIDANCE, value=1.0, step=0.5,
                                                label="guidance scale w")
                        or_seed = seed_input("seed")
            with gr.Column(scale=2, elem_classes=["dl-output"]):
                or_gallery = gr.Gallery(label="clean | x_t | oracle | model", columns=4, elem_id="oracle-gallery",
                                        **gal)
                or_strip = gr.Gallery(label="x̂0 along the way: oracle (top) vs model", columns=6,
                                      elem_id="oracle-strip", **gal)
                or_md = gr.Markdown()

    tw_run.click(bind(run_three_ways), [model_name, tw_image, tw_t, tw_stride, tw_prompt, tw_guidance, tw_seed],
                 [tw_gallery, tw_md], api_name="three_ways")
    rc_run.click(bind(run_race), [model_name, rc_prompt, rc_guidance, rc_seed, *lanes], [rc_gallery, rc_md],
                 api_name="sampler_race")
    model_name.change(bind(race_lanes), [model_name, *lanes[1::3]], lanes, api_visibility="private",
                      show_progress="hidden")
    or_run.click(bind(run_oracle), [model_name, or_image, or_strength, or_sampler, or_steps, or_prompt, or_guidance,
                                    or_seed], [or_gallery, or_strip, or_md], api_name="oracle")
    return {"t": tw_t, "stride": tw_stride}  # lecture-mode URL keys
