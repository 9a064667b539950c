"""Load, validate and convert images; PIL/numpy <-> tensors in [-1, 1].

Policy (every rule raises ``ValueError`` with a message meant for the user):

* **Sources.** A ``PIL.Image``, a numpy array, or a file path that the *server* chose (gradio's
  upload cache, or ``assets/samples``). Never pass paths typed by a user.
* **Decompression bombs** are refused *before* decoding: ``Image.open`` only reads the header,
  so width x height is checked against :data:`MAX_PIXELS` (40 megapixels) before ``load()``.
* **Broken files.** Empty, truncated, corrupt or non-image files are refused.
* **Size and shape.** Each side must be at least :data:`MIN_SIDE` px (so 1x1 is refused) and
  the aspect ratio at most :data:`MAX_ASPECT`:1 (a centre crop would keep too little).
* **Orientation.** The EXIF orientation tag is applied (``ImageOps.exif_transpose``).
* **Modes** all become 8-bit RGB: grayscale ("1", "L") is replicated to 3 channels; alpha
  ("RGBA", "LA", "PA", palette with transparency) is **composited on white** (transparent
  areas become white, not black); palette ("P") is expanded; "CMYK" uses PIL's conversion
  (ICC profiles are ignored); 16/32-bit integer ("I;16*", "I") and float ("F") grayscale are
  rescaled to 8 bits (÷257 when values exceed 255, otherwise taken as 8-bit values).
  Animated images use their first frame.
* **Decode bounds.** Pixels are decoded at (about) the size the app uses: with ``min_side``,
  :func:`load_image` asks JPEG for a reduced decode (``draft``, DCT scaling) and reduces any other
  format by an integer factor (``Image.reduce``, box filter) *right after* decoding, before any mode
  conversion or rotation copies it, keeping the short side at least ``min_side``. At most
  :data:`DECODE_SLOTS` full-size decodes run at once (one decode of a 40-megapixel RGBA image
  holds 160 MB), so concurrent uploads cannot multiply the peak.
* **Working size.** :func:`to_working_size` **centre-crops to a square** and resizes (bicubic)
  to ``size x size``; smaller images are upscaled.
"""

from __future__ import annotations

import io
import os
import re
import threading
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from pipelines.serving import heap

MAX_PIXELS = 40_000_000
MIN_SIDE = 16
MAX_ASPECT = 10.0
WHITE = (255, 255, 255)
DECODE_SLOTS = 2  # full-size decodes at once, process-wide (a bound on the decode peak, not per-user state)
_decode_slots = threading.BoundedSemaphore(DECODE_SLOTS)
TRIM_PIXELS = 8_000_000  # after decoding this many pixels (or more), hand the freed memory back to the OS
_REDUCIBLE = {"L", "LA", "RGB", "RGBA", "RGBa", "La", "I", "F", "CMYK", "YCbCr"}


def _check_size(width: int, height: int) -> None:
    if width * height > MAX_PIXELS:
        raise ValueError(
            f"Image is too large: {width}×{height} px = {width * height / 1e6:.0f} megapixels; "
            f"the limit is {MAX_PIXELS / 1e6:.0f} megapixels. Please upload a smaller image."
        )
    if min(width, height) < MIN_SIDE:
        raise ValueError(f"Image is too small: {width}×{height} px; each side needs at least {MIN_SIDE} px.")
    if max(width, height) / min(width, height) > MAX_ASPECT:
        raise ValueError(
            f"Image aspect ratio is too extreme: {width}×{height} px; at most {MAX_ASPECT:g}:1 is "
            f"supported (it is centre-cropped to a square)."
        )


def _open_path(path: str | os.PathLike | io.BytesIO, min_side: int | None = None) -> Image.Image:
    """Open and decode a file, checking the header's size before decoding the pixels; with
    ``min_side``, decode reduced (short side still >= ``min_side``; see the module docstring)."""
    if isinstance(path, io.BytesIO):
        p = Path("upload")  # the name in messages
    else:
        p = path = Path(path)
        if not p.is_file():
            raise ValueError(f"No image file at {p.name!r}.")
        if p.stat().st_size == 0:
            raise ValueError("The uploaded file is empty (0 bytes).")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)  # lazy: reads the header only
    except Image.DecompressionBombError as e:
        # PIL refuses > 2x its own limit already in open(); give our message, with our one limit.
        found = re.search(r"\((\d+) pixels\)", str(e))
        size = f" {int(found.group(1)) / 1e6:.0f} megapixels;" if found else ""
        raise ValueError(f"Image is too large:{size} the limit is {MAX_PIXELS / 1e6:.0f} megapixels. "
                         f"Please upload a smaller image.") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"The file {p.name!r} is not a readable image ({type(e).__name__}).") from None
    _check_size(*im.size)  # before decoding any pixel
    if getattr(im, "n_frames", 1) > 1:
        im.seek(0)
    source_size = im.size
    try:
        with _decode_slots:
            if min_side and im.format == "JPEG" and im.mode in ("RGB", "L", "CMYK", "YCbCr"):
                im.draft(im.mode, (min_side, min_side))  # DCT scaling: decodes at 1/2, 1/4 or 1/8 size
            im.load()
            im = _reduce(im, min_side)
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ValueError(f"The image {p.name!r} is corrupt or truncated ({e}).") from None
    if source_size[0] * source_size[1] >= TRIM_PIXELS and im.size != source_size:
        heap.trim()  # the full-size pixels are freed: give them back now (serving/heap.py)
    im.info["source_size"] = source_size  # width, height of the file, for messages
    return im


def _reduce(im: Image.Image, min_side: int | None) -> Image.Image:
    """Box-reduce a decoded image by the largest integer factor keeping its short side >= ``min_side``.

    Done in horizontal strips, so no second full-size copy is ever made (``Image.reduce`` premultiplies
    alpha into a full copy, and palette or 16-bit images need a conversion first: both happen per strip).
    Orientation is not applied yet; the short side is the same either way. Up to factor - 1 edge pixels
    are dropped (the result is centre-cropped later anyway)."""
    if not min_side:
        return im
    factor = min(im.size) // int(min_side)
    if factor < 2:
        return im
    mode = im.mode
    if mode not in _REDUCIBLE:  # palette, 1-bit, 16-bit: converted strip by strip below
        mode = ("RGBA" if mode == "PA" or "transparency" in im.info else "RGB") if mode in ("P", "PA") else \
               "L" if mode == "1" else "I"
    w, h = (im.width // factor) * factor, (im.height // factor) * factor
    out = Image.new(mode, (w // factor, h // factor))
    rows = factor * max(1, 4_000_000 // (w * 4 * factor))  # strips of about 4 MB
    for y in range(0, h, rows):
        piece = im.crop((0, y, w, min(h, y + rows)))
        if piece.mode != mode:
            piece = piece.convert(mode)
        out.paste(piece.reduce(factor), (0, y // factor))
    out.info.update(im.info)  # exif (orientation) and transparency keys for the conversions that follow
    return out


def check_upload(source: str | os.PathLike | bytes) -> tuple[int, int]:
    """Validate an uploaded file (a server-chosen path, or raw bytes) *before* anything else
    decodes it: the same rules as :func:`load_image` (size from the header first, then a bounded
    decode to catch truncation). Returns ``(width, height)`` of the file; raises ValueError."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ValueError("The uploaded file is empty (0 bytes).")
        source = io.BytesIO(bytes(source))
    return _open_path(source, min_side=MIN_SIDE).info["source_size"]


def check_header(data: bytes) -> tuple[int, int]:
    """Cheap check of a file's bytes without decoding any pixel: a readable image header whose size
    obeys the limits. Returns ``(width, height)``; raises ValueError. (Truncation is found when the
    image is decoded, by :func:`load_image`.)"""
    if not data:
        raise ValueError("The uploaded file is empty (0 bytes).")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise ValueError(f"Image is too large: the limit is {MAX_PIXELS / 1e6:.0f} megapixels.") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"The upload is not a readable image ({type(e).__name__}).") from None
    _check_size(*im.size)
    return im.size


def _from_array(arr: np.ndarray) -> Image.Image:
    """HxW, HxWx1, HxWx3 or HxWx4 array: uint8/uint16 as is, float in [0, 1]."""
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ValueError(f"Expected an image array of shape HxW, HxWx3 or HxWx4, got {arr.shape}.")
    _check_size(arr.shape[1], arr.shape[0])
    if arr.dtype == np.uint16:
        arr = (arr // 257).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ValueError("The image array contains NaN or infinite values.")
        arr = (np.clip(arr, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    elif arr.dtype != np.uint8:
        raise ValueError(f"Unsupported image array dtype {arr.dtype}; use uint8, uint16 or float in [0, 1].")
    return Image.fromarray(np.ascontiguousarray(arr))


def to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB (see the module docstring for the rules)."""
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        if a.max(initial=0) > 255:
            a = a / 257.0  # 16-bit range 0..65535 -> 0..255
        im = Image.fromarray(np.clip(a, 0, 255).round().astype(np.uint8), "L")
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB") if im.mode != "RGB" else im


def _decode(source, min_side: int | None) -> Image.Image:
    """Any accepted source -> a validated, EXIF-rotated PIL image in its own mode (see load_image)."""
    if source is None:
        raise ValueError("No image given: upload one or pick a sample.")
    if isinstance(source, np.ndarray):
        im = _from_array(source)
    elif isinstance(source, Image.Image):
        _check_size(*source.size)
        im = source
    elif isinstance(source, (str, os.PathLike)):
        im = _open_path(source, min_side)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ValueError("The uploaded file is empty (0 bytes).")
        im = _open_path(io.BytesIO(bytes(source)), min_side)
    else:
        raise ValueError(f"Unsupported image input of type {type(source).__name__}.")
    if getattr(im, "n_frames", 1) > 1:
        im.seek(0)
    try:
        im = ImageOps.exif_transpose(im)
    except Exception as e:  # a malformed EXIF block must not hide the image
        raise ValueError(f"The image's EXIF orientation data is malformed ({e}).") from None
    if "source_size" not in im.info:
        _check_size(*im.size)  # a PIL image or array given directly (files were checked from the header)
    return im


def load_image(source: Image.Image | np.ndarray | str | os.PathLike | bytes, min_side: int | None = None
               ) -> Image.Image:
    """Validate and convert an image to 8-bit RGB (EXIF-rotated). Raises ValueError.

    Args:
        source: a PIL image, a numpy array (HxW[xC], uint8/uint16 or float in [0, 1]), a
            server-chosen file path, or the bytes of a file.
        min_side: decode files reduced, keeping the short side at least this many pixels (the
            size the caller will use); ``None`` decodes at full size.

    Returns:
        A decoded ``PIL.Image`` in mode "RGB".
    """
    return to_rgb(_decode(source, min_side))


def load_rgba(source, min_side: int | None = None) -> Image.Image:
    """Like :func:`load_image` but keeps transparency: mode "RGBA" (paint layers of an image editor).
    Images without alpha become opaque RGBA."""
    im = _decode(source, min_side)
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info):
        return im.convert("RGBA")
    return to_rgb(im).convert("RGBA")


def to_working_size(im: Image.Image, size: int = 256) -> Image.Image:
    """Centre-crop to a square, then resize (bicubic) to ``size x size``; RGB in, RGB out."""
    return ImageOps.fit(im, (size, size), method=Image.Resampling.BICUBIC, centering=(0.5, 0.5))


def pil_to_tensor(im: Image.Image) -> torch.Tensor:
    """8-bit RGB PIL image -> float32 ``[1, 3, H, W]`` in [-1, 1]."""
    a = torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.uint8).copy())  # [H, W, 3]
    return a.permute(2, 0, 1).unsqueeze(0).float().div_(127.5).sub_(1.0)


def tensor_to_uint8(x: torch.Tensor) -> np.ndarray:
    """``[B, 3, H, W]`` or ``[3, H, W]`` (clamped to [-1, 1]) -> uint8 ``[B, H, W, 3]`` / ``[H, W, 3]``."""
    y = ((x.detach().float().clamp(-1.0, 1.0) + 1.0) * 127.5).round_().to(torch.uint8)
    y = y.movedim(-3, -1)  # channels last
    return y.cpu().numpy()


def load_working_tensor(source, size: int = 256) -> torch.Tensor:
    """load_image (decoded reduced, short side >= ``size``) -> to_working_size -> ``[1, 3, size, size]``
    float32 in [-1, 1]."""
    return pil_to_tensor(to_working_size(load_image(source, min_side=size), size))
