"""Merge a fine-tuned UNet with the weights it started from, tensor by tensor.

    # toy-sd, reads English: the template toy-sd with the fine-tune's cross-attention layers
    python -m pipelines.toyworld.merge_unets --base assets/models/toy-sd --tuned runs/toy-sd-natural \
        --alpha 0 --tuned-parts attn2 --out assets/models/toy-sd-natural

θ = (1 − α) θ_base + α θ_tuned for every tensor (WiSE-FT, Wortsman et al. 2022, "Robust fine-tuning of zero-shot
models", eq. 1: α = 0 is the starting model, α = 1 the fine-tuned one), except tensors whose name contains one of
``--tuned-parts``, which are the fine-tuned model's (α = 1). ``attn2`` names diffusers' cross-attention layers
(query, key, value and output projections): the only layers of the UNet that read the text features (keys and
values from the text, queries from the image). Custom Diffusion (Kumari et al. 2023) fine-tunes only their key
and value projections to teach a UNet new words; here they are taken from a full fine-tune, so the model reads the
new captions while every other weight, and so most of what it draws, stays the starting model's. Which merge
ships, and why, is in the model card (chosen by the rendering judge on the old template's held-out colour-shape
pairs and on held-out phrasings).

Both folders hold ``unet/`` (config + ``diffusion_pytorch_model.safetensors``) and ``scheduler/``; the two UNets
must share one architecture. The result goes to ``--out/unet`` in ``--dtype`` (fp16 as shipped) with the tuned
model's config and scheduler. The text encoder is the tuned model's (toy-clip-natural): on the old template its
token features are the ones the template toy-sd was trained on (toy-clip-natural's card: cosine 0.9993).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Sequence

import torch
from safetensors.torch import load_file, save_file

WEIGHTS = "diffusion_pytorch_model.safetensors"


def merge(base: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor], alpha: float,
          tuned_parts: Sequence[str] = ()) -> dict[str, torch.Tensor]:
    """(1 − α) base + α tuned for every tensor, float32; tensors whose name contains one of ``tuned_parts`` are
    ``tuned``'s. -> a new state dict (same keys and shapes). Raises ValueError when the keys or shapes differ,
    α is outside [0, 1], or a part names no tensor."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if base.keys() != tuned.keys():
        raise ValueError(f"the two models differ in {sorted(base.keys() ^ tuned.keys())[:5]}")
    for part in tuned_parts:
        if not any(part in k for k in base):
            raise ValueError(f"no tensor's name contains {part!r}")
    out = {}
    for k, b in base.items():
        if b.shape != tuned[k].shape:
            raise ValueError(f"{k}: shapes {tuple(b.shape)} and {tuple(tuned[k].shape)} differ")
        a = 1.0 if any(part in k for part in tuned_parts) else alpha
        out[k] = torch.lerp(b.float(), tuned[k].float(), a)  # b + a (t − b)
    return out


def build(base: Path, tuned: Path, alpha: float, out: Path, tuned_parts: Sequence[str] = (),
          dtype: torch.dtype = torch.float16) -> Path:
    """Write the merged UNet to ``out/unet`` (and the tuned model's scheduler to ``out/scheduler``)."""
    base, tuned, out = Path(base), Path(tuned), Path(out)
    mix = merge(load_file(base / "unet" / WEIGHTS), load_file(tuned / "unet" / WEIGHTS), alpha, tuned_parts)
    config = json.loads((tuned / "unet" / "config.json").read_text())
    (out / "unet").mkdir(parents=True, exist_ok=True)
    save_file({k: v.to(dtype).contiguous() for k, v in mix.items()}, out / "unet" / WEIGHTS)
    config["_name_or_path"] = f"merge_unets alpha={alpha:g}" + "".join(f" +{p}" for p in tuned_parts)
    (out / "unet" / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    if (tuned / "scheduler").resolve() != (out / "scheduler").resolve():
        shutil.copytree(tuned / "scheduler", out / "scheduler", dirs_exist_ok=True)
    return out / "unet" / WEIGHTS


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", type=Path, required=True, help="the model fine-tuning started from (unet/, scheduler/)")
    ap.add_argument("--tuned", type=Path, required=True, help="the fine-tuned model (unet/, scheduler/)")
    ap.add_argument("--alpha", type=float, required=True, help="weight of the fine-tuned model, 0..1")
    ap.add_argument("--tuned-parts", nargs="*", default=[],
                    help="tensors whose name contains one of these are the fine-tuned model's (e.g. attn2.to_k)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--dtype", choices=("float16", "float32"), default="float16")
    args = ap.parse_args(argv)
    path = build(args.base, args.tuned, args.alpha, args.out, args.tuned_parts, getattr(torch, args.dtype))
    parts = f", the tuned model's {args.tuned_parts}" if args.tuned_parts else ""
    print(f"wrote {path} (alpha {args.alpha:g}{parts})")


if __name__ == "__main__":
    main()
