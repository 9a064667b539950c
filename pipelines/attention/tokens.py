"""What the text side of a diffusion model does with a prompt: BPE tokens, per-token features, pooling.

One code path for the bundled toy-sd (open_clip ``SimpleTokenizer``, context 16, tiny-CLIP text
tower, 64-d features) and Stable Diffusion 1.x/2.x (transformers ``CLIPTokenizer``, context 77,
768/1024-d features). Both tokenizers are CLIP's byte-pair encoding: lower-cased words split into
pieces, ``</w>`` marking a word's last piece, wrapped in a start token ``<|startoftext|>`` and an end
token ``<|endoftext|>``, then padded (open_clip pads with id 0, SD 1.x with the end token) or
*truncated* to the context length: the end token then replaces the last kept piece and the rest is
cut off. :func:`tokens` shows what was cut, instead of dropping it silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import torch

from pipelines import validation


@dataclass(frozen=True)
class Token:
    """One BPE token. ``kind``: ``start`` | ``word`` | ``end`` | ``pad`` | ``cut`` (did not fit).
    ``position``: index in the context (None when cut off). ``seen``: the piece occurs in the model's
    training captions (None when the training vocabulary is unknown, e.g. hub models)."""

    position: int | None
    id: int
    piece: str
    kind: str
    seen: bool | None = None

    @property
    def text(self) -> str:
        """The piece as shown to people: ``</w>`` (end of a word) dropped."""
        return self.piece.replace("</w>", "")


@dataclass
class TokenView:
    """A prompt as the text encoder sees it.

    Attributes:
        prompt: the prompt as given.
        context_length: tokens the text encoder takes (16 toy-clip, 77 SD).
        ids: exactly the ids the encoder gets, length ``context_length``.
        tokens: one :class:`Token` per position (start, words, end, padding).
        cut: the word pieces that did not fit, in order (empty when the prompt fits).
    """

    prompt: str
    context_length: int
    ids: list[int]
    tokens: list[Token]
    cut: list[Token] = field(default_factory=list)

    @property
    def end_index(self) -> int:
        """Position of the (first) end token."""
        return next(t.position for t in self.tokens if t.kind == "end")

    @property
    def words(self) -> list[Token]:
        """The word pieces that made it into the context."""
        return [t for t in self.tokens if t.kind == "word"]

    @property
    def unseen(self) -> list[Token]:
        return [t for t in self.words + self.cut if t.seen is False]


def _is_open_clip(tok) -> bool:
    return hasattr(tok, "sot_token_id") and hasattr(tok, "decoder")


def context_length(tok) -> int:
    return int(tok.context_length if _is_open_clip(tok) else tok.model_max_length)


def _encode(tok, text: str) -> list[int]:
    """Word-piece ids of ``text`` without start/end tokens and without truncation."""
    if _is_open_clip(tok):
        return list(tok.encode(text))
    return list(tok(text, add_special_tokens=False, truncation=False).input_ids)


def _piece(tok, i: int) -> str:
    return tok.decoder[i] if _is_open_clip(tok) else tok.convert_ids_to_tokens(int(i))


def _specials(tok) -> tuple[int, int]:
    if _is_open_clip(tok):
        return int(tok.sot_token_id), int(tok.eot_token_id)
    return int(tok.bos_token_id), int(tok.eos_token_id)


def _model_ids(tok, prompt: str) -> list[int]:
    """The ids the model's own ``encode_prompt`` builds (registry): the tokenizer's ordinary call."""
    if _is_open_clip(tok):
        return [int(i) for i in tok([prompt])[0]]
    return [int(i) for i in tok([prompt], padding="max_length", max_length=tok.model_max_length,
                                truncation=True).input_ids[0]]


def tokens(model, prompt: str) -> TokenView:
    """``prompt`` -> :class:`TokenView` for ``model``'s tokenizer (a DiffusionModel or a tokenizer).

    Raises:
        ValueError: the model has no text side (unconditional), or the prompt is invalid.
    """
    tok = _tokenizer(model)
    prompt = validation.prompt(prompt)
    n = context_length(tok)
    sot, eot = _specials(tok)
    ids = _model_ids(tok, prompt)
    pieces = _encode(tok, prompt)
    kept = min(len(pieces), n - 2)  # the start and end tokens take two places
    vocab = training_vocabulary(model)
    seen = (lambda i: None) if vocab is None else (lambda i: i in vocab)
    out = [Token(0, sot, _piece(tok, sot), "start")]
    out += [Token(k + 1, p, _piece(tok, p), "word", seen(p)) for k, p in enumerate(pieces[:kept])]
    out.append(Token(kept + 1, eot, _piece(tok, eot), "end"))
    out += [Token(k, ids[k], _piece(tok, ids[k]), "pad") for k in range(kept + 2, n)]
    cut = [Token(None, p, _piece(tok, p), "cut", seen(p)) for p in pieces[kept:]]
    if [t.id for t in out] != ids:  # our reading of the tokenizer must match what the model is fed
        raise ValueError(f"token view disagrees with the tokenizer for {prompt!r}")
    return TokenView(prompt, n, ids, out, cut)


def unseen_words(model, prompt: str) -> list[str]:
    """The prompt's word pieces the model never read in training, each once, in prompt order (``[]`` when all
    were seen, or the vocabulary is unknown: hub models; ValueError for a model without a text encoder)."""
    out: list[str] = []
    for t in tokens(model, prompt).unseen:
        if t.text not in out:
            out.append(t.text)
    return out


def _tokenizer(model):
    tok = getattr(model, "tokenizer", model)
    if tok is None or not (_is_open_clip(tok) or hasattr(tok, "convert_ids_to_tokens")):
        name = getattr(model, "name", "this model")
        raise ValueError(f"{name} has no text encoder (it is unconditional): there are no tokens, text "
                         "features or cross-attention maps to show")
    return tok


VOCABULARY_KINDS = ("toy", "sd3")  # the bundled models whose training captions are known: toy-sd and toy-sd3


def training_vocabulary(model) -> frozenset[int] | None:
    """Ids of every word piece in the bundled model's training captions (None for other models).

    The captions are the toy world's (:func:`pipelines.toyworld.world.training_caption`): every shape,
    colour, background and size in the sentence templates of :meth:`Scene.caption`; for a model trained on
    captions as people write them (``model.captions == "natural"``) also every word of
    :func:`pipelines.toyworld.captions.training_words`."""
    if getattr(model, "kind", None) not in VOCABULARY_KINDS:
        return None
    vocab = _toy_vocabulary(_tokenizer(model))
    if model.captions == "natural":
        vocab = vocab | _natural_vocabulary(_tokenizer(model))
    return vocab


@lru_cache(maxsize=4)
def _natural_vocabulary(tok) -> frozenset[int]:
    from pipelines.toyworld.captions import training_words

    return frozenset(i for w in sorted(training_words()) for i in _encode(tok, w))


@lru_cache(maxsize=4)
def _toy_vocabulary(tok) -> frozenset[int]:
    from pipelines.toyworld import world

    ids: set[int] = set()
    for shape in world.SHAPES:
        for colour in world.COLORS:
            for bg in world.BACKGROUNDS:
                for size in world.SIZES:
                    scene = world.Scene(shape, colour, bg, size, 0.5, 0.5, 0.3)
                    for with_size in (True, False):
                        for with_bg in (True, False):
                            ids.update(_encode(tok, scene.caption(with_size, with_bg)))
    return frozenset(ids)


# ------------------------------------------------------------------ text features


@dataclass
class Features:
    """Per-token text features ``[L, D]`` (what cross-attention reads), the kept length and the pooled
    embedding ``[D']`` (CLIP's projection at the end token, what CLIP compares with images)."""

    view: TokenView
    per_token: torch.Tensor
    pooled: torch.Tensor | None


def features(model, prompt: str) -> Features:
    """Text features of ``prompt`` for ``model`` (float32, CPU)."""
    view = tokens(model, prompt)
    per_token = model.encode_prompt([view.prompt])[0].float().cpu()  # [L, D]
    pooled = model.encode_pooled([view.prompt])[0].float().cpu() if model.encode_pooled is not None else None
    return Features(view, per_token, pooled)


def similarity(model, prompt_a: str, prompt_b: str) -> tuple[torch.Tensor, TokenView, TokenView]:
    """Cosine similarity between the tokens (start .. end) of two prompts -> ``[La, Lb]`` in [-1, 1].

    CLIP's text encoder is causal: a token's feature depends on it and the tokens *before* it, so the
    features of every token after the first difference change (``a orange cross`` vs ``an orange cross``)."""
    fa, fb = features(model, prompt_a), features(model, prompt_b)
    a = fa.per_token[: fa.view.end_index + 1]
    b = fb.per_token[: fb.view.end_index + 1]
    sim = torch.nn.functional.normalize(a, dim=-1) @ torch.nn.functional.normalize(b, dim=-1).T
    return sim, fa.view, fb.view


def nearest_captions(model, prompt: str, k: int = 5) -> list[tuple[str, float]]:
    """The ``k`` toy-world captions whose pooled text embedding is nearest (cosine) to the prompt's.
    Empty for models without a pooled embedding."""
    if model.encode_pooled is None:
        return []
    from pipelines.toyworld.world import all_captions

    caps = all_captions(with_size=False)
    q = torch.nn.functional.normalize(model.encode_pooled([validation.prompt(prompt)]).float(), dim=-1)
    e = torch.nn.functional.normalize(_caption_embeddings(model, tuple(caps)), dim=-1)
    sims = (e @ q[0]).cpu()
    top = sims.topk(min(k, len(caps)))
    return [(caps[i], float(v)) for v, i in zip(top.values, top.indices)]


def _caption_embeddings(model, caps: tuple[str, ...]) -> torch.Tensor:
    key = "_dl_caption_embeddings"  # a process resource of a read-only model, like its weights
    cache = model.__dict__.setdefault(key, {})
    if caps not in cache:
        cache[caps] = torch.cat([model.encode_pooled(list(caps[i:i + 64])).float() for i in range(0, len(caps), 64)])
    return cache[caps]
