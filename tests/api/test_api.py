"""Every api_name of the Forward noising and Schedules tabs, through gradio_client."""

import numpy as np
import pytest
import torch
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from demos.common import sample_paths
from pipelines import images
from pipelines.diffusion import schedules
from tests.images_helpers import make_files

pytestmark = pytest.mark.api

SAMPLE = sample_paths()[1]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return make_files(tmp_path_factory.mktemp("api_uploads"))


def _img(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)


def _expected_xt(path, seed, size, schedule, t) -> np.ndarray:
    x0 = images.load_working_tensor(path, size)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    a = schedules.curves(schedule).alphas_cumprod[t]
    return images.tensor_to_uint8((a.sqrt() * x0 + (1 - a).sqrt() * noise)[0]).astype(np.float64)


def _corr(a, b) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_forward_load_and_mix_compute_the_right_image(client):
    x0, eps, xt, md, strip = client.predict(handle_file(SAMPLE), 3, 128, "cosine", 400, api_name="/forward_load")
    assert _img(x0).shape == _img(eps).shape == _img(xt).shape == (128, 128, 3)
    expected = _expected_xt(SAMPLE, 3, 128, "cosine", 400)
    assert _corr(_img(xt), expected) > 0.9  # JPEG-compressed, so correlation rather than equality
    assert _corr(_img(xt), _expected_xt(SAMPLE, 4, 128, "cosine", 400)) < 0.7  # another seed differs
    a = float(schedules.curves("cosine").alphas_cumprod[400])
    assert f"{a ** 0.5:.4f}" in md and f"{(1 - a) ** 0.5:.4f}" in md and "dB" in md
    assert len(strip) == 8

    # the slider: same session, so the cached x0 and ε are reused
    xt2, md2 = client.predict("cosine", 900, api_name="/forward_mix")
    assert _corr(_img(xt2), _expected_xt(SAMPLE, 3, 128, "cosine", 900)) > 0.9
    assert "x_{900}" in md2
    xt3, _ = client.predict("linear", 900, api_name="/forward_schedule")
    assert _corr(_img(xt3), _expected_xt(SAMPLE, 3, 128, "linear", 900)) > 0.9
    strip2 = client.predict("linear", api_name="/forward_strip")
    assert len(strip2) == 8 and strip2[0]["caption"].startswith("t=0")


def test_fresh_session_has_a_default_image(client):
    xt, md = client.predict("linear", 10, api_name="/forward_mix")
    assert _img(xt).shape == (256, 256, 3) and "x_{10}" in md


def test_forward_compare(client):
    gallery, plot, md = client.predict("linear", 200, 8, 1, api_name="/forward_compare")
    assert len(gallery) == 5 and plot is not None
    assert "8 draws each" in md and "theory" in md
    # theory: std of x_200 = sqrt(1 - ᾱ_200), DDPM's linear β from 1e-4 to 0.02 over 1000 steps
    sd = float(np.sqrt(1 - np.prod(1 - np.linspace(1e-4, 0.02, 1000)[:201])))
    assert f"theory {sd:.3f}" in gallery[3]["caption"] and f"theory {sd:.3f}" in gallery[4]["caption"]
    # the std images (std 0..1 shown black..white) measure that spread, by both methods
    for tile in gallery[3:]:
        assert abs(_img(tile["image"]).mean() / 255 - sd) < 0.15 * sd, tile["caption"]
    # the means of 8 draws follow the theoretical mean sqrt(ᾱ) x0 (8 draws: noisy, but correlated)
    theory = _img(gallery[0]["image"])
    assert _corr(_img(gallery[1]["image"]), theory) > 0.3 and _corr(_img(gallery[2]["image"]), theory) > 0.3


@pytest.mark.parametrize("name,match", [
    ("corrupt", "not a readable image"),
    ("empty", "empty"),
    ("truncated", "corrupt or truncated"),
    ("tiny", "too small"),
    ("bomb", "too large"),
    ("sliver", "aspect ratio"),
])
def test_bad_uploads_get_a_clear_message_and_the_server_keeps_serving(client, files, name, match):
    with pytest.raises(AppError, match=match):
        client.predict(handle_file(str(files[name])), 0, 128, "linear", 10, api_name="/forward_load")
    with pytest.raises(AppError, match=match):
        client.predict(handle_file(str(files[name])), ["linear"], 100, 1e-4, 0.02, False, False, 0.5, 0,
                       api_name="/schedules_update")
    xt, _ = client.predict("linear", 10, api_name="/forward_mix")  # still serving
    assert _img(xt).shape[2] == 3


@pytest.mark.parametrize("name", ["cmyk", "gray16"])
def test_odd_modes_are_converted(client, files, name):
    x0, *_ = client.predict(handle_file(str(files[name])), 0, 128, "linear", 10, api_name="/forward_load")
    assert _img(x0).shape == (128, 128, 3)


def test_bad_parameters_are_reported(client):
    # the input guard checks every value before gradio does: the message names the parameter and its range
    with pytest.raises(AppError, match=r"timestep t.* must be between 0 and 999, got 5000"):
        client.predict("linear", 5000, api_name="/forward_mix")
    with pytest.raises(AppError, match=r"must be between \d+ and \d+, got 1000"):
        client.predict("linear", 10, 1000, 0, api_name="/forward_compare")
    with pytest.raises(AppError, match=r"seed.* must be between 0 and 4294967295, got -5"):
        client.predict(handle_file(SAMPLE), -5, 128, "linear", 10, api_name="/forward_load")


def test_schedules_update(client):
    fig, grid, table = client.predict(None, ["linear", "cosine", "scaled_linear"], 1000, 1e-4, 0.02, False, False,
                                      0.5, 0, api_name="/schedules_update")
    assert fig is not None and len(grid) == 3
    rows = {r[0]: r for r in table["data"]}
    assert float(rows["scaled_linear"][2]) == pytest.approx(0.0683, abs=1e-3)
    assert "leaks" in rows["scaled_linear"][4] and "≈ 0" in rows["cosine"][4]
    _, _, table = client.predict(None, ["scaled_linear"], 1000, 1e-4, 0.02, False, True, 1.0, 0,
                                 api_name="/schedules_update")
    assert table["data"][0][2] == "0.000000" and table["data"][0][3] == "−∞" and "≈ 0" in table["data"][0][4]


def test_schedules_grid_same_noise_differs_by_schedule(client):
    grid = client.predict(handle_file(SAMPLE), ["linear", "cosine"], 1000, 1e-4, 0.02, False, False, 0.3, 5,
                          api_name="/schedules_grid")
    a, b = _img(grid[0]["image"]), _img(grid[1]["image"])
    assert a.shape == b.shape and np.abs(a - b).mean() > 3  # cosine keeps more signal at the same t
    assert "cosine" in grid[1]["caption"]


def test_schedules_plot_and_table(client):
    assert client.predict(["sigmoid"], 200, 1e-4, 0.02, True, False, api_name="/schedules_plot") is not None
    table = client.predict(["quadratic", "linear"], 200, 1e-4, 0.02, True, False, api_name="/schedules_table")
    assert [r[0] for r in table["data"]] == ["quadratic", "linear"]
    # √ᾱ_T over T = 200 steps of β in [1e-4, 0.02]: linear β, and quadratic (linear in sqrt(β), squared)
    betas = {"linear": np.linspace(1e-4, 0.02, 200), "quadratic": np.linspace(1e-4 ** 0.5, 0.02 ** 0.5, 200) ** 2}
    for row in table["data"]:
        a = float(np.prod(1 - betas[row[0]]))
        assert float(row[2]) == pytest.approx(a ** 0.5, abs=2e-6), row
        assert float(row[3]) == pytest.approx(10 * np.log10(a / (1 - a)), abs=0.051), row
        assert "leaks" in row[4] and a ** 0.5 > 0.3, row  # 200 steps of small β leave much of the signal


@pytest.mark.parametrize("args,match", [
    (([], 1000, 1e-4, 0.02, False, False), "at least one"),
    ((["linear"], 1000, 0.03, 0.02, True, False), "beta_start < beta_end"),
])
def test_schedules_bad_input(client, args, match):
    with pytest.raises(AppError, match=match):
        client.predict(*args, api_name="/schedules_table")
