"""The small views of issue 21 through gradio_client: the amount blend (Forward), the spectrum of x̂0, DDPM's
β vs β̃, sampling at 48/64 px (viewer), the i_start notes (viewer SDEdit, sketch to image)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError
from PIL import Image

from pipelines.models import DEFAULT_DIFFUSION_SPECS

pytestmark = pytest.mark.api

MODEL = DEFAULT_DIFFUSION_SPECS[0].name
PROMPT = "a large yellow star on a black background"


def _img(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_forward_blend_reports_both_variances(client):
    gallery, plot, md = client.predict(0.5, "uniform noise (torch.rand, as seeds 000 and 004)", 0,
                                       api_name="/forward_blend")
    assert len(gallery) == 3 and "√ᾱ = 0.50" in gallery[2]["caption"]
    rows = re.findall(r"\| ([\d.]+) / [^|]*= ([\d.]+) \|", md)
    assert len(rows) == 2  # (measured, theory) for the blend and for DDPM eq. 4
    for measured, theory in rows:
        assert float(measured) == pytest.approx(float(theory), rel=0.1)
    assert float(rows[0][1]) == pytest.approx(0.25 / 3, abs=1e-3) and float(rows[1][1]) == pytest.approx(0.75)
    assert plot is not None
    with pytest.raises(AppError, match="amount"):
        client.predict(1.5, "Gaussian noise (torch.randn)", 0, api_name="/forward_blend")


def test_spectrum_needs_a_run_then_reads_it(app_url):
    c = Client(app_url, verbose=False)
    with pytest.raises(AppError, match="Run the sampler first"):
        c.predict(api_name="/viewer_spectrum")
    c.predict(MODEL, PROMPT, "", "DDIM", 6, 0.0, 0, 3.0, False, None, 0.6, api_name="/viewer_run")
    plot, md = c.predict(api_name="/viewer_spectrum")
    assert plot is not None and "**low**" in md and "of 6 steps" in md


def test_ddpm_beta_is_a_viewer_sampler_and_differs_from_beta_tilde(client):
    finals = {}
    for s in ("DDPM", "DDPM, σ² = β (fixed_large)"):
        outs = client.predict(MODEL, PROMPT, "", s, 6, 0.0, 0, 3.0, False, None, 0.6, api_name="/viewer_run")
        xt, info = outs[0], outs[-1]  # x_t first, the step line last (x̂0, ε and the latent preview between)
        assert "step 6 / 6" in info
        finals[s] = _img(xt).astype(float)
    assert np.abs(finals["DDPM"] - finals["DDPM, σ² = β (fixed_large)"]).mean() > 1.0  # same seed, other variance


def test_viewer_variance_and_sizes(client):
    gallery, plot, md = client.predict(MODEL, PROMPT, 6, 3.0, 0, api_name="/viewer_variance")
    assert [g["caption"] for g in gallery] == ["β̃ (posterior, fixed_small)", "β (forward, fixed_large)"]
    assert md.count("roughness") == 2 and plot is not None
    gallery, md = client.predict(MODEL, PROMPT, 4, 3.0, 0, api_name="/viewer_sizes")
    assert [g["caption"] for g in gallery] == ["32 px", "48 px", "64 px"]
    assert [_img(g["image"]).shape[0] for g in gallery] == [192] * 3
    assert md.count("blob(s)") == 3
    with pytest.raises(AppError, match="steps"):
        client.predict(MODEL, PROMPT, 0, 3.0, 0, api_name="/viewer_sizes")


def test_i_start_shown_with_strength(client):
    md = client.predict(MODEL, "DDIM", 30, 0.6, True, api_name="/viewer_start_info")
    assert "i_start = 12** of N = 30" in md and "1 − i_start/N = 0.6" in md
    md = client.predict(0.35, 40, api_name="/sketch_i_start")
    assert "i_start = 26** of N = 40" in md  # int(40 · 0.35) = 14 steps kept
    with pytest.raises(AppError, match="leaves no denoising step"):
        client.predict(0.05, 10, api_name="/sketch_i_start")
