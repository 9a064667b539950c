"""What the app's fine-tuning view computes (issue 21): the session's fine-tuned toy-sd as a model the
sampling loop runs, same-seed samples in bounded chunks, the rendering judge's verdicts on them, and the
before/after figure. No gradio here (demos/train_finetune.py is the UI).

Images are ``[B, 3, 32, 32]`` in [-1, 1].
"""

from __future__ import annotations

import dataclasses
import itertools
import shutil
import zipfile
from pathlib import Path

import torch
from matplotlib.figure import Figure
from PIL import Image

from pipelines import validation
from pipelines.diffusion.loop import sample_steps
from pipelines.toyworld.render_judge import classify_by_rendering
from pipelines.toyworld.world import parse_caption
from pipelines.training.figures import to_image

SCALE = 4.0  # CFG scale of every sample here, as finetune.judge_rates
MAX_PROMPTS = 4  # per prompt set (new concept, old prompts)


def prompt_lines(text: str, name: str, max_n: int = MAX_PROMPTS) -> list[str]:
    """The non-empty lines of ``text`` as prompts (ValueError when there are none or more than ``max_n``)."""
    lines = [validation.prompt(line.strip(), name) for line in str(text or "").splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"{name}: write at least one prompt, one per line")
    if len(lines) > max_n:
        raise ValueError(f"{name}: at most {max_n} prompts (one per line), got {len(lines)}")
    return lines


def tuned_model(base, tuner):
    """``base`` (a :class:`pipelines.models.DiffusionModel`, toy-sd) with the session's fine-tuned UNet."""
    return dataclasses.replace(base, name=f"{base.name} (fine-tuned)", unet=tuner.unet)


def sampler(model, prompts: list[str], seed: int, steps: int = 20):
    """A :func:`sample_steps` iterator: DDIM with CFG at :data:`SCALE`, one generator seeded ``seed``, so the
    same prompts and seed give the same noise for every model (the before/after pairs)."""
    g = torch.Generator().manual_seed(validation.seed(seed))
    return sample_steps(model, prompts, sampler="DDIM", num_inference_steps=steps, guidance_scale=SCALE,
                        generator=g, preview="none")


def advance(it, k: int) -> torch.Tensor | None:
    """Run up to ``k`` steps of a :func:`sampler` iterator (one bounded chunk); the final images
    ``[B, 3, 32, 32]`` in [-1, 1] once it is done, else None."""
    for rec in itertools.islice(it, k):
        if rec.image is not None:
            return rec.image.clamp(-1, 1)
    return None


def verdicts(images: torch.Tensor, prompts: list[str], keys: tuple[str, ...]) -> list[bool | None]:
    """The rendering judge on each image against its prompt: True when every attribute of ``keys``
    ("shape", "color") the prompt names is read back; None when the prompt names none of them."""
    out = []
    for got, p in zip(classify_by_rendering(images), prompts):
        want = {k: v for k, v in parse_caption(p).items() if k in keys and v is not None}
        out.append(all(got[k] == v for k, v in want.items()) if want else None)
    return out


def rate(v: list[bool | None]) -> tuple[int, int]:
    """(right, judged) over the verdicts that could be judged."""
    judged = [x for x in v if x is not None]
    return sum(judged), len(judged)


def cycle(prompts: list[str], n: int) -> list[str]:
    """``n`` prompts cycling through ``prompts`` (seed i gets prompt i mod len)."""
    return [prompts[i % len(prompts)] for i in range(n)]


def _label(prompt: str) -> str:
    p = parse_caption(prompt)
    head = " ".join(x for x in (p["color"], p["shape"]) if x) or prompt[:14]
    return head + (f"\non {p['background']}" if p["background"] else "")


def before_after(new: tuple, old: tuple) -> Image.Image:
    """Figure: columns = prompts (new concept, then old prompts), rows = the bundled model and the
    fine-tuned one from the same noise; frames green / red where the rendering judge reads the prompt
    back / does not (grey: nothing to judge). ``new``/``old``: (prompts, before ``[B,3,H,W]``, after, verdicts)."""
    cols = [(p, b, a, v, kind) for kind, (ps, bs, as_, vs) in (("new", new), ("old", old))
            for p, b, a, v in zip(ps, bs, as_, vs)]
    fig = Figure(figsize=(1.25 * len(cols) + 0.6, 3.2), layout="constrained")
    axes = fig.subplots(2, len(cols), squeeze=False)
    for j, (p, b, a, v, kind) in enumerate(cols):
        for i, (img, ok) in enumerate(((b, None), (a, v))):
            ax = axes[i, j]
            ax.imshow(((img.permute(1, 2, 0) + 1) * 127.5).clamp(0, 255).byte().numpy(), interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            colour = "#999999" if ok is None else ("#1a9641" if ok else "#d7191c")
            for s in ax.spines.values():
                s.set_edgecolor(colour if i else "#cccccc")
                s.set_linewidth(3 if i else 1)
        axes[0, j].set_title(("new: " if kind == "new" else "old: ") + _label(p), fontsize=8)
    axes[0, 0].set_ylabel("bundled", fontsize=9)
    axes[1, 0].set_ylabel("fine-tuned", fontsize=9)  # no step number: the figure changes only when samples do
    return to_image(fig, dpi=90)


def export_zip(tuner, folder: Path) -> Path:
    """``folder/toy-sd-finetuned.zip``: unet/ (safetensors + config.json, ``UNet2DConditionModel.from_pretrained``),
    scheduler/, finetune_state.json and a README; the text encoder is the bundled toy-clip, unchanged."""
    root = Path(folder) / "toy-sd-finetuned"
    tuner.save(root, optimizer=False)
    (root / "README.txt").write_text(
        "toy-sd fine-tuned in Diffusion Lab (Train your own -> Fine-tune toy-sd).\n"
        "UNet2DConditionModel.from_pretrained('toy-sd-finetuned/unet'); scheduler/ is toy-sd's; the text encoder\n"
        "is the bundled toy-clip (assets/models/toy-clip), unchanged. pipelines.models.load_toy_diffusion reads\n"
        "the folder as a toy-sd.\n")
    zpath = Path(folder) / "toy-sd-finetuned.zip"
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(root.rglob("*")):
            if f.is_file():
                z.write(f, f.relative_to(folder))
    shutil.rmtree(root)
    return zpath
