"""Every computing api_name of the Inpainting tab, through gradio_client (the shared ``client``).

An ``gr.ImageEditor`` value travels as ``{"background": handle_file(...), "layers":
[handle_file(...)], "composite": handle_file(...) | None}``; the mask is the layers' alpha.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from demos.inpainting import TOY_SCENES, WORK_PX, red_blob_sketch
from pipelines.toyworld.world import render

pytestmark = pytest.mark.api
STEPS = 5


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("inpaint_api")
    scene = d / "scene.png"
    render(TOY_SCENES[0], size=WORK_PX).save(scene)
    layer = np.zeros((WORK_PX, WORK_PX, 4), np.uint8)
    layer[64:192, 80:176] = (255, 0, 255, 140)  # translucent paint: alpha marks the mask
    Image.fromarray(layer, "RGBA").save(d / "layer.png")
    full = np.full((WORK_PX, WORK_PX, 4), 255, np.uint8)
    Image.fromarray(full, "RGBA").save(d / "full.png")
    Image.fromarray(np.zeros((WORK_PX, WORK_PX, 4), np.uint8), "RGBA").save(d / "empty.png")
    small = np.zeros((128, 128, 4), np.uint8)
    small[32:96, 40:88, 3] = 255  # the same box at half size
    Image.fromarray(small, "RGBA").save(d / "small.png")
    Image.new("RGB", (3000, 2200), (40, 90, 160)).save(d / "huge.png")
    big_layer = np.zeros((2200, 3000, 4), np.uint8)
    big_layer[800:1400, 1200:1800, 3] = 255
    Image.fromarray(big_layer, "RGBA").save(d / "huge_layer.png")
    red_blob_sketch().save(d / "blob.png")
    return {p.stem: str(p) for p in d.iterdir()}


def editor(bg, *layers, composite=None):
    return {"background": handle_file(bg), "layers": [handle_file(x) for x in layers],
            "composite": handle_file(composite) if composite else None}


def rgb(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def inpaint(client, value, prompt="a yellow star on a navy background", steps=STEPS, resamples=1, jump=2, seed=0):
    return client.predict("toy-sd (bundled, 32 px)", value, prompt, "", 5.0, steps, "DDIM", seed, resamples, jump,
                          api_name="/inpaint")


def test_inpaint_keeps_pixels_outside_the_mask_and_changes_inside(client, files):
    result, x_t, mask, md = inpaint(client, editor(files["scene"], files["layer"]))
    out, src = rgb(result), rgb(files["scene"])
    m = rgb(mask)[..., 0] > 127
    assert out.shape == src.shape == (WORK_PX, WORK_PX, 3)
    assert m[64:192, 80:176].all() and m.sum() == 128 * 96  # the mask is the layer's alpha
    assert np.abs(out - src)[~m].max() <= 1  # ≤ 1/255 outside the mask
    assert np.abs(out - src)[m].mean() > 2  # something was generated inside
    assert "Done" in md and "32×32" in md and x_t is not None


def test_inpaint_mask_preview(client, files):
    mask, md = client.predict(editor(files["scene"], files["layer"]), api_name="/inpaint_mask")
    assert (rgb(mask)[..., 0] > 127).sum() == 128 * 96 and "19%" in md
    _, md = client.predict(editor(files["scene"]), api_name="/inpaint_mask")
    assert "empty" in md


def test_empty_mask_gets_a_clear_message(client, files):
    for value in (editor(files["scene"]), editor(files["scene"], files["empty"])):
        with pytest.raises(AppError, match="mask is empty"):
            inpaint(client, value)


def test_full_mask_runs_as_plain_generation(client, files):
    result, _, _, md = inpaint(client, editor(files["scene"], files["full"]))
    assert "plain text-to-image" in md and rgb(result).shape == (WORK_PX, WORK_PX, 3)
    out, src = rgb(result).astype(float), rgb(files["scene"]).astype(float)
    assert np.abs(out - src).mean() > 10  # nothing of the input is kept
    corners = np.concatenate([out[:24, :24], out[:24, -24:], out[-24:, :24], out[-24:, -24:]]).reshape(-1, 3).mean(0)
    assert corners[2] > corners[0] + 20 and corners[2] > corners[1], corners  # "... on a navy background"


def test_mask_of_another_size_is_reconciled(client, files):
    result, _, mask, md = inpaint(client, editor(files["scene"], files["small"]))
    m = rgb(mask)[..., 0] > 127
    assert "mask was resized" in md and m[64:192, 80:176].all() and m.sum() == 128 * 96
    assert np.abs(rgb(result) - rgb(files["scene"]))[~m].max() <= 1


def test_huge_upload_is_resized_with_a_notice(client, files):
    result, _, mask, md = inpaint(client, editor(files["huge"], files["huge_layer"]))
    assert "large (3000×2200 px)" in md and rgb(result).shape == (WORK_PX, WORK_PX, 3)
    assert 0 < (rgb(mask)[..., 0] > 127).mean() < 0.5


def test_resampling_changes_the_result(client, files):
    value = editor(files["scene"], files["layer"])
    plain = rgb(inpaint(client, value, steps=6)[0])
    res, _, _, md = inpaint(client, value, steps=6, resamples=3, jump=2)
    assert "3 resample" in md and f"{6 + 2 * 2 * 2} UNet calls" in md
    assert np.abs(rgb(res) - plain).mean() > 0.5
    m = rgb(client.predict(value, api_name="/inpaint_mask")[0])[..., 0] > 127
    assert np.abs(rgb(res) - rgb(files["scene"]))[~m].max() <= 1


def raw_call(app_url: str, api_name: str, data: list) -> str:
    """POST through gradio's HTTP API with a JSON body that may hold NaN/Infinity (as a non-Python
    client could send; gradio_client itself refuses to encode them). Returns the SSE text."""
    import json

    import httpx

    r = httpx.post(f"{app_url}gradio_api/call/{api_name}", content=json.dumps({"data": data}),
                   headers={"content-type": "application/json"}, timeout=60)
    r.raise_for_status()
    return httpx.get(f"{app_url}gradio_api/call/{api_name}/{r.json()['event_id']}", timeout=300).text


def uploaded(app_url: str, path: str) -> dict:
    import httpx

    with open(path, "rb") as fh:
        r = httpx.post(f"{app_url}gradio_api/upload", files={"files": (path.rsplit("/", 1)[-1], fh)}, timeout=60)
    return {"path": r.json()[0], "meta": {"_type": "gradio.FileData"}}


@pytest.mark.parametrize("index,value", [(5, float("nan")), (5, float("inf")), (8, float("nan")), (7, float("inf")),
                                         (7, float("nan")), (7, 1.5),
                                         (4, float("-inf"))])
def test_nan_and_inf_sent_through_the_http_api_get_clear_errors(app_url, files, index, value):
    ed = {"background": uploaded(app_url, files["scene"]), "layers": [uploaded(app_url, files["layer"])],
          "composite": None}
    data = ["toy-sd (bundled, 32 px)", ed, "a red circle", "", 5.0, STEPS, "DDIM", 0, 2, 2]
    ok = raw_call(app_url, "inpaint", data)
    assert "event: complete" in ok, ok[-500:]
    data[index] = value
    text = raw_call(app_url, "inpaint", data)
    # NaN slips past gradio's own bounds check (comparisons with NaN are False) and is refused by the
    # tab ("must be a finite number"); ±inf is already refused by gradio's Slider/Number bounds.
    assert "event: error" in text and re.search("finite|maximum value|minimum value|whole number", text), text[-500:]


def test_out_of_range_numbers_get_clear_errors(client, files):
    # the input guard answers first, naming the parameter and the control's range
    with pytest.raises(AppError, match=r"jump length.* must be between 1 and \d+, got 0"):
        inpaint(client, editor(files["scene"], files["layer"]), resamples=2, jump=0)
    with pytest.raises(AppError, match=r"steps.* must be between 1 and \d+, got 1000"):
        inpaint(client, editor(files["scene"], files["layer"]), steps=1000)
    with pytest.raises(AppError, match="jump length must be between"):  # the run is 5 steps long
        inpaint(client, editor(files["scene"], files["layer"]), resamples=2, jump=8)


def test_hub_model_offline_gets_a_clear_message(client, files):
    with pytest.raises(AppError, match="network"):
        client.predict("stable-diffusion-inpainting (hub)", editor(files["scene"], files["layer"]), "a cat", "", 5.0,
                       STEPS, "DDIM", 0, 1, 2, api_name="/inpaint")


def test_sketch_and_strip(client, files):
    value = editor(files["blob"], composite=files["blob"])
    result, md = client.predict("toy-sd (bundled, 32 px)", value, "a red circle", 0.6, 5.0, 10, 1, api_name="/sketch")
    assert rgb(result).shape == (WORK_PX, WORK_PX, 3) and "strength 0.6" in md and "step 5/10" in md
    strip = client.predict("toy-sd (bundled, 32 px)", value, "a red circle", 5.0, 10, 1, api_name="/sketch_strip")
    assert len(strip) == 1 + 7 and strip[1]["caption"].startswith("strength 0.3")
    tiles = [rgb(t["image"]).astype(float) for t in strip]
    sketch = tiles[0]
    assert tiles[1].shape == sketch.shape
    dist = [np.abs(t - sketch).mean() for t in tiles[1:]]
    assert dist[0] < dist[-1] - 5, dist  # strength 0.3 stays near the drawing, 1.0 ignores it
    # the strip's 0.6 tile is the single /sketch run at strength 0.6 with the same seed
    assert "strength 0.6" in strip[3]["caption"]
    single = rgb(result).astype(float)
    assert single.shape == tiles[3].shape and np.abs(single - tiles[3]).mean() < 3
    with pytest.raises(AppError, match="no denoising step"):
        client.predict("toy-sd (bundled, 32 px)", value, "a red circle", 0.05, 5.0, 10, 1, api_name="/sketch")


def test_sketch_strength_nan_through_the_http_api(app_url, files):
    ed = {"background": uploaded(app_url, files["blob"]), "layers": [], "composite": uploaded(app_url, files["blob"])}
    text = raw_call(app_url, "sketch", ["toy-sd (bundled, 32 px)", ed, "a red circle", float("nan"), 5.0, 10, 1])
    assert "event: error" in text and "strength" in text and "must be a finite number, got nan" in text, text[-500:]
