"""Small UI helpers shared by the tabs (gradio-side only)."""

from __future__ import annotations

import functools
import io
import os
import tempfile
from pathlib import Path

import gradio as gr
import numpy as np
from gradio.processing_utils import hash_bytes
from gradio.utils import get_upload_folder
from PIL import Image

SAMPLES_DIR = Path(__file__).resolve().parent.parent / "assets" / "samples"


def sample_paths() -> list[str]:
    """The bundled sample images (server-chosen paths; see assets/samples/LICENSES.md)."""
    return [str(p) for p in sorted(SAMPLES_DIR.glob("*.jpg"))]


def user_errors(fn):
    """Turn a pipelines ``ValueError`` into a ``gr.Error`` that the user sees as a message, and run the
    handler's body on the compute thread (:mod:`pipelines.compute_thread`: on CPU, torch ops are ~2x
    slower when several threads use them).

    Generator functions (streamed results) stay generators, advanced one item at a time there, so
    errors raised mid-stream are converted too. On a ZeroGPU Space the function also runs under
    ``spaces.GPU`` (:func:`pipelines.accel.gpu`; a no-op elsewhere)."""
    import inspect

    from pipelines import compute_thread
    from pipelines.accel import gpu

    inner = gpu(fn)
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_wrapper(*args, **kwargs):
            try:
                yield from compute_thread.iterate(inner(*args, **kwargs))
            except ValueError as e:
                raise gr.Error(str(e)) from e

        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return compute_thread.call(inner, *args, **kwargs)
        except ValueError as e:
            raise gr.Error(str(e)) from e

    return wrapper


def request_generator(seed: int | float | None) -> "torch.Generator":  # noqa: F821
    """One fresh CPU ``torch.Generator`` per request, seeded from the UI."""
    import torch

    from pipelines import validation

    seed = 0 if seed is None or seed == "" else validation.integer("seed", seed, 0, 2**63 - 1)
    return torch.Generator("cpu").manual_seed(seed)


def jpeg(arr: np.ndarray, quality: int = 90) -> str:
    """uint8 ``[H, W, 3]`` -> a JPEG (4:4:4, ``quality``) in gradio's cache; returns its path.

    Gradio's own encoding (JPEG q75 with 4:2:0 chroma, or slow WebP/PNG) smears the per-pixel
    noise this app is about; this keeps it visible and costs ~4 ms for 512x512.
    """
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=quality, subsampling=0)
    return cache_file(buf.getvalue(), "image.jpg")


def png(im: Image.Image, compress_level: int = 6) -> str:
    """A PIL image -> a lossless PNG in gradio's cache (noise stays noise); returns its path.
    ``compress_level=1`` encodes ~3x faster for streamed frames at a few % more bytes."""
    buf = io.BytesIO()
    im.save(buf, "PNG", compress_level=compress_level)
    return cache_file(buf.getvalue(), "image.png")


def cache_file(data: bytes, name: str) -> str:
    """Put ``data`` in gradio's upload cache (content-addressed: ``<folder>/<sha256>/<name>``, the
    layout of ``gradio.processing_utils.save_bytes_to_cache``) and return its path.

    Unlike gradio's helper it does not rewrite a file that is already there: same hash, same bytes.
    Re-running a seed (lecture presets, cached examples, the scrubber) re-sends identical frames, and
    truncating and rewriting an existing file costs ~3 ms on ext4 (its replace-by-truncate flush)
    against ~0.05 ms for the existence check. New files are written to a temp name and renamed, so a
    concurrent request never serves a half-written file."""
    folder = Path(get_upload_folder()) / hash_bytes(data)
    path = folder / name
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".part")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    return str(path.resolve())
