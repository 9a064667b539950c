"""toy-sd3 (latent, flow matching) through the app: the Latent space tab's endpoints, and the other tabs'
endpoints with toy-sd3 chosen (viewer, guidance, inpainting, sketch, inside-the-model), via gradio_client.
Behaviour, not appearance: the assertions hold whatever the bundled weights."""

from __future__ import annotations

import numpy as np
import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from demos.common import sample_paths
from demos.inpainting import WORK_PX, red_blob_sketch
from demos.latent_space import toy_paths
from pipelines.toyworld.world import Scene, render

pytestmark = pytest.mark.api
SD3 = "toy-sd3 (bundled, 64 px, latent)"
PROMPT = "a red circle on a white background"


def _img(path) -> np.ndarray:
    p = path["path"] if isinstance(path, dict) else path
    return np.asarray(Image.open(p).convert("RGB"), dtype=np.int16)


def _psnr(md: str) -> float:
    return float(md.split("PSNR ")[1].split(" dB")[0])


def test_round_trip_of_a_toy_scene_and_a_photo(client):
    gal, ch, md = client.predict(SD3, handle_file(toy_paths()[0]), api_name="/latent_round_trip")
    assert len(gal) == 4 and len(ch) == 4 and "16×16×4" in md and "12× fewer" in md
    assert [g["caption"] for g in gal][1] == "decoded D(E(x))"
    toy = _psnr(md)
    _, _, md_photo = client.predict(SD3, handle_file(sample_paths()[0]), api_name="/latent_round_trip")
    assert toy > _psnr(md_photo) + 5  # a VAE trained on shapes keeps shapes, not photos


def test_pixel_models_are_refused_in_the_latent_tab(client):
    with pytest.raises(AppError, match="latent model must be one of"):  # the dropdown offers latent models only
        client.predict("toy-sd (bundled, 32 px)", handle_file(toy_paths()[0]), api_name="/latent_round_trip")


def test_noise_same_level_both_spaces(client):
    gal, md = client.predict(SD3, handle_file(toy_paths()[1]), 0.5, 3, api_name="/latent_noise")
    assert len(gal) == 3 and "s = 0.50" in md and "ᾱ = 0.500" in md
    again, _ = client.predict(SD3, handle_file(toy_paths()[1]), 0.5, 3, api_name="/latent_noise")
    assert np.array_equal(_img(gal[1]["image"]), _img(again[1]["image"]))  # same seed, same noise


@pytest.mark.parametrize("mode", ["images", "noise"])
def test_interpolation_lerp_vs_slerp(client, mode):
    a, b = (handle_file(p) for p in toy_paths()[:2])
    lerp, slerp, md = client.predict(SD3, mode, a, b, PROMPT, 0, 1, 3, api_name="/latent_interpolate")
    assert len(lerp) == len(slerp) == 3
    assert np.array_equal(_img(lerp[0]["image"]), _img(slerp[0]["image"]))  # both start at A
    norms = {m: [float(v) for v in md.split(f"**{m}** ")[1].split(";")[0].split(". ")[0].split(" → ")]
             for m in ("lerp", "slerp")}
    assert norms["lerp"][1] < norms["slerp"][1]  # lerp's middle is shorter


def test_preview_vs_decode_streams_then_strip(client):
    job = client.submit(SD3, PROMPT, 6, 3.0, 0, api_name="/latent_preview_run")
    job.result(timeout=300)
    outs = job.outputs()
    assert len(outs) == 6 and "Done" in outs[-1][3] and "ms" in outs[-1][3]
    cheap, dec = _img(outs[-1][0]), _img(outs[-1][1])
    assert cheap.shape == dec.shape  # both shown at the same display size
    assert len(outs[-1][4]) == 12  # 6 steps × (preview, decoded)


def test_costs_table(client):
    md = client.predict(api_name="/latent_costs")
    assert "toy-sd (bundled" in md and SD3 in md and "1,024" in md and "12,288" in md


def test_viewer_runs_toy_sd3_with_decoded_and_preview_panels(client):
    job = client.submit(SD3, PROMPT, "", "Euler", 5, 0.0, 0, 3.0, False, None, 0.6, api_name="/viewer_run")
    job.result(timeout=300)
    xt, x0, eps, preview, info = job.outputs()[-1]
    assert "step 5 / 5" in info
    assert all(_img(p).shape == (64, 64, 3) for p in (xt, x0, eps, preview))
    with pytest.raises(AppError, match="flow-matching model.*Euler"):
        client.predict(SD3, PROMPT, "", "DDIM", 5, 0.0, 0, 3.0, False, None, 0.6, api_name="/viewer_run")


def test_guidance_tab_runs_toy_sd3(client):
    img, md = client.predict(SD3, PROMPT, "", 3.0, 4, "Euler", 1, api_name="/guidance_generate")
    assert "Done" in md and "Euler" in md
    gal, md = client.predict(SD3, PROMPT, "", 3.0, 4, "Euler", 1, 2, api_name="/guidance_decompose")
    assert len(gal) == 6 and "Step **2/4**" in md


def test_inpainting_toy_sd3_restores_pixels_outside_the_mask(client, tmp_path):
    scene = tmp_path / "scene.png"
    render(Scene("square", "blue", "white", "medium", 0.45, 0.55, 0.3), size=WORK_PX).save(scene)
    layer = np.zeros((WORK_PX, WORK_PX, 4), np.uint8)
    layer[64:192, 80:176] = (255, 0, 255, 140)
    Image.fromarray(layer, "RGBA").save(tmp_path / "layer.png")
    value = {"background": handle_file(str(scene)), "layers": [handle_file(str(tmp_path / "layer.png"))],
             "composite": None}
    result, _, mask, md = client.predict(SD3, value, PROMPT, "", 3.0, 6, "Euler", 0, 2, 2, api_name="/inpaint")
    out, src = _img(result), _img(str(scene))
    m = _img(mask)[..., 0] > 127
    assert np.abs(out - src)[~m].max() <= 1 and np.abs(out - src)[m].mean() > 2
    assert "Done" in md and "64" in md


def test_sketch_runs_toy_sd3(client, tmp_path):
    red_blob_sketch().save(tmp_path / "blob.png")
    value = {"background": handle_file(str(tmp_path / "blob.png")), "layers": [], "composite": None}
    img, md = client.predict(SD3, value, PROMPT, 0.7, 3.0, 10, 0, api_name="/sketch")
    assert "Done" in md and "64 px" in md


def test_inside_model_tokens_work_and_control_says_not_offered(client):
    rows, md = client.predict(SD3, PROMPT, api_name="/inside_tokens")
    assert "word pieces" in md  # its maps: tests/api/test_inside_api.py::test_toy_sd3_joint_attention_maps
    with pytest.raises(AppError, match="offered for toy-sd only"):
        client.predict(SD3, PROMPT, "a red square on a navy background", 0.8, 0.4, 4, 4.0, 1, api_name="/inside_swap")


def test_sampler_race_runs_toy_sd3_on_its_flow_samplers(client):
    """The race's lanes on a flow model: Euler with the model's shift, SD3's shift 3, stochastic Euler; the same x_T
    (seed) for all, each lane reproducible; a VP sampler is refused before any lane runs."""
    lanes = [True, "Euler", 3, True, "Euler, shift 3", 3, True, "Euler, stochastic", 3, False, "DDIM", 2]
    gallery, md = client.predict(SD3, PROMPT, 3.0, 1, *lanes, api_name="/sampler_race")
    assert [g["caption"].split(", 3 steps")[0] for g in gallery] == ["Euler", "Euler, shift 3", "Euler, stochastic"]
    assert "| Euler, shift 3 | 3 |" in md and "flow-matching model" in md and "seed 1" in md
    euler, shifted, stochastic = (_img(g["image"]) for g in gallery)
    assert euler.shape == (192, 192, 3)  # 64 px shown 3x
    # shift 3 and the stochastic step are other σ grids / other updates: other pictures from the same x_T
    assert np.abs(euler - shifted).mean() > 1 and np.abs(euler - stochastic).mean() > 1
    again, _ = client.predict(SD3, PROMPT, 3.0, 1, *lanes, api_name="/sampler_race")
    assert all(np.array_equal(_img(a["image"]), _img(g["image"])) for a, g in zip(again, gallery))
    with pytest.raises(AppError, match="flow-matching model.*'DDIM' is for ε/v models"):
        client.predict(SD3, PROMPT, 3.0, 1, True, "Euler", 2, True, "DDIM", 2, *([False, "Euler", 2] * 2),
                       api_name="/sampler_race")
