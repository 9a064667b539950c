"""Captions as people write them, for the toy world: articles, word order, punctuation, synonyms.

The first toy models were trained on one template ("a {colour} {shape} on a {bg} background",
with omissions), so "an orange cross" or "On white, a red star." were never seen: toy-clip's
text tower is causal, so one unseen token shifts every later token's features, and toy-sd reads
those per-token features. This module generates varied, grammatical captions from a scene,
deterministically from a ``random.Random``, and keeps some phrasings out of training
(``HELD_OUT_TEMPLATES``) so the evaluation can measure generalisation to phrasings never seen.

A caption is built from
- a noun phrase: the right article ("a red star", "an orange star"), an optional size word
  (small/little/tiny, large/big; medium is never named), colour and shape, or the colour after the
  shape ("a star in orange");
- an optional background phrase in one of several orders ("on a gray background, a red star",
  "a gray background with a red star"), "grey" or "gray";
- a capital first letter and a trailing full stop, each at random (open_clip's tokenizer lowercases,
  so capitals reach the model as the same tokens; the full stop and commas are tokens of their own).

The old template itself (``world.training_caption``, which writes "a orange") stays among the
training captions, so what the bundled models could read they can still read.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from pipelines.toyworld.world import ALL_SHAPES, BACKGROUNDS, COLORS, Scene, training_caption

SIZE_WORDS: dict[str, tuple[str, ...]] = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
# Synonyms the world has: the background "gray" is also written "grey".
BG_WORDS: dict[str, tuple[str, ...]] = {**{b: (b,) for b in BACKGROUNDS}, "gray": ("gray", "grey")}
PREFIXES: tuple[str, ...] = ("a picture of", "an image of", "a drawing of")

# Templates: {np} noun phrase with article ("an orange star"), {npc} the colour after the shape
# ("a star in orange"), {bg} the background's word, {pre} one of PREFIXES.
TRAIN_TEMPLATES: dict[str, str] = {
    "on_a_bg": "{np} on a {bg} background",
    "on_bg": "{np} on {bg}",
    "against_a_bg": "{np} against a {bg} background",
    "in_front": "{np} in front of a {bg} background",
    "first_on_a_bg": "on a {bg} background, {np}",
    "bg_with": "a {bg} background with {np}",
    "comma_bg": "{np}, {bg} background",
    "pre_on_a_bg": "{pre} {np} on a {bg} background",
    "npc_on_a_bg": "{npc} on a {bg} background",
    "np": "{np}",
    "pre_np": "{pre} {np}",
    "npc": "{npc}",
}
# Never produced by the training sampler: recombinations of seen words in unseen orders, and one new
# word ("it"), to measure whether the models read the words rather than memorise the templates.
HELD_OUT_TEMPLATES: dict[str, str] = {
    "against_bg": "{np} against {bg}",
    "first_against_a_bg": "against a {bg} background, {np}",
    "with_a_bg": "{np} with a {bg} background",
    "bg_comma_first": "{bg} background, {np}",
    "pre_against_a_bg": "{pre} {np} against a {bg} background",
    "npc_on_bg": "{npc} on {bg}",
    "bg_with_on_it": "a {bg} background with {np} on it",
}
OLD_TEMPLATE = "old"  # world.training_caption, kept verbatim ("a orange cross on a navy background")
VOWELS = "aeiou"


@dataclass(frozen=True)
class Caption:
    """A caption and what it names (None: not named, so any value matches)."""

    text: str
    template: str
    shape: str
    color: str
    background: str | None
    size: str | None

    def matches(self, scene: Scene) -> bool:
        """Do all the named attributes hold for ``scene``?"""
        return (self.shape == scene.shape and self.color == scene.color
                and self.background in (None, scene.background) and self.size in (None, scene.size))


def article(word: str) -> str:
    """'a' or 'an' for the word that follows (the toy world's words need no exceptions)."""
    return "an" if word[:1].lower() in VOWELS else "a"


def with_article(phrase: str) -> str:
    return f"{article(phrase)} {phrase}"


def uses_background(template: str) -> bool:
    return "{bg}" in template


def render_template(template: str, scene: Scene, rng: random.Random, with_size: bool | None = None,
                    capitalise: bool | None = None, full_stop: bool | None = None) -> tuple[str, str | None]:
    """Fill ``template`` for ``scene``: ``(text, size named or None)``. Unset choices are drawn from ``rng``."""
    if with_size is None:
        with_size = scene.size != "medium" and rng.random() < 0.5
    size_word = rng.choice(SIZE_WORDS[scene.size]) + " " if with_size and scene.size in SIZE_WORDS else ""
    np_ = with_article(f"{size_word}{scene.color} {scene.shape}")
    npc = with_article(f"{size_word}{scene.shape}") + f" in {scene.color}"
    text = template.format(np=np_, npc=npc, bg=rng.choice(BG_WORDS[scene.background]), pre=rng.choice(PREFIXES))
    if capitalise if capitalise is not None else rng.random() < 0.5:
        text = text[0].upper() + text[1:]
    if full_stop if full_stop is not None else rng.random() < 0.4:
        text += "."
    return text, (scene.size if size_word else None)


def caption_from_template(name: str, scene: Scene, rng: random.Random, **choices) -> Caption:
    """The caption of ``scene`` in the named template (training or held-out)."""
    template = TRAIN_TEMPLATES.get(name) or HELD_OUT_TEMPLATES.get(name)
    if template is None:
        raise ValueError(f"unknown caption template {name!r}; expected one of "
                         f"{sorted(TRAIN_TEMPLATES) + sorted(HELD_OUT_TEMPLATES)}")
    text, size = render_template(template, scene, rng, **choices)
    return Caption(text, name, scene.shape, scene.color,
                   scene.background if uses_background(template) else None, size)


def old_caption(scene: Scene, rng: random.Random) -> Caption:
    """The first models' template with its omissions (``world.training_caption``), as a Caption."""
    text = training_caption(scene, rng)
    words = text.split()
    size = scene.size if scene.size in words else None
    return Caption(text, OLD_TEMPLATE, scene.shape, scene.color,
                   scene.background if "background" in words else None, size)


def natural_caption(scene: Scene, rng: random.Random, p_old: float = 0.3, p_no_background: float = 0.25) -> Caption:
    """A training caption: the old template with probability ``p_old``, else a training template
    (one without a background with probability ``p_no_background``). Never a held-out template."""
    if rng.random() < p_old:
        return old_caption(scene, rng)
    with_bg = rng.random() >= p_no_background
    names = [n for n, t in TRAIN_TEMPLATES.items() if uses_background(t) == with_bg]
    return caption_from_template(rng.choice(sorted(names)), scene, rng)


def captions_for(scenes: list[Scene], rng: random.Random, mode: str) -> list[Caption]:
    """One training caption per scene: ``mode`` "template" (the old captions) or "natural"."""
    if mode == "template":
        return [old_caption(s, rng) for s in scenes]
    if mode == "natural":
        return [natural_caption(s, rng) for s in scenes]
    raise ValueError(f"unknown caption mode {mode!r}; expected 'template' or 'natural'")


def training_words() -> set[str]:
    """Every word and punctuation token of the natural training captions (training templates, old template,
    prefixes, synonyms, size words, articles); never a word only the held-out templates use ("it")."""
    words = all_words() | {"a", "an", "."}  # the articles, and the optional full stop
    for text in list(TRAIN_TEMPLATES.values()) + list(PREFIXES):
        for part in text.replace(",", " , ").split():
            if not part.startswith("{"):
                words.add(part)
    return words


def all_words() -> set[str]:
    """Every word the world's attributes can be written with (for tests and the model card)."""
    words = set(ALL_SHAPES) | set(COLORS)
    for v in list(SIZE_WORDS.values()) + list(BG_WORDS.values()):
        words |= set(v)
    return words
