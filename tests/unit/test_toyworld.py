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


def test_v_prediction_target_and_min_snr_weight():
    """The training target is what the samplers invert: diffusers' DDIM step recovers x0 from it at
    every t, the terminal t included (zero terminal SNR), and the Min-SNR weights stay finite there."""
    from diffusers import DDIMScheduler, DDPMScheduler

    from pipelines.toyworld.train_unet import loss_target_and_weight
    from pipelines.toyworld.unet_config import SAMPLE_T, toy_scheduler_config

    cfg = toy_scheduler_config()
    sched = DDPMScheduler.from_config(cfg)
    g = torch.Generator().manual_seed(0)
    t = torch.tensor([0, 10, 300, 700, 958, SAMPLE_T - 1])
    x0 = torch.rand(len(t), 3, 8, 8, generator=g) * 2 - 1
    noise = torch.randn(x0.shape, generator=g)
    x_t = sched.add_noise(x0, noise, t)
    v, w = loss_target_and_weight(sched, x0, noise, t, gamma=5.0)
    ddim = DDIMScheduler.from_config(cfg)
    ddim.set_timesteps(SAMPLE_T)  # x̂0 of a step does not depend on the spacing
    for i, ti in enumerate(t.tolist()):
        x0_hat = ddim.step(v[i:i + 1], ti, x_t[i:i + 1]).pred_original_sample
        assert torch.allclose(x0_hat, x0[i:i + 1], atol=1e-4), ti
    assert torch.isfinite(w).all() and (w > 0).all() and (w <= 1).all()
    assert w[-1] == 1.0 and w[0] < 1e-3  # SNR_T ~ 1e-6: weight 1; t = 0 (SNR ~ 2e4): gamma / (SNR + 1)
    eps_sched = DDPMScheduler.from_config({**cfg, "prediction_type": "epsilon"})
    target, w_eps = loss_target_and_weight(eps_sched, x0, noise, t, gamma=5.0)
    assert torch.equal(target, noise) and torch.isfinite(w_eps).all()


def test_train_unet_runs_resumes_and_starts_from_init(tmp_path, monkeypatch):
    """The real training script, two steps at batch 2: it writes the loadable layout, resumes where
    it stopped, and --init starts a new run from another folder's weights."""
    import json

    from diffusers import UNet2DConditionModel

    from pipelines.toyworld import train_unet
    from pipelines.toyworld.unet_config import build_random_toy_sd

    monkeypatch.setattr(train_unet, "RUNS", tmp_path / "runs")  # keep the repo's runs/ untouched
    init = build_random_toy_sd(tmp_path / "init", tmp_path / "clip", tiny=False, seed=3)
    common = ["--batch", "2", "--save-every", "1", "--clip", str(tmp_path / "clip")]
    out = tmp_path / "run"
    train_unet.main(["--steps", "2", "--out", str(out), "--init", str(init), *common])
    assert json.loads((out / "resume" / "train_state.json").read_text())["step"] == 2
    assert json.loads((out / "scheduler" / "scheduler_config.json").read_text())["prediction_type"] == "v_prediction"
    start = UNet2DConditionModel.from_pretrained(init / "unet").conv_out.bias
    after = UNet2DConditionModel.from_pretrained(out / "unet").conv_out.bias
    assert 0 < (after - start).abs().max() < 0.05  # moved from the init weights, by two small steps
    train_unet.main(["--steps", "3", "--out", str(out), *common])
    rows = [json.loads(line) for line in (out / "resume" / "loss_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and all(r["loss"] > 0 for r in rows)


def test_render_judge_reads_rendered_scenes_exactly_held_out_pairs_included():
    """The render-and-compare judge gets shape, colour and background of rendered scenes right, with
    noise as strong as a grainy sample's, and reports no shape for a plain background."""
    from pipelines.toyworld.render_judge import classify_by_rendering

    x, scenes = make_batch(160, seed=77, allow_held_out=True)
    held = [(s.color, s.shape) in HELD_OUT for s in scenes]
    assert sum(held) >= 5  # the held-out pairs are in the test set
    g = torch.Generator().manual_seed(1)
    for images in (x, (x + 0.15 * torch.randn(x.shape, generator=g)).clamp(-1, 1)):
        pred = classify_by_rendering(images)
        for p, s in zip(pred, scenes):
            assert (p["shape"], p["color"], p["background"]) == (s.shape, s.color, s.background), s
    plain = torch.tensor(BACKGROUNDS["navy"]).float().div(127.5).sub(1).view(1, 3, 1, 1).expand(1, 3, 32, 32)
    assert classify_by_rendering(plain) == [{"shape": None, "color": None, "background": "navy"}]


def test_optimizer_state_resumes_only_with_the_weights_it_was_saved_with(tmp_path):
    """A resume loads the Adam moments saved at the same step; a state from another step, another run (the patch-2
    toy-sd3 run's beside a patch-1 run in the same folder) or the old untagged format is ignored: warm up again."""
    from pipelines.toyworld.train_resume import load_optimizer, save_optimizer

    def adam(shape):
        p = torch.nn.Parameter(torch.ones(shape))
        opt = torch.optim.AdamW([p], lr=0.1)
        p.grad = torch.full(shape, 0.5)
        opt.step()
        return opt

    path = tmp_path / "runs" / "m-optimizer.pt"
    save_optimizer(adam((3,)), path, step=40)
    fresh = torch.optim.AdamW([torch.nn.Parameter(torch.ones(3))], lr=0.1)
    assert load_optimizer(fresh, path, start=40) == 0  # loaded: no warm-up
    assert torch.equal(fresh.state_dict()["state"][0]["exp_avg"], torch.full((3,), 0.05))
    for start in (41, 0):  # another step; a fresh run
        other = torch.optim.AdamW([torch.nn.Parameter(torch.ones(3))], lr=0.1)
        assert load_optimizer(other, path, start=start) == start and not other.state_dict()["state"]
    torch.save(adam((3,)).state_dict(), path)  # the old format: no step to check it against
    other = torch.optim.AdamW([torch.nn.Parameter(torch.ones(3))], lr=0.1)
    assert load_optimizer(other, path, start=40) == 40 and not other.state_dict()["state"]
