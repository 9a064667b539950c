"""The "Noise tricks" tab's api_names through gradio_client on the bundled toy-sd (few steps: wiring,
the views shown, validation and determinism; quality is scripts/tricks_eval.py's job)."""

import numpy as np
import pytest
from gradio_client.exceptions import AppError
from PIL import Image

pytestmark = pytest.mark.api

MODEL = "toy-sd (bundled, 32 px)"
A, B = "a red circle on a black background", "a cyan square on a white background"


def _img(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int64)


@pytest.mark.parametrize("view, fn", [("flip", lambda x: x[::-1]), ("rotate90", lambda x: np.rot90(x, 1)),
                                      ("negate", lambda x: 255 - x)])
def test_anagram_shows_the_picture_and_its_view(client, view, fn):
    gallery, md = client.predict(MODEL, A, B, view, 3.0, 3, 1, api_name="/tricks_anagram")
    assert len(gallery) == 2 and "Done" in md and "rendering judge" in md
    upright, seen = _img(gallery[0]["image"]), _img(gallery[1]["image"])
    assert upright.shape == (256, 256, 3) and B in gallery[1]["caption"]
    assert np.array_equal(fn(upright), seen)  # PNG: the second image is exactly the first under the view


def test_anagram_is_deterministic_and_uses_both_prompts(client):
    a, _ = client.predict(MODEL, A, B, "negate", 3.0, 3, 2, api_name="/tricks_anagram")
    b, _ = client.predict(MODEL, A, B, "negate", 3.0, 3, 2, api_name="/tricks_anagram")
    c, _ = client.predict(MODEL, A, "a yellow star on a navy background", "negate", 3.0, 3, 2,
                          api_name="/tricks_anagram")
    assert np.array_equal(_img(a[0]["image"]), _img(b[0]["image"]))
    assert np.abs(_img(a[0]["image"]) - _img(c[0]["image"])).mean() > 1  # prompt B changes the picture


def test_hybrid_shows_three_readings_and_sigma_zero_is_plain_cfg(client):
    gallery, md = client.predict(MODEL, A, "a red square on a black background", 2.0, 0, 3.0, 3, 0,
                                 api_name="/tricks_hybrid")
    assert len(gallery) == 3 and "Done" in md and "from afar" in gallery[1]["caption"]
    flat, _ = client.predict(MODEL, A, "a red square on a black background", 0.0, 0, 3.0, 3, 0,
                             api_name="/tricks_hybrid")
    plain, _ = client.predict(MODEL, A, "", 3.0, 3, "DDIM", 0, api_name="/guidance_generate")
    assert np.abs(_img(flat[0]["image"]) - _img(plain)).max() <= 8  # σ = 0: prompt A alone (JPEG aside)
    assert np.abs(_img(gallery[0]["image"]) - _img(flat[0]["image"])).mean() > 0.5  # σ > 0: B shows


@pytest.mark.parametrize("api, args, message", [
    ("/tricks_anagram", (MODEL, A, B, "mirror", 3.0, 3, 0), "mirror"),
    ("/tricks_anagram", (MODEL, "x" * 5000, B, "flip", 3.0, 3, 0), "too long"),
    ("/tricks_hybrid", (MODEL, A, B, 2.0, 6, 3.0, 3, 0), "odd"),
    ("/tricks_hybrid", (MODEL, A, B, 2.0, 0, 3.0, 0, 0), "steps"),
])
def test_bad_input_gets_a_clear_message(client, api, args, message):
    with pytest.raises(AppError, match=message):
        client.predict(*args, api_name=api)
