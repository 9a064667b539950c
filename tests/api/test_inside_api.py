"""Every api_name of the "Inside the model" tab, through gradio_client, on the bundled toy-sd
(few steps: wiring, validation and determinism, not quality)."""

import json

import numpy as np
import pytest
from gradio_client.exceptions import AppError
from PIL import Image

from pipelines.toyworld.toy_sd3 import TOY_SD3_DIR

pytestmark = pytest.mark.api

MODEL = "toy-sd (bundled, 32 px)"
CAT = "google/ddpm-cat-256 (hub)"
SD3 = "toy-sd3 (bundled, 64 px, latent)"
PROMPT = "a red circle on a navy background"
ALL, CUM, ONE = "all layers (DAAM)", "steps 1 … this step (DAAM sums over time)", "this step only"


def _img(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)


def test_tokens_table_and_cut_off(client):
    table, md = client.predict(MODEL, PROMPT, api_name="/inside_tokens")
    rows = table["data"]
    assert [r[1] for r in rows[:3]] == ["<start_of_text>", "a</w>", "red</w>"] and rows[2][2] == 736
    assert "16 tokens" in md and "cut off" not in md
    long = "a very big cheerful red circle on a navy background with sparkles and a cat"
    table, md = client.predict(MODEL, long, api_name="/inside_tokens")
    assert "1 pieces are cut off" in md and "*cat*" in md and "cheerful" in md
    assert table["data"][-1][:2] == ["cut", "cat</w>"]


def test_features_and_similarity(client):
    feat, sim, md = client.predict(MODEL, "a orange cross", "an orange cross", api_name="/inside_features")
    assert feat is not None and sim is not None
    assert "Pooled embedding" in md and "Nearest training captions" in md


def test_maps_then_scrub_in_the_same_session(client):
    state_free = client.predict(MODEL, PROMPT, 4, 4.0, 1, CUM, api_name="/inside_maps")
    gallery, cap, step, layer, final = state_free
    assert len(gallery) == 9 and gallery[2]["caption"] == "2: red" and "Step 4/4" in cap
    g2, cap2 = client.predict(2, "res:8x8", ONE, api_name="/inside_scrub")
    assert len(g2) == 9 and "Step 2/4" in cap2
    assert np.abs(_img(g2[2]["image"]) - _img(gallery[2]["image"])).mean() > 1  # another step, another map
    again = client.predict(MODEL, PROMPT, 4, 4.0, 1, CUM, api_name="/inside_maps")
    assert np.abs(_img(again[4]) - _img(final)).max() <= 2  # same seed, same image


def test_the_maps_read_relative_to_the_other_words(client):
    gallery, cap, *_ = client.predict(MODEL, PROMPT, 4, 4.0, 1, CUM, "raw", api_name="/inside_maps")
    shares, cap_s = client.predict(4, ALL, CUM, "share", api_name="/inside_scrub")
    centred, cap_c = client.predict(4, ALL, CUM, "centred", api_name="/inside_scrub")
    assert "share" in cap_s and "minus the words' mean" in cap_c and "share" not in cap
    bg = 7  # "background": its share differs from its raw map (the start token's weight is left out)
    assert np.abs(_img(shares[bg]["image"]) - _img(gallery[bg]["image"])).mean() > 1
    assert np.abs(_img(centred[bg]["image"]) - _img(shares[bg]["image"])).mean() > 1
    with pytest.raises(AppError, match="must be one of"):
        client.predict(4, ALL, CUM, "softmax", api_name="/inside_scrub")


def test_scrub_before_a_run_is_a_message(client):
    with pytest.raises(AppError, match="run the model first"):
        client.predict(1, ALL, CUM, api_name="/inside_scrub")


def test_reweight_and_swap(client):
    gallery, md = client.predict(MODEL, PROMPT, "red", 0.0, False, 4, 4.0, 1, api_name="/inside_reweight")
    assert len(gallery) == 2 and "Token positions [2]" in md and "Rendering judge" in md
    gallery, md = client.predict(MODEL, PROMPT, "red", 0.0, True, 4, 4.0, 1, api_name="/inside_reweight")
    assert "Token positions [2, 3, 4" in md and "15]" in md and "not re-summed" in md
    gallery, md = client.predict(MODEL, PROMPT, "red", 0.0, False, 4, 4.0, 1, True, api_name="/inside_reweight")
    assert "masks the word out of the softmax" in md
    gallery, md = client.predict(MODEL, PROMPT, "a red square on a navy background", 0.8, 0.4, 4, 4.0, 1,
                                 api_name="/inside_swap")
    assert len(gallery) == 3 and "Shape centre" in md


def test_reweight_in_the_text_encoder_too(client):
    unet, md_u = client.predict(MODEL, PROMPT, "red", 0.0, False, 4, 4.0, 1, False, "unet", api_name="/inside_reweight")
    both, md_b = client.predict(MODEL, PROMPT, "red", 0.0, False, 4, 4.0, 1, False, "encoder",
                                api_name="/inside_reweight")
    assert "In the text encoder, every later token's attention to them × 0" in md_b and "text encoder" not in md_u.split("\n")[0]
    assert "choose *text encoder and UNet*" in md_u and "choose *text encoder" not in md_b
    assert np.abs(_img(unet[1]["image"]) - _img(both[1]["image"])).mean() > 1  # the later tokens no longer carry it
    with pytest.raises(AppError, match="must be one of"):
        client.predict(MODEL, PROMPT, "red", 0.0, False, 4, 4.0, 1, False, "vae", api_name="/inside_reweight")


def test_toy_sd3_joint_attention_maps(client):
    gallery, cap, step, layer, final = client.predict(SD3, PROMPT, 3, 4.0, 1, CUM, api_name="/inside_maps")
    assert len(gallery) == 9 and gallery[2]["caption"] == "2: red" and "Joint attention" in cap
    cfg = json.loads((TOY_SD3_DIR / "transformer" / "config.json").read_text())
    grid = cfg["sample_size"] // cfg["patch_size"]
    assert f"{grid}×{grid} patch grid of the 16×16 latents" in cap and "Step 3/3" in cap
    g2, cap2 = client.predict(1, "transformer_blocks.0.attn", ONE, "share", api_name="/inside_scrub")
    assert len(g2) == 9 and "Step 1/3" in cap2
    with pytest.raises(AppError, match="re-weighting and word swap are offered for toy-sd only"):
        client.predict(SD3, PROMPT, "red", 0.0, False, 3, 4.0, 1, api_name="/inside_reweight")


@pytest.mark.parametrize("args, api, match", [
    ((MODEL, PROMPT, "dragon", 0.0, False, 4, 4.0, 1), "/inside_reweight", "not in the tokens"),
    ((MODEL, PROMPT, "a cyan circle on a navy background", 0.8, 0.4, 4, 4.0, 1), "/inside_swap", "equally many"),
    ((CAT, PROMPT), "/inside_tokens", "no cross-attention"),
    ((MODEL, PROMPT, 4, 4.0, -1, CUM), "/inside_maps", r"seed must be between 0 and 4294967295, got -1"),
])
def test_bad_input_is_a_message(client, args, api, match):
    with pytest.raises(AppError, match=match):
        client.predict(*args, api_name=api)
