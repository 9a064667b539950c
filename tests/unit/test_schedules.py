"""Schedules against diffusers (the reference) and against their closed-form formulas."""

import math

import pytest
import torch
from diffusers import DDPMScheduler

from pipelines.diffusion import schedules as S

SHARED = {"linear": "linear", "scaled_linear": "scaled_linear", "cosine": "squaredcos_cap_v2", "sigmoid": "sigmoid"}


@pytest.mark.parametrize("name,diffusers_name", SHARED.items())
@pytest.mark.parametrize("T,b0,b1,zero", [(1000, 1e-4, 0.02, False), (250, 3e-4, 0.035, False),
                                          (1000, 0.00085, 0.012, True)])
def test_alphas_cumprod_equal_diffusers(name, diffusers_name, T, b0, b1, zero):
    ref = DDPMScheduler(num_train_timesteps=T, beta_schedule=diffusers_name, beta_start=b0, beta_end=b1,
                        rescale_betas_zero_snr=zero)
    ours = S.curves(S.ScheduleSpec(name, T, b0, b1, zero))
    assert ours.alphas_cumprod.shape == (T,)
    torch.testing.assert_close(ours.alphas_cumprod, ref.alphas_cumprod, rtol=0, atol=1e-7)
    torch.testing.assert_close(ours.betas, ref.betas, rtol=0, atol=1e-7)


def test_quadratic_formula_and_identity_with_scaled_linear():
    T, b0, b1 = 1000, 1e-4, 0.02
    expected = torch.linspace(b0**0.5, b1**0.5, T, dtype=torch.float64) ** 2
    torch.testing.assert_close(S.make_betas("quadratic").double(), expected, rtol=1e-5, atol=1e-9)
    # Same formula as scaled_linear given the same range; only the customary ranges differ.
    torch.testing.assert_close(S.make_betas("quadratic"), S.make_betas("scaled_linear", beta_start=b0, beta_end=b1))
    assert not torch.allclose(S.make_betas("quadratic"), S.make_betas("scaled_linear"))


def test_sigmoid_formula():
    T, b0, b1 = 500, 2e-4, 0.03
    x = torch.linspace(-6, 6, T, dtype=torch.float64)
    expected = torch.sigmoid(x) * (b1 - b0) + b0
    torch.testing.assert_close(S.make_betas("sigmoid", num_train_timesteps=T, beta_start=b0, beta_end=b1).double(),
                               expected, rtol=1e-5, atol=1e-9)


def test_cosine_formula():
    T, s = 1000, 0.008
    f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2  # Nichol & Dhariwal eq. 17
    expected = torch.tensor([min(1 - f(i + 1) / f(i), 0.999) for i in range(T)], dtype=torch.float64)
    torch.testing.assert_close(S.make_betas("cosine").double(), expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", S.SCHEDULE_NAMES)
@pytest.mark.parametrize("zero", [False, True])
def test_alphas_cumprod_strictly_decreasing_and_in_range(name, zero):
    c = S.curves(name, zero_terminal_snr=zero)
    assert (c.alphas_cumprod[1:] < c.alphas_cumprod[:-1]).all()
    assert 0 <= float(c.alphas_cumprod.min()) and float(c.alphas_cumprod.max()) < 1
    torch.testing.assert_close(c.sqrt_alphas_cumprod**2 + c.sqrt_one_minus_alphas_cumprod**2,
                               torch.ones_like(c.betas))
    finite = c.alphas_cumprod > 0
    torch.testing.assert_close(c.snr[finite], (c.alphas_cumprod / (1 - c.alphas_cumprod))[finite])
    torch.testing.assert_close(c.log_snr[finite], torch.log(c.snr[finite]))


@pytest.mark.parametrize("name", S.SCHEDULE_NAMES)
def test_zero_terminal_snr(name):
    c = S.curves(name, zero_terminal_snr=True)
    assert float(c.alphas_cumprod[-1]) == 0.0
    assert float(c.snr[-1]) == 0.0 and c.log_snr[-1] == -math.inf
    plain = S.curves(name)
    assert float(plain.alphas_cumprod[-1]) > 0
    # Algorithm 1 of Lin et al. keeps sqrt(alpha-bar_0) unchanged.
    assert abs(float(c.sqrt_alphas_cumprod[0] - plain.sqrt_alphas_cumprod[0])) < 1e-6


def test_terminal_signal_known_values():
    # Stable Diffusion's schedule leaks ~6.8% of the input at t=T; DDPM's linear one ~0.6%.
    assert float(S.curves("scaled_linear").sqrt_alphas_cumprod[-1]) == pytest.approx(0.0683, abs=5e-4)
    assert float(S.curves("linear").sqrt_alphas_cumprod[-1]) == pytest.approx(0.00635, abs=5e-5)


@pytest.mark.parametrize("name", S.SCHEDULE_NAMES)
@pytest.mark.parametrize("cls", ["DDPMScheduler", "DDIMScheduler", "EulerDiscreteScheduler"])
@pytest.mark.parametrize("zero", [False, True])
def test_scheduler_config_reproduces_schedule(name, cls, zero):
    spec = S.ScheduleSpec(name, 300, zero_terminal_snr=zero)
    sched = S.make_scheduler(spec, cls)
    expected = S.curves(spec).alphas_cumprod
    if cls == "EulerDiscreteScheduler" and zero:
        expected[-1] = 2**-24  # Euler keeps sigma_max finite (documented diffusers behaviour)
    torch.testing.assert_close(sched.alphas_cumprod, expected)
    assert sched is not S.make_scheduler(spec, cls)  # a fresh one per request


@pytest.mark.parametrize("kwargs,match", [
    ({"name": "nope"}, "unknown schedule"),
    ({"num_train_timesteps": 1}, "between 2"),
    ({"beta_start": 0.02, "beta_end": 0.01}, "beta_start < beta_end"),
    ({"beta_start": 0.0}, "0 < beta_start"),
    ({"beta_end": 1.5}, "beta_end < 1"),
])
def test_bad_parameters_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        S.make_betas(S.ScheduleSpec(**kwargs))


def test_cached_betas_cannot_be_corrupted_by_caller():
    b = S.make_betas("linear")
    b.zero_()
    assert float(S.make_betas("linear")[0]) == pytest.approx(1e-4)


def test_snr_db():
    assert S.snr_db(0.5) == pytest.approx(0.0)
    assert S.snr_db(1 / 11) == pytest.approx(-10.0)
    assert S.snr_db(0.0) == -math.inf
