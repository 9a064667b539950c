"""Tab "Forward noising": drag t and watch x_t = sqrt(ᾱ_t) x0 + sqrt(1-ᾱ_t) ε dissolve an image.

UI only: the maths is :mod:`pipelines.diffusion.forward`, :mod:`pipelines.diffusion.schedules`, :mod:`pipelines.images`.
Per-user state is compact: x0 as uint8 at the working size and the noise seed (≤ 0.8 MB at 512 px, kept
for STATE_TTL seconds); ε is re-derived from the seed through a small process-wide cache shared by every
session (same seed and size, same ε), so dragging the slider recomputes only the mix. Run alone for a quick look: ``python -m demos.forward_noising``.
"""

from __future__ import annotations

import functools

import gradio as gr
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from demos.common import jpeg, sample_paths, user_errors
from demos.components import seed_input
from pipelines import images, validation
from pipelines.diffusion import forward
from pipelines.diffusion import schedules

TITLE = "Forward noising"
T = 1000  # num_train_timesteps on this tab (the Schedules tab varies it)
STRIP_LEN = 8
COMPARE_PX = 48  # side of the image used for the steps-vs-jump experiment (the chain is t+1 draws)
SIZES = [128, 256, 512]
STATE_TTL = 900  # s a session's x0 is kept after its last update (gradio also drops it when the tab closes)


def _alphas_cumprod(schedule: str) -> torch.Tensor:
    schedule = validation.choice("β schedule", schedule, schedules.SCHEDULE_NAMES)
    return schedules.alphas_cumprod(schedules.make_betas(schedule, num_train_timesteps=T))


def _check_t(t) -> int:
    return validation.integer("t", t, 0, T - 1)


def _state(x0: torch.Tensor, seed) -> dict:
    """Per-user state: x0 ``[1, 3, S, S]`` in [-1, 1] as uint8 ``[S, S, 3]`` (lossless: it came from 8-bit
    pixels) and the noise seed. Everything else is re-derived per call."""
    return {"x0": images.tensor_to_uint8(x0[0]), "seed": validation.seed(seed)}


@functools.lru_cache(maxsize=8)
def _noise_d(seed: int, size: int) -> torch.Tensor:
    """display_basis of ε ~ N(0, I) ``[1, 3, size, size]`` drawn from ``seed`` (never mutated: shared)."""
    noise = torch.randn((1, 3, size, size), generator=validation.generator(seed))
    return forward.display_basis(noise)


def _x0_d(state: dict) -> torch.Tensor:
    """display_basis of x0 from the uint8 pixels: 127.5 * (p / 127.5 - 1) = p - 127.5, ``[S, S, 3]``."""
    return torch.from_numpy(state["x0"]).float().sub_(127.5)


def _x0_small(state: dict) -> torch.Tensor:
    """x0 at COMPARE_PX for the steps-vs-jump comparison, ``[1, 3, 48, 48]`` in [-1, 1]."""
    x0 = torch.from_numpy(state["x0"]).permute(2, 0, 1)[None].float().div(127.5).sub(1.0)
    return F.interpolate(x0, size=(COMPARE_PX, COMPARE_PX), mode="area")


def _check_state(state) -> dict:
    if not isinstance(state, dict) or not isinstance(state.get("x0"), np.ndarray):
        raise ValueError("Load an image first.")
    return state


def _pixels(state: dict, alpha_bar: float) -> np.ndarray:
    """uint8 [H, W, 3] of x_t = sqrt(ᾱ) x0 + sqrt(1-ᾱ) ε (ᾱ = 1: x0, ᾱ = 0: ε), clipped to [-1, 1]."""
    if alpha_bar >= 1.0:
        return state["x0"]
    noise_d = _noise_d(state["seed"], state["x0"].shape[0])
    return forward.q_sample_uint8(_x0_d(state), noise_d, alpha_bar)


def initial_state(size: int = 256, seed: int = 0) -> dict:
    """x0 (first sample image) and the seed of ε for a fresh session."""
    return _state(images.load_working_tensor(sample_paths()[0], size), seed)


def formula_markdown(t: int, alpha_bar: float) -> str:
    """The jump formula with the numbers of timestep ``t`` plugged in (KaTeX between $$), in plain words."""
    a, b = alpha_bar**0.5, (1.0 - alpha_bar) ** 0.5
    snr = schedules.snr_db(alpha_bar)
    snr_lin = alpha_bar / (1.0 - alpha_bar) if alpha_bar < 1 else float("inf")
    return (
        f"$$x_{{{t}}} = {a:.4f}\\,x_0 + {b:.4f}\\,\\varepsilon$$\n\n"
        f"At t = {t} the picture is scaled by **{a:.4f}** (√ᾱ_t) and the noise by **{b:.4f}** (√(1−ᾱ_t)): "
        f"signal-to-noise ratio ᾱ_t/(1−ᾱ_t) = {snr_lin:.4g} = **{snr:.1f} dB**, ᾱ_t = {alpha_bar:.6f}."
    )


MATHS = """
**Adding noise one step at a time.** A noise schedule β_1 … β_T (β, "beta": the variance of the noise added at
step t; small, 0.0001 … 0.02 for *linear*) defines each step
x_t = √(1−β_t)·x_(t−1) + √β_t·ε_t (DDPM eq. 2), with fresh Gaussian noise ε_t ~ N(0, I) every time.

**Jumping there in one go.** Write α_t = 1 − β_t and ᾱ_t = α_1·α_2·…·α_t ("alpha-bar": the share of the
picture's power left after t steps). Then all those steps together are the same as one draw

$$x_t = \\sqrt{\\bar\\alpha_t}\\,x_0 + \\sqrt{1-\\bar\\alpha_t}\\,\\varepsilon,\\qquad \\varepsilon \\sim \\mathcal N(0, I)$$

(DDPM eq. 4), which is what the slider shows. Training uses it to make a noisy example at any t instantly; the
experiment below checks that the chain and the jump give the same distribution. Images are shown clipped to
[−1, 1].
"""


def mix(state: dict, schedule: str, t: int) -> tuple[str, str]:
    """Slider update: x_t from the cached x0 and ε -> (path of the x_t JPEG, formula markdown)."""
    state = _check_state(state)
    t = _check_t(t)
    alpha_bar = float(_alphas_cumprod(schedule)[t])
    return jpeg(_pixels(state, alpha_bar)), formula_markdown(t, alpha_bar)


def strip(state: dict, schedule: str) -> list[tuple[str, str]]:
    """x_t at STRIP_LEN evenly spaced t, all with the same ε: a gallery of (image, caption)."""
    state = _check_state(state)
    ac = _alphas_cumprod(schedule)
    ts = torch.linspace(0, T - 1, STRIP_LEN).round().long().tolist()
    return [(jpeg(_pixels(state, float(ac[t]))), f"t={t} · √ᾱ={float(ac[t]) ** 0.5:.2f}") for t in ts]


def load(file, seed, size, schedule: str, t: int):
    """New image or seed: decode, crop, draw ε, and compute every view."""
    if file is None:
        return (gr.skip(),) * 6
    size = validation.integer("working size", size, min(SIZES), max(SIZES))
    if size not in SIZES:
        raise ValueError(f"working size must be one of {SIZES}, got {size}")
    x0 = images.load_working_tensor(file, size)  # [1, 3, size, size] in [-1, 1]
    state = _state(x0, seed)  # ε ~ N(0, I) from the seed, see _noise_d
    x_t, md = mix(state, schedule, t)
    return (state, jpeg(_pixels(state, 1.0)), jpeg(_pixels(state, 0.0)), x_t, md,
            strip(state, schedule))


def compare(state: dict, schedule: str, t: int, draws: int, seed, progress=gr.Progress()):
    """t+1 single steps q(x_t|x_{t-1}) vs one jump q(x_t|x0): per-pixel mean/std and histograms."""
    state = _check_state(state)
    t, draws = _check_t(t), validation.integer("draws", draws, 2, 64)
    betas = schedules.make_betas(schedule, num_train_timesteps=T)
    progress(0, desc="running the chain of single steps")
    r = forward.steps_vs_jump(
        _x0_small(state), t, betas, draws, validation.generator(seed),
        callback=lambda s, _x: progress((s + 1) / (t + 1)) if s % 50 == 0 else None,
    )
    sd = float(r["expected_std"])
    std_img = lambda s: images.tensor_to_uint8(s[0] * 2 - 1)  # std 0..1 shown black..white
    gallery = [
        (images.tensor_to_uint8(r["expected_mean"][0]), "theory: mean √ᾱ·x0"),
        (images.tensor_to_uint8(r["jump_mean"][0]), f"jump: mean of {draws}"),
        (images.tensor_to_uint8(r["steps_mean"][0]), f"{t + 1} steps: mean of {draws}"),
        (std_img(r["jump_std"]), f"jump: std (theory {sd:.3f})"),
        (std_img(r["steps_std"]), f"steps: std (theory {sd:.3f})"),
    ]
    # Standardised residuals z = (x_t - sqrt(ᾱ) x0) / sqrt(1-ᾱ) should be N(0, 1) for both.
    z = {k: ((r[k] - r["expected_mean"]) / sd).flatten().numpy() for k in ("jump", "steps")}
    fig = Figure(figsize=(8, 3), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    bins = np.linspace(-3, 3, 61)
    for k, c in (("jump", "tab:blue"), ("steps", "tab:orange")):
        ax1.hist(r[k].flatten().numpy(), bins=bins, histtype="step", color=c, label=k, density=True)
        ax2.hist(z[k], bins=bins, histtype="step", color=c, label=k, density=True)
    ax2.plot(bins, np.exp(-bins**2 / 2) / np.sqrt(2 * np.pi), "k--", lw=1, label="N(0, 1)")
    ax1.set(title=f"pixel values of x_{{{t}}}", xlabel="value")
    ax2.set(title="standardised: (x_t − √ᾱ·x0) / √(1−ᾱ)", xlabel="z")
    ax1.legend(fontsize=8), ax2.legend(fontsize=8)
    se = sd * (2.0 / draws) ** 0.5  # standard error of a difference of two means of `draws` samples
    dmean = float((r["jump_mean"] - r["steps_mean"]).abs().mean())
    md = (
        f"**{draws} draws each**, image {COMPARE_PX}×{COMPARE_PX}. Mean |jump mean − steps mean| per pixel: "
        f"{dmean:.4f} (expected ≈ {se * (2 / np.pi) ** 0.5:.4f} from sampling noise alone). "
        f"Mean std: jump {float(r['jump_std'].mean()):.4f}, steps {float(r['steps_std'].mean()):.4f}, "
        f"theory √(1−ᾱ_t) = {sd:.4f}. Standardised residuals: jump {z['jump'].mean():+.3f} ± {z['jump'].std():.3f}, "
        f"steps {z['steps'].mean():+.3f} ± {z['steps'].std():.3f} (theory 0 ± 1)."
    )
    return gallery, fig, md


BLEND_CHOICES = {"uniform noise (torch.rand, as seeds 000 and 004)": "uniform", "Gaussian noise (torch.randn)": "gaussian"}
BLEND_WHY = """The seeds' first corruption is a straight blend, x = (1 − a)·x0 + a·n, with uniform noise n. It looks
like noising, but it is **not DDPM's forward process**: the coefficients (1 − a) and a sum to 1, where DDPM's
√ᾱ_t and √(1−ᾱ_t) have *squares* that sum to 1, so the blend's variance (1 − a)²·Var x0 + a²·Var n sags in the
middle instead of staying near 1; uniform noise is bounded (no Gaussian tails), so at a = 1 the end state is
U[−1, 1), not the N(0, I) a sampler starts from; and the blend is not a chain of Gaussian steps, so there is no
closed-form Gaussian posterior q(x_(t−1) | x_t, x0) and none of DDPM's ELBO. Below: the blend beside DDPM
eq. 4 with the **same signal**, √ᾱ = 1 − a."""


def blend(state: dict, amount, noise_label: str, seed):
    """The seeds' amount blend vs DDPM eq. 4 at √ᾱ = 1 − a: gallery, histograms, figures."""
    state = _check_state(state)
    a = validation.number("amount", amount, 0.0, 1.0)
    kind = BLEND_CHOICES.get(noise_label, noise_label)
    x0 = torch.from_numpy(state["x0"]).permute(2, 0, 1)[None].float().div(127.5).sub(1.0)  # [1, 3, S, S]
    r = forward.blend_vs_forward(x0, a, kind, validation.generator(seed))
    gallery = [(images.tensor_to_uint8(x0[0]), "x0"),
               (images.tensor_to_uint8(r["blend"][0]), f"blend: (1−a)·x0 + a·n, a = {a:g}"),
               (images.tensor_to_uint8(r["forward"][0]), f"DDPM eq. 4, √ᾱ = {1 - a:.2f}")]
    fig = Figure(figsize=(8, 3), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    bins = np.linspace(-3, 3, 61)
    for k, c, lab in (("blend", "tab:red", f"blend ({kind})"), ("forward", "tab:blue", "DDPM eq. 4")):
        ax1.hist(r[k].flatten().numpy(), bins=bins, histtype="step", color=c, label=lab, density=True)
        ax2.hist(r[f"{k}_z"].numpy(), bins=bins, histtype="step", color=c, label=lab, density=True)
    ax2.plot(bins, np.exp(-bins**2 / 2) / np.sqrt(2 * np.pi), "k--", lw=1, label="N(0, 1)")
    ax1.set(title="pixel values of x", xlabel="value")
    ax2.set(title="the noise part, divided by its std", xlabel="z")
    ax1.legend(fontsize=8), ax2.legend(fontsize=8)
    var_x0 = float(x0.var())
    md = (f"| | signal coefficient | noise variance (measured / theory) | total Var x (x0 has {var_x0:.3f}) |\n"
          "|---|---|---|---|\n"
          f"| blend, {kind} | 1 − a = {1 - a:.3f} | {r['blend_noise_var']:.4f} / a²·Var n = "
          f"{r['blend_noise_var_theory']:.4f} | {float(r['blend'].var()):.4f} |\n"
          f"| DDPM eq. 4 | √ᾱ = {1 - a:.3f} | {r['forward_noise_var']:.4f} / 1 − ᾱ = "
          f"{r['forward_noise_var_theory']:.4f} | {float(r['forward'].var()):.4f} |")
    return gallery, fig, md


def create(runtime=None) -> dict:
    """Build the tab inside the caller's ``gr.Blocks`` / ``gr.Tab``. ``runtime`` is unused (no model)."""
    samples = sample_paths()
    init = initial_state()
    init_xt, init_md = mix(init, "linear", 500)
    gr.Markdown(
        "A diffusion model learns to undo noise, so first we add it. **Drag t**: at t = 0 you see the picture x0, "
        "at t = 999 only the random noise ε, and in between a mix of the two (the same ε all along).",
        elem_classes=["dl-intro"])
    state = gr.State(init, time_to_live=STATE_TTL)
    with gr.Row(elem_classes=["dl-main"]):
        with gr.Column(scale=1, min_width=260, elem_classes=["dl-controls"]):
            gallery = gr.Gallery(value=samples, label="pick a picture", columns=4, height=100,
                                 allow_preview=False, show_label=True, elem_id="forward-samples")
            file = gr.File(label="…or upload one (PNG, JPEG, WebP)", file_types=["image"],
                           type="filepath", value=samples[0], height=70)
            schedule = gr.Dropdown(list(schedules.SCHEDULE_NAMES), value="linear",
                                   label="noise schedule (how fast noise is added; Schedules tab)")
            with gr.Accordion("Advanced", open=False):
                seed = seed_input("noise seed")
                size = gr.Radio(SIZES, value=256, label="working size (px, centre-cropped square)")
        with gr.Column(scale=2, elem_classes=["dl-output"]):
            t = gr.Slider(0, T - 1, value=500, step=1, label="timestep t: how much noise (drag me)",
                          elem_id="forward-t", elem_classes=["dl-run"])
            with gr.Row(elem_classes=["dl-panels"]):
                img = dict(interactive=False, height=240, min_width=150, buttons=["fullscreen"])
                x0_img = gr.Image(jpeg(_pixels(init, 1.0)), label="x0: the picture", elem_id="forward-x0", **img)
                xt_img = gr.Image(init_xt, label="x_t: picture + noise", elem_id="forward-xt",
                                  elem_classes=["dl-big"], **img)
                eps_img = gr.Image(jpeg(_pixels(init, 0.0)), label="ε: the noise", elem_id="forward-eps",
                                   elem_classes=["dl-optional"], **img)
            info = gr.Markdown(init_md, elem_id="forward-formula")
    strip_gallery = gr.Gallery(strip(init, "linear"), label="x_t at evenly spaced t (same noise ε)",
                               columns=STRIP_LEN, allow_preview=True, object_fit="contain",
                               elem_id="forward-strip", elem_classes=["dl-gallery"])
    with gr.Accordion("The maths", open=False):
        gr.Markdown(MATHS)
    with gr.Accordion("Experiment: t small steps or one jump, the same noise?", open=False):
        gr.Markdown(
            "Runs the chain x0 → x1 → … → x_t of single steps (DDPM eq. 2) and the jump straight to x_t (DDPM eq. 4) "
            "many times on a small copy of the picture, at the current t, and compares them pixel by pixel."
        )
        with gr.Row():
            draws = gr.Slider(2, 64, value=16, step=1, label="draws per method")
            run = gr.Button("Compare", variant="primary")
        cmp_gallery = gr.Gallery(label="per-pixel mean and std over the draws", columns=5, object_fit="contain",
                                 elem_id="forward-compare", elem_classes=["dl-gallery", "dl-pixelated"])
        cmp_plot = gr.Plot(label="histograms")
        cmp_md = gr.Markdown()

    with gr.Accordion("Experiment: the seeds' amount blend is not the Gaussian forward process", open=False):
        gr.Markdown(BLEND_WHY)
        with gr.Row():
            amount = gr.Slider(0, 1, value=0.5, step=0.01, label="amount a")
            blend_noise = gr.Radio(list(BLEND_CHOICES), value=next(iter(BLEND_CHOICES)), label="noise n")
            blend_run = gr.Button("Compare", variant="primary", elem_id="forward-blend-run")
        blend_gallery = gr.Gallery(label="x0 | amount blend | DDPM x_t with the same signal", columns=3,
                                   object_fit="contain", elem_id="forward-blend", elem_classes=["dl-gallery"])
        blend_plot = gr.Plot(label="histograms")
        blend_md = gr.Markdown()

    def pick(evt: gr.SelectData) -> str:
        return samples[int(evt.index)]  # the server picks the path; the client only sends an index

    gallery.select(pick, None, file, api_name="forward_pick_sample", api_visibility="private")
    load_outputs = [state, x0_img, eps_img, xt_img, info, strip_gallery]
    gr.on([file.change, seed.change, size.change], user_errors(load), [file, seed, size, schedule, t],
          load_outputs, api_name="forward_load")
    t.input(user_errors(mix), [state, schedule, t], [xt_img, info], api_name="forward_mix",
            trigger_mode="always_last", show_progress="hidden")
    schedule.change(user_errors(mix), [state, schedule, t], [xt_img, info], api_name="forward_schedule",
                    show_progress="hidden").then(
        user_errors(strip), [state, schedule], strip_gallery, api_name="forward_strip")
    run.click(user_errors(compare), [state, schedule, t, draws, seed], [cmp_gallery, cmp_plot, cmp_md],
              api_name="forward_compare")
    blend_run.click(user_errors(blend), [state, amount, blend_noise, seed], [blend_gallery, blend_plot, blend_md],
                    api_name="forward_blend")
    return {"schedule": schedule, "t": t, "seed": seed, "size": size, "draws": draws}  # lecture-mode URL keys


if __name__ == "__main__":
    with gr.Blocks(title=TITLE) as demo:
        create()
    demo.launch()
