"""Tab "Inside the model": the prompt's tokens, the text features, and where each token is read.

UI only: the maths is :mod:`pipelines.attention` (tokens, features, the recording attention
processor on the one sampling loop, DAAM aggregation, Prompt-to-Prompt re-weighting and word swap).
The recorded run (maps and x̂0 previews) lives in a ``gr.State``; nothing per-user in module globals.
Run alone for a quick look: ``python -m demos.inside_model``.
"""

from __future__ import annotations

import functools

import gradio as gr
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from matplotlib.figure import Figure

from demos.common import image_file, user_errors
from demos.components import seed_input
from pipelines import attention as A
from pipelines import images, validation
from pipelines.attention import maps as M

TITLE = "Inside the model"
SHOW_PX = 128  # each token's overlay, upscaled (nearest for the 32 px toy model)
MAX_STEPS = 100
DEFAULT_PROMPT = "a red circle on a navy background"
DEFAULT_OTHER = "a orange cross on a white background"
ALL_LAYERS = "all layers (DAAM)"
CUMULATIVE, SINGLE = "steps 1 … this step (DAAM sums over time)", "this step only"
READINGS = [("as recorded", "raw"), ("share of the words (DAAM normalize)", "share"),
            ("minus the words' mean", "centred")]  # pipelines.attention.maps.relative


# ------------------------------------------------------------------ tokens and features


def _model(runtime, name):
    """The model ``name``; a clear ValueError for a model without text / cross-attention, before loading it."""
    reg = runtime.registry
    name = name or reg.default_diffusion
    if reg.spec(name).kind == "pixel":
        raise ValueError(f"{name} has no cross-attention (it is unconditional: no prompt, no tokens), so there are "
                         "no tokens, text features or attention maps to show; choose a text-to-image model")
    return reg.diffusion(name)


def _control_model(runtime, name):
    """:func:`_model`, refusing joint-attention models before any sampling: their maps are recorded, not edited."""
    if runtime.registry.spec(name or runtime.registry.default_diffusion).kind == "sd3":
        raise ValueError(f"{name} is an SD3-style transformer (text and image tokens share one joint attention): its "
                         "maps are shown in 3., but re-weighting and word swap are offered for toy-sd only")
    return _model(runtime, name)


def token_table(runtime, model_name, prompt):
    """-> (rows for the table, markdown summary)."""
    model = _model(runtime, model_name)
    v = A.tokens(model, prompt)
    seen = lambda t: "" if t.seen is None else ("yes" if t.seen else "**never**")  # noqa: E731
    rows = [[t.position, t.piece, t.id, t.kind, seen(t)] for t in v.tokens if t.kind != "pad"]
    pads = [t for t in v.tokens if t.kind == "pad"]
    if pads:
        rows.append([f"{pads[0].position}…{pads[-1].position}", pads[0].piece, pads[0].id, f"pad ×{len(pads)}", ""])
    rows += [["cut", t.piece, t.id, "cut off", seen(t)] for t in v.cut]
    md = [f"**{len(v.words) + len(v.cut)} word pieces**; the text encoder takes **{v.context_length} tokens**: the "
          f"start token, {len(v.words)} pieces, the end token and {len(pads)} padding."]
    if v.cut:
        md.append(f"⚠️ **Too long: {len(v.cut)} pieces are cut off** and never reach the model: "
                  f"*{' '.join(t.text for t in v.cut)}*.")
    if v.unseen:
        md.append(f"Never in the training captions (the model has no idea what they mean): "
                  f"*{', '.join(sorted({t.text for t in v.unseen}))}*.")
    elif v.words and v.words[0].seen is not None:
        md.append("Every piece occurs in the training captions.")
    return rows, "\n\n".join(md)


def feature_views(runtime, model_name, prompt, other):
    """-> (feature heatmap figure, similarity figure, markdown with the pooled embedding and nearest captions)."""
    model = _model(runtime, model_name)
    f = A.features(model, prompt)
    end = f.view.end_index
    feats = f.per_token[: end + 1].numpy()
    labels = [t.text or t.piece for t in f.view.tokens[: end + 1]]
    fig = Figure(figsize=(8, 0.35 * len(labels) + 1.2), layout="constrained")
    ax = fig.subplots()
    lim = float(np.abs(feats).max())
    im = ax.imshow(feats, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set(xlabel=f"feature dimension (of {feats.shape[1]})", title="per-token text features (what cross-attention reads)")
    fig.colorbar(im, ax=ax, shrink=0.8)
    sim, va, vb = A.similarity(model, prompt, other)
    fig2 = Figure(figsize=(5.5, 4.5), layout="constrained")
    ax2 = fig2.subplots()
    im2 = ax2.imshow(sim.numpy(), cmap="viridis", vmin=min(0.0, float(sim.min())), vmax=1.0)
    ax2.set_yticks(range(sim.shape[0]), [t.text for t in va.tokens[: sim.shape[0]]], fontsize=8)
    ax2.set_xticks(range(sim.shape[1]), [t.text for t in vb.tokens[: sim.shape[1]]], fontsize=8, rotation=60)
    ax2.set_title("cosine similarity of token features", fontsize=10)
    fig2.colorbar(im2, ax=ax2, shrink=0.8)
    md = []
    if f.pooled is not None:
        p = f.pooled
        md.append(f"**Pooled embedding** ({p.numel()}-d; the end token's feature, projected): norm {float(p.norm()):.2f}, "
                  f"first values {', '.join(f'{float(x):+.2f}' for x in p[:6])} …")
    near = A.nearest_captions(model, prompt, k=5) if model.kind == "toy" else []
    if near:
        md.append("**Nearest training captions** (cosine of pooled embeddings): " +
                  "; ".join(f"*{c}* {s:.3f}" for c, s in near))
    md.append("The text encoder is *causal*: each token's feature depends on the tokens before it, so every "
              "token after the first difference between the two prompts changes (the diagonal after it drops).")
    return fig, fig2, "\n\n".join(md)


# ------------------------------------------------------------------ maps


def _overlay(x0: torch.Tensor, heat: torch.Tensor) -> np.ndarray:
    """x̂0 ``[3, H, W]`` in [-1, 1] under a heat map ``[h, w]`` in [0, 1] -> uint8 ``[H, W, 3]``."""
    h, w = x0.shape[-2:]
    if heat.shape[-2:] != (h, w):
        heat = F.interpolate(heat[None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
    base = images.tensor_to_uint8(x0.float()).astype(np.float32) / 255.0
    gray = base.mean(-1, keepdims=True)
    col = colormaps["inferno"](heat.clamp(0, 1).numpy())[..., :3]
    return (255 * (0.35 * gray + 0.65 * col)).clip(0, 255).astype(np.uint8)


def _layer_choices(run: A.AttentionRun) -> list[tuple[str, str]]:
    rec = run.record
    sides = sorted({rec.sides[n] for n in rec.layers}, reverse=True)
    out = [(ALL_LAYERS, ALL_LAYERS)] + [(f"all {h}×{w} layers", f"res:{h}x{w}") for h, w in sides]
    return out + [(M.layer_label(n, rec.sides[n]), n) for n in rec.layers]


def _layers(run: A.AttentionRun, choice: str):
    if not choice or choice == ALL_LAYERS:
        return None
    if choice.startswith("res:"):
        h, w = (int(v) for v in choice[4:].split("x"))
        return [n for n in run.record.layers if run.record.sides[n] == (h, w)]
    if choice not in run.record.maps:
        raise ValueError(f"unknown layer {choice!r}")
    return [choice]


def show_maps(run: A.AttentionRun, step, layer, mode, index: int = 0, reading: str = "raw"):
    """-> gallery of per-token overlays at ``step`` (1-based) and a caption; ``reading``: the maps as
    recorded, or relative to the other words (:func:`pipelines.attention.maps.relative`)."""
    if run is None:
        raise ValueError("run the model first (Record the maps)")
    k = validation.integer("step", step, 1, run.num_steps) - 1
    steps = [k] if mode == SINGLE else list(range(k + 1))
    reading = validation.choice("map reading", reading or "raw", M.MAP_MODES)
    heat = M.relative(run.heatmaps(index, steps=steps, layers=_layers(run, layer)), run.views[index].end_index, reading)
    heat = M.normalise(heat.clamp(min=0))  # [T, H, W] in [0, 1]
    x0 = run.image[index] if k == run.num_steps - 1 else run.x0[k, index]
    view = run.views[index]
    out = [(image_file(_overlay(x0, heat[t.position]), SHOW_PX), f"{t.position}: {t.text or t.piece}")
           for t in view.tokens[: view.end_index + 1]]
    cap = (f"Step {k + 1}/{run.num_steps} (t = {run.timesteps[k]}); each map scaled to its own maximum, over x̂0 "
           f"of that step. Maps kept: {run.record.nbytes / 1e6:.1f} MB for {run.num_steps} steps."
           + (JOINT_NOTE.format(*next(iter(run.record.sides.values())), *run.record.sample_hw)
              if any(n.startswith("transformer_blocks") for n in run.record.layers) else "")
           + READING_NOTES[reading])
    return out, cap


JOINT_NOTE = (" Joint attention (SD3-style): each map is the block of the attention matrix where the image tokens "
              "(the {}×{} patch grid of the {}×{} latents) attend to that text token, over heads and blocks; the rest "
              "of each row goes to image tokens.")
READING_NOTES = {
    "raw": "",
    "share": (" Read as each word's **share** of the attention the words get (DAAM's normalize: the start token, which "
              "takes most of every pixel's attention, and the end token left out): a pixel counts for the word it "
              "reads most, whether it reads the words a lot (the shape) or little (the background)."),
    "centred": " Read as each word's map **minus the words' mean** at each pixel: where it is read more than the average word.",
}


def record_maps(runtime, model_name, prompt, steps, guidance, seed, mode, reading="raw"):
    """Sample with the maps recorded -> (state, gallery, caption, step slider, layer dropdown, final image).
    UNets: cross-attention maps; SD3-style transformers: the text→image block of the joint attention."""
    model = _model(runtime, model_name)
    n = validation.integer("steps", steps, 1, MAX_STEPS)
    run = A.run(model, prompt, seed=validation.seed(seed), steps=n, guidance_scale=guidance)
    gal, cap = show_maps(run, n, ALL_LAYERS, mode, reading=reading)
    return (run, gal, cap, gr.Slider(1, n, value=n, step=1, interactive=n > 1),
            gr.Dropdown(choices=_layer_choices(run), value=ALL_LAYERS), image_file(run.image[0], 256))


def scrub(run, step, layer, mode, reading="raw"):
    """Re-draw the per-token maps at another step / layer / reading from the recorded run (no model call)."""
    return show_maps(run, step, layer, mode, reading=reading)


# ------------------------------------------------------------------ control


def _judge(model, imgs: torch.Tensor) -> list[dict] | None:
    if model.kind != "toy":
        return None
    from pipelines.toyworld.render_judge import locate_by_rendering

    return locate_by_rendering(imgs)


WHERE = [("UNet cross-attention only (Prompt-to-Prompt)", "unet"), ("text encoder and UNet", "encoder")]
WHERE_NOTE = ("**Where the word is re-weighted.** Prompt-to-Prompt scales the word's attention in the UNet's "
              "cross-attention only. But CLIP's text encoder is *causal*: every later token's feature is built by "
              "attending to the word, so the word also lives on in them and the UNet still reads it there. "
              "*Text encoder and UNet* also scales the later tokens' attention to the word inside the encoder "
              "(×0: the word's key masked for them, as Compel does; ×2: counted as if it stood twice).")


def reweight(runtime, model_name, prompt, word, factor, and_after, steps, guidance, seed, renormalise=False,
             where="unet"):
    """Plain vs re-weighted (same seed) -> (gallery, markdown). ``where``: ``unet`` or ``encoder`` (:data:`WHERE`)."""
    model = _control_model(runtime, model_name)
    n = validation.integer("steps", steps, 1, MAX_STEPS)
    where = validation.choice("where to re-weight", where or "unet", [v for _, v in WHERE])
    plain, edited = A.reweight(model, prompt, word, factor, and_after=bool(and_after), seed=validation.seed(seed),
                               steps=n, guidance_scale=guidance, renormalise=bool(renormalise),
                               encoder=where == "encoder")
    pos = A.find_tokens(plain.views[0], word)
    if and_after:
        pos = list(range(pos[0], plain.views[0].context_length))
    gal = [(image_file(plain.image[0], 256), "as prompted"),
           (image_file(edited.image[0], 256), f"attention to '{word}' ×{float(factor):g}")]
    enc = ("In the text encoder, every later token's attention to them × " f"{float(factor):g} (re-summed). "
           if where == "encoder" else "")
    md = (f"Token positions {pos} of *{plain.prompts[0]}*: {enc}the conditional prompt's attention probabilities to them "
          f"× {float(factor):g} in every cross-attention layer at every step (Prompt-to-Prompt re-weighting"
          + ("; then each pixel's weights re-summed to 1, so ×0 masks the word out of the softmax)." if renormalise
             else ", as in the paper: not re-summed, so ×0 sends the word's share nowhere)."))
    j = _judge(model, torch.cat([plain.image, edited.image]))
    if j:
        md += f"\n\nRendering judge: **{j[0]['color']} {j[0]['shape']}** → **{j[1]['color']} {j[1]['shape']}**."
    if not and_after and where == "unet":
        md += ("\n\nWhy ×0 on the word alone rarely changes the picture here: the causal text encoder also writes the "
               "word into every *later* token's features (see the similarity view), and the bundled toy-sd was measured "
               "to read it from all of them; choose *text encoder and UNet* to silence it there too "
               "(`scripts/attention_eval.py`).")
    return gal, md


def swap(runtime, model_name, source, target, cross_fraction, self_fraction, steps, guidance, seed):
    """Word swap -> (gallery [source, target, target with maps injected], markdown)."""
    model = _control_model(runtime, model_name)
    n = validation.integer("steps", steps, 1, MAX_STEPS)
    plain, inj = A.swap(model, source, target, steps=n, cross_fraction=cross_fraction, self_fraction=self_fraction,
                        seed=validation.seed(seed), guidance_scale=guidance)
    gal = [(image_file(plain.image[0], 256), f"source: {source}"),
           (image_file(plain.image[1], 256), "target, same x_T"),
           (image_file(inj.image[1], 256), "target, source's attention injected")]
    md = (f"Both prompts run as one batch from the same x_T. Injected: the source's cross-attention maps for the first "
          f"{float(cross_fraction):.0%} of the steps, its self-attention for the first {float(self_fraction):.0%}.")
    j = _judge(model, torch.cat([plain.image, inj.image[1:]]))
    if j and all(x["centroid"] for x in j):
        d = lambda a, b: ((a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2) ** 0.5  # noqa: E731
        md += (f"\n\nShape centre (rendering judge): source ({j[0]['centroid'][0]:.1f}, {j[0]['centroid'][1]:.1f}) px; "
               f"target moved **{d(j[0]['centroid'], j[1]['centroid']):.1f} px** without injection, "
               f"**{d(j[0]['centroid'], j[2]['centroid']):.1f} px** with; judged {j[1]['shape']} / {j[2]['shape']}.")
    return gal, md


# ------------------------------------------------------------------ layout


def create(runtime) -> dict:
    """Build the tab inside the caller's ``gr.Blocks`` / ``gr.Tab``."""
    reg = runtime.registry
    names = reg.diffusion_names()
    gr.Markdown("What happens to a prompt: the tokenizer cuts it into byte-pair pieces, the text encoder turns "
                "them into one feature vector per token, and at every step every **cross-attention** layer of the "
                "UNet lets each pixel read those vectors with softmax(QKᵀ/√d) weights: the weights of one token, as "
                "an image, show *where that word is read* (toy-sd3: its joint attention's image-to-text block).",
                elem_classes=["dl-intro"])
    with gr.Row():
        model = gr.Dropdown(names, value=names[0], label="diffusion model", elem_id="inside-model")
        prompt = gr.Textbox(DEFAULT_PROMPT, label="prompt", elem_id="inside-prompt")
    with gr.Accordion("1. Tokens", open=False):  # closed: the maps (3.) and their button fit the first screen
        tok_btn = gr.Button("Tokenize", elem_id="inside-tokens-run")
        tok_table = gr.Dataframe(headers=["position", "BPE piece", "id", "kind", "in training captions"],
                                 interactive=False, elem_id="inside-tokens", wrap=True,
                                 datatype=["str", "str", "str", "str", "markdown"])  # "never" in bold
        tok_md = gr.Markdown()
    with gr.Accordion("2. Text features", open=False):
        with gr.Row():
            other = gr.Textbox(DEFAULT_OTHER, label="second prompt (for the similarity)", elem_id="inside-other")
            feat_btn = gr.Button("Show features", elem_id="inside-features-run")
        with gr.Row():
            feat_plot = gr.Plot(label="features", elem_id="inside-features")
            sim_plot = gr.Plot(label="two prompts", elem_id="inside-similarity")
        feat_md = gr.Markdown()
    with gr.Accordion("3. Attention maps, step by step", open=True):
        run_state = gr.State(None, time_to_live=900)
        with gr.Row():
            steps = gr.Slider(2, MAX_STEPS, value=30, step=1, label="steps", elem_id="inside-steps")
            guidance = gr.Slider(0, validation.MAX_GUIDANCE, value=4.0, step=0.5, label="guidance scale w")
            seed = seed_input("seed")
            rec_btn = gr.Button("Record the maps", variant="primary", elem_id="inside-maps-run",
                                elem_classes=["dl-run"])
        with gr.Row():
            with gr.Column(scale=1, min_width=240, elem_classes=["dl-side"]):
                final = gr.Image(label="final image", interactive=False, height=256, elem_id="inside-final",
                                 elem_classes=["dl-pixelated", "dl-big"])
            with gr.Column(scale=3, elem_classes=["dl-output"]):
                step = gr.Slider(1, MAX_STEPS, value=1, step=1, interactive=False, label="step (scrub)",
                                 elem_id="inside-step")
                with gr.Row():
                    layer = gr.Dropdown([ALL_LAYERS], value=ALL_LAYERS, label="layers", elem_id="inside-layer",
                                        allow_custom_value=True)  # choices arrive with a run; scrub checks them
                    mode = gr.Radio([CUMULATIVE, SINGLE], value=CUMULATIVE, label="which steps")
                    reading = gr.Radio(READINGS, value="raw", label="read the maps", elem_id="inside-reading")
                gallery = gr.Gallery(label="where each token is read", columns=9, object_fit="contain",
                                     elem_id="inside-maps", elem_classes=["dl-gallery", "dl-pixelated", "dl-wrap"])
                cap = gr.Markdown()
    with gr.Accordion("4. Attention control (Prompt-to-Prompt)", open=False):
        with gr.Row():
            word = gr.Textbox("red", label="word to re-weight", elem_id="inside-word")
            factor = gr.Slider(0, 3, value=0.0, step=0.25, label="× attention")
            and_after = gr.Checkbox(False, label="and every later token (they carry the word too)")
            renorm = gr.Checkbox(False, label="re-sum each pixel's weights to 1 (×0 masks the word)")
            rw_btn = gr.Button("Re-weight (same seed)", elem_id="inside-reweight-run")
        with gr.Row():  # its own row: the two choices stay on one line each at 1366 px
            where = gr.Radio(WHERE, value="unet", label="where", elem_id="inside-where", scale=1)
            gr.Markdown(WHERE_NOTE, elem_id="inside-where-note")
        rw_gallery = gr.Gallery(label="plain | re-weighted", columns=2, object_fit="contain", elem_id="inside-reweight",
                                elem_classes=["dl-gallery", "dl-pixelated"])
        rw_md = gr.Markdown()
        with gr.Row():
            target = gr.Textbox("a red square on a navy background", label="target prompt (one word swapped)",
                                elem_id="inside-target")
            cross_f = gr.Slider(0, 1, value=0.8, step=0.05, label="inject cross-attention for this fraction of steps")
            self_f = gr.Slider(0, 1, value=0.4, step=0.05, label="inject self-attention for this fraction")
            sw_btn = gr.Button("Swap the word", elem_id="inside-swap-run")
        sw_gallery = gr.Gallery(label="source | target | target with the source's maps", columns=3,
                                object_fit="contain", elem_id="inside-swap", elem_classes=["dl-gallery", "dl-pixelated"])
        sw_md = gr.Markdown()

    bind = lambda f: user_errors(functools.partial(f, runtime))  # noqa: E731
    tok_btn.click(bind(token_table), [model, prompt], [tok_table, tok_md], api_name="inside_tokens")
    feat_btn.click(bind(feature_views), [model, prompt, other], [feat_plot, sim_plot, feat_md],
                   api_name="inside_features")
    rec_btn.click(bind(record_maps), [model, prompt, steps, guidance, seed, mode, reading],
                  [run_state, gallery, cap, step, layer, final], api_name="inside_maps")
    gr.on([step.release, layer.input, mode.input, reading.input], user_errors(scrub),
          [run_state, step, layer, mode, reading], [gallery, cap], api_name="inside_scrub", show_progress="hidden",
          trigger_mode="always_last")
    rw_btn.click(bind(reweight), [model, prompt, word, factor, and_after, steps, guidance, seed, renorm, where],
                 [rw_gallery, rw_md], api_name="inside_reweight")
    sw_btn.click(bind(swap), [model, prompt, target, cross_f, self_f, steps, guidance, seed], [sw_gallery, sw_md],
                 api_name="inside_swap")
    return {"model": model, "prompt": prompt, "other": other, "steps": steps, "guidance": guidance, "seed": seed,
            "word": word, "factor": factor, "target": target}  # lecture-mode URL keys


if __name__ == "__main__":
    from pipelines.runtime import Runtime

    with gr.Blocks(title=TITLE) as demo:
        create(Runtime.create("auto"))
    demo.launch()
