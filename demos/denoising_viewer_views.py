"""Small views of the Denoising viewer: the power spectrum of x̂0 per step (coarse to fine, from the recorded
run), and the sub-tab *β or β̃, other sizes* (DDPM's two reverse variances on one seed; the 32 px model sampled
at 48 and 64 px). UI only; the compute is :mod:`pipelines.denoising_views` and the one loop. Built by the
viewer tab (a helper of that tab, not a tab of its own).
"""

from __future__ import annotations

import functools

import gradio as gr
import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure

from demos.common import image_file, user_errors
from demos.components import seed_input
from demos.style import GALLERY, PIXELATED
from pipelines import denoising_views as V
from pipelines import validation
from pipelines.diffusion import loop

SHOW_PX = 192
MAX_STEPS = 200
DEFAULT_PROMPT = "a large yellow star on a black background"
SPECTRUM_WHY = """Each x̂0 is split into spatial frequencies (2-D FFT, power averaged over rings of equal
frequency; Parseval: the powers add up to the image's energy). The left plot is the spectrum of x̂0 at a few steps;
the right one is, per band, how much of the error x̂0 − final is left, relative to the final image's power in that
band. Low frequencies (the background colour, where the shape is) settle within the first steps; edges and
fine detail come last: diffusion paints **coarse to fine** (Dieleman 2024, "diffusion is spectral
autoregression"), because noise of a given level drowns fine detail first."""


def _tensor(u8: np.ndarray) -> torch.Tensor:
    """uint8 ``[..., h, w, 3]`` -> ``[N, 3, h, w]`` in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(u8)).reshape(-1, *u8.shape[-3:]).permute(0, 3, 1, 2).float() / 127.5 - 1


def spectrum(traj):
    """The recorded run's x̂0 per step -> (figure, markdown); no model call."""
    if not traj:
        raise ValueError("Run the sampler first: there is no recorded trajectory in this session yet.")
    x0s, final = _tensor(traj["frames"][:, 1]), _tensor(traj["final"])
    r = V.coarse_to_fine(x0s, final)
    n, size = len(x0s), x0s.shape[-1]
    fig = Figure(figsize=(9, 3.2), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    picks = np.unique(np.linspace(0, n - 1, min(6, n)).round().astype(int))
    cmap = colormaps["viridis"]
    for j, i in enumerate(picks):
        ax1.loglog(r["r"][1:], r["spectra"][i, 1:], color=cmap(j / max(len(picks) - 1, 1)), label=f"step {i + 1}")
    ax1.loglog(r["r"][1:], r["final_spectrum"][1:], "k--", lw=1, label="final")
    ax1.set(xlabel="frequency (cycles per image)", ylabel="power", title="spectrum of x̂0")
    steps = np.arange(1, n + 1)
    for k, name in enumerate(V.BANDS):
        ax2.semilogy(steps, np.maximum(r["band_error"][:, k], 1e-6), marker=".", label=name)
    ax2.axhline(0.1, color="gray", lw=0.8, ls=":")
    ax2.set(xlabel="step", ylabel="error power / final power", title="what is still wrong, per band")
    ax1.legend(fontsize=7), ax2.legend(fontsize=8)
    lo, mid = size // 8, size // 4
    when = lambda s: f"step {s}" if s else "not within the run"  # noqa: E731
    md = (f"Settled (error < 10 % of the final's power, and staying there): **low** (≤ {lo} cycles, ≥ {size / max(lo, 1):g} "
          f"px) by {when(r['settled']['low'])}, **mid** (≤ {mid}) by {when(r['settled']['mid'])}, **high** "
          f"(edges, the last {size // 2 - mid} rings) by {when(r['settled']['high'])}, of {n} steps.")
    return fig, md


def build_spectrum(traj) -> None:
    """The "Coarse to fine" accordion of *Watch it denoise* (reads the recorded run in ``traj``)."""
    with gr.Accordion("Coarse to fine: the power spectrum of x̂0 per step", open=False):
        gr.Markdown(SPECTRUM_WHY)
        run = gr.Button("Show the spectrum of the last run", elem_id="viewer-spectrum-run")
        plot = gr.Plot(label="power spectrum of x̂0", elem_id="viewer-spectrum")
        md = gr.Markdown()
    run.click(user_errors(spectrum), [traj], [plot, md], api_name="viewer_spectrum")


def _check(prompt, steps, guidance):
    return (validation.prompt(prompt), validation.integer("steps", steps, 1, MAX_STEPS),
            validation.number("guidance scale", guidance, 0.0, validation.MAX_GUIDANCE))


def _verdict(img: torch.Tensor) -> str:
    v = V.judge_at_any_size(img)
    shape = f"{v['color']} {v['shape']}" if v["shape"] else "no shape"
    return f"{shape} on {v['background']} · {v['blobs']} blob(s) · roughness {v['roughness']:.3f}"


def run_variance(runtime, model_name, prompt, steps, guidance, seed, progress=gr.Progress()):
    """DDPM with β̃ and with β, same seed (same x_T and step noise) -> (gallery, σ_t plot, markdown)."""
    prompt, steps, w = _check(prompt, steps, guidance)
    model = runtime.registry.diffusion(model_name)
    gallery, curves, rows = [], {}, []
    for k, (label, v) in enumerate(V.VARIANCE_TYPES.items()):
        progress(k / 2, desc=f"DDPM with {label}")
        sch = V.ddpm_scheduler(model, v)
        img = loop.sample(model, prompt, scheduler=sch, num_inference_steps=steps, guidance_scale=w,
                          generator=validation.generator(seed))
        curves = V.reverse_variances(sch.alphas_cumprod, sch.timesteps)
        gallery.append((image_file(img[0], SHOW_PX, compress_level=1), label))
        rows.append(f"| {label} | {_verdict(img)} |")
    fig = Figure(figsize=(6, 3), layout="constrained")
    ax = fig.subplots()
    ax.plot(np.arange(1, steps + 1), np.sqrt(curves["beta"]), marker=".", label="σ_t = √β_t (fixed_large)")
    ax.plot(np.arange(1, steps + 1), np.sqrt(curves["beta_tilde"]), marker=".", label="σ_t = √β̃_t (fixed_small)")
    ax.set(xlabel="step", ylabel="std of the fresh noise", title="the noise each DDPM step adds")
    ax.legend(fontsize=8)
    md = ("`x(t−1) = μ̂(x_t, x̂0) + σ_t·z`. Ho et al. (§3.2) tried both `σ_t² = β_t` (right if x0 were pure noise) "
          "and `β̃_t = (1 − ᾱ(t−1)) / (1 − ᾱ_t)·β_t` (the exact posterior's, right if x0 were one known image) and "
          "found them alike at 1000 steps. They part in the last steps: β̃ falls to 0 at the final step, β does "
          "not, so with β the last steps leave fresh grain in the picture. Same seed, same prompt:"
          "\n\n| reverse variance | judged |\n|---|---|\n"
          + "\n".join(rows))
    return gallery, fig, md


def run_sizes(runtime, model_name, prompt, steps, guidance, seed, progress=gr.Progress()):
    """The same prompt and seed sampled at 32, 48 and 64 px -> (gallery, markdown)."""
    prompt, steps, w = _check(prompt, steps, guidance)
    model = runtime.registry.diffusion(model_name)
    native = model.image_size[0]
    gallery, rows = [], []
    for k, size in enumerate(V.SIZES):
        progress(k / len(V.SIZES), desc=f"{size} px")
        img = loop.sample(V.at_resolution(model, size), prompt, sampler="DDIM", num_inference_steps=steps,
                          guidance_scale=w, generator=validation.generator(seed))
        gallery.append((image_file(img[0], SHOW_PX, compress_level=1), f"{size} px"))
        rows.append(f"| {size} px | {_verdict(img)} |")
    md = (f"The model was trained on {native} px scenes only. {V.size_note(max(V.SIZES), native)} The noise x_T "
          "is drawn afresh at each size (same seed). The judge reads each image after an area resize to 32 px; "
          "*blobs* counts separate regions that stand out from the background (one scene = 1).\n\n"
          "| size | judged |\n|---|---|\n" + "\n".join(rows))
    return gallery, md


def build(runtime, model_name) -> None:
    """The sub-tab *β or β̃, other sizes* (inside the viewer's ``gr.Tabs``)."""
    bind = lambda fn: user_errors(functools.partial(fn, runtime))  # noqa: E731
    gal = dict(elem_classes=[GALLERY, PIXELATED], object_fit="contain", allow_preview=True)
    with gr.Tab("β or β̃, other sizes"):
        gr.Markdown("Two switches the seeds leave fixed: how much fresh noise a DDPM step adds, and the size of "
                    "the picture. The same prompt and seed each time.", elem_classes=["dl-intro"])
        with gr.Row():
            prompt = gr.Textbox(DEFAULT_PROMPT, label="prompt", max_lines=1)
            steps = gr.Slider(1, MAX_STEPS, value=20, step=1, label="steps")
            guidance = gr.Slider(0, validation.MAX_GUIDANCE, value=4.0, step=0.5, label="guidance w")
            seed = seed_input("seed")
        with gr.Row():
            with gr.Column():
                var_run = gr.Button("DDPM with β̃ and with β", variant="primary", elem_id="variance-run")
                var_gallery = gr.Gallery(label="β̃ | β", columns=2, elem_id="variance-gallery", **gal)
                var_plot = gr.Plot(label="σ_t per step")
                var_md = gr.Markdown()
            with gr.Column():
                size_run = gr.Button("Sample at 32, 48, 64 px", variant="primary", elem_id="sizes-run")
                size_gallery = gr.Gallery(label="32 | 48 | 64 px", columns=3, elem_id="sizes-gallery", **gal)
                size_md = gr.Markdown()
    io = [model_name, prompt, steps, guidance, seed]
    var_run.click(bind(run_variance), io, [var_gallery, var_plot, var_md], api_name="viewer_variance")
    size_run.click(bind(run_sizes), io, [size_gallery, size_md], api_name="viewer_sizes")
