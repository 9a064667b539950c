"""Tab "CLIP guidance": steer any diffusion model towards a prompt with an open_clip model.

UI only: the loss, cutouts, gradient and per-step scaling are :mod:`pipelines.guidance`; the
loop is :mod:`pipelines.diffusion.loop`. Run alone: ``python -m demos.clip_guidance``.
"""

from __future__ import annotations

import functools

import gradio as gr
import numpy as np
import torch
from matplotlib.figure import Figure

from demos import player
from demos.common import image_file, loss_figure, user_errors
from demos.components import seed_input
from pipelines import guidance_judge as J
from pipelines import loss_guidance as LG
from pipelines import images, validation
from pipelines.models.specs import TOY_CLIP_ROBUST
from pipelines.serving import compute_thread

TITLE = "CLIP guidance"
MAX_CLIP_SCALE = 3.0  # the slider's range: a unit-RMS step per guided step; the naive example sits at 2
MAX_CFG = validation.MAX_GUIDANCE
MAX_STEPS = 100
SHOW_PX = 256  # the toy model's 32 px images, upscaled (nearest)
HEATMAP_PANELS = 8
STREAM_EVERY = 3  # redraw the plots every this many steps
BASE_MODES = ["unconditional (empty prompt)", "conditional (base prompt + CFG)"]
TOWERS = ["noise-aware (toy-clip-noisy, scores x_t)", "plain CLIP (scores cutouts of x̂0)",
          "plain CLIP on x̂0, gradient through the UNet (x̂0 re-predicted with autograd; ~2–3x the cost)"]
DEFAULT = LG.CLIP_PRESETS["default"]
NAIVE = LG.CLIP_PRESETS["naive"]


def heatmap_figure(history: list[LG.GuidanceStep], n_steps: int) -> Figure:
    """Per-pixel |s · factor · ∇_{x_t} L| at up to 8 evenly spaced steps, plus the RMS per step."""
    fig = Figure(figsize=(9, 3.2), layout="constrained")
    gs = fig.add_gridspec(2, HEATMAP_PANELS, height_ratios=[3, 2])
    kept = [h for h in history if h.grad_map is not None]
    if kept:
        idx = sorted(set(np.linspace(0, len(kept) - 1, min(HEATMAP_PANELS, len(kept))).round().astype(int)))
        for j, i in enumerate(idx):
            h = kept[i]
            ax = fig.add_subplot(gs[0, j])
            m = h.grad_map[0].numpy()
            ax.imshow(m, cmap="magma", vmin=0, vmax=max(float(m.max()), 1e-12), interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_title(f"step {h.index + 1}\nmax {float(m.max()):.2g}", fontsize=7)
        ax = fig.add_subplot(gs[1, :])
        ax.semilogy([h.index + 1 for h in kept], [max(h.update_rms, 1e-12) for h in kept], ".-", label="RMS of update")
        ax.set(xlabel="step", xlim=(0.5, n_steps + 0.5))
        ax.legend(fontsize=7)
    fig.suptitle("gradient magnitude per pixel (each panel on its own scale)", fontsize=9)
    return fig


def _figures(curves: dict, history: list[LG.GuidanceStep], n_steps: int) -> tuple[Figure, Figure]:
    """(loss figure, heatmap figure), each built in a turn of its own on the compute thread: building both
    took as long as several steps (serving/compute_thread.py; docs/measurements.md "Serving")."""
    compute_thread.checkpoint()
    loss = loss_figure(curves, "CLIP loss of x̂0 (cutouts) per step", "loss", log=False)
    compute_thread.checkpoint()
    return loss, heatmap_figure(history, n_steps)


def preset_values(preset: dict) -> list:
    """A preset as the tab's (cutouts, scale, scaling, tower, normalize, guide_end, smooth, recur) inputs."""
    return [preset.get("n_cutouts", 4), preset["scale"], preset.get("scaling", "none"),
            TOWERS[0] if preset.get("noise_aware") else TOWERS[2 if preset.get("through_unet") else 1],
            bool(preset.get("normalize", False)),
            float(preset.get("guide_range", (0.0, 1.0))[1]), int(preset.get("smooth", 1)), int(preset.get("recur", 1))]


def verdict_markdown(prompt: str, plain: torch.Tensor, guided: torch.Tensor, f0: float, f1: float) -> str:
    """What the rendering judge reads on both images, their roughness, and the fooled-CLIP warning."""
    v = J.judge(plain, guided, prompt, [0])[0]
    want = {k: x for k, x in v.want.items() if x}
    read = lambda r: " ".join(str(r[k]) for k in ("color", "shape") if r[k]) or "no shape"  # noqa: E731
    ok = "✅ reached" if v.success else "❌ not reached"
    md = (f"**Judged by rendering** (no learnt parts; `render_judge`), against the prompt's colour and shape "
          f"({' '.join(want.get(k, '') for k in ('color', 'shape')).strip() or 'none named'}): without → "
          f"*{read(v.plain)}* on {v.plain['background']}, roughness {v.rough_plain:.0f}; with → "
          f"*{read(v.guided)}* on {v.guided['background']}, roughness **{v.rough_guided:.0f}** "
          f"({v.rough_guided / max(v.rough_plain, 1e-6):.1f}x). {ok} (colour {'✓' if v.color_ok else '✗'}, shape "
          f"{'✓' if v.shape_ok else '✗'}, roughness ≤ {J.ROUGH_JUMP:g}x {'✓' if v.clean else '✗'}).")
    if J.fooled(f0, f1, v.rough_plain, v.rough_guided):
        md += ("\n\n⚠️ **CLIP was fooled.** Its loss fell while the picture got "
               f"{v.rough_guided / max(v.rough_plain, 1e-6):.0f}x rougher: the gradient found per-pixel noise that "
               "CLIP scores as the prompt (an adversarial example), not a better picture. Lower the scale, guide "
               "only the early steps, or use the noise-aware tower (see *Why CLIP gets fooled*).")
    return md


def clip_run(runtime, clip_name, model_name, prompt, base_mode, base_prompt, cfg_scale, n_cutouts, scale,
             scaling, steps, seed, tower=TOWERS[0], normalize=False, guide_end=1.0, smooth=1, recur=1,
             record: dict | None = None):
    """Unguided, then CLIP-guided at the same seed. Streams (gallery, loss plot, heatmap, markdown).
    With ``record`` (a dict), also keeps both runs' x̂0 per step there (``"without"``, ``"with"``: uint8
    ``[h, w, 3]`` lists, the final images last) for a side-by-side replay."""
    clip = runtime.registry.clip(clip_name or None)  # hub CLIP offline -> ModelUnavailable (ValueError)
    model = runtime.registry.diffusion(model_name or None)
    s = validation.number("CLIP guidance scale", scale, 0.0, MAX_CLIP_SCALE)
    cuts = validation.integer("cutouts", n_cutouts, 1, 32)
    w = validation.number("CFG scale", cfg_scale, 0.0, MAX_CFG)
    n, sd = validation.integer("steps", steps, 1, MAX_STEPS), validation.seed(seed)
    end = validation.number("guided share of the steps", guide_end, 0.05, 1.0)
    k = validation.integer("gradient smoothing (pixels)", smooth, 1, 16)
    passes = validation.integer("passes per guided step", recur, 1, LG.MAX_RECUR)
    if not validation.prompt(prompt).strip():
        raise ValueError("Type a prompt for CLIP to steer towards.")
    if base_mode not in BASE_MODES:
        raise ValueError(f"base model mode must be one of {BASE_MODES}")
    if tower not in TOWERS:
        raise ValueError(f"CLIP image tower must be one of {TOWERS}")
    encoder = None
    if tower == TOWERS[0]:
        if clip_name and clip_name != runtime.registry.default_clip or model.kind != "toy":
            raise ValueError("The noise-aware tower is trained for the bundled tiny CLIP and toy model; "
                             "choose the plain CLIP tower for other models.")
        encoder = runtime.registry.noisy_clip()
    conditional = base_mode == BASE_MODES[1]
    if conditional and not model.conditional:
        raise ValueError(f"{model_name} is unconditional; choose 'unconditional' as the base mode")
    base_text = (validation.prompt(base_prompt, "base prompt").strip() or validation.prompt(prompt)) if conditional else ""
    w = w if conditional else 1.0  # unconditional: one pass with the empty prompt (= ε_u)

    def make_hook(guide_scale):
        return LG.clip_guidance(clip, validation.prompt(prompt), guide_scale, n_cutouts=cuts, scaling=scaling,
                               generator=torch.Generator("cpu").manual_seed(sd), keep_maps=guide_scale > 0,
                               noisy_encoder=encoder, normalize=bool(normalize), guide_range=(0.0, end),
                               smooth=k, through_unet=tower == TOWERS[2], recur=passes)

    base = guided = ref = hook = None
    keep = record is not None
    without, with_ = [], []

    def on_base_step(rec):  # the unguided run's guesses, for the replay
        without.append(images.tensor_to_uint8((rec.image if rec.is_last else rec.pred_x0_rgb)[0]))

    for base, ref, guided, hook in LG.guided_vs_unguided(model, base_text, make_hook, s, guidance_scale=w,
                                                        num_inference_steps=n,
                                                        generator_fn=lambda: validation.generator(sd),
                                                        on_base_step=on_base_step if keep else None):
        if keep:
            with_.append(images.tensor_to_uint8((guided.image if guided.is_last else guided.pred_x0_rgb)[0]))
        if guided.is_last or guided.index % STREAM_EVERY == 0:
            img = guided.image[0] if guided.is_last else guided.pred_x0_rgb[0]
            cap = "with CLIP guidance" if guided.is_last else f"with: step {guided.index + 1}/{n}, x̂0"
            curves = {"without": ref.losses(), "with": hook.losses()}
            yield ([(image_file(base.image[0], SHOW_PX, fmt='jpeg'), "without CLIP guidance"),
                    (image_file(img, SHOW_PX, fmt='jpeg'), cap)], *_figures(curves, hook.history, n),
                   f"step {guided.index + 1}/{n}…")
    compute_thread.checkpoint()
    gal = [(image_file(base.image[0], SHOW_PX, fmt='jpeg'), "without CLIP guidance")]
    f0 = float(LG.final_clip_loss(clip, base.image, validation.prompt(prompt))[0])
    compute_thread.checkpoint()
    f1 = float(LG.final_clip_loss(clip, guided.image, validation.prompt(prompt))[0])
    base_desc = f"conditional on “{base_text}”, CFG w = {w:g}" if conditional else "unconditional (empty prompt)"
    lever = LG.describe_clip({"scale": s, "scaling": scaling, "n_cutouts": cuts, "noise_aware": encoder is not None,
                              "normalize": bool(normalize), "guide_range": (0.0, end), "smooth": k,
                              "through_unet": tower == TOWERS[2], "recur": passes})
    compute_thread.checkpoint()  # the rendering judge's verdict: a turn of its own
    md = (verdict_markdown(validation.prompt(prompt), base.image, guided.image, f0, f1) + "\n\n"
          f"Base model {base_desc}; {n} DDIM steps; seed {sd}; {lever}.\n\n"
          f"Final CLIP loss (toy-clip, whole image, 2·arcsin(‖a−b‖/2)²; what guidance optimised, so not the "
          f"verdict): without **{f0:.4f}**, with **{f1:.4f}** ({'lower' if f1 < f0 else 'not lower'}).")
    curves = {"without": ref.losses(), "with": hook.losses()}
    if keep:
        record.update({"without": without, "with": with_, "n": n})
    yield (gal + [(image_file(guided.image[0], SHOW_PX, fmt='jpeg'), "with CLIP guidance")],
           *_figures(curves, hook.history, n), md)


def clip_run_recorded(runtime, *args):
    """:func:`clip_run` plus the recorded run (a ``gr.State``) on its last message, for ▶ Play."""
    rec, prev = {}, None
    for msg in clip_run(runtime, *args, record=rec):
        if prev is not None:
            yield (*prev, gr.skip())
        prev = msg
    yield (*prev, rec)  # the last message carries the recording


def _count(traj) -> int:
    return min(len(traj["with"]), len(traj["without"])) if traj else 0


def show_pair(traj, k: int):
    """Recorded step ``k`` (1-based) of both runs, side by side -> (gallery, text). No model call."""
    n = _count(traj)
    last = k == n
    a, b = traj["without"][k - 1], traj["with"][k - 1]
    gal = [(image_file(a, SHOW_PX, fmt="jpeg"), "without CLIP guidance" if last else f"without: step {k}/{n}, x̂0"),
           (image_file(b, SHOW_PX, fmt="jpeg"), "with CLIP guidance" if last else f"with: step {k}/{n}, x̂0")]
    return gal, f"**step {k} / {n}**" + (": the final pictures" if last else ": each run's guess of its picture x̂0")


def scrub(traj, k):
    if not traj:
        raise ValueError("Run it first: there is no recorded run in this session yet.")
    return show_pair(traj, min(validation.integer("step", k, 1, 10**6), _count(traj)))


MATHS = """
**The loss.** CLIP turns a picture and a text into unit vectors a and b; the closer they point, the better
the match. The loss is the squared great-circle distance between them, L = 2·arcsin(‖a − b‖/2)², averaged
over *n* random cutouts (crops and flips) of the model's guess x̂0, so the gradient does not just pick out a
few pixels.

**The nudge.** Before each step, x_t moves a little downhill on L: x_t ← x_t − s·g(ᾱ_t)·∇_{x_t} L, with s the
CLIP guidance scale and g a per-step factor of ᾱ_t (the share of the picture left at timestep t), e.g.
√ᾱ_t: small while the image is mostly noise. x̂0 = (x_t − √(1−ᾱ_t)·ε̂)/√ᾱ_t is the clean picture the model's
noise estimate ε̂ implies. With ε̂ held fixed (plain tower) ∇_{x_t} L is just ∇_{x̂0} L/√ᾱ_t: a per-pixel push.
*Through the UNet*, ε̂ is re-predicted from x_t with autograd, so the push passes back through the denoiser,
which turns it into changes the model can draw (a shape, a colour) rather than pixel noise.

**Time travel** (*passes per guided step* k; Bansal et al. 2023, "Universal Guidance"). One nudge per step is
small, and a bigger nudge makes x_t a sample the model never saw. So after the nudge, take the DDIM step to the
next timestep s, then noise the result back to t, x_t ← √(ᾱ_t/ᾱ_s)·x_s + √(1 − ᾱ_t/ᾱ_s)·z (the forward process
from s to t), and nudge again, k times in all. Each pass moves the picture a little further along the loss, and
the denoise-then-renoise keeps it on the model's own path. It costs k guided passes and 2(k − 1) more model calls
per guided step.

**Base model.** *Unconditional*: the diffusion model gets no prompt, so CLIP does all the steering.
*Conditional*: it also gets a base prompt with classifier-free guidance w (Guidance tab). Hub models need a
network; offline, the bundled tiny CLIP and toy model work.
"""


FOOLED = f"""
**The naive setting** (the third example: scale {NAIVE['scale']:g}, plain CLIP on cutouts of x̂0, every step) lowers
the CLIP loss a lot and draws saturated per-pixel colour noise with no shape. The judge (which renders every toy
shape and compares, no learnt parts) reads no prompt shape, and the roughness (mean |Laplacian|) jumps ~10x.

**Why.** ∇_x L of a network's score is an *adversarial* direction: CLIP was trained on clean toy pictures only,
and the cheapest way to raise its score is a tiny per-pixel pattern it over-reacts to, not a red circle. Early
in sampling x̂0 is a blur CLIP never saw, so its gradient there is close to arbitrary; scaled up, those patterns
become the picture. A lower loss only says the optimiser worked on CLIP, so the tab judges the picture by
rendering instead, and warns when the loss falls while the roughness more than doubles.

**What helps** (measured with `python -m pipelines.guidance_judge`, table in docs/measurements.md): the gradient
*through the UNet* (the default: the denoiser's Jacobian keeps only changes it could draw, so the shape moves
too, not just the colour); guiding only the early steps (where the picture's layout is decided, and the later
unguided steps clean it up); smoothing the gradient (only shape- and colour-sized changes); a unit-size step
and a small scale; several small passes per guided step with time travel rather than one big one (the default:
4 passes of 0.2 over the first half of the steps). A *noise-aware* image tower trained on noised x_t with the timestep as input (GLIDE) gives
a meaningful gradient at every step too, but this small one moves the colour more than the shape.

**The seed's bug** (fourth example). Seed 000 runs `set_timesteps(1000)` and multiplies the gradient by
`alphas_cumprod[i]` with the loop counter i = 999 − t, so its factor is √ᾱ at 999 − t: full strength at the
noisiest step, almost none at the end, the opposite of √ᾱ_t. The toggle *{LG.SCALINGS['seed_bug']}* reproduces
it: the push lands early, when x̂0 is a blur, and nothing corrects the last steps.

**A robust tower** (fifth example: the naive setting again, CLIP model *{TOY_CLIP_ROBUST}*). Its image tower
was trained against the worst small change of each picture (adversarial training: at every step an attacker
looks for the pattern of length ≤ 1 that fools it most, and the tower learns to answer right anyway). Tiny
per-pixel patterns then no longer move its score, so the only way down its loss is a bigger change: its
gradient draws blocks of colour and shape edges, not pixel noise (robust models have *perceptually aligned*
gradients, Santurkar et al. 2019): at seed 1 a red disc on white, drawn as a rounded diamond, where the plain tower
draws noise at every seed. Still too strong at this scale to be a clean picture, and it reads shapes
less well than the plain tower (85 % of clean toy images right against 98 %), so the default keeps the plain
tower; docs/measurements.md has both on the judge.
"""


def create(runtime) -> dict:
    """Build the tab inside the caller's ``gr.Blocks`` / ``gr.Tab``."""
    reg = runtime.registry
    gr.Markdown(
        "CLIP is a model that scores how well a picture matches a text; here its score steers the sampler. "
        "Press **Run** to make the same picture twice from the same noise, without and with CLIP pushing it "
        "towards your prompt.", elem_classes=["dl-intro"])
    with gr.Row(elem_classes=["dl-main"]):
        with gr.Column(scale=1, min_width=300, elem_classes=["dl-controls"]):
            prompt = gr.Textbox("a red circle on a white background", label="CLIP prompt (what to steer towards)",
                                max_lines=2, elem_id="clip-prompt")
            scale = gr.Slider(0, MAX_CLIP_SCALE, value=DEFAULT["scale"], step=0.05,
                              label="how hard to steer (CLIP guidance scale)", elem_id="clip-scale")
            with gr.Row(equal_height=False, elem_classes=["dl-runrow"]):
                seed = seed_input("seed", min_width=120)
                run = gr.Button("Run with and without", variant="primary", elem_id="clip-run",
                                elem_classes=["dl-run"], size="lg", min_width=140)
            with gr.Accordion("Advanced", open=False):
                clip_name = gr.Dropdown(reg.clip_names(), value=DEFAULT.get("clip", reg.default_clip), label="CLIP model")
                model = gr.Dropdown(reg.diffusion_names(), value=reg.default_diffusion, label="diffusion model")
                tower = gr.Radio(TOWERS, value=preset_values(DEFAULT)[3], label="CLIP image tower")
                base_mode = gr.Radio(BASE_MODES, value=BASE_MODES[0], label="base model")
                with gr.Row():
                    base_prompt = gr.Textbox("", label="base prompt (conditional; empty = the CLIP prompt)")
                    cfg = gr.Slider(0, MAX_CFG, value=3.0, step=0.5, label="CFG w (conditional)")
                with gr.Row():
                    cuts = gr.Slider(1, 32, value=DEFAULT.get("n_cutouts", 4), step=1, label="cutouts n (plain tower)")
                    steps = gr.Slider(2, 100, value=30, step=1, label="steps (DDIM)")
                scaling = gr.Dropdown([(f"{v}  ({k})", k) for k, v in LG.SCALINGS.items()],
                                      value=DEFAULT.get("scaling", "none"), label="gradient × per step")
                normalize = gr.Checkbox(bool(DEFAULT.get("normalize")), label="unit-RMS gradient per step "
                                        "(off: the raw gradient, whose size is the loss's slope: tiny here)")
                with gr.Row():
                    guide_end = gr.Slider(0.05, 1.0, value=DEFAULT.get("guide_range", (0, 1.0))[1], step=0.05,
                                          label="guide only the first … of the steps")
                    smooth = gr.Slider(1, 16, value=DEFAULT.get("smooth", 1), step=1,
                                       label="smooth the gradient over k × k pixels")
                recur = gr.Slider(1, LG.MAX_RECUR, value=DEFAULT.get("recur", 1), step=1,
                                  label="passes per guided step (time travel: step on, noise back, guide again)")
        with gr.Column(scale=2, elem_classes=["dl-output"]):
            gallery = gr.Gallery(label="same seed: without | with", columns=2, elem_id="clip-gallery",
                                 object_fit="contain", elem_classes=["dl-gallery", "dl-pixelated", "dl-big"])
            md = gr.Markdown(elem_id="clip-info")
            traj = gr.State(None, time_to_live=900)
            # any step count until the first run sets the range, so an API client may play or scrub at once
            step = gr.Slider(1, MAX_STEPS, value=1, step=1, label="step: scrub or play both runs side by side",
                             interactive=False, visible=False, elem_id="clip-scrub")
            play = player.controls("clip")
    with gr.Row():
        loss_plot = gr.Plot(label="loss per step")
        heat = gr.Plot(label="gradient magnitude")
    # Run on click, cached server-side after the first run (deterministic: same seed, same images).
    clip0, model0 = reg.default_clip, reg.default_diffusion
    clip_d = DEFAULT.get("clip", clip0)  # the defaults' CLIP (the naive example keeps toy-clip)
    fixed = [BASE_MODES[0], "", 3.0]
    cuts_d, scale_d, scaling_d, tower_d, norm_d, end_d, sm_d, rec_d = preset_values(DEFAULT)
    cuts_n, scale_n, scaling_n, tower_n, norm_n, end_n, sm_n, rec_n = preset_values(NAIVE)
    inputs = [clip_name, model, prompt, base_mode, base_prompt, cfg, cuts, scale, scaling, steps, seed, tower,
              normalize, guide_end, smooth, recur]
    gr.Examples([[clip_d, model0, "a red circle on a white background", *fixed, cuts_d, scale_d, scaling_d, 30, 1,
                  tower_d, norm_d, end_d, sm_d, rec_d],
                 [clip_d, model0, "a blue square on a black background", *fixed, cuts_d, scale_d, scaling_d, 30, 5,
                  tower_d, norm_d, end_d, sm_d, rec_d],
                 [clip0, model0, "a red circle on a white background", *fixed, cuts_n, scale_n, scaling_n, 30, 0,
                  tower_n, norm_n, end_n, sm_n, rec_n],
                 [clip0, model0, "a red circle on a white background", *fixed, cuts_n, 1.0, "seed_bug", 30, 0,
                  tower_n, norm_n, end_n, sm_n, rec_n],
                 [TOY_CLIP_ROBUST, model0, "a red circle on a white background", *fixed, cuts_n, scale_n, scaling_n,
                  30, 1, tower_n, norm_n, end_n, sm_n, rec_n]],
                inputs, [gallery, loss_plot, heat, md], fn=user_errors(functools.partial(clip_run, runtime)),
                example_labels=["steers: red circle (defaults)", "steers: blue square (defaults)",
                                f"fooled CLIP: the naive setting (scale {NAIVE['scale']:g} every step, plain tower)",
                                "the seed's bug: factor running backwards",
                                "the naive setting on a robust tower: shapes, not pixel noise"],
                cache_examples=True, cache_mode="lazy", label="examples (click to run; cached after the first run)",
                elem_id="clip-examples")
    with gr.Accordion("Why CLIP gets fooled", open=False, elem_id="clip-fooled"):
        gr.Markdown(FOOLED)
    with gr.Accordion("The maths", open=False):
        gr.Markdown(MATHS)
    run.click(user_errors(functools.partial(clip_run_recorded, runtime)), inputs,
              [gallery, loss_plot, heat, md, traj], api_name="clip_guidance_run").success(
        lambda tr: gr.Slider(maximum=max(_count(tr), 2), value=_count(tr), interactive=_count(tr) > 1, visible=True),
        traj, step,
        api_visibility="private", show_progress="hidden")
    step.input(player.errors(scrub), [traj, step], [gallery, md], api_name="clip_scrub", show_progress="hidden",
               trigger_mode="always_last", concurrency_limit=None)
    player.wire(play, "clip", show_pair, _count, traj, step, [gallery, md])
    return {"clip": clip_name, "model": model, "prompt": prompt, "base": base_mode, "base_prompt": base_prompt,
            "cfg": cfg, "cutouts": cuts, "scale": scale, "scaling": scaling, "steps": steps,
            "seed": seed, "tower": tower, "normalize": normalize, "guide_end": guide_end, "smooth": smooth,
            "recur": recur}  # lecture-mode URL keys


if __name__ == "__main__":
    from pipelines.runtime import Runtime

    with gr.Blocks(title=TITLE) as demo:
        create(Runtime.create("auto"))
    demo.launch()
