"""Every api_name of the "Train your own" tab, through gradio_client (each client is its own session)."""

import time
import zipfile

import numpy as np
import pytest
import torch
from diffusers import UNet2DModel
from gradio_client.exceptions import AppError
from PIL import Image

from pipelines.training import digits
from pipelines.training.slots import SLOTS

pytestmark = pytest.mark.api

TWO_D = dict(distribution="8 gaussians", word="DIFFUSION", drawing=None, objective="flow", schedule="cosine",
             logit_normal=False)


def _args_2d(steps=200, t=0.5, seed=0, **kw):
    a = {**TWO_D, **kw}
    return (a["distribution"], a["word"], a["drawing"], a["objective"], a["schedule"], a["logit_normal"], steps, t, seed)


def _img(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_train2d_streams_a_plot_and_continues_in_the_session(client):
    plot, status = client.predict(*_args_2d(200), api_name="/train2d")
    assert _img(plot).shape[1] > 600 and "step 200" in status
    plot2, status2 = client.predict(*_args_2d(100), api_name="/train2d")  # same setup: continues
    assert "step 300" in status2
    redrawn = client.predict(0.9, api_name="/train2d_field")
    assert not np.array_equal(_img(redrawn), _img(plot2))  # arrows at another t
    _, status3 = client.predict(*_args_2d(100, objective="ddpm"), api_name="/train2d")  # new setup: afresh
    assert "**ddpm**" in status3 and "step 100" in status3


def test_train2d_rejects_bad_input(client):
    with pytest.raises(AppError, match="galaxy"):
        client.predict(*_args_2d(100, distribution="galaxy"), api_name="/train2d")
    with pytest.raises(AppError, match="word"):
        client.predict(*_args_2d(100, distribution="word", word=""), api_name="/train2d")
    with pytest.raises(AppError, match="draw"):
        client.predict(*_args_2d(100, distribution="your points"), api_name="/train2d")
    with pytest.raises(AppError, match="train a model first"):
        client.predict(0.5, api_name="/train2d_field")


def test_compare_then_reflow(client):
    with pytest.raises(AppError, match="comparison first"):
        client.predict(100, api_name="/train2d_reflow")
    img, md = client.predict("ring", "", None, "cosine", False, 200, 0, api_name="/train2d_compare")
    assert "| DDPM |" in md and "| flow |" in md and "straightness" in md
    img2, md2 = client.predict(200, api_name="/train2d_reflow")
    assert "| reflow |" in md2 and _img(img2).shape[0] > _img(img).shape[0]  # a third row


def test_stop_buttons_answer(client):
    assert client.predict(api_name="/train2d_stop") == "Stopped."
    assert client.predict(api_name="/digits_stop") == "Stopped."


def test_busy_slots_say_where_you_are_in_line(client):
    held = [SLOTS.join() for _ in range(SLOTS.capacity)]  # the app runs in this process: fill every slot
    try:
        job = client.submit(*_args_2d(100), api_name="/train2d")
        end = time.monotonic() + 60
        while time.monotonic() < end and not any("busy" in str(o[-1]) for o in job.outputs()):
            time.sleep(0.2)
        msgs = [o[-1] for o in job.outputs()]
        assert any("you are 1st in line" in m for m in msgs), msgs
    finally:
        for t in held:
            SLOTS.leave(t)
    _, status = job.result(timeout=120)
    assert "step 100" in status


def test_digits_train_sample_and_download_load_back(client, tmp_path):
    grid, loss, status = client.predict("class", "flow", 4, 3.0, 0, api_name="/digits_train")
    assert "step" in status or "4 steps" in status
    g = _img(grid)
    assert g.shape[1] > g.shape[0]  # ten columns, four rows
    grid2, caption = client.predict(1.0, 5, api_name="/digits_sample")
    assert "w = 1" in caption and not np.array_equal(_img(grid2), g)
    zpath = client.predict(api_name="/digits_download")
    with zipfile.ZipFile(zpath) as z:
        z.extractall(tmp_path)
    folder = tmp_path / "digits-class-flow"
    unet = UNet2DModel.from_pretrained(folder)
    assert unet.config.num_class_embeds == digits.NULL_CLASS + 1
    model, cfg = digits.load(folder)
    assert cfg.stage == "class" and (folder / "scheduler" / "scheduler_config.json").exists()
    out = unet(torch.zeros(1, 1, digits.SIZE, digits.SIZE), torch.tensor([500.0]), class_labels=torch.tensor([3]))
    assert out.sample.shape == (1, 1, digits.SIZE, digits.SIZE)


def test_digits_denoiser_stage_shows_noise_levels(client):
    grid, _, status = client.predict("denoiser", "flow", 2, 3.0, 0, api_name="/digits_train")
    assert "σ = 0.0, 0.2" in status
    assert _img(grid).shape[0] > _img(grid).shape[1]  # 7 noise levels x 2 rows, 8 columns


def test_digits_sample_and_download_need_a_model(client):
    with pytest.raises(AppError, match="Skip ahead"):
        client.predict(3.0, 0, api_name="/digits_sample")
    with pytest.raises(AppError, match="Skip ahead"):
        client.predict(api_name="/digits_download")


@pytest.mark.parametrize("stage,folder", [("class", "digits-class-flow"), ("time", "digits-time-flow"),
                                          ("denoiser", "digits-denoiser")])
def test_skip_ahead_loads_the_shipped_checkpoint(client, stage, folder):
    grid, status = client.predict(stage, 3.0, api_name="/digits_skip")
    assert f"**{folder}**" in status and _img(grid).shape[1] > 100
    grid2, caption = client.predict(3.0, 1, api_name="/digits_sample")  # the loaded model samples again
    assert not np.array_equal(_img(grid2), _img(grid))
