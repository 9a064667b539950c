"""ε / x0 / v targets (pipelines/theory/targets.py) against diffusers' DDPMScheduler and the error-propagation table."""

import math
from types import SimpleNamespace

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from pipelines.diffusion import maths
from pipelines.theory import targets as T

CFG = dict(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction",
           clip_sample=False)


class OffsetV:
    """A v-model that outputs the true v plus a fixed error ``delta`` (it knows x0: a test oracle).
    From x_t = α x0 + σ ε: v = α ε − σ x0 = (α x_t − x0) / σ."""

    device, unet, encode_prompt, sample_shape, kind = torch.device("cpu"), SimpleNamespace(dtype=torch.float32), \
        None, (3, 4, 4), "pixel"

    def __init__(self, x0, delta):
        self.x0, self.delta = x0, delta
        self.ab = DDPMScheduler(**CFG).alphas_cumprod.double()

    def make_scheduler(self, sampler="DDIM"):
        return DDIMScheduler(**CFG)

    def prediction_type(self, scheduler):
        return "v_prediction"

    def predict(self, x, t, emb):
        ab = self.ab[int(t)]
        return ((ab.sqrt() * x.double() - self.x0.double()) / (1 - ab).sqrt()).float() + self.delta


def _data():
    g = torch.Generator().manual_seed(0)
    return torch.rand(2, 3, 4, 4, generator=g) * 2 - 1, torch.randn(2, 3, 4, 4, generator=g)


@pytest.mark.parametrize("t", [0, 250, 700, 999])
def test_true_targets_match_diffusers(t):
    x0, noise = _data()
    view = T.targets_at(OffsetV(x0, 0.0), x0, t, ["", ""], noise=noise)
    ddpm = DDPMScheduler(**CFG)
    tt = torch.tensor([t])
    torch.testing.assert_close(view.x_t, ddpm.add_noise(x0, noise, tt))
    torch.testing.assert_close(view.true["v"], ddpm.get_velocity(x0, noise, tt))
    assert view.alpha_bar == pytest.approx(float(ddpm.alphas_cumprod[t]))
    for k in T.TARGETS:  # a perfect v-model recovers all three
        torch.testing.assert_close(view.pred[k], view.true[k], atol=1e-4, rtol=0)


@pytest.mark.parametrize("t", [10, 500, 990])
def test_an_error_in_v_reaches_eps_by_alpha_and_x0_by_sigma(t):
    x0, noise = _data()
    view = T.targets_at(OffsetV(x0, 0.1), x0, t, ["", ""], noise=noise)
    a2 = float(DDPMScheduler(**CFG).alphas_cumprod[t])
    assert view.mse["v"] == pytest.approx(0.01, rel=1e-3)
    assert view.mse["epsilon"] == pytest.approx(0.01 * a2, rel=1e-3, abs=1e-9)  # Δε = α Δv
    assert view.mse["x0"] == pytest.approx(0.01 * (1 - a2), rel=1e-3, abs=1e-9)  # Δx0 = −σ Δv


def test_amplification_table():
    amp = T.amplification([0.0, 0.8, 1.0])
    assert amp["eps->x0"][0] == math.inf and amp["x0->eps"][2] == math.inf
    assert amp["eps->x0"][1] == pytest.approx(0.2 / 0.8) and amp["x0->eps"][1] == pytest.approx(4.0)
    # an ε-model's error δ gives x̂0 error (σ/α) δ: check by converting a perturbed ε with maths directly
    x0, noise = _data()
    a, s = math.sqrt(0.8), math.sqrt(0.2)
    x_t = a * x0 + s * noise
    _, x0_hat = maths.to_eps_x0(noise + 0.1, x_t, a, s, "epsilon")
    assert float((x0_hat - x0).pow(2).mean()) == pytest.approx(0.01 * amp["eps->x0"][1], rel=1e-4)


def test_grid_and_errors_over_t():
    x0, noise = _data()
    model = OffsetV(x0, 0.0)
    grid = T.timestep_grid(model.make_scheduler(), 5)
    assert grid == [0, 250, 500, 749, 999]
    seen = []
    with pytest.raises(ValueError):
        T.targets_at(model, x0, 1000, ["", ""])
    with pytest.raises(ValueError):
        T.timestep_grid(model.make_scheduler(), 1)
    out = T.error_vs_t(OffsetV(x0, 0.05), x0, ["", ""], [100, 900], None, lambda d, n: seen.append(d))
    assert seen == [1, 2] and out["t"] == [100, 900]
    assert out["mse"]["v"][0] == pytest.approx(0.0025, rel=1e-3)
