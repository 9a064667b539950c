"""Captions as people write them (pipelines/toyworld/captions.py) and their use in training."""

from __future__ import annotations

import random
import re

import pytest

from pipelines.toyworld.captions import (BG_WORDS, HELD_OUT_TEMPLATES, OLD_TEMPLATE, SIZE_WORDS, TRAIN_TEMPLATES,
                                         Caption, caption_from_template, captions_for, natural_caption)
from pipelines.toyworld.world import BACKGROUNDS, COLORS, SIZES, Scene, sample_scene


def _scenes(n: int, seed: int = 0) -> list[Scene]:
    rng = random.Random(seed)
    return [sample_scene(rng, allow_held_out=True) for _ in range(n)]


def _training(n: int, seed: int = 1) -> list[Caption]:
    rng = random.Random(seed)
    return [natural_caption(s, rng) for s in _scenes(n, seed)]


def _held_out(n: int, seed: int = 2) -> list[Caption]:
    rng = random.Random(seed)
    names = sorted(HELD_OUT_TEMPLATES)
    return [caption_from_template(names[i % len(names)], s, rng) for i, s in enumerate(_scenes(n, seed))]


@pytest.mark.parametrize("color", list(COLORS))
def test_article_is_right_for_every_colour_size_and_template(color):
    rng = random.Random(0)
    for size in SIZES:
        for name in sorted(TRAIN_TEMPLATES) + sorted(HELD_OUT_TEMPLATES):
            scene = Scene("star", color, "white", size, 0.5, 0.5, 0.3)
            for with_size in (False, True):
                text = caption_from_template(name, scene, rng, with_size=with_size).text.lower()
                for art, word in re.findall(r"\b(a|an) (\w+)", text):
                    assert art == ("an" if word[0] in "aeiou" else "a"), text
    text = caption_from_template("np", Scene("cross", color, "white", "medium", .5, .5, .3), rng,
                                 capitalise=False, full_stop=False).text
    assert text == ("an orange cross" if color == "orange" else f"a {color} cross")


def test_held_out_phrasings_are_never_produced_by_the_training_sampler():
    train = _training(20_000)
    assert not {c.template for c in train} & set(HELD_OUT_TEMPLATES)
    # Compare the strings too: a held-out template must not coincide with a training one.
    norm = {c.text.lower().rstrip(".") for c in train}
    held = {c.text.lower().rstrip(".") for c in _held_out(3000)}
    assert len(held) > 1000 and not held & norm
    # Every training template and the old template are used.
    assert {c.template for c in train} == set(TRAIN_TEMPLATES) | {OLD_TEMPLATE}


def test_old_template_kept_verbatim_and_mode_template_is_the_old_captions():
    train = _training(3000)
    old = [c for c in train if c.template == OLD_TEMPLATE]
    assert 0.2 < len(old) / len(train) < 0.4
    assert any(c.text.startswith("a orange") for c in old)  # exactly what the first models read
    rng = random.Random(0)
    assert all(c.template == OLD_TEMPLATE for c in captions_for(_scenes(50), rng, "template"))
    with pytest.raises(ValueError, match="caption mode"):
        captions_for(_scenes(1), rng, "poetry")
    with pytest.raises(ValueError, match="template"):
        caption_from_template("sonnet", _scenes(1)[0], rng)


def test_captions_name_exactly_the_attributes_they_record():
    for c in _training(3000) + _held_out(1000):
        words = re.findall(r"[a-z]+", c.text.lower())
        assert c.shape in words and c.color in words, c
        bg_words = {w for b in BACKGROUNDS for w in BG_WORDS[b]}
        assert not bg_words & set(COLORS)  # a background word can only name the background
        named_bg = [w for w in words if w in bg_words]
        if c.background is None:
            assert "background" not in words and not named_bg, c
        else:
            assert len(named_bg) == 1 and named_bg[0] in BG_WORDS[c.background], c
        size_words = {w: s for s, ws in SIZE_WORDS.items() for w in ws}
        named_size = [size_words[w] for w in words if w in size_words]
        assert named_size == ([] if c.size is None else [c.size]), c


def test_caption_matches_every_scene_with_its_named_attributes():
    c = Caption("a small red star", "np", "star", "red", None, "small")
    assert c.matches(Scene("star", "red", "navy", "small", .5, .5, .2))
    assert not c.matches(Scene("star", "red", "navy", "large", .5, .5, .4))
    assert not c.matches(Scene("circle", "red", "navy", "small", .5, .5, .2))
    c = Caption("a red star on navy", "on_bg", "star", "red", "navy", None)
    assert c.matches(Scene("star", "red", "navy", "large", .5, .5, .4))
    assert not c.matches(Scene("star", "red", "white", "large", .5, .5, .4))


def test_variety_deterministic_and_fits_the_text_context():
    import open_clip

    from pipelines.models.tinyclip import register

    a, b = _training(500, seed=5), _training(500, seed=5)
    assert a == b and a != _training(500, seed=6)
    texts = [c.text for c in _training(4000) + _held_out(1500)]
    assert any(t[0].isupper() for t in texts) and any(t[0].islower() for t in texts)
    assert any(t.endswith(".") for t in texts) and any("," in t for t in texts)
    assert any(" grey " in f" {t} " for t in texts) and any(" gray " in f" {t} " for t in texts)
    assert any(t.lower().startswith("an ") for t in texts)
    tok = open_clip.get_tokenizer(register())
    lengths = (tok(texts, context_length=32) != 0).sum(dim=1)  # with start and end tokens
    assert int(lengths.max()) <= 16  # toy-clip's context: nothing is cut off


def test_generated_captions_are_positives_exactly_as_the_old_parser_says():
    """On the old template, positives from the recorded attributes equal those from parsing the text."""
    from pipelines.toyworld.train_clip import compatible, compatible_captions

    scenes = _scenes(40, seed=9)
    caps = captions_for(scenes, random.Random(3), "template")
    assert compatible_captions(scenes, caps).equal(compatible(scenes, [c.text for c in caps]))
    natural = captions_for(scenes, random.Random(4), "natural")
    pos = compatible_captions(scenes, natural)
    assert pos.diagonal().all()  # each scene's own caption is a positive


def test_phrasing_evaluation_uses_the_held_out_templates_and_the_rendering_judge():
    import torch

    from pipelines.toyworld import evaluate
    from pipelines.toyworld.render_judge import classify_by_rendering
    from pipelines.toyworld.world import render_batch

    rng = random.Random(0)
    items = evaluate.phrased_prompts(sorted(HELD_OUT_TEMPLATES), 3, rng, held_out=True)
    assert {c.template for c, _ in items} == set(HELD_OUT_TEMPLATES)
    caps, scenes = [c for c, _ in items], [s for _, s in items]
    x = render_batch(scenes)
    assert all(evaluate.judged(classify_by_rendering(x), caps, scenes))
    wrong_bg = [Scene(s.shape, s.color, "white" if s.background != "white" else "black", s.size, s.cx, s.cy, s.r)
                for s in scenes]
    hits = evaluate.judged(classify_by_rendering(render_batch(wrong_bg)), caps, scenes)
    assert not any(hits)  # every held-out phrasing names its background, and the judge checks it
    assert torch.is_tensor(x) and x.shape == (len(items), 3, 32, 32)
