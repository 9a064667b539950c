"""Tab "Start here": the whole story of text-to-image on one screen, live on the bundled toy-sd.

prompt → tokens → text encoder → the denoising loop (x_t and x̂0 animating) → the picture; each box
has a button to the tab that explains it. UI only: tokens and features come from :mod:`pipelines.tour`,
the loop is :func:`pipelines.diffusion.loop.sample_steps`; a run is replayed by :mod:`demos.player`.
"""

from __future__ import annotations

import functools
import html
import math

import gradio as gr
import numpy as np
import torch

from demos import player
from demos.common import image_file, room_limit, user_errors
from demos.components import seed_input
from demos.style import BIG, PIXELATED
from pipelines import images, tour, validation
from pipelines.diffusion import loop

TITLE = "Start here"
STEPS, MAX_STEPS = 20, 60
GUIDANCE = 4.0
SAMPLER = "DDIM"
DEFAULT_PROMPT = "a yellow star on a navy background"
FEATURE_ROWS_PX = 6  # each token slot's row of numbers is this many pixels tall (each number 3 px wide)

# (tab title, tab id) each box links to
LINKS = {"encoder": ("CLIP guidance", "clip_guidance"),
         "loop": ("Denoising viewer", "denoising_viewer"), "noise": ("Forward noising", "forward_noising"),
         "picture": ("Guidance playground", "guidance")}
# Switch tabs in the page (keeps this tab's result); falls back to the tab's URL.
GO_JS = """() => {
  const b = [...document.querySelectorAll('button[role=tab]')].find(e => e.textContent.trim() === %s);
  if (b) { b.click(); window.scrollTo(0, 0); } else { window.location.search = '?tab=' + %s; }
}"""

MATHS = """
**1 · Tokens.** The tokenizer cuts the prompt into word pieces from a fixed vocabulary and numbers them, adds a
start and an end marker, and pads to a fixed length (16 slots for the toy model, 77 for Stable Diffusion).

**2 · Text encoder.** A transformer (the text half of a CLIP model) turns the token numbers into one vector per
slot, here 64 numbers each; every vector depends on the whole prompt (attention). The picture shows them as
rows, blue < 0 < red.

**3 · The loop.** The picture starts as pure Gaussian noise x_T. At every step the UNet looks at the noisy
image x_t and, through cross-attention, at the text vectors, and predicts the noise ε̂ in it. That gives a guess
of the finished picture, x̂0 = (x_t − √(1−ᾱ_t)·ε̂)/√ᾱ_t (ᾱ_t: the share of the picture left at noise level t),
and the sampler moves x_t a little towards it, to a lower noise level. Classifier-free guidance runs the
UNet with and without the prompt and extrapolates with scale w: ε̂ = ε̂_u + w·(ε̂_c − ε̂_u).

**4 · The picture** is x_t after the last step. The toy model works at 32×32 pixels (shown enlarged, crisp).
"""


def _chips(t: tour.TextSide) -> str:
    """Tokens as HTML chips (escaped), the padding as a count."""
    chips = "".join(f"<span class='dl-chip{' dl-chip-marker' if s in (tour.START, tour.END) else ''}'>"
                    f"{html.escape(s)}</span>" for s in t.tokens)
    pad = f"<span class='dl-chip dl-chip-pad'>+ {t.padding} padding</span>" if t.padding else ""
    return f"<div class='dl-chips' id='start-token-list'>{chips}{pad}</div>"


def _features_png(t: tour.TextSide) -> str:
    arr = tour.features_image(t.features)  # [L, D, 3]
    return image_file(np.repeat(np.repeat(arr, FEATURE_ROWS_PX, axis=0), 3, axis=1), compress_level=1)


def _frame(rec, after: torch.Tensor) -> np.ndarray:
    """uint8 ``[2, h, w, 3]``: x_t after the step, and the x̂0 the model predicted in it."""
    return images.tensor_to_uint8(torch.cat([after, rec.pred_x0_rgb]))


def _info(k: int, n: int, t: float, a: float) -> str:
    return f"**step {k} / {n}** · noise level t = {t:.0f} · picture left √ᾱ_t = {math.sqrt(a):.2f}"


def run(runtime, prompt, seed, steps):
    """Generator: (tokens html, features image, x_t, x̂0, info, final image, recorded run) per step."""
    n = validation.integer("steps", steps, 1, MAX_STEPS)
    reg = runtime.registry
    model = reg.diffusion(reg.diffusion_names(kind="toy")[0] if reg.diffusion_names(kind="toy") else None)
    text = tour.text_side(model, reg.clip().tokenizer, prompt)
    chips, feats = _chips(text), _features_png(text)
    skip = gr.skip()
    gen = validation.generator(seed)
    frames, meta, prev = [], [], None
    for rec in loop.sample_steps(model, prompt, sampler=SAMPLER, num_inference_steps=n, guidance_scale=GUIDANCE,
                                 generator=gen, preview="auto"):
        if prev is None:
            yield chips, feats, image_file(rec.x_t_rgb[0]), None, f"**step 0 / {n}** · pure noise", None, skip
        else:
            frames.append(_frame(prev, rec.x_t_rgb))
            meta.append((float(prev.t), prev.alpha_bar))
            yield (skip, skip, image_file(frames[-1][0]), image_file(frames[-1][1]),
                   _info(len(frames), n, *meta[-1]), skip, skip)
        prev = rec
    frames.append(_frame(rec, rec.image))
    meta.append((float(rec.t), rec.alpha_bar))
    traj = {"frames": np.stack(frames), "meta": meta, "n": n}
    final = image_file(rec.image[0])
    yield (skip, skip, image_file(frames[-1][0]), image_file(frames[-1][1]),
           _info(n, n, *meta[-1]) + " · done: press ▶ Play to watch again", final, traj)


def _count(traj) -> int:
    return len(traj["frames"]) if traj else 0


def show(traj, k: int):
    f = traj["frames"][k - 1]
    return image_file(f[0]), image_file(f[1]), _info(k, traj["n"], *traj["meta"][k - 1])


def scrub(traj, k):
    if not traj:
        raise ValueError("Press 'Make a picture' first.")
    return show(traj, min(validation.integer("step", k, 1, MAX_STEPS), _count(traj)))


def _box(n: int, title: str, caption: str) -> None:
    gr.Markdown(f"#### {n} · {title}\n{caption}", elem_classes=["dl-box-head"])


def _link(key: str) -> gr.Button:
    title, tid = LINKS[key]
    btn = gr.Button(f"More: {title} →", size="sm", elem_classes=["dl-link"])
    btn.click(None, js=GO_JS % (_q(title), _q(tid)))
    return btn


def _q(s: str) -> str:
    import json

    return json.dumps(s)


def create(runtime) -> dict:
    """Build the tab inside the caller's ``gr.Blocks`` / ``gr.Tab``."""
    gr.Markdown("This is how a text-to-image model such as Stable Diffusion works, shown live on a tiny model that "
                "draws coloured shapes. Type what you want, press **Make a picture**, and follow it box by box "
                "(1 to 4); the buttons under them open the tabs that explain each part.", elem_classes=["dl-intro"])
    traj = gr.State(None, time_to_live=900)
    with gr.Row(equal_height=False, elem_classes=["dl-runrow"]):
        prompt = gr.Textbox(DEFAULT_PROMPT, label="your words (the toy model knows shapes, colours and backgrounds)",
                            max_lines=1, scale=4, elem_id="start-prompt")
        seed = seed_input("seed", scale=1, min_width=100)
        go = gr.Button("Make a picture", variant="primary", scale=1, size="lg", min_width=150,
                       elem_id="start-run", elem_classes=["dl-run"])
    with gr.Row(elem_classes=["dl-story"]):
        with gr.Column(scale=1, min_width=200):
            _box(1, "Tokens", "The words are cut into pieces the model has numbers for.")
            tokens = gr.HTML("<div class='dl-chips'>press <b>Make a picture</b></div>", elem_id="start-tokens")
            _box(2, "Text encoder", "A network turns the pieces into numbers that carry their meaning, one row "
                                    "per piece.")
            feats = gr.Image(label="text features (blue < 0 < red)", interactive=False, height=130,
                             elem_id="start-features", elem_classes=[PIXELATED], show_label=False)
            _link("encoder")
        with gr.Column(scale=2, min_width=300):
            _box(3, "Denoising loop", "It starts from pure noise. At every step the model guesses the finished "
                                      "picture (right) and removes a little noise (left).")
            with gr.Row(elem_classes=["dl-panels"]):
                img = dict(interactive=False, height=230, min_width=140)
                xt = gr.Image(label="x_t: the noisy picture", elem_id="start-xt", elem_classes=[PIXELATED, BIG], **img)
                x0 = gr.Image(label="x̂0: its guess of the end result", elem_id="start-x0",
                              elem_classes=[PIXELATED, BIG], **img)
            info = gr.Markdown(elem_id="start-info")
            step = gr.Slider(1, MAX_STEPS, value=1, step=1, label="step", interactive=True, elem_id="start-scrub")
            play = player.controls("start")
            with gr.Row():
                _link("loop")
                _link("noise")
        with gr.Column(scale=1, min_width=200):
            _box(4, "The picture", "After the last step the noise is gone: this is the picture.")
            final = gr.Image(label="the picture", interactive=False, height=230, elem_id="start-final",
                             elem_classes=[PIXELATED, BIG], show_label=False)
            with gr.Accordion("Advanced", open=False):
                steps = gr.Slider(1, MAX_STEPS, value=STEPS, step=1, label="steps", elem_id="start-steps")
            _link("picture")
    with gr.Accordion("The maths", open=False):
        gr.Markdown(MATHS)

    ev = go.click(user_errors(functools.partial(run, runtime)), [prompt, seed, steps],
                  [tokens, feats, xt, x0, info, final, traj], api_name="start_here", show_progress="minimal",
                  **room_limit(runtime))
    ev.success(lambda tr: gr.Slider(maximum=max(_count(tr), 2), value=_count(tr)), traj, step,
               api_visibility="private", show_progress="hidden")
    step.input(player.errors(scrub), [traj, step], [xt, x0, info], api_name="start_scrub", show_progress="hidden",
               trigger_mode="always_last", concurrency_limit=None)
    player.wire(play, "start", show, _count, traj, step, [xt, x0, info])
    return {"prompt": prompt, "seed": seed, "steps": steps}  # lecture-mode URL keys


if __name__ == "__main__":
    from pipelines.runtime import Runtime

    with gr.Blocks(title=TITLE) as demo:
        create(Runtime.create())
    demo.launch()
