"""Tab "Schedules": overlay β schedules and see how much signal each keeps, and where it ends.

UI only: the curves come from :mod:`pipelines.diffusion.schedules`, the noising from :mod:`pipelines.diffusion.forward`.
Run alone for a quick look: ``python -m demos.schedules``.
"""

from __future__ import annotations

import gradio as gr
import numpy as np
import torch
from matplotlib.figure import Figure

from demos.common import jpeg, sample_paths, user_errors
from demos.components import SafeNumber, seed_input
from pipelines import images, validation
from pipelines.diffusion import forward
from pipelines.diffusion import schedules

TITLE = "Schedules"
GRID_PX = 160
LEAK_THRESHOLD = 0.01  # sqrt(ᾱ_T) above this is flagged as signal leaking through at t = T
DEFAULT = ["linear", "scaled_linear", "cosine", "sigmoid", "quadratic"]
COLOURS = {name: f"C{i}" for i, name in enumerate(schedules.SCHEDULE_NAMES)}  # a line keeps its colour

# (field of ScheduleCurves, y label, log scale)
PANELS = [
    ("betas", "β_t", True),
    ("alphas_cumprod", "ᾱ_t", False),
    ("sqrt_alphas_cumprod", "√ᾱ_t  (signal coefficient)", False),
    ("sqrt_one_minus_alphas_cumprod", "√(1−ᾱ_t)  (noise coefficient)", False),
    ("log_snr", "log SNR = ln(ᾱ/(1−ᾱ))", False),
]


def _specs(names, T, beta_start, beta_end, custom_range: bool, zero_snr: bool) -> list[schedules.ScheduleSpec]:
    if not names:
        raise ValueError("Pick at least one schedule.")
    b0, b1 = ((validation.number("β_start", beta_start, 0, 1), validation.number("β_end", beta_end, 0, 1))
              if custom_range else (None, None))
    T = validation.integer("T", T, 2, schedules.MAX_TIMESTEPS)
    specs = [schedules.ScheduleSpec(n, T, b0, b1, bool(zero_snr)) for n in names]
    return [s.resolved() for s in specs]  # raises ValueError on bad values


def schedules_plot(names, T, beta_start, beta_end, custom_range, zero_snr) -> Figure:
    """One figure, five panels over t, all chosen schedules overlaid."""
    specs = _specs(names, T, beta_start, beta_end, custom_range, zero_snr)
    fig = Figure(figsize=(11, 6.5), layout="constrained")
    axes = fig.subplots(2, 3).flatten()
    for spec in specs:
        c = schedules.curves(spec)
        t = np.arange(spec.num_train_timesteps)
        for ax, (field, label, log) in zip(axes, PANELS):
            y = getattr(c, field).double().numpy()
            ax.plot(t, y, label=spec.name, lw=1.5, color=COLOURS[spec.name])  # fixed per schedule
            ax.set(ylabel=label, xlabel="t", yscale="log" if log else "linear")
    axes[4].set_ylim(bottom=max(axes[4].get_ylim()[0], -20))  # -inf (zero SNR) would squash the axis
    axes[5].axis("off")  # the legend lives in the free panel: gradio's label badge covers the top-left
    axes[5].legend(*axes[0].get_legend_handles_labels(), loc="upper left", fontsize=9, frameon=False)
    return fig


def schedules_grid(file, names, T, beta_start, beta_end, custom_range, zero_snr, t_frac, seed):
    """The same image, the same ε, the same t under each schedule -> gallery of (image, caption)."""
    specs = _specs(names, T, beta_start, beta_end, custom_range, zero_snr)
    x0 = images.load_working_tensor(file if file is not None else sample_paths()[0], GRID_PX)
    noise = torch.randn(x0.shape, generator=validation.generator(seed))  # one ε for every schedule
    t_frac = validation.number("t fraction", t_frac, 0.0, 1.0)
    t = min(int(round(t_frac * (specs[0].num_train_timesteps - 1))), specs[0].num_train_timesteps - 1)
    out = []
    for spec in specs:
        ac = schedules.alphas_cumprod(schedules.make_betas(spec))
        x_t, _ = forward.q_sample(x0, t, ac, noise=noise)
        out.append((jpeg(images.tensor_to_uint8(x_t[0])), f"{spec.name}: t={t}, √ᾱ={float(ac[t]) ** 0.5:.3f}"))
    return out


def schedules_table(names, T, beta_start, beta_end, custom_range, zero_snr) -> list[list]:
    """Rows [schedule, β range, √ᾱ_T, SNR_T (dB), verdict] for the last timestep T-1."""
    rows = []
    for spec in _specs(names, T, beta_start, beta_end, custom_range, zero_snr):
        a = float(schedules.alphas_cumprod(schedules.make_betas(spec))[-1])
        leak = a**0.5 > LEAK_THRESHOLD
        rng = "n/a (cosine)" if schedules.SCHEDULES[spec.name][1] is None else f"{spec.beta_start:g}..{spec.beta_end:g}"
        db = schedules.snr_db(a)
        rows.append([spec.name, rng, f"{a ** 0.5:.6f}", "−∞" if db == float("-inf") else f"{db:.1f}",
                     "⚠ signal leaks" if leak else "≈ 0 (pure noise)"])
    return rows


def update_all(file, names, T, beta_start, beta_end, custom_range, zero_snr, t_frac, seed):
    return (schedules_plot(names, T, beta_start, beta_end, custom_range, zero_snr),
            schedules_grid(file, names, T, beta_start, beta_end, custom_range, zero_snr, t_frac, seed),
            schedules_table(names, T, beta_start, beta_end, custom_range, zero_snr))


MATHS = """
**Symbols.** β_t ("beta") is the variance of the noise added at step t; ᾱ_t ("alpha-bar") = (1−β_1)·…·(1−β_t)
is the share of the picture's power left at step t, so x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε. √ᾱ_t scales the picture,
√(1−ᾱ_t) the noise, and SNR = ᾱ_t/(1−ᾱ_t) is their power ratio (log-SNR: its natural log).

**The schedules.** *linear*: β grows linearly (DDPM: 0.0001 … 0.02). *scaled_linear*: √β grows linearly
(Stable Diffusion: 0.00085 … 0.012). *quadratic*: the same formula with DDPM's range. *sigmoid*: β follows
an S-curve. *cosine* (Nichol & Dhariwal 2021) is defined through ᾱ_t directly, so the β range does not
apply to it. Cosine keeps √ᾱ_t high for longer: its log-SNR falls almost linearly, so fewer steps are
spent on nearly-pure noise or nearly-clean images.

**Why the end matters.** img2img with *strength 1* starts from x_T = √ᾱ_T·x0 + √(1−ᾱ_T)·ε. If √ᾱ_T is not
≈ 0 (≈ 0.068 for Stable Diffusion's scaled_linear) the input's coarse colours leak into the result, and a
model trained this way never learns to start from pure noise (it cannot make very dark or very bright
images). The zero-terminal-SNR rescale (Lin et al. 2024) sets ᾱ_T = 0.
"""


def create(runtime=None) -> dict:
    """Build the tab inside the caller's ``gr.Blocks`` / ``gr.Tab``. ``runtime`` is unused (no model)."""
    gr.Markdown("A noise schedule decides how fast the picture drowns in noise as t goes from 0 to T. Tick a few "
                "schedules and compare the curves, the same picture under each, and how much of the picture is "
                "still left at the very end (it should be none).", elem_classes=["dl-intro"])
    with gr.Row(elem_classes=["dl-main"]):
        with gr.Column(scale=1, min_width=260, elem_classes=["dl-controls"]):
            names = gr.CheckboxGroup(list(schedules.SCHEDULE_NAMES), value=DEFAULT, label="schedules",
                                     elem_id="schedules-names", elem_classes=["dl-run"])
            zero = gr.Checkbox(False, label="rescale to zero signal at the end (zero terminal SNR)")
            t_frac = gr.Slider(0, 1, value=0.5, step=0.01, label="pictures at t = fraction × (T−1)")
            with gr.Accordion("Advanced", open=False):
                T = gr.Slider(10, 4000, value=1000, step=10, label="T: number of noise levels")
                custom = gr.Checkbox(False, label="use my β range for all (else each schedule's own)")
                with gr.Row():
                    b0 = SafeNumber(1e-4, label="β_start", minimum=1e-8, maximum=0.999, interactive=False)
                    b1 = SafeNumber(0.02, label="β_end", minimum=1e-8, maximum=0.999, interactive=False)
                file = gr.File(label="picture for the grid (default: a sample)", file_types=["image"],
                               type="filepath", height=70)
                seed = seed_input("noise seed")
        with gr.Column(scale=3, elem_classes=["dl-output"]):
            # value=callable + inputs: gradio computes it on each page load (nothing at build time).
            fig = gr.Plot(user_errors(schedules_plot), inputs=[names, T, b0, b1, custom, zero],
                          label="the schedules over t", elem_id="schedules-plot")
    grid_out = gr.Gallery(user_errors(schedules_grid), inputs=[file, names, T, b0, b1, custom, zero, t_frac, seed],
                          label="the same picture, noise and t under each schedule", columns=len(DEFAULT),
                          object_fit="contain", elem_id="schedules-grid", elem_classes=["dl-gallery"])
    table = gr.Dataframe(user_errors(schedules_table), inputs=[names, T, b0, b1, custom, zero],
                         headers=["schedule", "β range", "√ᾱ_T (signal left at t=T)", "SNR_T (dB)", "verdict"],
                         label="signal left at the last timestep", interactive=False, elem_id="schedules-table")
    with gr.Accordion("The maths", open=False):
        gr.Markdown(MATHS)
    inputs = [file, names, T, b0, b1, custom, zero, t_frac, seed]
    # β_start/β_end do something only with the box ticked: editable only then
    custom.change(lambda on: (gr.Number(interactive=on), gr.Number(interactive=on)), custom, [b0, b1],
                  api_visibility="private", show_progress="hidden", queue=False)
    gr.on([names.change, T.release, b0.submit, b0.blur, b1.submit, b1.blur, custom.change, zero.change,
           file.change, t_frac.release, seed.submit, seed.blur], user_errors(update_all), inputs, [fig, grid_out, table],
          api_name="schedules_update")
    return {"schedules": names, "T": T, "custom": custom, "beta_start": b0, "beta_end": b1, "zero_snr": zero,
            "t_frac": t_frac, "seed": seed}  # lecture-mode URL keys


if __name__ == "__main__":
    with gr.Blocks(title=TITLE) as demo:
        create()
    demo.launch()
