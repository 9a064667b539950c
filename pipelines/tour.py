"""The "Start here" tour's compute: what the text side of a text-to-image model makes of a prompt.

A prompt becomes tokens (open_clip's BPE; one id per word piece, padded to the context length), then
the text encoder turns the tokens into one feature vector per token, ``[L, D]``, which the UNet reads
through cross-attention at every denoising step. Never imports gradio.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pipelines import validation

START, END = "⟨start⟩", "⟨end⟩"


@dataclass
class TextSide:
    """``tokens``: the word pieces the tokenizer made (start and end markers included, padding not);
    ``padding``: how many padding slots fill the context; ``features``: ``[L, D]`` float, the text
    encoder's output for all L slots (what cross-attention reads)."""

    tokens: list[str]
    padding: int
    features: torch.Tensor


def token_pieces(tokenizer, prompt: str) -> tuple[list[str], int]:
    """A prompt -> (its word pieces with start/end markers, number of padding slots).

    ``tokenizer``: open_clip's ``SimpleTokenizer`` (``decoder`` maps an id to its BPE piece, ``</w>`` ends
    a word). A prompt longer than the context is cut, as the model itself sees it."""
    prompt = validation.prompt(prompt)
    ids = [int(i) for i in tokenizer([prompt])[0].tolist()]  # [L]
    sot, eot = getattr(tokenizer, "sot_token_id", None), getattr(tokenizer, "eot_token_id", None)
    decoder = getattr(tokenizer, "decoder", {})
    pieces = []
    for i in ids:
        if i == sot:
            pieces.append(START)
        elif i == eot:
            pieces.append(END)
            break
        elif i == 0 and pieces:  # padding after a cut prompt (no end marker)
            break
        else:
            pieces.append(str(decoder.get(i, f"#{i}")).replace("</w>", ""))
    return pieces, len(ids) - len(pieces)


def text_side(model, tokenizer, prompt: str) -> TextSide:
    """The tokens and the text encoder's features of ``prompt`` for a text-conditional ``model``
    (``model.encode_prompt``: list of prompts -> ``[B, L, D]``); ValueError for an unconditional one."""
    if model.encode_prompt is None:
        raise ValueError(f"{model.name} takes no prompt: the tour needs a text-conditional model")
    pieces, pad = token_pieces(tokenizer, prompt)
    feats = model.encode_prompt([validation.prompt(prompt)])[0].detach().float().cpu()  # [L, D]
    return TextSide(pieces, pad, feats)


def features_image(features: torch.Tensor, rows: int | None = None) -> np.ndarray:
    """Features ``[L, D]`` -> uint8 ``[rows, D, 3]``: one row per token slot (the first ``rows``), each number
    coloured blue (negative) … white (0) … red (positive), on one scale for the whole picture."""
    f = features[: rows or features.shape[0]].float()
    v = (f / f.abs().max().clamp_min(1e-12)).clamp(-1, 1)  # [-1, 1]
    r, b = 1 - (-v).clamp_min(0), 1 - v.clamp_min(0)  # red fades on negatives, blue on positives
    g = 1 - v.abs()
    return (torch.stack([r, g, b], dim=-1) * 255).round().to(torch.uint8).numpy()
