"""Hostile input, every tab: broken files, odd images, NaN/inf/negative/huge numbers, huge and
non-Latin prompts, empty and full masks, paths and oversize uploads.

Each bad input must get a *clear* answer (a message naming the problem, asserted below) or a
documented clamp/conversion (asserted as success), and the server must keep serving with
bounded memory afterwards (the app runs in this process, so its RSS is ours).

Files and prompts go through ``gradio_client``; NaN/±inf go through raw HTTP
(``/gradio_api/call/<api>``) because gradio_client refuses to encode them, as any non-Python
client could send them.
"""

from __future__ import annotations

import json
import re
import struct
import zlib
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from pipelines import images
from tests.images_helpers import make_files

pytestmark = pytest.mark.api

MODEL = "toy-sd (bundled, 32 px)"
CLIP = "toy-clip (bundled)"
UNCOND = "unconditional (empty prompt)"
P = "a red circle on a white background"
RSS_GROWTH_BOUND = 1.5e9  # bytes; a decoded bomb alone (12000² px) would be ≥ 0.4 GB per copy
_RSS: dict[str, int] = {}


def _rss() -> int:
    return psutil.Process().memory_info().rss


@pytest.fixture(scope="module", autouse=True)
def rss_at_start(app_url):
    _RSS.setdefault("start", _rss())


# --------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------


def real_png_bomb(path: Path, side: int = 12000) -> Path:
    """A valid 8-bit grayscale PNG of ``side``² zero pixels: ~150 kB on disk, ``side``² bytes decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    comp, row, idat = zlib.compressobj(9), b"\0" * (side + 1), []  # filter byte + pixels per row
    for _ in range(side):
        idat.append(comp.compress(row))
    idat.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(idat)) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("hostile")
    f = {k: str(v) for k, v in make_files(d).items()}
    f["real_bomb"] = str(real_png_bomb(d / "real_bomb.png"))
    Image.new("RGB", (4000, 2), (0, 0, 200)).save(d / "wide.png")
    f["wide"] = str(d / "wide.png")
    Image.new("RGB", (2, 4000), (0, 0, 200)).save(d / "tall.png")
    f["tall"] = str(d / "tall.png")
    (d / "text.png").write_text("<html><body>not an image</body></html>")
    f["html"] = str(d / "text.png")
    pal = Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)).quantize(16)
    pal.save(d / "palette.png")
    f["palette"] = str(d / "palette.png")
    pal_t = Image.new("P", (48, 48), 0)
    pal_t.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    pal_t.paste(1, (0, 0, 24, 48))
    pal_t.save(d / "palette_t.png", transparency=0)
    f["palette_transparent"] = str(d / "palette_t.png")
    frames = [Image.new("RGB", (40, 40), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    frames[0].save(d / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    f["gif"] = str(d / "anim.gif")
    Image.new("LA", (40, 40), (128, 0)).save(d / "la.png")
    f["gray_alpha"] = str(d / "la.png")
    Image.new("I", (40, 40), 70000).save(d / "int32.png")  # 32-bit integer gray: rescaled to 8 bits
    f["int32"] = str(d / "int32.png")
    scene = d / "scene.png"
    Image.new("RGB", (256, 256), (250, 250, 250)).save(scene)
    f["scene"] = str(scene)
    layer = np.zeros((256, 256, 4), np.uint8)
    layer[64:192, 64:192] = (255, 0, 255, 255)
    Image.fromarray(layer, "RGBA").save(d / "layer.png")
    f["layer"] = str(d / "layer.png")
    Image.fromarray(np.zeros((256, 256, 4), np.uint8), "RGBA").save(d / "empty_layer.png")
    f["empty_layer"] = str(d / "empty_layer.png")
    Image.fromarray(np.full((256, 256, 4), 255, np.uint8), "RGBA").save(d / "full_layer.png")
    f["full_layer"] = str(d / "full_layer.png")
    return f


def editor(bg, *layers, composite=None) -> dict:
    return {"background": handle_file(bg), "layers": [handle_file(x) for x in layers],
            "composite": handle_file(composite) if composite else None}


# name -> (regex of the expected message) for files every image input must refuse
BAD_FILES = {
    "corrupt": "not a readable image",
    "html": "not a readable image",
    "empty": "empty",
    "truncated": "corrupt or truncated",
    "tiny": "too small",  # 1×1
    "wide": "too small",  # 4000×2: the short side is under MIN_SIDE
    "tall": "too small",
    "sliver": "aspect ratio",  # 1000×20
    "bomb": "too large",  # header says 30000², PIL's own bomb guard
    "big": "too large",  # header says 8000² = 64 MP, above our cap
    "real_bomb": "too large",  # a genuine 144 MP PNG of 150 kB
}
# files converted with the documented rules of pipelines/images.py (palette expanded, alpha on
# white, CMYK via PIL, 16/32-bit rescaled, first frame of an animation)
CONVERTED = ["cmyk", "gray16", "int32", "palette", "palette_transparent", "gif", "gray_alpha"]


def _image_calls(f: str) -> dict[str, tuple]:
    """api_name -> args with the image ``f`` in every image-taking input (few steps: cheap)."""
    return {
        "/forward_load": (handle_file(f), 0, 128, "linear", 10),
        "/schedules_update": (handle_file(f), ["linear"], 100, 1e-4, 0.02, False, False, 0.5, 0),
        "/viewer_run": (MODEL, P, "", "DDIM", 4, 0.0, 0, 3.0, True, handle_file(f), 0.6),
        "/three_ways": (MODEL, handle_file(f), 400, 200, P, 1.0, 0),
        "/oracle": (MODEL, handle_file(f), 0.5, "DDIM", 3, P, 1.0, 0),
        "/inpaint_mask": (editor(f),),
        "/inpaint": (MODEL, editor(f, f), P, "", 5.0, 5, "DDIM", 0, 1, 2),
        "/sketch": (MODEL, editor(f, composite=f), P, 0.6, 5.0, 5, 0),
    }




@pytest.mark.parametrize("name", list(BAD_FILES))
def test_bad_files_are_refused_by_every_image_input(client, files, name):
    for api, args in _image_calls(files[name]).items():
        with pytest.raises(AppError, match=BAD_FILES[name]):
            client.predict(*args, api_name=api)


@pytest.mark.parametrize("name", CONVERTED)
def test_odd_modes_are_converted_documented(client, files, name):
    """Documented conversions: the cheap tabs accept them and produce RGB."""
    x0, *_ = client.predict(handle_file(files[name]), 0, 128, "linear", 10, api_name="/forward_load")
    assert np.asarray(Image.open(x0)).shape == (128, 128, 3)
    mask, md = client.predict(editor(files[name]), api_name="/inpaint_mask")
    assert "empty" in md


def test_conversion_rules_match_the_docs(files):
    assert images.load_image(files["palette_transparent"]).getpixel((40, 10)) == (255, 255, 255)  # alpha -> white
    assert images.load_image(files["gif"]).getpixel((5, 5)) == (255, 0, 0)  # first frame
    assert images.load_image(files["cmyk"]).getpixel((5, 5))[0] > 200  # red stays red
    assert images.load_image(files["int32"]).getpixel((5, 5)) == (255, 255, 255)  # 70000/257 -> clipped 255


def test_image_given_as_a_server_path_is_refused(app_url, client):
    """A client naming a file on the server (``/etc/passwd``, the app's own source) gets nothing back."""
    for path in ("/etc/passwd", str(Path(__file__).resolve()), "../../../../etc/passwd"):
        fd = {"path": path, "meta": {"_type": "gradio.FileData"}}
        text = raw_call(app_url, "forward_load", [fd, 0, 128, "linear", 10])
        assert "event: error" in text, text[-400:]
        assert "root:" not in text
    with pytest.raises((AppError, ValueError, FileNotFoundError)):
        client.predict("/etc/passwd", 0, 128, "linear", 10, api_name="/forward_load")


def test_oversize_upload_is_refused_by_max_file_size(app_url, tmp_path):
    import app

    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG" + b"\0" * (21 * 1024 * 1024))  # > MAX_FILE_SIZE = 20 MB
    with big.open("rb") as fh:
        r = httpx.post(f"{app_url}gradio_api/upload", files={"files": ("big.png", fh)}, timeout=60)
    assert app.MAX_FILE_SIZE == "20mb"
    # refused before gradio reads it: the body cap (21 MB per request) sits just above the 20 MB file cap
    assert r.status_code == 413 and "21 MB" in r.text and "too large" in r.text, (r.status_code, r.text[:300])


# --------------------------------------------------------------------------------------
# Numbers: NaN, ±inf, negative and huge values for every numeric parameter, via raw HTTP
# --------------------------------------------------------------------------------------


def raw_call(app_url: str, api: str, data: list, body: str | None = None) -> str:
    """POST ``data`` (may hold NaN/Infinity: Python's json writes them) and return the SSE stream."""
    base = app_url.rstrip("/")
    r = httpx.post(f"{base}/gradio_api/call/{api}", content=body or json.dumps({"data": data}),
                   headers={"content-type": "application/json"}, timeout=60)
    r.raise_for_status()
    with httpx.stream("GET", f"{base}/gradio_api/call/{api}/{r.json()['event_id']}", timeout=300) as s:
        return "".join(s.iter_text())


def uploaded(app_url: str, path: str) -> dict:
    with open(path, "rb") as fh:
        r = httpx.post(f"{app_url}gradio_api/upload", files={"files": (Path(path).name, fh)}, timeout=60)
    return {"path": r.json()[0], "meta": {"_type": "gradio.FileData"}}


def _numeric_calls(app_url: str, f: dict) -> dict[str, tuple[list, list[int]]]:
    """api -> (valid cheap arguments, indices of its numeric parameters)."""
    img = uploaded(app_url, f["scene"])
    ed = {"background": img, "layers": [uploaded(app_url, f["layer"])], "composite": None}
    sk = {"background": img, "layers": [], "composite": img}
    lanes = [True, "DDIM", 2, True, "DDPM", 2, False, "DDIM", 2, False, "DDIM", 2]
    return {
        "forward_load": ([img, 0, 128, "linear", 10], [1, 2, 4]),
        "forward_mix": (["linear", 10], [1]),
        "forward_compare": (["linear", 10, 4, 0], [1, 2, 3]),
        "schedules_update": ([None, ["linear"], 100, 1e-4, 0.02, True, False, 0.5, 0], [2, 3, 4, 7, 8]),
        "schedules_table": ([["linear"], 100, 1e-4, 0.02, True, False], [1, 2, 3]),
        "viewer_start_info": ([MODEL, "DDIM", 10, 0.5, True], [2, 3]),
        "viewer_run": ([MODEL, P, "", "DDIM", 2, 0.0, 0, 3.0, False, None, 0.6], [4, 5, 6, 7, 10]),
        "three_ways": ([MODEL, img, 400, 200, P, 1.0, 0], [2, 3, 5, 6]),
        "sampler_race": ([MODEL, P, 3.0, 1, *lanes], [2, 3, 6, 9]),
        "oracle": ([MODEL, img, 0.5, "DDIM", 2, P, 1.0, 0], [2, 4, 6, 7]),
        "guidance_generate": ([MODEL, P, "", 5.0, 2, "DDIM", 0], [3, 4, 6]),
        "guidance_grid": ([MODEL, P, "", 2, "DDIM", 0], [3, 5]),
        "guidance_decompose": ([MODEL, P, "", 5.0, 2, "DDIM", 0, 1], [3, 4, 6, 7]),
        "guidance_tradeoff": ([MODEL, P, "", 2, "DDIM", 0, 2], [3, 5, 6]),
        "guidance_colour": ([MODEL, P, "#00ff00", 60, "sqrt_alpha_bar", 2, 0, False], [3, 5, 6]),
        "clip_guidance_run": ([CLIP, MODEL, P, UNCOND, "", 3.0, 2, 1.0, "sqrt_alpha_bar", 2, 0, "plain CLIP (scores cutouts of x̂0)", False, 1.0, 1, 2],
                              [5, 6, 7, 9, 10, 15]),
        "inpaint": ([MODEL, ed, P, "", 5.0, 5, "DDIM", 0, 1, 2], [4, 5, 7, 8, 9]),
        "sketch": ([MODEL, sk, P, 0.6, 5.0, 5, 0], [3, 4, 5, 6]),
        "sketch_strip": ([MODEL, sk, P, 5.0, 5, 0], [3, 4, 5]),
        "train2d": (["two moons", "DIFFUSION", None, "flow", "cosine", False, 100, 0.5, 0], [6, 7, 8]),
        "train2d_compare": (["ring", "", None, "cosine", False, 100, 0], [5, 6]),
        "digits_train": (["class", "flow", 2, 3.0, 0], [2, 3, 4]),
        "digits_skip": (["class", 3.0], [1]),
    }


BAD_NUMBERS = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf"), "negative": -1.5, "huge": 1e300}
CLEAR_NUMBER_ERROR = re.compile(r"finite|greater than maximum|less than minimum|must be (between|a |one of|positive|"
                                r"at least|at most|a whole)|whole number|is not a valid|not in the list of choices")


@pytest.mark.parametrize("api", [
    "forward_load", "forward_mix", "forward_compare", "schedules_update", "schedules_table", "viewer_start_info",
    "viewer_run", "three_ways", "sampler_race", "oracle", "guidance_generate", "guidance_grid",
    "guidance_decompose", "guidance_tradeoff", "guidance_colour", "clip_guidance_run", "inpaint", "sketch",
    "sketch_strip", "train2d", "train2d_compare", "digits_train", "digits_skip"])
def test_bad_numbers_in_every_numeric_parameter(app_url, files, api):
    data, indices = _numeric_calls(app_url, files)[api]
    ok = raw_call(app_url, api, data)
    assert "event: complete" in ok, f"{api} baseline failed: {ok[-400:]}"
    failures = []
    for i in indices:
        for label, value in BAD_NUMBERS.items():
            bad = list(data)
            bad[i] = value
            text = raw_call(app_url, api, bad)
            if "event: error" not in text or not CLEAR_NUMBER_ERROR.search(text):
                failures.append(f"{api}[{i}]={label}: {text[-300:]!r}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("value", ['"abc"', "[]", "{}", "true"])
def test_wrong_types_for_numbers_are_refused(app_url, files, value):
    data = [MODEL, P, "", 5.0, 2, "DDIM", "__X__"]
    text = raw_call(app_url, "guidance_generate", data, body=json.dumps({"data": data}).replace('"__X__"', value))
    # the kind check (demos/guard.py) refuses non-numbers, true included
    assert "event: error" in text and re.search(r"seed must be a number", text), text[-300:]


def test_an_empty_seed_box_means_seed_0(app_url):
    """null in a number box is the documented default (validation.seed: None -> 0), not an error."""
    data = [MODEL, P, "", 5.0, 2, "DDIM", None]
    text = raw_call(app_url, "guidance_generate", data)
    assert "event: complete" in text and "seed 0" in text, text[-300:]


# --------------------------------------------------------------------------------------
# Prompts
# --------------------------------------------------------------------------------------

LONG = "a red circle " * 770  # 10,010 characters
NON_LATIN = {
    "chinese": "一只红色的圆圈在白色背景上",
    "arabic": "دائرة حمراء على خلفية بيضاء",
    "emoji": "🔴 on ⬜ 🐱‍👤👩🏽‍🚀",
    "mixed_rtl": "a red \u202e circle \u200b\u200d on white",
    "control": "a red\x00circle\x1b[31m on\ttwhite\r\n",
}


def _prompt_calls(prompt: str) -> dict[str, tuple]:
    return {
        "/guidance_generate": (MODEL, prompt, "", 5.0, 2, "DDIM", 0),
        "/guidance_generate#negative": (MODEL, P, prompt, 5.0, 2, "DDIM", 0),
        "/viewer_run": (MODEL, prompt, "", "DDIM", 2, 0.0, 0, 3.0, False, None, 0.6),
        "/sampler_race": (MODEL, prompt, 3.0, 1, True, "DDIM", 2, True, "DDPM", 2, False, "DDIM", 2, False, "DDIM", 2),
        "/guidance_colour": (MODEL, prompt, "#00ff00", 60, "sqrt_alpha_bar", 2, 0),
        "/clip_guidance_run": (CLIP, MODEL, prompt, UNCOND, "", 3.0, 2, 1.0, "sqrt_alpha_bar", 2, 0),
        "/clip_guidance_run#base": (CLIP, MODEL, P, "conditional (base prompt + CFG)", prompt, 3.0, 2, 1.0,
                                    "sqrt_alpha_bar", 2, 0),
    }


def _predict(client, api, args):
    return client.predict(*args, api_name=api.split("#")[0])


@pytest.mark.parametrize("api", list(_prompt_calls("")))
def test_ten_thousand_character_prompt_is_refused_clearly(client, api):
    assert len(LONG) >= 10_000
    # the shared limit of 1000 characters (pipelines.validation), or the viewer's stricter 500
    with pytest.raises(AppError, match=r"too long: 10,\d{3} characters; the limit is 1000|limited to 500 characters"):
        _predict(client, api, _prompt_calls(LONG)[api])


@pytest.mark.parametrize("name", list(NON_LATIN))
def test_non_latin_prompts_work(client, name):
    """Any Unicode is fine (the tokenizers are byte-level BPE); the toy model simply knows English."""
    for api in ("/guidance_generate", "/guidance_generate#negative", "/clip_guidance_run"):
        out = _predict(client, api, _prompt_calls(NON_LATIN[name])[api])
        assert out is not None


def test_same_seed_same_image_for_non_latin_prompt(client):
    a, _ = client.predict(MODEL, NON_LATIN["chinese"], "", 5.0, 2, "DDIM", 3, api_name="/guidance_generate")
    b, _ = client.predict(MODEL, NON_LATIN["chinese"], "", 5.0, 2, "DDIM", 3, api_name="/guidance_generate")
    assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))


# --------------------------------------------------------------------------------------
# Masks
# --------------------------------------------------------------------------------------


def test_empty_mask_is_refused_and_full_mask_is_plain_generation(client, files):
    args = lambda ed: (MODEL, ed, P, "", 5.0, 5, "DDIM", 0, 1, 2)  # noqa: E731
    for ed in (editor(files["scene"]), editor(files["scene"], files["empty_layer"])):
        with pytest.raises(AppError, match="mask is empty"):
            client.predict(*args(ed), api_name="/inpaint")
    result, _, mask, md = client.predict(*args(editor(files["scene"], files["full_layer"])), api_name="/inpaint")
    assert "plain text-to-image" in md
    assert (np.asarray(Image.open(mask).convert("L")) > 127).all()


@pytest.mark.parametrize("layer", ["corrupt", "empty", "bomb"])
def test_broken_mask_layer_is_refused(client, files, layer):
    with pytest.raises(AppError, match=BAD_FILES[layer]):
        client.predict(MODEL, editor(files["scene"], files[layer]), P, "", 5.0, 5, "DDIM", 0, 1, 2, api_name="/inpaint")


def test_editor_without_background_is_refused(client):
    with pytest.raises(AppError, match="No image"):
        client.predict(MODEL, {"background": None, "layers": [], "composite": None}, P, "", 5.0, 5, "DDIM", 0, 1, 2,
                       api_name="/inpaint")


# --------------------------------------------------------------------------------------
# Afterwards: still serving, memory bounded (keep this test last in the file)
# --------------------------------------------------------------------------------------


def test_zz_server_still_serves_and_memory_is_bounded(app_url):
    c = Client(app_url, verbose=False)
    x0, *_ = c.predict(handle_file(_sample()), 0, 128, "linear", 10, api_name="/forward_load")
    assert np.asarray(Image.open(x0)).shape == (128, 128, 3)
    img, md = c.predict(MODEL, P, "", 5.0, 2, "DDIM", 0, api_name="/guidance_generate")
    assert "Done" in md
    growth = _rss() - _RSS["start"]
    assert growth < RSS_GROWTH_BOUND, f"RSS grew by {growth / 1e6:.0f} MB during the hostile suite"


def _sample() -> str:
    from demos.common import sample_paths

    return sample_paths()[0]
