"""Issue 16, item 3: a digits model, shipped or trained in "Train your own", opens in the denoising viewer and
the guidance tab, through gradio_client (each Client is its own browser session)."""

from __future__ import annotations

import numpy as np
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError
from PIL import Image

from pipelines.models.specs import SESSION_DIGITS
from pipelines.runtime import Runtime

pytestmark = pytest.mark.api

BUNDLED = next(n for n in Runtime().registry.diffusion_names(kind="digits") if "class" in n)


def _img(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _view(client, model, prompt="7", sampler="Euler", steps=8, guidance=3.0):
    job = client.submit(model, prompt, "", sampler, steps, 0.0, 0, guidance, False, None, 0.6, api_name="/viewer_run")
    job.result(timeout=300)
    return job.outputs()


def test_bundled_digits_stream_in_the_viewer(client):
    outs = _view(client, BUNDLED)
    xt, x0, eps, preview, info = outs[-1]
    assert "step 8 / 8" in info and preview is None
    a = _img(x0)
    assert a.shape[:2] == (16, 16) and np.array_equal(a[..., 0], a[..., 2])  # gray, at the model's size
    _, x0_3, _, _, info3 = client.predict(3, api_name="/viewer_scrub")  # the recorded run scrubs
    assert "step 3 / 8" in info3
    with pytest.raises(AppError, match="one digit 0-9"):
        _view(client, BUNDLED, prompt="a red circle on a navy background")
    with pytest.raises(AppError, match="flow-matching"):
        _view(client, BUNDLED, sampler="DDIM")


def test_a_trained_model_is_sent_to_the_viewer_and_guidance_of_its_session_only(app_url):
    me, other = (Client(app_url, verbose=False, download_files=True) for _ in range(2))
    with pytest.raises(AppError, match="no trained digits model in this session"):
        _view(me, SESSION_DIGITS)
    with pytest.raises(AppError, match="train a model or press Skip ahead"):
        me.predict(api_name="/digits_send")
    me.predict("class", "flow", 3, 3.0, 0, api_name="/digits_train")  # live training, a few steps
    status = me.predict(api_name="/digits_send")
    assert SESSION_DIGITS in status and "step 3" in status
    assert "step 8 / 8" in _view(me, SESSION_DIGITS)[-1][-1]
    with pytest.raises(AppError, match="no trained digits model in this session"):
        _view(other, SESSION_DIGITS)  # the other session has sent nothing

    me.predict("class", 3.0, api_name="/digits_skip")  # the shipped checkpoint, sent in place of the first
    assert "shipped" in me.predict(api_name="/digits_send")
    img, md = me.predict(SESSION_DIGITS, "7", "", 3.0, 12, "Euler", 0, api_name="/guidance_generate")
    assert "The digit judge reads **7**" in md
    grid = me.predict(SESSION_DIGITS, "2", "", 8, "Euler", 0, api_name="/guidance_grid")
    assert len(grid) == 5
    plot, table = me.predict(SESSION_DIGITS, "3", "", 8, "Euler", 0, 2, api_name="/guidance_tradeoff")
    assert "labelled as asked (digit judge)" in table
    rows = [r.split("|") for r in table.splitlines() if r.startswith("| ") and r[2].isdigit()]
    assert len(rows) == 8 and rows[-1][2].strip() == "100%"  # at w = 15 the judge reads the digit asked for


def test_the_denoiser_stage_cannot_be_sent(client):
    client.predict("denoiser", 3.0, api_name="/digits_skip")
    with pytest.raises(AppError, match="does not generate"):
        client.predict(api_name="/digits_send")


def test_unconditional_digits_in_the_viewer_and_colour_guidance_refused(client):
    from demos.guidance import COLOUR_DEFAULT

    uncond = next(n for n in Runtime().registry.diffusion_names(kind="digits") if "unconditional" in n)
    assert "step 4 / 4" in _view(client, uncond, prompt="", steps=4)[-1][-1]
    with pytest.raises(AppError, match="gray"):
        client.predict(BUNDLED, "7", "#ff0000", 10, COLOUR_DEFAULT["scaling"], 4, 0, False, api_name="/guidance_colour")
