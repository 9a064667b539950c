"""Image loading: every awkward upload gets a clear ValueError or a correct conversion."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines import images as I
from tests.images_helpers import make_files


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return make_files(tmp_path_factory.mktemp("uploads"))


@pytest.mark.parametrize("name,match", [
    ("corrupt", "not a readable image"),
    ("empty", "empty"),
    ("truncated", "corrupt or truncated"),
    ("tiny", "too small: 1×1"),
    ("bomb", "too large"),
    ("big", "too large: 8000×8000"),
    ("sliver", "aspect ratio"),
])
def test_bad_files_raise_clear_value_error(files, name, match):
    with pytest.raises(ValueError, match=match):
        I.load_image(files[name])


def test_size_is_checked_before_decoding(files, monkeypatch):
    called = []
    monkeypatch.setattr(Image.Image, "load", lambda self: called.append(1))
    with pytest.raises(ValueError, match="too large"):
        I.load_image(files["big"])
    assert not called


def test_missing_path():
    with pytest.raises(ValueError, match="No image file"):
        I.load_image("/nonexistent/x.png")


def test_cmyk_becomes_rgb(files):
    im = I.load_image(files["cmyk"])
    assert im.mode == "RGB" and im.size == (40, 40)
    r, g, b = im.getpixel((20, 20))
    assert r > 230 and g < 25 and b < 25


def test_16bit_grayscale_is_rescaled(files):
    im = I.load_image(files["gray16"])
    assert im.mode == "RGB"
    assert im.getpixel((2, 2)) == (0, 0, 0) and im.getpixel((30, 2)) == (255, 255, 255)


def test_32bit_int_with_8bit_values_kept():
    im = I.load_image(Image.fromarray(np.full((20, 20), 200, np.int32), "I"))
    assert im.getpixel((0, 0)) == (200, 200, 200)


def test_rgba_composited_on_white():
    a = np.zeros((20, 20, 4), np.uint8)
    a[:10] = (255, 0, 0, 255)  # opaque red top, fully transparent (black) bottom
    im = I.load_image(Image.fromarray(a, "RGBA"))
    assert im.getpixel((5, 5)) == (255, 0, 0) and im.getpixel((5, 15)) == (255, 255, 255)


def test_palette_with_and_without_transparency():
    p = Image.new("P", (20, 20), 1)
    p.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    assert I.load_image(p).getpixel((0, 0)) == (0, 0, 255)
    p.info["transparency"] = 1
    assert I.load_image(p).getpixel((0, 0)) == (255, 255, 255)


def test_grayscale_and_bilevel():
    assert I.load_image(Image.new("L", (20, 20), 77)).getpixel((0, 0)) == (77, 77, 77)
    assert I.load_image(Image.new("1", (20, 20), 1)).getpixel((0, 0)) == (255, 255, 255)


def test_exif_rotation_applied(tmp_path):
    im = Image.new("RGB", (40, 20), (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, 20, 20))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    im.save(tmp_path / "rot.jpg", exif=exif, quality=95)
    out = I.load_image(tmp_path / "rot.jpg")
    assert out.size == (20, 40)
    top, bottom = out.getpixel((10, 5)), out.getpixel((10, 35))
    assert top[0] > 200 and top[2] < 60  # the left (red) half is now on top
    assert bottom[2] > 200 and bottom[0] < 60


def test_numpy_inputs():
    assert I.load_image(np.full((20, 30), 0.5, np.float32)).getpixel((0, 0)) == (128, 128, 128)
    assert I.load_image(np.full((20, 30, 3), 65535, np.uint16)).getpixel((0, 0)) == (255, 255, 255)
    with pytest.raises(ValueError, match="shape"):
        I.load_image(np.zeros((20, 30, 2), np.uint8))
    with pytest.raises(ValueError, match="NaN"):
        I.load_image(np.full((20, 30), np.nan))
    with pytest.raises(ValueError, match="too small"):
        I.load_image(np.zeros((1, 1, 3), np.uint8))


def test_pil_bomb_refused_even_when_already_open():
    with pytest.raises(ValueError, match="too large"):
        I.load_image(Image.new("1", (8000, 8000)))


def test_working_size_centre_crops():
    im = Image.new("RGB", (400, 100), (255, 0, 0))
    im.paste((0, 255, 0), (150, 0, 250, 100))  # green centre square
    out = I.to_working_size(im, 64)
    a = np.asarray(out)
    assert out.size == (64, 64)
    assert (a[..., 1] > 240).all() and (a[..., 0] < 15).all()  # only the centre survives, no bars


def test_tensor_round_trip_exact():
    a = np.random.default_rng(1).integers(0, 256, (12, 17, 3), dtype=np.uint8)
    x = I.pil_to_tensor(Image.fromarray(a))
    assert x.shape == (1, 3, 12, 17) and x.dtype == torch.float32
    assert float(x.min()) >= -1 and float(x.max()) <= 1
    assert np.array_equal(I.tensor_to_uint8(x[0]), a)
    assert I.tensor_to_uint8(x).shape == (1, 12, 17, 3)
    assert np.array_equal(I.tensor_to_uint8(torch.full((3, 2, 2), 5.0)), np.full((2, 2, 3), 255, np.uint8))


def test_load_working_tensor_from_bytes_file(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (300, 200), (0, 0, 0)).save(buf, "PNG")
    (tmp_path / "a.png").write_bytes(buf.getvalue())
    x = I.load_working_tensor(tmp_path / "a.png", 32)
    assert x.shape == (1, 3, 32, 32) and torch.all(x == -1)


# ------------------------------------------------------------------ the 40-megapixel cap, at its boundary


def _bilevel_png(path, w: int, h: int):
    Image.new("1", (w, h)).save(path)  # 1 bit per pixel: 5 MB in memory, a few kB on disk
    return path


def test_pixel_cap_is_40_megapixels_exactly(tmp_path):
    ok = _bilevel_png(tmp_path / "ok.png", 8000, 5000)  # 40,000,000 px: at the limit, accepted
    assert I.check_upload(ok) == (8000, 5000)
    over = _bilevel_png(tmp_path / "over.png", 8000, 5001)  # 40,008,000 px: refused
    with pytest.raises(ValueError, match=r"too large: 8000×5001 px = 40 megapixels; the limit is 40 megapixels"):
        I.check_upload(over)
    with pytest.raises(ValueError, match="the limit is 40 megapixels"):
        I.load_image(over)
    with pytest.raises(ValueError, match="too large"):  # well under 60 MP, still refused
        I.check_upload(_bilevel_png(tmp_path / "50mp.png", 8000, 6250))


def test_pixel_cap_for_arrays_and_pil_images_at_the_boundary():
    with pytest.raises(ValueError, match="the limit is 40 megapixels"):
        I.load_image(np.zeros((5001, 8000), np.uint8))
    with pytest.raises(ValueError, match="the limit is 40 megapixels"):
        I.load_image(Image.new("1", (5001, 8000)))
    assert I.check_upload(io.BytesIO(_png_bytes(7999, 5000)).getvalue()) == (7999, 5000)


def _png_bytes(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("1", (w, h)).save(buf, "PNG")
    return buf.getvalue()
