"""Sampling runs with cross-attention recorded or edited: the one loop (:func:`sample_steps`) inside a
:func:`pipelines.attention.maps.session`.

Attention control is Prompt-to-Prompt (Hertz et al. 2022) in its simplest form:

* **re-weighting** (:class:`Reweight`): the conditional prompt's attention probabilities to one token
  are multiplied by a factor (×0 removes the word's influence, ×2 strengthens it) in every
  cross-attention layer at every step, without renormalising (P2P's ``AttentionReweight``, paper §3.2).
  ``renormalise=True`` divides each pixel's row by its new sum afterwards, so ×0 is the token masked out
  of the softmax (its weight goes to the other tokens instead of nowhere). Scaling the token's *value*
  row instead of its probabilities is the same edit (P·diag(f)·V = (P·diag(f))·V), so it is not a variant.
  ``encoder=True`` also re-weights the word where the *text encoder* reads it: CLIP's text tower is causal, so
  every later token's feature is built by attending to the word; there its attention from later tokens is
  × factor and re-summed (the word's key masked at ×0, counted twice at ×2:
  :func:`pipelines.models.tinyclip.weighted_causal_mask`), then the UNet side as above;
* **word swap** (:class:`Swap`): source and target prompts run as one batch from the same x_T; for
  the first ``cross_fraction`` of the steps the target's cross-attention probabilities are replaced by
  the source's (and its self-attention for the first ``self_fraction``), so the layout stays and the
  word's content changes (P2P's ``AttentionReplace``; the prompts must have equally many tokens).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pipelines import validation
from pipelines.attention import maps as M
from pipelines.attention import tokens as T
from pipelines.diffusion import maths
from pipelines.diffusion.loop import sample_steps


class Reweight(M.Control):
    """Multiply the attention to token positions by ``factor`` (cross-attention, all steps).

    ``positions``: one list for every prompt (``[2]``) or one list per prompt (``[[2], [2, 3]]``: a word
    the tokenizer splits, e.g. ``cyan`` -> ``cy`` ``an``, has several). ``encoder``: also in the causal text
    encoder, for the tokens after each of ``positions`` (:meth:`key_weights`, module docstring)."""

    def __init__(self, positions, factor: float, renormalise: bool = False, encoder: bool = False):
        positions = [positions] if isinstance(positions, int) else list(positions)
        self.per_prompt = bool(positions) and isinstance(positions[0], (list, tuple))
        self.positions, self.factor, self.renormalise = positions, float(factor), bool(renormalise)
        self.encoder = bool(encoder)

    def key_weights(self, batch: int, length: int) -> torch.Tensor:
        """The text encoder's key weights ``[batch, length]``: ``factor`` at the positions, 1 elsewhere."""
        w = torch.ones(batch, length)
        for b in range(batch):
            w[b, list(self.positions[b] if self.per_prompt else self.positions)] = self.factor
        return w

    def edit(self, probs, step, cross):
        if not cross:
            return
        if not self.per_prompt:
            probs[..., self.positions] *= self.factor
        else:
            for b, pos in enumerate(self.positions):
                probs[b, ..., list(pos)] *= self.factor
        if self.renormalise:  # rows sum to 1 again: softmax over the other tokens (×0) or a sharper one (×2)
            probs /= probs.sum(-1, keepdim=True).clamp(min=1e-12)


class Swap(M.Control):
    """Give each odd prompt (target) the attention probabilities of the even prompt before it (source)
    in the early steps; the batch is [source, target, source, target, ...]."""

    edits_self = True

    def __init__(self, num_steps: int, cross_fraction: float = 0.8, self_fraction: float = 0.4):
        self.cross_steps = round(num_steps * cross_fraction)
        self.self_steps = round(num_steps * self_fraction)

    def edit(self, probs, step, cross):
        if step < (self.cross_steps if cross else self.self_steps):
            probs[1::2] = probs[0::2]


@dataclass
class AttentionRun:
    """One run with its recorded attention.

    Attributes:
        prompts: the prompts (batch order).
        views: their :class:`TokenView`.
        record: the maps (:class:`pipelines.attention.maps.Record`).
        x0: predicted x̂0 previews per step ``[S, B, 3, H, W]`` float16 in [-1, 1].
        image: the final images ``[B, 3, H, W]`` in [-1, 1] (float32).
        timesteps: the scheduler's t at each step.
    """

    prompts: list[str]
    views: list[T.TokenView]
    record: M.Record
    x0: torch.Tensor
    image: torch.Tensor
    timesteps: list

    @property
    def num_steps(self) -> int:
        return len(self.timesteps)

    def heatmaps(self, index: int = 0, steps=None, layers=None) -> torch.Tensor:
        """DAAM maps ``[T, H, W]`` of prompt ``index`` (see :func:`pipelines.attention.maps.aggregate`)."""
        return M.aggregate(self.record, steps=steps, layers=layers, index=index)

    def word_map(self, word: str, index: int = 0, steps=None, layers=None) -> torch.Tensor:
        """DAAM map ``[H, W]`` of ``word`` in prompt ``index``: the sum over its pieces (DAAM's word maps)."""
        return self.heatmaps(index, steps, layers)[find_tokens(self.views[index], word)].sum(0)


def find_tokens(view: T.TokenView, word: str) -> list[int]:
    """Positions of the pieces of ``word`` (case-insensitive; its first occurrence) in ``view``'s context.

    Raises:
        ValueError: the word is not in the prompt's kept tokens."""
    w = "".join(str(word).lower().split())
    words = view.words
    for i in range(len(words)):
        text = ""
        for j in range(i, len(words)):
            text += words[j].text
            if text == w and words[j].piece.endswith("</w>"):
                return [t.position for t in words[i:j + 1]]
            if not w.startswith(text):
                break
    raise ValueError(f"{word!r} is not in the tokens of {view.prompt!r}: {[t.text for t in words]}")


def find_token(view: T.TokenView, word: str) -> int:
    """Position of the first piece of ``word`` (see :func:`find_tokens`)."""
    return find_tokens(view, word)[0]


def run(model, prompts, *, seed: int = 0, steps: int = 30, guidance_scale: float = 4.0, sampler: str | None = None,
        control: M.Control | None = None, record: bool = True, max_side: int = M.MAX_SIDE,
        max_bytes: int = M.MAX_BYTES, latents: torch.Tensor | None = None) -> AttentionRun:
    """Sample ``prompts`` (one string or a list) through the one loop with attention recorded/edited.

    All prompts start from the same x_T drawn from ``seed`` (one draw, repeated), so a batch of two
    prompts differs only by the prompts (and any ``control``); or from ``latents`` ``[1 or B, C, h, w]``.

    Raises:
        ValueError: unconditional model, bad arguments.
    """
    M.check_cross_attention(model)
    if control is not None:
        check_control(model)
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    views = [T.tokens(model, p) for p in prompts]
    keep = max(v.end_index for v in views) + 1
    w = validation.number("guidance scale", guidance_scale, 0.0, validation.MAX_GUIDANCE)
    gen = validation.generator(seed)
    if latents is None:
        latents = maths.randn((1, *model.sample_shape), gen, model.device, model.unet.dtype)
    if latents.shape[0] not in (1, len(prompts)):
        raise ValueError(f"latents for {latents.shape[0]} images, {len(prompts)} prompts")
    latents = latents.expand(len(prompts), -1, -1, -1).clone()
    sess = M.Session(len(prompts), w != 1.0, model.sample_shape[1:], keep, record, control, max_side, max_bytes)
    emb = _encoder_side(model, views, control)
    x0, ts, image = [], [], None
    with M.session(model, sess):
        for rec in sample_steps(model, [v.prompt for v in views], guidance_scale=w, num_inference_steps=steps,
                                sampler=sampler, generator=gen, latents=latents, prompt_embeds=emb):
            x0.append(rec.pred_x0_rgb.to(torch.float16).cpu())
            ts.append(rec.t)
            sess.next_step(rec.num_steps)
            image = rec.image
    return AttentionRun([v.prompt for v in views], views, sess.record, torch.stack(x0), image.float().cpu(), ts)


def check_control(model) -> None:
    """ValueError, meant for the user, when ``model``'s attention cannot be edited (joint attention)."""
    if any(M.is_joint(m) for m in model.unet.modules()):
        raise ValueError(f"attention control (re-weighting, word swap) is not offered for joint attention: {model.name} "
                         "is an SD3-style transformer; its maps are recorded, but to edit attention choose toy-sd")


def _encoder_side(model, views: list[T.TokenView], control) -> torch.Tensor | None:
    """The prompts' text features with ``control``'s encoder-side weights (None: the model encodes as usual)."""
    if not (isinstance(control, Reweight) and control.encoder):
        return None
    if model.encode_weighted is None:
        raise ValueError(f"re-weighting inside the text encoder is offered for the bundled toy-clip text tower; "
                         f"{model.name}'s encoder does not offer it: choose 'UNet cross-attention only'")
    return model.encode_weighted([v.prompt for v in views], control.key_weights(len(views), views[0].context_length))


def reweight(model, prompt: str, word: str, factor: float, *, and_after: bool = False, renormalise: bool = False,
             encoder: bool = False, **kwargs) -> tuple[AttentionRun, AttentionRun]:
    """The plain run and the run with ``word``'s attention × ``factor`` (same seed) -> (plain, edited).

    ``renormalise``: rows re-summed to 1 (:class:`Reweight`). ``encoder``: in the text encoder too.
    ``and_after``: also every later token up to the end of the context. CLIP's text encoder is causal, so
    the word is also written into the features of every token after it; on toy-sd ×0 on the word alone
    rarely changes the image (``scripts/attention_eval.py``)."""
    check_control(model)
    factor = validation.number("attention factor", factor, 0.0, 10.0)
    view = T.tokens(model, prompt)
    idx = find_tokens(view, word)
    if and_after:
        idx = list(range(idx[0], view.context_length))
    control = Reweight(idx, factor, renormalise, encoder=encoder)
    return run(model, prompt, **kwargs), run(model, prompt, control=control, **kwargs)


def swap(model, source: str, target: str, *, steps: int = 30, cross_fraction: float = 0.8,
         self_fraction: float = 0.4, **kwargs) -> tuple[AttentionRun, AttentionRun]:
    """Word swap: (plain batch [source, target] from one x_T, the same with the source's maps injected).
    Image 1 of each run is the target."""
    check_control(model)
    va, vb = T.tokens(model, source), T.tokens(model, target)
    if va.end_index != vb.end_index:
        raise ValueError(f"word swap needs prompts with equally many tokens ({va.end_index - 1} vs "
                         f"{vb.end_index - 1}): swap one word for another single-token word")
    cf = validation.number("cross-attention injection fraction", cross_fraction, 0.0, 1.0)
    sf = validation.number("self-attention injection fraction", self_fraction, 0.0, 1.0)
    plain = run(model, [source, target], steps=steps, **kwargs)
    return plain, run(model, [source, target], steps=steps, control=Swap(steps, cf, sf), **kwargs)
