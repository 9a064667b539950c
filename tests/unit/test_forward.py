"""The forward process against diffusers' add_noise and against its own statistics."""

import pytest
import torch
from diffusers import DDPMScheduler

from pipelines.diffusion import forward as F
from pipelines.diffusion import schedules as S


def _x0(shape=(2, 3, 8, 8), seed=1):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("name,diffusers_name", [("linear", "linear"), ("cosine", "squaredcos_cap_v2"),
                                                 ("scaled_linear", "scaled_linear"), ("sigmoid", "sigmoid")])
def test_q_sample_equals_ddpm_add_noise(name, diffusers_name):
    ref = DDPMScheduler(beta_schedule=diffusers_name, beta_start=1e-4, beta_end=0.02)
    x0 = _x0((3, 3, 16, 16))
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([0, 431, 999])
    ours, eps = F.q_sample(x0, t, S.curves(name, beta_start=1e-4, beta_end=0.02).alphas_cumprod, noise=noise)
    assert eps is noise
    torch.testing.assert_close(ours, ref.add_noise(x0, noise, t), rtol=1e-6, atol=1e-6)
    # an int t broadcasts over the batch
    ours_int, _ = F.q_sample(x0, 431, S.curves(name, beta_start=1e-4, beta_end=0.02).alphas_cumprod, noise=noise)
    torch.testing.assert_close(ours_int, ref.add_noise(x0, noise, torch.tensor([431] * 3)), rtol=1e-6, atol=1e-6)


def test_q_sample_returns_the_noise_it_drew_and_uses_only_the_generator():
    x0, ac = _x0(), S.curves("linear").alphas_cumprod
    a, eps_a = F.q_sample(x0, 500, ac, generator=torch.Generator().manual_seed(7))
    torch.manual_seed(123)  # the global RNG must not matter
    b, eps_b = F.q_sample(x0, 500, ac, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, ac[500].sqrt() * x0 + (1 - ac[500]).sqrt() * eps_a)
    c, _ = F.q_sample(x0, 500, ac, generator=torch.Generator().manual_seed(8))
    assert not torch.allclose(a, c)


def test_q_step_formula():
    x, betas = _x0(), S.make_betas("linear")
    out, eps = F.q_step(x, 10, betas, torch.Generator().manual_seed(3))
    torch.testing.assert_close(out, (1 - betas[10]).sqrt() * x + betas[10].sqrt() * eps)


@pytest.mark.parametrize("bad_t", [-1, 1000])
def test_timestep_out_of_range(bad_t):
    with pytest.raises(ValueError, match="timestep out of range"):
        F.q_sample(_x0(), bad_t, S.curves("linear").alphas_cumprod)
    with pytest.raises(ValueError, match="timestep out of range"):
        F.q_sample_by_steps(_x0(), bad_t, S.make_betas("linear"))


def _assert_forward_marginal(sample: torch.Tensor, x0: torch.Tensor, a: torch.Tensor):
    """``sample`` [n, C, H, W] drawn from N(sqrt(ᾱ) x0, (1-ᾱ) I): per-pixel z-tests of mean and variance."""
    n, var = sample.shape[0], 1 - a
    sample = sample.double()
    mean_z = (sample.mean(0) - a.sqrt() * x0[0]) / (var / n).sqrt()
    var_z = (sample.var(0) - var) / (var * (2 / (n - 1)) ** 0.5)
    # 108 pixels: |z| > 4.5 has probability ~1e-3 overall under the hypothesis.
    assert mean_z.abs().max() < 4.5, f"mean off: max |z| = {float(mean_z.abs().max()):.1f}"
    assert var_z.abs().max() < 4.5, f"variance off: max |z| = {float(var_z.abs().max()):.1f}"


@pytest.mark.parametrize("name,t", [("linear", 300), ("cosine", 120)])
def test_chain_of_steps_matches_jump_statistically(name, t):
    """t+1 single steps give N(sqrt(ᾱ_t) x0, (1-ᾱ_t) I), like the jump: per-pixel z-tests."""
    n = 4000
    betas = S.make_betas(name)
    a = S.alphas_cumprod(betas)[t].double()
    x0 = _x0((1, 3, 6, 6))
    xs = x0.expand(n, -1, -1, -1)
    steps = F.q_sample_by_steps(xs, t, betas, torch.Generator().manual_seed(11)).double()
    jump, _ = F.q_sample(xs, t, S.alphas_cumprod(betas), generator=torch.Generator().manual_seed(12))
    for sample in (steps, jump):
        _assert_forward_marginal(sample, x0.double(), a)
    # the two methods against each other (two-sample z on the means)
    diff_z = (steps.mean(0) - jump.double().mean(0)) / (2 * (1 - a) / n).sqrt()
    assert diff_z.abs().max() < 4.5


@pytest.mark.parametrize("bug", ["sqrt_beta_plus_eps", "beta_not_sqrt"])
def test_the_seed_bug_in_the_chain_is_caught_by_the_statistical_test(monkeypatch, bug):
    """The statistical test has power: the project's chain (q_sample_by_steps) with its single step
    replaced by the seed notebook's bug (sqrt(β) + ε instead of sqrt(β) ε), or by β for sqrt(β),
    fails the same z-tests that the correct chain passes."""
    n, t = 4000, 50
    betas = S.make_betas("linear")
    a = S.alphas_cumprod(betas)[t].double()
    x0 = _x0((1, 3, 6, 6))

    def buggy_step(x_prev, s, betas, generator=None, noise=None):
        eps = torch.randn(x_prev.shape, generator=generator)
        b = betas[s]
        if bug == "sqrt_beta_plus_eps":
            return (1 - b).sqrt() * x_prev + b.sqrt() + eps, eps
        return (1 - b).sqrt() * x_prev + b * eps, eps

    monkeypatch.setattr(F, "q_step", buggy_step)
    x = F.q_sample_by_steps(x0.expand(n, -1, -1, -1), t, betas, torch.Generator().manual_seed(5))
    with pytest.raises(AssertionError, match="off"):
        _assert_forward_marginal(x, x0.double(), a)
    monkeypatch.undo()
    x = F.q_sample_by_steps(x0.expand(n, -1, -1, -1), t, betas, torch.Generator().manual_seed(5))
    _assert_forward_marginal(x, x0.double(), a)  # the real step passes


def test_steps_vs_jump_summary_shapes():
    r = F.steps_vs_jump(_x0((1, 3, 8, 8)), 20, S.make_betas("linear"), 5, torch.Generator().manual_seed(0))
    assert r["jump"].shape == r["steps"].shape == (5, 3, 8, 8)
    for k in ("jump_mean", "steps_mean", "jump_std", "steps_std", "expected_mean"):
        assert r[k].shape == (1, 3, 8, 8)
    assert float(r["expected_std"]) == pytest.approx(float((1 - S.alphas_cumprod(S.make_betas("linear"))[20]).sqrt()))


@pytest.mark.parametrize("t", [0, 300, 999])
def test_q_sample_uint8_matches_q_sample_then_display(t):
    from pipelines import images

    x0 = _x0((1, 3, 32, 24), seed=4)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(5))
    ac = S.curves("cosine").alphas_cumprod
    ref = images.tensor_to_uint8(F.q_sample(x0, t, ac, noise=noise)[0][0]).astype(int)
    fast = F.q_sample_uint8(F.display_basis(x0), F.display_basis(noise), float(ac[t]))
    assert fast.shape == (32, 24, 3) and fast.dtype.name == "uint8"
    assert abs(fast.astype(int) - ref).max() <= 1
