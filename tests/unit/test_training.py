"""pipelines/training: flow-matching maths against diffusers, the 2-D trainer, the digits stages, the slots."""

import math

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, FlowMatchEulerDiscreteScheduler, UNet2DModel

from pipelines.training import digits, objectives, toy2d
from pipelines.training.objectives import Objective
from pipelines.training.slots import TrainingSlots, ordinal


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- flow matching vs diffusers


def test_flow_forward_path_matches_the_flow_scheduler():
    x0, eps = torch.randn(4, 2, generator=_g(1)), torch.randn(4, 2, generator=_g(2))
    sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)
    sched.set_timesteps(10)
    for i in (0, 3, 9):
        t, sigma = sched.timesteps[i], float(sched.sigmas[i])
        ref = sched.scale_noise(x0, t[None], eps)  # diffusers: σ ε + (1 − σ) x0
        ours = (1 - sigma) * x0 + sigma * eps
        torch.testing.assert_close(ours, ref)
        assert float(t) == pytest.approx(sigma * objectives.T_TRAIN, rel=1e-5)  # model time = σ·T


def test_flow_conversions_recover_x0_and_eps():
    x0, eps = torch.randn(3, 1, 4, 4, generator=_g(1)), torch.randn(3, 1, 4, 4, generator=_g(2))
    sigma = torch.tensor([0.1, 0.5, 0.9])
    s = sigma[:, None, None, None]
    x_t, v = (1 - s) * x0 + s * eps, eps - x0
    torch.testing.assert_close(objectives.x0_from_velocity(x_t, v, sigma), x0)
    torch.testing.assert_close(objectives.eps_from_velocity(x_t, v, sigma), eps)


def test_euler_sampler_matches_the_flow_scheduler_step_by_step():
    """Our sampler and FlowMatchEulerDiscreteScheduler.step on the same σ grid give the same x every step."""
    w = torch.tensor([[0.7, -0.2], [0.3, 0.5]])
    fn = lambda x, t: x @ w + 0.001 * t[:, None]  # any velocity field depending on x and time
    noise = torch.randn(5, 2, generator=_g(3))
    ours, path = Objective("flow").sample(fn, noise, 8, keep_path=True)
    sigmas = objectives.flow_sigmas(8)
    sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)
    sched.set_timesteps(sigmas=sigmas[:-1].tolist())
    torch.testing.assert_close(sched.sigmas.float(), sigmas)
    x = noise.clone()
    for i, t in enumerate(sched.timesteps):
        x = sched.step(fn(x, t.expand(5).float()), t, x).prev_sample
        torch.testing.assert_close(x, path[i + 1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x, ours, rtol=1e-5, atol=1e-6)


def test_exact_velocity_of_one_point_lands_on_it_in_one_step():
    target = torch.tensor([[1.5, -0.5]])
    # For a single data point x*, the marginal velocity is v(x, σ) = (x − x*) / σ.
    fn = lambda x, t: (x - target) / (t[:, None] / objectives.T_TRAIN)
    noise = torch.randn(6, 2, generator=_g(4))
    for steps in (1, 4):
        out, path = Objective("flow").sample(fn, noise, steps, keep_path=True)
        torch.testing.assert_close(out, target.expand(6, 2), rtol=0, atol=1e-5)
        torch.testing.assert_close(objectives.straightness(path), torch.ones(6), rtol=0, atol=1e-5)


def test_ddpm_training_pair_matches_diffusers_add_noise():
    obj = Objective("ddpm", "linear")
    x0 = torch.randn(8, 2, generator=_g(5))
    x_t, t, eps = obj.training_pair(x0, _g(6))
    ref = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear").add_noise(x0, eps, t.long())
    torch.testing.assert_close(x_t, ref)


def test_ddim_one_step_from_exact_eps_returns_the_clean_point():
    obj = Objective("ddpm", "linear")
    assert isinstance(obj.scheduler(), DDIMScheduler)
    ac = obj.alphas_cumprod()
    x0 = torch.tensor([[0.3, -0.4]])
    noise = torch.randn(1, 2, generator=_g(7))
    # eps such that x_{T-1} = noise holds exactly for this x0
    fn = lambda x, t: (x - ac[t.long()].sqrt()[:, None] * x0) / (1 - ac[t.long()]).sqrt()[:, None]
    out, _ = obj.sample(fn, noise, 1)
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-4)


def test_straightness_of_a_right_angle_is_one_over_root_two():
    path = [torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]])]
    assert float(objectives.straightness(path)) == pytest.approx(math.sqrt(2) / 2)


def test_cfg_combine():
    u, c = torch.zeros(2), torch.ones(2)
    assert objectives.cfg_combine(u, c, 0.0).tolist() == [0, 0]
    assert objectives.cfg_combine(u, c, 3.0).tolist() == [3, 3]


# ---------------------------------------------------------------- 2-D


def test_sliced_wasserstein_is_zero_for_identical_and_sees_a_shift():
    a = toy2d.sample_data("ring", 2000, _g(0))
    assert toy2d.sliced_wasserstein(a, a) == pytest.approx(0.0, abs=1e-6)
    shifted = toy2d.sliced_wasserstein(a, a + torch.tensor([1.0, 0.0]))
    assert shifted == pytest.approx(2 / math.pi, rel=0.1)  # E|cos θ| over random directions
    b = toy2d.sample_data("ring", 2000, _g(1))
    assert toy2d.sliced_wasserstein(a, b) < 0.1 * shifted


@pytest.mark.parametrize("name", [d for d in toy2d.DISTRIBUTIONS if d != "your points"])
def test_distributions_fit_the_box(name):
    x = toy2d.sample_data(name, 1000, _g(0), word="Hi")
    assert x.shape == (1000, 2) and torch.isfinite(x).all()
    assert x.abs().max() < toy2d.DATA_BOX and x.std() > 0.3


def test_user_points_from_a_drawing():
    img = torch.full((64, 64, 4), 0, dtype=torch.uint8).numpy()
    img[10:20, 30:34] = (0, 0, 0, 255)
    pts = toy2d.points_from_image(img)
    assert len(pts) == 40
    x = toy2d.sample_data("your points", 500, _g(0), points=pts)
    assert x.abs().max() < toy2d.DATA_BOX
    with pytest.raises(ValueError, match="draw something"):
        toy2d.points_from_image(torch.zeros(8, 8, 4, dtype=torch.uint8).numpy())


def test_2d_training_lowers_the_distance_and_is_deterministic():
    torch.set_num_threads(1)
    cfg = toy2d.Toy2DConfig(distribution="8 gaussians", objective="flow", seed=3)
    tr = toy2d.Toy2DTrainer(cfg)
    before = toy2d.evaluate(tr, n=500, steps=(8,))["swd"][8]
    tr.train(400)
    after = toy2d.evaluate(tr, n=500, steps=(8,))["swd"][8]
    assert after < 0.6 * before  # untrained, the samples are the noise itself
    tr2 = toy2d.Toy2DTrainer(cfg)
    tr2.train(400)
    assert tr2.losses == tr.losses
    assert toy2d.evaluate(tr2, n=500, steps=(8,))["swd"][8] == after


def test_reflow_needs_flow_and_straightens():
    with pytest.raises(ValueError, match="flow"):
        toy2d.Toy2DTrainer(toy2d.Toy2DConfig(objective="ddpm")).reflow()
    tr = toy2d.Toy2DTrainer(toy2d.Toy2DConfig(distribution="two moons", seed=1))
    tr.train(300)
    s0 = toy2d.evaluate(tr, n=300, steps=(32,))["straightness"]
    tr.reflow()
    tr.train(300)
    assert toy2d.evaluate(tr, n=300, steps=(32,))["straightness"] > s0 + 0.1


def test_bad_inputs_raise_value_errors():
    with pytest.raises(ValueError, match="objective"):
        Objective("score")
    with pytest.raises(ValueError, match="schedule"):
        Objective("ddpm", "nope")
    with pytest.raises(ValueError, match="unknown distribution"):
        toy2d.sample_data("spiral galaxy", 10, _g())
    with pytest.raises(ValueError, match="word"):
        toy2d.sample_data("word", 10, _g(), word="")
    with pytest.raises(ValueError, match="stage"):
        digits.DigitsConfig(stage="huge")


# ---------------------------------------------------------------- digits


def test_digits_data_split_and_range():
    x, y = digits.load_digits("train")
    xt, yt = digits.load_digits("test")
    assert x.shape[1:] == (1, digits.SIZE, digits.SIZE) and len(xt) == digits.N_TEST
    assert float(x.min()) == -1.0 and float(x.max()) <= 1.0 and set(y.unique().tolist()) == set(range(10))
    assert len(x) + len(xt) == 5000


@pytest.mark.parametrize("stage,objective", [("denoiser", "flow"), ("time", "ddpm"), ("class", "flow")])
def test_each_stage_trains_and_loads_back_through_from_pretrained(tmp_path, stage, objective):
    torch.set_num_threads(1)
    cfg = digits.DigitsConfig(stage=stage, objective=objective, channels=(8, 16, 16), batch_size=8)
    tr = digits.DigitsTrainer(cfg)
    losses = tr.train(2)
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    out = digits.save(tr.ema, cfg, tmp_path / "m")
    loaded = UNet2DModel.from_pretrained(out)
    x = torch.randn(2, 1, digits.SIZE, digits.SIZE, generator=_g())
    t = torch.tensor([0.0, 500.0])
    cls = torch.tensor([3, digits.NULL_CLASS]) if stage == "class" else None
    torch.testing.assert_close(loaded(x, t, class_labels=cls).sample, tr.ema(x, t, class_labels=cls).sample)
    model, cfg2 = digits.load(out)
    assert cfg2 == cfg
    if stage != "denoiser":
        assert (out / "scheduler" / "scheduler_config.json").exists()
        imgs = digits.generate(model, cfg2, 3, _g(), steps=2, labels=torch.tensor([1, 2, 3]), w=2.0)
        assert imgs.shape == (3, 1, digits.SIZE, digits.SIZE) and imgs.abs().max() <= 1.0


# ---------------------------------------------------------------- slots


def test_slots_line_up_and_free():
    s = TrainingSlots(2)
    a, b, c, d = s.join(), s.join(), s.join(), s.join()
    assert [s.position(t) for t in (a, b, c, d)] == [0, 0, 1, 2]
    s.leave(a)
    assert [s.position(t) for t in (b, c, d)] == [0, 0, 1]
    assert s.busy() == (2, 1)
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 22)] == ["1st", "2nd", "3rd", "4th", "11th", "22nd"]


def test_slots_drop_an_abandoned_ticket_after_the_lease():
    s = TrainingSlots(1, lease=0.2)
    s.join()  # a ticket whose training is abandoned: never touched again
    b = s.join()
    assert s.position(b) == 1
    import time

    for _ in range(4):  # b keeps asking (and so renews its lease); a, abandoned, stops touching
        time.sleep(0.1)
        s.touch(b)
    assert s.position(b) == 0 and s.busy() == (1, 0)
