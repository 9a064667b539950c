"""Theory section "FID": Fréchet distance between rendered scenes and toy-sd samples, over the CFG scale w (seed 004).

UI only: the maths is :mod:`pipelines.theory.fid` and :mod:`pipelines.theory.fid_sweep`.
"""

from __future__ import annotations

import functools

import gradio as gr
import numpy as np
import torch
from matplotlib.figure import Figure

from demos.common import user_errors
from demos.components import seed_input
from pipelines import images, validation
from pipelines.theory import fid_sweep as S

TITLE = "FID"
SCALE_CHOICES = [0.0, 1.0, 3.0, 5.0, 7.5, 15.0]

INTRO = """
**FID** (Heusel et al. 2017) compares two *sets* of images, not one image with a prompt: embed every image, fit a
Gaussian to each set, and take the Fréchet distance between the two Gaussians,

$$\\mathrm{FID} = \\underbrace{\\|\\mu_1-\\mu_2\\|^2}_{\\text{mean part}} + \\underbrace{\\mathrm{Tr}\\big(\\Sigma_1+\\Sigma_2-2(\\Sigma_1\\Sigma_2)^{1/2}\\big)}_{\\text{covariance part}}$$

Here the embedding is toy-clip's image tower (128 numbers per image; the seed used Inception, which never saw
32 px shapes). The reference is a set of rendered scenes; toy-sd draws as many samples, prompted with the captions of
a second rendered set, at each guidance scale w. Two independent rendered sets give the **real-vs-real floor**: an
FID from N images is biased upwards (roughly by Tr Σ / N), so a sample set is good when it comes near that floor.
"""


def _figure(res: S.FidSweep) -> Figure:
    fig = Figure(figsize=(8.5, 3.4), layout="constrained")
    ax, ax_img = fig.subplots(1, 2, width_ratios=[3, 2])
    labels = ["real vs real"] + [f"w = {r['scale']:g}" for r in res.rows]
    parts = [res.real_vs_real] + [r["fid"] for r in res.rows]
    x = np.arange(len(labels))
    ax.bar(x, [p.mean for p in parts], color="tab:blue", label="mean part ‖μ₁−μ₂‖²")
    ax.bar(x, [p.covariance for p in parts], bottom=[p.mean for p in parts], color="tab:orange",
           label="covariance part")
    ax.set_xticks(x, labels, fontsize=8)
    ax.set(ylabel="FID (toy-clip embeddings)", title=f"{res.n} images per set, {res.dims} dims, {res.steps} DDIM steps")
    ax2 = ax.twinx()
    ax2.plot(x[1:], [100 * r["judged"] for r in res.rows], "ks--", label="samples judged right (%)")
    ax2.set(ylim=(0, 105), ylabel="judged right by rendering (%)")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper right")
    strip = torch.cat([torch.cat(list(r["images"][:3]), dim=-2) for r in res.rows], dim=-1)  # [3, 3·32, n·32]
    ax_img.imshow(images.tensor_to_uint8(strip), interpolation="nearest")
    ax_img.set_xticks([(i + 0.5) * 32 for i in range(len(res.rows))], labels[1:], fontsize=7)
    ax_img.set_yticks([])
    ax_img.set_title("first samples at each w (same noise)", fontsize=9)
    return fig


def run(runtime, samples, steps, scales, pca, seed, progress=gr.Progress()):
    """The sweep -> (plot, markdown table)."""
    model = runtime.registry.diffusion(runtime.registry.diffusion_names(kind="toy")[0])  # toy-sd
    clip = runtime.registry.clip()
    n = validation.integer("samples per set", samples, 8, 256)
    if not scales:
        raise ValueError("tick at least one guidance scale w")
    ws = sorted(validation.number("guidance scale", w, 0.0, validation.MAX_GUIDANCE) for w in scales)
    k = validation.integer("PCA axes", pca, 0, 128)
    if k >= n:
        raise ValueError(f"PCA axes ({k}) must be fewer than the samples per set ({n}); 0 = all 128 dimensions")
    progress(0, desc="rendering and embedding the real sets")
    res = S.fid_sweep(model, clip, ws, n=n, steps=steps, seed=validation.seed(seed), pca=k or None, chunk=16,
                      callback=lambda d, t, what: progress(d / t, desc=what))
    note = ("" if res.dims < n else f"\n\n**Note**: {n} samples in {res.dims} dimensions: each covariance has rank "
            f"at most {n - 1}, so the covariance part is dominated by estimation noise (the real-vs-real floor shows "
            "how much). Set PCA axes to about N/4 for a steadier figure in fewer dimensions.")
    md = S.table(res) + (f"\n\nSamples: DDIM {res.steps} steps from the same initial noise at every w; their prompts are "
                         "the captions of the real-B scenes. *Judged right*: shape, colour and background read by "
                         "rendering (no learnt parts). A larger set (200 per w, all 128 dims) is measured by "
                         "`python -m pipelines.toyworld.evaluate --fid`; figures in toy-sd's model card." + note)
    return _figure(res), md


def create(runtime) -> dict:
    gr.Markdown(INTRO, elem_classes=["dl-intro"])
    with gr.Row(elem_classes=["dl-main"]):
        with gr.Column(scale=1, min_width=280, elem_classes=["dl-controls"]):
            samples = gr.Slider(8, 256, value=32, step=8, label="images per set (real A, real B, samples per w)",
                                elem_id="fid-samples")
            steps = gr.Slider(2, 50, value=10, step=1, label="DDIM steps per sample", elem_id="fid-steps")
            scales = gr.CheckboxGroup(SCALE_CHOICES, value=[0.0, 3.0, 7.5], label="guidance scales w",
                                      elem_id="fid-scales")
            pca = gr.Slider(0, 128, value=8, step=1, label="PCA axes of real A (0 = all 128 dimensions)",
                            elem_id="fid-pca")
            seed = seed_input(elem_id="fid-seed")
            gr.Markdown("32 images × 10 steps × 3 scales ≈ 2000 model calls: about a minute or two on 2 CPU cores.")
            run_btn = gr.Button("Measure FID over w", variant="primary", elem_id="fid-run")
        with gr.Column(scale=3):
            plot = gr.Plot(label="FID per w, split into its two parts", elem_id="fid-plot")
            info = gr.Markdown(elem_id="fid-info")
    run_btn.click(user_errors(functools.partial(run, runtime)), [samples, steps, scales, pca, seed], [plot, info],
                  api_name="theory_fid")
    return {"fid_samples": samples, "fid_steps": steps, "fid_scales": scales, "fid_pca": pca, "fid_seed": seed}
