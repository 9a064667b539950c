"""Theory section "ELBO per t": the variational bound of rendered scenes under toy-sd, term by term (seed 002).

UI only: the maths is :mod:`pipelines.theory.elbo` and :mod:`pipelines.theory.elbo_terms`.
"""

from __future__ import annotations

import functools

import gradio as gr
import numpy as np
from matplotlib.figure import Figure

from demos.common import image_file, user_errors
from demos.components import seed_input
from pipelines import validation
from pipelines.theory import elbo_terms as E

TITLE = "ELBO per t"
DEFAULT_PROMPT = "a red circle on a white background"
VARIANCES = [("β̃_t (the posterior's; DDPM's choice for the bound)", "beta_tilde"), ("β_t (the forward step's)", "beta")]
MC_TIMESTEPS = (5, 100, 400, 800)

INTRO = """
The training loss of a diffusion model is a simplified **variational bound** on −log p(x0) (DDPM eq. 5). Split over
t it is a sum of one KL divergence per step, each between two Gaussians, so each term is closed form:

$$-\\log p_\\theta(x_0) \\le \\underbrace{D_{KL}(q(x_T|x_0)\\,\\|\\,p(x_T))}_{L_T} + \\sum_{t>1}
\\underbrace{D_{KL}(q(x_{t-1}|x_t,x_0)\\,\\|\\,p_\\theta(x_{t-1}|x_t))}_{L_{t-1}} \\underbrace{-\\log p_\\theta(x_0|x_1)}_{L_0}$$

q(x\\_(t−1)|x\\_t, x0) = N(μ̃\\_t, β̃\\_t) is the true reverse step when x0 is known (eq. 7); the model's step uses its own
guess x̂0 in μ̃ and a fixed variance σ\\_t². With σ\\_t² = β̃\\_t the KL is ½(SNR\\_(t−1) − SNR\\_t)·‖x0 − x̂0‖²: a
*weighted* x0-error. Training with L\\_simple or Min-SNR changes only that weight.
"""


def _figure(res: E.ElboTerms, empty: E.ElboTerms | None) -> Figure:
    """Bars of L_{t−1} (bits/dim) over t on a log t axis (the terms change fastest near t = 0), and the three
    loss weightings over every t on a second axis."""
    fig = Figure(figsize=(8.5, 4.0), layout="constrained")
    ax = fig.subplots()
    t = res.t[1:].astype(float)
    ax.bar(t, res.bits[1:], width=0.18 * t, color="tab:blue", alpha=0.8, label="L_{t−1}: KL term at t (prompt)")
    if empty is not None:
        ax.plot(t, empty.bits[1:], "o", ms=3, color="tab:orange", label="the same, empty prompt")
    ax.set(xscale="log", yscale="log", xlabel="timestep index t (log scale; 1 = almost clean, 959 = pure noise)",
           ylabel="bits per dimension",
           title=f"ELBO terms of {res.num_images} rendered scenes; L_0 = {res.l0:.3f}, L_T = {res.lT:.1e} bits/dim")
    ax2 = ax.twinx()
    styles = {"ELBO": ("k-", "ELBO's weight on ‖x0−x̂0‖²"), "L_simple": ("g--", "L_simple's (ε-MSE)"),
              f"Min-SNR-{E.GAMMA:g}": ("r:", f"Min-SNR-γ's, γ = {E.GAMMA:g}")}
    every_t = np.arange(1, res.num_timesteps)
    for name, w in res.weights.items():
        style, label = styles.get(name, ("-", name))
        ax2.plot(every_t, w, style, lw=1.5, label=label)
    ax2.set_yscale("log")
    ax2.set_ylabel("loss weight per t (sums to 1)")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    fig.legend(h1 + h2, l1 + l2, fontsize=7, loc="outside lower center", ncol=3)
    return fig


def run(runtime, prompt, images, stride, variance, empty_too, seed, progress=gr.Progress()):
    """Render scenes for ``prompt`` and compute their ELBO terms -> (gallery, plot, markdown)."""
    model = runtime.registry.diffusion(runtime.registry.diffusion_names(kind="toy")[0])  # toy-sd: pixels, DDPM
    text = validation.prompt(prompt)
    x0, _ = E.scenes_for_prompt(text, images, seed)
    stride = validation.integer("stride", stride, 1, 480)
    var = validation.choice("reverse variance", variance, [v for _, v in VARIANCES])
    runs = 2 if empty_too else 1
    progress(0, desc="first timestep")
    res = E.elbo_terms(model, x0, text, stride=stride, variance=var, seed=validation.seed(seed),
                       callback=lambda d, t: progress(d / (t * runs), desc=f"t {d}/{t}"))
    empty = None
    if empty_too:
        empty = E.elbo_terms(model, x0, "", stride=stride, variance=var, seed=validation.seed(seed),
                             callback=lambda d, t: progress(0.5 + d / (2 * t), desc=f"empty prompt: t {d}/{t}"))
    kl = res.total - res.l0 - res.lT
    md = (f"**Bound on −log p(x0 | prompt): {res.total:.3f} bits/dim** for {res.num_images} rendered scenes of "
          f"\"{text}\" (32×32×3 = 3072 dimensions, 8-bit values). Parts: L_T = {res.lT:.1e} (the schedule ends at "
          f"SNR ≈ 1e-6: pure noise, nothing to pay), Σ L_t over the {res.num_timesteps - 1} KL terms = {kl:.3f}, "
          f"L_0 (the discretised decoder, σ_1² = β_1) = **{res.l0:.3f}**.\n\n"
          f"{len(res.t)} of {res.num_timesteps} timesteps evaluated (t = 0…{E.FIRST}, then every {stride}th; the "
          "sum interpolates between them: stride 1 evaluates all 960), one noisy x_t per image and t.")
    if empty is not None:
        md += (f"\n\nWith the **empty prompt**: {empty.total:.3f} bits/dim. The prompt is worth "
               f"{empty.total - res.total:+.3f} bits/dim ({(empty.total - res.total) * 3072:+.0f} bits per image).")
    md += ("\n\nRead the curves: the ELBO weights low t (little noise) enormously, L_simple still more, Min-SNR caps "
           "them at γ: toy-sd was trained with Min-SNR, so it spends little effort where the bound counts most, "
           "and L_0 dominates the bound (DDPM Table 2 reports the same split on CIFAR-10: most bits in the decoder, "
           "\"distortion\"). Only the weighting differs; the per-t error ‖x0 − x̂0‖² is the same quantity.")
    gallery = [(image_file(x, 96), f"scene {i + 1}") for i, x in enumerate(x0)]
    return gallery, _figure(res, empty), md


def mc_check(runtime, prompt, images, variance, seed, samples):
    """Closed form vs Monte Carlo at a few t -> markdown table."""
    model = runtime.registry.diffusion(runtime.registry.diffusion_names(kind="toy")[0])  # toy-sd: pixels, DDPM
    text = validation.prompt(prompt)
    x0, _ = E.scenes_for_prompt(text, images, seed)
    var = validation.choice("reverse variance", variance, [v for _, v in VARIANCES])
    m = validation.integer("Monte Carlo samples", samples, 10, 5000)
    rows = E.monte_carlo_check(model, x0, text, MC_TIMESTEPS, samples=m, variance=var, seed=validation.seed(seed))
    lines = ["| t | closed form (bits/dim) | Monte Carlo (bits/dim) | ± standard error | difference / error |",
             "|---|---|---|---|---|"]
    for r in rows:
        z = (r["mc"] - r["closed"]) / max(r["stderr"], 1e-300)
        lines.append(f"| {r['t']} | {r['closed']:.3e} | {r['mc']:.3e} | {r['stderr']:.1e} | {z:+.1f} |")
    return ("\n".join(lines) + f"\n\nAt each t: one x_t per image, then the KL between the two Gaussian steps in "
            f"closed form, and by sampling x_(t−1) ~ q(x_(t−1)|x_t, x0) {m} times and averaging log q − log p_θ "
            "(torch.distributions). They agree when |difference / error| is a few units or less; more samples shrink "
            "the error as 1/√samples.")


def create(runtime) -> dict:
    gr.Markdown(INTRO, elem_classes=["dl-intro"])
    with gr.Row(elem_classes=["dl-main"]):
        with gr.Column(scale=1, min_width=280, elem_classes=["dl-controls"]):
            prompt = gr.Textbox(DEFAULT_PROMPT, label="prompt (the scenes are rendered from it)", max_lines=1,
                                elem_id="elbo-prompt")
            images = gr.Slider(1, 8, value=4, step=1, label="rendered scenes", elem_id="elbo-images")
            stride = gr.Slider(1, 240, value=40, step=1, label="evaluate every k-th t (1 = all 960; slow)",
                               elem_id="elbo-stride")
            variance = gr.Radio(VARIANCES, value="beta_tilde", label="the model's reverse variance σ_t²",
                                elem_id="elbo-variance")
            empty_too = gr.Checkbox(False, label="also with the empty prompt (twice the time)", elem_id="elbo-empty")
            seed = seed_input(elem_id="elbo-seed")
            run_btn = gr.Button("Compute the ELBO terms", variant="primary", elem_id="elbo-run")
        with gr.Column(scale=3):
            scenes = gr.Gallery(label="the rendered scenes x0", columns=8, height=130, object_fit="contain",
                                elem_id="elbo-scenes", elem_classes=["dl-gallery", "dl-pixelated"])
            plot = gr.Plot(label="L_t per t and the loss weights", elem_id="elbo-plot")
            info = gr.Markdown(elem_id="elbo-info")
    with gr.Accordion("Cross-check: closed form vs Monte Carlo", open=False):
        with gr.Row():
            samples = gr.Slider(10, 5000, value=1000, step=10, label="Monte Carlo samples of x_(t−1)",
                                elem_id="elbo-mc-samples")
            mc_btn = gr.Button(f"Check at t = {', '.join(map(str, MC_TIMESTEPS))}", elem_id="elbo-mc-run")
        mc_md = gr.Markdown(elem_id="elbo-mc")
    bind = lambda f: user_errors(functools.partial(f, runtime))  # noqa: E731
    run_btn.click(bind(run), [prompt, images, stride, variance, empty_too, seed], [scenes, plot, info],
                  api_name="theory_elbo")
    mc_btn.click(bind(mc_check), [prompt, images, variance, seed, samples], mc_md, api_name="theory_elbo_mc")
    return {"elbo_prompt": prompt, "elbo_images": images, "elbo_stride": stride, "elbo_variance": variance,
            "elbo_seed": seed}
