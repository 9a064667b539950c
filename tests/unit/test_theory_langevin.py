"""Annealed Langevin (pipelines/theory/langevin.py) against closed forms for Gaussian data.

Unadjusted Langevin on N(μ, s²) with step η is the AR(1) chain x' = a x + (1 − a) μ + √η z, a = 1 − η / (2 s²),
whose stationary law is N(μ, η / (1 − a²)) exactly; the annealed sampler with the ideal denoiser of Gaussian data
must end at the last level's law N(√ᾱ μ, ᾱ s² + 1 − ᾱ), and its Tweedie x̂0 at N(μ, ᾱ s⁴ / (ᾱ s² + 1 − ᾱ)).
"""

import math
from types import SimpleNamespace

import pytest
import torch
from diffusers import DDIMScheduler

from pipelines.diffusion import maths
from pipelines.theory import langevin as L

MU, S2 = 0.2, 0.04  # data: every pixel N(0.2, 0.2²) (inside [-1, 1], where images are clamped)


def test_one_level_reaches_the_exact_stationary_law():
    g = torch.Generator().manual_seed(0)
    mu = torch.tensor([1.0, -2.0])
    s2, eta = 0.5, 0.2
    x = torch.randn(40000, 2, generator=g) * 3
    x = L.run_chain(lambda x, i: -(x - mu) / s2, x, [eta], 300, g)
    a = 1 - eta / (2 * s2)
    torch.testing.assert_close(x.mean(0), mu, atol=0.02, rtol=0)
    torch.testing.assert_close(x.var(0), torch.full((2,), eta / (1 - a * a)), atol=0.02, rtol=0)


class GaussianDenoiser:
    """A stand-in for a DiffusionModel whose v-output is the ideal denoiser of N(MU, S2) pixel data."""

    device, unet, encode_prompt, sample_shape, kind = torch.device("cpu"), SimpleNamespace(dtype=torch.float32), \
        None, (1, 4, 4), "pixel"

    def __init__(self):
        self.calls = 0
        self.alphas_cumprod = self.make_scheduler().alphas_cumprod

    def make_scheduler(self, sampler="DDIM"):
        return DDIMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                             prediction_type="v_prediction", timestep_spacing="trailing", clip_sample=False)

    def prediction_type(self, scheduler):
        return "v_prediction"

    def predict(self, x, t, emb):
        self.calls += 1
        ab = float(self.alphas_cumprod[int(t)])
        a, s = math.sqrt(ab), math.sqrt(1 - ab)
        eps = s * (x - a * MU) / (ab * S2 + 1 - ab)  # E[ε | x_t] for Gaussian data
        return maths.from_eps(eps, x, a, s, "v_prediction")

    def decode(self, x):
        return x


@pytest.mark.parametrize("denoise", [False, True])
def test_annealed_chain_ends_at_the_last_levels_law(denoise):
    model = GaussianDenoiser()
    g = torch.Generator().manual_seed(1)
    lat = torch.randn(4000, *model.sample_shape, generator=g)
    recs = list(L.annealed_langevin(model, "", guidance_scale=1.0, n_levels=8, steps_per_level=20, delta=1.0,
                                    generator=g, latents=lat, denoise=denoise))
    last = recs[-1]
    ab = last.alpha_bar
    var = ab * S2 + 1 - ab
    eta = 1.0 * (1 - ab)
    a = 1 - eta / (2 * var)  # the discrete chain's own stationary variance (≈ var for small η)
    assert last.calls == model.calls == len(recs) * 20 + denoise
    x = last.image if denoise else last.x
    want_mean = MU if denoise else math.sqrt(ab) * MU
    want_var = ab * S2 * S2 / var * (eta / (1 - a * a)) / var if denoise else eta / (1 - a * a)
    assert abs(float(x.mean()) - want_mean) < 0.01
    assert abs(float(x.var()) / want_var - 1) < 0.05


def test_levels_follow_the_ddim_plan_and_scale_with_the_variance():
    s = GaussianDenoiser().make_scheduler()
    plan = L.level_plan(s, 10, 0.2)
    s.set_timesteps(10)
    assert [t for t, _, _ in plan] == [int(t) for t in s.timesteps if 0 < float(s.alphas_cumprod[int(t)]) < 1]
    for t, ab, eta in plan:
        assert ab == pytest.approx(float(s.alphas_cumprod[t]))
        assert eta == pytest.approx(0.2 * (1 - ab))
    assert L.model_calls(s, 10, 3) == len(plan) * 3 + 1


def test_bad_settings_are_refused():
    model = GaussianDenoiser()
    for kw in ({"n_levels": 0}, {"steps_per_level": 50}, {"delta": float("nan")}, {"guidance_scale": -1}):
        with pytest.raises(ValueError):
            next(L.annealed_langevin(model, "", **kw))
