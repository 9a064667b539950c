"""Sub-tab "Fine-tune toy-sd" of "Train your own": teach the bundled toy-sd a shape it never saw (the heart),
live, with or without prior preservation (seed 000's fine-tuning; DreamBooth's lesson), and watch what it
forgets. UI only: the fine-tune is :mod:`pipelines.training.finetune`, the samples, verdicts and figure
:mod:`pipelines.training.finetune_view`.

Training runs in chunks on the compute thread and takes a training slot, as the rest of the tab
(:mod:`demos.training_ui`). The session's fine-tune (a copy of the UNet, 11 MB) lives in ``gr.State`` with a
TTL; the optimiser's moments are dropped when a click ends, so an idle session holds the weights only.
The bundled model is never written.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import gradio as gr
import torch

from demos.common import png
from demos.components import SafeNumber
from demos.training_ui import CHUNK_SECONDS, compute, take_slot, train_chunk, user_errors
from pipelines import validation
from pipelines.models.specs import DEFAULT_DIFFUSION_SPECS, TOY_SD_DIR
from pipelines.training import figures
from pipelines.training import finetune_view as view
from pipelines.training.finetune import TRAINABLE, FineTuneConfig, FineTuner
from pipelines.training.slots import SLOTS

TITLE = "Fine-tune toy-sd"
BASE = next(s.name for s in DEFAULT_DIFFUSION_SPECS if s.kind == "toy" and Path(s.source) == TOY_SD_DIR)  # toy-sd
STATE_TTL = 1800
MAX_STEPS, MAX_SECONDS = 3000, 300  # per session / per click
PREVIEW_EVERY = 10.0  # seconds of training between before/after refreshes
LOSS_EVERY = 2.0  # seconds between loss curves
PREVIEW_STEPS, SAMPLE_CHUNK = 20, 4  # DDIM steps of a preview; sampling steps per compute-thread call
MAX_JUDGE_SEEDS = 32
NEW_PROMPTS = "a red heart on a white background\na blue heart on a black background\na yellow heart on a gray background"
OLD_PROMPTS = "a red circle on a white background\na green square on a black background\na blue triangle on a gray background"


def _config(prior_on, prior, lr, layers, seed) -> FineTuneConfig:
    prior = validation.number("prior preservation fraction", prior, 0.0, 0.9) if prior_on else 0.0
    return FineTuneConfig(lr=validation.number("learning rate", lr, 1e-6, 1e-2), prior=prior,
                          train=validation.choice("trained layers", layers, TRAINABLE), seed=validation.seed(seed))


def _sample(model, prompts: list[str], seed: int, ticket: int | None = None, steps: int = PREVIEW_STEPS):
    """Sample on the compute thread, :data:`SAMPLE_CHUNK` steps per call (other tabs answer in between)."""
    it = compute(view.sampler, model, prompts, seed, steps)
    while (img := compute(view.advance, it, SAMPLE_CHUNK)) is None:
        if ticket is not None:
            SLOTS.touch(ticket)
    return img


def _before(runtime, state: dict, prompts: list[str], seed: int, ticket: int) -> torch.Tensor:
    """The bundled model's samples for ``prompts`` (cached in the session: the bundled model never changes)."""
    key = (tuple(prompts), seed)
    if key not in state["before"]:
        if len(state["before"]) >= 8:
            state["before"].clear()
        state["before"][key] = _sample(runtime.diffusion(BASE), prompts, seed, ticket)
    return state["before"][key]


def _preview(runtime, state, new, old, seed, ticket):
    """(figure path, judge reading) of the session's fine-tune against the bundled model, same seed."""
    tuner = state["tuner"]
    prompts = new + old
    before = _before(runtime, state, prompts, seed, ticket)
    after = _sample(view.tuned_model(runtime.diffusion(BASE), tuner), prompts, seed, ticket)
    vn = compute(view.verdicts, after[:len(new)], new, ("shape",))
    vo = compute(view.verdicts, after[len(new):], old, ("shape", "color"))
    img = compute(view.before_after, (new, before[:len(new)], after[:len(new)], vn),
                  (old, before[len(new):], after[len(new):], vo))
    (h, hn), (o, on) = view.rate(vn), view.rate(vo)
    md = (f"**Judge** (rendering judge, these samples, step {tuner.step}, seed {seed}): new prompts read back as their shape "
          f"**{h}/{hn}**; old prompts right in shape and colour **{o}/{on}**. For a figure over many seeds, "
          "press **Judge on more seeds**.")
    return png(img, 1), md


def _status(tuner: FineTuner, t0: float, note: str) -> str:
    cfg, recent = tuner.cfg, tuner.losses[-20:]
    loss = f", loss {sum(recent) / len(recent):.4f} (mean of the last {len(recent)})" if recent else ""
    prior = f"prior preservation {cfg.prior:.0%} of each batch" if cfg.prior else "no prior preservation"
    return (f"Step {tuner.step} (session cap {MAX_STEPS}), {time.monotonic() - t0:.0f} s this click; {prior}, "
            f"lr {cfg.lr:g}, layers: {cfg.train}{loss}. {note}")


def train(runtime, state, new_text, old_text, prior_on, prior, steps, seconds, seed, lr, layers):
    """Stream (state, before/after figure, loss curve, judge reading, status) while fine-tuning the session's copy."""
    cfg = _config(prior_on, prior, lr, layers, seed)
    new, old = view.prompt_lines(new_text, "new-concept prompts"), view.prompt_lines(old_text, "old prompts")
    steps = validation.integer("steps", steps, 1, MAX_STEPS)
    seconds = validation.number("seconds", seconds, 1, MAX_SECONDS)
    state = state if isinstance(state, dict) else {"tuner": None, "before": {}}
    ticket = SLOTS.join()
    try:
        yield from take_slot(ticket, 5)
        t0 = time.monotonic()
        tuner = state["tuner"]
        if tuner is None or tuner.cfg != cfg:  # a changed recipe starts afresh from the bundled model
            yield state, gr.skip(), gr.skip(), gr.skip(), "Copying the bundled toy-sd…"
            tuner = state["tuner"] = compute(FineTuner.from_model, runtime.diffusion(BASE), cfg)
        if tuner.step >= MAX_STEPS:
            raise gr.Error(f"this session has fine-tuned {tuner.step} steps, the cap; change a setting to start afresh")
        fig, judge_md = _preview(runtime, state, new, old, cfg.seed, ticket)
        note = "training…" if tuner.step else "Step 0: the copy still equals the bundled model. Training…"
        yield state, fig, gr.skip(), judge_md, _status(tuner, t0, note)
        target, last, last_loss = min(tuner.step + steps, MAX_STEPS), time.monotonic(), 0.0
        start = tuner.step
        while tuner.step < target and (tuner.step == start or time.monotonic() - t0 < seconds):  # >= 1 chunk
            train_chunk(ticket, tuner, CHUNK_SECONDS, target - tuner.step)
            fig, judge_md, curve = gr.skip(), gr.skip(), gr.skip()
            if time.monotonic() - last > PREVIEW_EVERY:
                fig, judge_md = _preview(runtime, state, new, old, cfg.seed, ticket)
                last = time.monotonic()
            if time.monotonic() - last_loss > LOSS_EVERY:
                curve, last_loss = png(compute(figures.loss_curve, tuner.losses, "fine-tuning loss"), 1), time.monotonic()
            yield state, fig, curve, judge_md, _status(tuner, t0, "training…")
        capped = "" if tuner.step >= target else f"Stopped at the {seconds:.0f} s cap; press Train to go on."
        compute(tuner.release)
        fig, judge_md = _preview(runtime, state, new, old, cfg.seed, ticket)
        yield (state, fig, png(compute(figures.loss_curve, tuner.losses, "fine-tuning loss"), 1), judge_md,
               _status(tuner, t0, capped or "done."))
    finally:
        SLOTS.leave(ticket)


def judge(runtime, state, new_text, old_text, n, seed):
    """Stream (judge reading): the rendering judge over ``n`` seeds per prompt set, bundled vs fine-tuned."""
    if not isinstance(state, dict) or state.get("tuner") is None:
        raise gr.Error("fine-tune first: press Train")
    new, old = view.prompt_lines(new_text, "new-concept prompts"), view.prompt_lines(old_text, "old prompts")
    n, seed = validation.integer("seeds", n, 1, MAX_JUDGE_SEEDS), validation.seed(seed) + 1000
    models = {"bundled": runtime.diffusion(BASE), "fine-tuned": view.tuned_model(runtime.diffusion(BASE), state["tuner"])}
    sets = {"new": (view.cycle(new, n), ("shape",)), "old": (view.cycle(old, n), ("shape", "color"))}
    got = {}
    for name, model in models.items():
        for kind, (prompts, keys) in sets.items():
            yield f"Judging: sampling {n} {kind} prompts with the {name} model…"
            got[name, kind] = view.rate(compute(view.verdicts, _sample(model, prompts, seed), prompts, keys))

    def pct(name, kind):
        r, k = got[name, kind]
        return f"{r}/{k} ({r / k:.0%})" if k else "–"

    (bo, bk), (fo, fk) = got["bundled", "old"], got["fine-tuned", "old"]
    kept = f"{fo / bo:.0%} of the bundled model's" if bo else "–"
    yield (f"**Judge over {n} seeds** (rendering judge; seeds {seed}…{seed + n - 1}; step {state['tuner'].step})\n\n"
           "| model | new prompts judged their shape | old prompts right (shape and colour) |\n|---|---|---|\n"
           f"| bundled | {pct('bundled', 'new')} | {pct('bundled', 'old')} |\n"
           f"| fine-tuned | {pct('fine-tuned', 'new')} | {pct('fine-tuned', 'old')} |\n\n"
           f"Old-prompt adherence kept: **{kept}**.")


def download(state):
    """Zip of the fine-tuned weights: a ``from_pretrained`` folder (safetensors + config)."""
    if not isinstance(state, dict) or state.get("tuner") is None:
        raise gr.Error("fine-tune first: press Train")
    return str(compute(view.export_zip, state["tuner"], Path(tempfile.mkdtemp(prefix="finetune-"))))


def create(runtime) -> dict:
    """Build the sub-tab inside the caller's ``gr.Tab``; returns its URL keys."""
    gr.Markdown("Teach the bundled **toy-sd** a shape it never saw: the **heart**. Each batch is hearts drawn by the "
                "toy world with their captions, plus (prior preservation) old scenes with their old captions, so the "
                "model keeps what it knew. Watch the same-seed samples change: bundled model above, your copy "
                "below; frames are the rendering judge's verdict (green: the prompt is read back). The bundled "
                "model is never changed; your copy stays in this session and can be downloaded.",
                elem_classes=["dl-intro"])
    state = gr.State(None, time_to_live=STATE_TTL)
    with gr.Row():
        with gr.Column(scale=2, min_width=280):
            new = gr.Textbox(NEW_PROMPTS, lines=3, max_lines=4, label="new-concept prompts (one per line)")
            old = gr.Textbox(OLD_PROMPTS, lines=3, max_lines=4, label="old prompts: what must not be forgotten")
            with gr.Row():
                prior_on = gr.Checkbox(True, label="prior preservation")
                prior = gr.Slider(0.1, 0.9, value=0.5, step=0.1, label="old scenes per batch (fraction)")
            with gr.Row():
                steps = gr.Slider(1, MAX_STEPS, value=400, step=1, label="steps (this click)", elem_id="ft-steps")
                seconds = gr.Slider(5, MAX_SECONDS, value=MAX_SECONDS, step=5, label="seconds cap (this click)")
            with gr.Row():
                train_btn = gr.Button("Train", variant="primary", elem_id="ft-train-btn", elem_classes=["dl-run"])
                stop_btn = gr.Button("Stop", variant="stop", elem_id="ft-stop-btn")
            with gr.Accordion("Advanced: learning rate, layers, seed", open=False):
                lr = gr.Number(2e-4, label="learning rate (AdamW)")
                layers = gr.Radio(list(TRAINABLE), value="all", label="trained layers of the UNet")
                seed = SafeNumber(0, label="seed (data order and samples)", precision=0, minimum=0)
        with gr.Column(scale=3):
            samples = gr.Image(label="same seed: bundled (top) vs fine-tuned (bottom)", type="filepath",
                               interactive=False, elem_id="ft-samples")
            with gr.Row():
                loss = gr.Image(label="loss", type="filepath", interactive=False, elem_id="ft-loss")
                with gr.Column():
                    reading = gr.Markdown(elem_id="ft-judge")
                    n_seeds = gr.Slider(4, MAX_JUDGE_SEEDS, value=8, step=4, label="seeds per prompt set")
                    judge_btn = gr.Button("Judge on more seeds", elem_id="ft-judge-btn")
            status = gr.Markdown("Press **Train**: a 5-minute run teaches it hearts.", elem_id="ft-status")
            with gr.Row():
                dl = gr.Button("Download the fine-tuned weights", elem_id="ft-download-btn")
                dfile = gr.File(label="weights (zip: from_pretrained folder)")

    def train_fn(*args):
        yield from train(runtime, *args)

    def judge_fn(*args):
        yield from judge(runtime, *args)

    lim = 2 * SLOTS.capacity
    ev = train_btn.click(user_errors(train_fn), [state, new, old, prior_on, prior, steps, seconds, seed, lr, layers],
                         [state, samples, loss, reading, status], api_name="finetune_train", concurrency_limit=lim)
    stop_btn.click(lambda: "Stopped.", None, status, cancels=[ev], api_name="finetune_stop", queue=False)
    judge_btn.click(user_errors(judge_fn), [state, new, old, n_seeds, seed], reading, api_name="finetune_judge",
                    concurrency_limit=lim)
    dl.click(user_errors(download), state, dfile, api_name="finetune_download")
    return {"ft_prior": prior_on, "ft_steps": steps}
