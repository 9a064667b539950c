"""RePaint checked by the statistics of what the UNet sees, not by the final composite.

"Pixels outside the mask equal the input" holds by construction (the final composite pastes the
input back), so it cannot catch a broken replacement. Here a spy UNet records its input x_in (the
VP sample, DDPM eq. 4) at every call and answers like an *oracle* for a target image, so the
trajectory is known in closed form:

* **known region** (mask 0): RePaint Alg. 1 l. 4 replaces it by a fresh draw of q(x_t | x_0), so
  r = x_in - sqrt(ᾱ_t) x_0 has mean 0 and variance 1 - ᾱ_t at *every* step, and a fresh draw each
  step (uncorrelated with the previous step's). The oracle's target there is deliberately *not*
  x_0, so a replacement that does nothing leaves the oracle's trajectory and fails.
* **unknown region** (mask 1): the oracle's target is x_0, and deterministic DDIM / Euler keep
  x_in = sqrt(ᾱ) x_0 + sqrt(1-ᾱ) ε_0 exactly; a resampling jump q(x_t' | x_t) (DDPM eq. 2 over the
  stride) adds independent noise, so the variance of r stays 1 - ᾱ_t right after each jump too,
  in VP and in σ-space (Euler), where the jump must be done on x / sqrt(σ² + 1).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from pipelines import inpainting as ip
from pipelines.models import load_toy_diffusion
from pipelines.toyworld.unet_config import build_random_toy_sd

CPU = torch.device("cpu")
PROMPT = "a yellow star on a navy background"


class OracleUNet(torch.nn.Module):
    """Stands in for the toy UNet (v-prediction): knows the clean image ``target`` [1, 3, h, w] and
    returns the exact v = sqrt(ᾱ) ε - sqrt(1-ᾱ) x_0 (Salimans & Ho 2022) for its input, recording
    (ᾱ_t, x_in) of every call. ᾱ(t) is read off the training schedule by interpolating σ(t) as the
    σ-space schedulers do (exact at integer timesteps)."""

    dtype = torch.float32

    def __init__(self, config, alphas_cumprod: torch.Tensor, target: torch.Tensor):
        super().__init__()
        self.config = config
        ac = alphas_cumprod.double().numpy()
        self.sigmas = np.sqrt((1 - ac) / ac)
        self.target = target
        self.calls: list[tuple[float, torch.Tensor]] = []

    def alpha_bar(self, t) -> float:
        t = float(t.flatten()[0]) if torch.is_tensor(t) else float(t)
        s = float(np.interp(t, np.arange(len(self.sigmas)), self.sigmas))
        return 1.0 / (1.0 + s * s)

    def forward(self, x_in, t, encoder_hidden_states=None, return_dict=False, **kw):
        a = self.alpha_bar(t)
        self.calls.append((a, x_in[:1].detach().clone()))
        x0 = self.target.to(x_in.dtype).expand_as(x_in)
        eps = (x_in - math.sqrt(a) * x0) / math.sqrt(1 - a)
        return (math.sqrt(a) * eps - math.sqrt(1 - a) * x0,)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    d = tmp_path_factory.mktemp("repaint_toy")
    build_random_toy_sd(d / "toy-sd", d / "toy-clip")
    return load_toy_diffusion(d / "toy-sd", d / "toy-clip", CPU)


def setup(toy, seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randint(0, 256, (1, 3, 32, 32), generator=g).float() / 127.5 - 1.0  # exact in 8 bits
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 6:26, 8:24] = 1  # 1 = generate
    target = torch.where(mask > 0.5, x0, -x0)  # the oracle's image: x_0 inside, something else outside
    sch = toy.make_scheduler("DDPM")
    oracle = OracleUNet(toy.unet.config, sch.alphas_cumprod, target)
    return dataclasses.replace(toy, unet=oracle), oracle, x0, mask


def residuals(oracle, x0, mask):
    """Per UNet call: (ᾱ, r_known, r_unknown) with r = x_in - sqrt(ᾱ) x_0, flattened."""
    keep = (mask < 0.5).expand_as(x0)
    out = []
    for a, x_in in oracle.calls:
        r = x_in - math.sqrt(a) * x0
        out.append((a, r[keep], r[~keep]))
    return out


def assert_q_sample_stats(r: torch.Tensor, a: float, what: str):
    """r ~ N(0, (1 - ᾱ) I): mean within 5 standard errors, variance within 25 %."""
    var = 1.0 - a
    n = r.numel()
    assert abs(float(r.mean())) < 5 * math.sqrt(var / n) + 1e-6, f"{what}: mean {float(r.mean()):.4g}, ᾱ {a:.4g}"
    ratio = float(r.pow(2).mean()) / var
    assert 0.75 < ratio < 1.25, f"{what}: E[r²] / (1 - ᾱ) = {ratio:.3g} at ᾱ = {a:.4g}"


@pytest.mark.parametrize("sampler", ["DDIM", "Euler"])
def test_known_region_is_a_fresh_q_sample_at_every_step(toy, sampler):
    model, oracle, x0, mask = setup(toy)
    ip.inpaint(model, x0, mask, PROMPT, sampler=sampler, num_inference_steps=12, guidance_scale=1.0,
               generator=torch.Generator().manual_seed(1))
    res = residuals(oracle, x0, mask)
    assert len(res) == 12
    alphas = [a for a, _, _ in res]
    assert alphas == sorted(alphas) and alphas[-1] > 0.5  # from noise towards clean: the test sees small ᾱ too
    for k, (a, r_known, _) in enumerate(res):
        assert_q_sample_stats(r_known, a, f"{sampler} step {k}, known region")
    # a fresh draw of the noise each step (RePaint Alg. 1 l. 4 draws ε every t): successive
    # standardised residuals are uncorrelated
    for (a1, r1, _), (a2, r2, _) in zip(res, res[1:]):
        corr = float((r1 / math.sqrt(1 - a1) * r2 / math.sqrt(1 - a2)).mean())
        assert abs(corr) < 0.2, f"{sampler}: known-region noise repeats between steps (corr {corr:.2f})"


@pytest.mark.parametrize("sampler", ["DDIM", "Euler"])
def test_unknown_region_keeps_the_forward_marginal_through_resampling_jumps(toy, sampler):
    model, oracle, x0, mask = setup(toy, seed=2)
    steps, jump, resamples = 8, 2, 3
    out = ip.inpaint(model, x0, mask, PROMPT, sampler=sampler, num_inference_steps=steps, guidance_scale=1.0,
                     jump_length=jump, resamples=resamples, generator=torch.Generator().manual_seed(3))
    res = residuals(oracle, x0, mask)
    assert len(res) == ip.unet_calls(ip.repaint_walk(steps, jump, resamples)) > steps  # jumps happened
    for k, (a, r_known, r_unknown) in enumerate(res):
        assert_q_sample_stats(r_known, a, f"{sampler} call {k}, known region")
        assert_q_sample_stats(r_unknown, a, f"{sampler} call {k}, unknown region")
    # the oracle knows x_0 in the unknown region, so the generated pixels are x_0 there
    inside = (mask > 0.5).expand_as(x0)
    assert float((out - x0).abs()[inside].max()) < 2e-2
