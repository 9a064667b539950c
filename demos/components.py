"""Input components that validate before gradio touches the payload (gradio-side only).

Subclasses of gradio components with ``is_template = True``, so the browser uses the stock
front-end component. (gradio writes a ``components.pyi`` type stub next to this file on import;
it is git-ignored.)
"""

from __future__ import annotations

import math
import threading
import time

import gradio as gr
from gradio.components.base import server
from gradio.components.image_editor import EditorDataBlobs

from pipelines import images

MAX_UPLOAD_BYTES = 20 * 2**20  # one image file (app.MAX_FILE_SIZE is the same 20 MB)
EDITOR_DECODE_SIDE = 512  # short side editor images are decoded at (the tab works at <= 512 px)
MAX_LAYERS = 4  # paint layers one canvas may upload (the tabs show one)
BLOB_TTL = 120.0  # s an uploaded canvas image waits for the event that uses it
BLOB_STORE_BYTES = 64 * 2**20  # all waiting canvas uploads together, per editor
_BLOB_LOCK = threading.Lock()


def _check_upload(data) -> None:
    """A FileData (or raw bytes) from the client -> ValueError unless it is a safe image."""
    if data is None:
        return
    if isinstance(data, (bytes, bytearray, memoryview)):
        images.check_upload(data)
    elif getattr(data, "path", None):
        images.check_upload(data.path)  # gradio has already refused paths outside its upload cache


class SafeNumber(gr.Number):
    """``gr.Number`` that answers a non-number ("abc", [], {}) or, when it rounds (``precision``),
    NaN/±inf with a clear message instead of gradio's generic error. NaN without ``precision``
    passes through to the tab's own validation (``pipelines.validation``), as before."""

    is_template = True  # same front-end component as gr.Number

    def preprocess(self, payload):
        name = self.label or "number"
        if payload is not None:
            if isinstance(payload, bool) or not isinstance(payload, (int, float)):
                raise gr.Error(f"{name} must be a number, got {payload!r}")
            if self.precision is not None and not math.isfinite(payload):
                raise gr.Error(f"{name} must be a finite number, got {payload!r}")
        return super().preprocess(payload)


def _data_url_bytes(url: str) -> bytes:
    """A ``data:image/...;base64,`` URL (webcam / paste) -> its bytes, at most MAX_UPLOAD_BYTES."""
    import base64

    head, _, body = url.partition(",")
    if ";base64" not in head or len(body) > MAX_UPLOAD_BYTES * 4 // 3 + 4:
        raise gr.Error(f"The image data URL must be base64 and at most {MAX_UPLOAD_BYTES // 2**20} MB.")
    try:
        return base64.b64decode(body, validate=True)
    except ValueError:
        raise gr.Error("The image data URL is not valid base64.") from None


class SafeImage(gr.Image):
    """``gr.Image`` (``type="filepath"``) whose uploads are validated by :mod:`pipelines.images` *before*
    anything decodes them, and then handed over as the uploaded file itself: gradio's own preprocessing
    (a full-size decode and a converted copy) is skipped, the tab decodes at the size it uses. A corrupt,
    empty, truncated, tiny or bomb file gets our clear message instead of a generic error."""

    is_template = True  # same front-end component as gr.Image

    def preprocess(self, payload):
        if payload is None:
            return None
        try:
            if getattr(payload, "url", None) and str(payload.url).startswith("data:"):
                from demos.common import cache_file

                data = _data_url_bytes(payload.url)
                images.check_upload(data)
                return cache_file(data, "image")  # a server-side file, decoded by the tab at its size
            _check_upload(payload)
        except ValueError as e:
            raise gr.Error(str(e)) from e
        if self.type == "filepath" and getattr(payload, "path", None):
            return str(payload.path)
        return super().preprocess(payload)


class SafeImageEditor(gr.ImageEditor):
    """``gr.ImageEditor`` (``type="numpy"``) whose background, layers and composite are decoded by
    :mod:`pipelines.images` at most EDITOR_DECODE_SIDE on the short side (reduced while decoding; gradio
    would convert each to full-size RGBA), and whose blob endpoint (``accept_blobs``: the browser canvas
    uploads its images there before the event) validates what it stores:

    * ``type`` is background/layer/composite, ``index`` a whole number below MAX_LAYERS, ``id`` a short
      token, exactly one file of at most MAX_UPLOAD_BYTES whose header is a valid image within the size
      limits; anything else is answered with HTTP 400 (413 for size), never stored.
    * Stored blobs are bounded process-wide: at most BLOB_STORE_BYTES in total (the oldest upload sets
      are dropped first) and each set lives BLOB_TTL seconds unless an event consumes it (then freed).
    """

    is_template = True  # same front-end component as gr.ImageEditor

    def preprocess(self, payload):
        if payload is None:
            return None
        src = payload
        if payload.id is not None:  # the browser canvas sends its images as blobs first
            entry = self.blob_storage.pop(payload.id, None)
            src = entry[1] if isinstance(entry, tuple) else entry
        if src is None:
            return {"background": None, "layers": [], "composite": None}
        try:
            bg = _editor_part(src.background)
            size = None if bg is None else (bg.shape[1], bg.shape[0])
            layers = [_editor_part(x, size) for x in (src.layers or []) if x is not None]
            composite = _editor_part(src.composite, size)
            # the sizes as uploaded (header only), so the tab can say what was resized: nothing silently
            sizes = {"background": _part_size(src.background),
                     "layers": [_part_size(x) for x in (src.layers or []) if x is not None]}
        except ValueError as e:
            raise gr.Error(str(e)) from e
        return {"background": bg, "layers": [x for x in layers if x is not None], "composite": composite,
                "sizes": sizes}

    @server
    def accept_blobs(self, data):
        """The canvas's upload of one image (see the class docstring for the rules)."""
        from fastapi import HTTPException

        fields = getattr(data, "data", None)
        files = getattr(data, "files", None)
        if not isinstance(fields, dict) or not isinstance(files, list):
            raise HTTPException(400, "accept_blobs takes a multipart form with one file")
        kind, index, token = fields.get("type"), fields.get("index"), fields.get("id")
        if kind not in ("background", "layer", "composite"):
            raise HTTPException(400, "type must be background, layer or composite")
        if not isinstance(token, str) or not 0 < len(token) <= 64:
            raise HTTPException(400, "id must be a token of 1 to 64 characters")
        if kind == "layer":
            try:
                index = int(index)
            except (TypeError, ValueError):
                raise HTTPException(400, f"index must be a whole number, got {str(index)[:20]!r}") from None
            if not 0 <= index < MAX_LAYERS:
                raise HTTPException(400, f"index must be between 0 and {MAX_LAYERS - 1}, got {index}")
        if len(files) != 1 or not isinstance(files[0], (tuple, list)) or len(files[0]) != 2:
            raise HTTPException(400, "send exactly one file")
        blob = files[0][1]
        if not isinstance(blob, (bytes, bytearray)) or len(blob) == 0:
            raise HTTPException(400, "the file is empty")
        if len(blob) > MAX_UPLOAD_BYTES:
            raise HTTPException(413, f"the file is larger than {MAX_UPLOAD_BYTES // 2**20} MB")
        try:
            images.check_header(bytes(blob))
        except ValueError as e:
            raise HTTPException(400, str(e)) from None
        with _BLOB_LOCK:
            _expire_blobs(self.blob_storage)
            stamp, current = self.blob_storage.get(token, (None, None))
            if current is None:
                current = EditorDataBlobs(background=None, layers=[], composite=None)
            if kind == "layer":
                current.layers.extend([None] * (index + 1 - len(current.layers)))
                current.layers[index] = bytes(blob)
            else:
                setattr(current, kind, bytes(blob))
            self.blob_storage[token] = (time.monotonic(), current)
            _expire_blobs(self.blob_storage)


def _part_size(part) -> tuple[int, int] | None:
    """``(width, height)`` of one editor image from its header (no decode), or None."""
    import io

    from PIL import Image

    if part is None:
        return None
    src = part if isinstance(part, (bytes, bytearray, memoryview)) else getattr(part, "path", None)
    if src is None:
        url = getattr(part, "url", None)
        src = _data_url_bytes(url) if url and str(url).startswith("data:") else None
    if src is None:
        return None
    with Image.open(io.BytesIO(bytes(src)) if not isinstance(src, str) else src) as im:
        return im.size


def _editor_part(part, size: tuple[int, int] | None = None):
    """One editor image (FileData from an upload, or blob bytes) -> RGBA uint8 ``[H, W, 4]`` decoded with
    the short side reduced to about EDITOR_DECODE_SIDE; layers and composite are resized to ``size``
    (the background's, ``(W, H)``), so the mask stays aligned."""
    import numpy as np
    from PIL import Image

    if part is None:
        return None
    src = part if isinstance(part, (bytes, bytearray, memoryview)) else getattr(part, "path", None)
    if src is None:
        url = getattr(part, "url", None)
        if url and str(url).startswith("data:"):
            src = _data_url_bytes(url)
        else:
            raise ValueError("An editor image arrived without a file.")
    im = images.load_rgba(src, min_side=EDITOR_DECODE_SIDE)
    if size is not None and im.size != size:
        im = im.resize(size, Image.Resampling.NEAREST)
    return np.asarray(im)


def _blob_bytes(entry) -> int:
    blobs = entry[1]
    return sum(len(b) for b in (blobs.background, blobs.composite, *blobs.layers) if b)


def _expire_blobs(store: dict) -> None:
    """Drop blob sets older than BLOB_TTL, then the oldest until the store holds <= BLOB_STORE_BYTES."""
    now = time.monotonic()
    for k in [k for k, v in store.items() if not isinstance(v, tuple) or now - v[0] > BLOB_TTL]:
        store.pop(k, None)
    total = sum(_blob_bytes(v) for v in store.values())
    for k in sorted(store, key=lambda k: store[k][0]):
        if total <= BLOB_STORE_BYTES:
            break
        total -= _blob_bytes(store.pop(k))


def seed_input(label: str = "seed", **kwargs) -> SafeNumber:
    """The one seed box: whole numbers 0 … ``validation.MAX_SEED`` (the range the API enforces too)."""
    from pipelines import validation

    return SafeNumber(0, label=label, minimum=0, maximum=validation.MAX_SEED, step=1, **kwargs)
