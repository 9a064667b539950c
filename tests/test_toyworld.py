"""The procedural toy world and the tiny-CLIP training loss."""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F

from pipelines.toyworld.train_clip import compatible, multi_positive_nce
from pipelines.toyworld.world import (BACKGROUNDS, COLORS, HELD_OUT, SHAPES, Scene, make_batch,
                                      parse_caption, render, sample_scene)


def test_world_is_deterministic_from_seed():
    a, sa = make_batch(16, seed=3)
    b, sb = make_batch(16, seed=3)
    c, _ = make_batch(16, seed=4)
    assert torch.equal(a, b) and sa == sb
    assert not torch.equal(a, c)
    assert a.shape == (16, 3, 32, 32) and a.min() >= -1 and a.max() <= 1


def test_world_size_and_held_out_pairs():
    assert len(SHAPES) >= 5 and len(COLORS) >= 8 and len(BACKGROUNDS) >= 4
    rng = random.Random(0)
    scenes = [sample_scene(rng) for _ in range(3000)]
    assert not any((s.color, s.shape) in HELD_OUT for s in scenes)
    assert {s.shape for s in scenes} == set(SHAPES)


def test_render_draws_the_named_colour_on_the_named_background():
    s = Scene("square", "red", "navy", "large", 0.5, 0.5, 0.4)
    img = render(s, 32)
    assert img.getpixel((16, 16)) == COLORS["red"]
    assert img.getpixel((0, 0)) == BACKGROUNDS["navy"]
    edge = {img.getpixel((x, 16)) for x in range(32)}
    assert len(edge) > 2  # anti-aliased: blended pixels at the edges


def test_captions_round_trip():
    s = Scene("star", "pink", "white", "small", 0.5, 0.5, 0.2)
    assert s.caption() == "a small pink star on a white background"
    assert parse_caption(s.caption()) == {"shape": "star", "color": "pink", "background": "white"}
    assert parse_caption("a red circle") == {"shape": "circle", "color": "red", "background": None}


def test_partial_captions_are_positives_for_every_matching_image():
    scenes = [Scene("star", "red", "navy", "small", .5, .5, .2), Scene("star", "red", "white", "large", .5, .5, .4)]
    pos = compatible(scenes, ["a red star", "a red star on a navy background", "a large red star"])
    assert pos.tolist() == [[True, True, False], [True, False, True]]


def test_multi_positive_nce_reduces_to_cross_entropy_with_one_positive():
    logits = torch.randn(4, 6)
    target = torch.tensor([0, 3, 5, 2])
    pos = F.one_hot(target, 6).bool()
    assert torch.allclose(multi_positive_nce(logits, pos), F.cross_entropy(logits, target), atol=1e-5)


def test_lr_warm_up_after_a_resume_ramps_to_the_schedule_not_the_peak():
    from pipelines.toyworld.train_unet import lr_factor

    total, warmup = 7500, 200
    cosine = [lr_factor(s, total, warmup, warm_from=-10**9) for s in range(total)]  # no warm-up in effect
    assert cosine[0] == 1.0 and abs(cosine[-1] - 0.05) < 1e-3
    assert all(a >= b for a, b in zip(cosine, cosine[1:]))  # decays monotonically
    # a fresh run warms up from ~0 to the schedule
    assert lr_factor(0, total, warmup) == 1 / warmup
    # resumed at step 6000 without optimizer state: warm up again, never above the schedule, and meet it
    resumed = [lr_factor(s, total, warmup, warm_from=6000) for s in range(6000, 6400)]
    assert resumed[0] < 0.01 * cosine[6000]
    assert all(r <= c + 1e-12 for r, c in zip(resumed, cosine[6000:6400]))
    assert resumed[warmup - 1] == cosine[6000 + warmup - 1] and resumed[-1] == cosine[6399]
    assert max(resumed) < 0.2  # the schedule is at ~14% of the peak here; the old warm-up went to 100%
