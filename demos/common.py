"""Small UI helpers shared by the tabs (gradio-side only)."""

from __future__ import annotations

import functools
import io
from pathlib import Path

import gradio as gr
import numpy as np
from gradio.processing_utils import save_bytes_to_cache
from gradio.utils import get_upload_folder
from PIL import Image

SAMPLES_DIR = Path(__file__).resolve().parent.parent / "assets" / "samples"


def sample_paths() -> list[str]:
    """The bundled sample images (server-chosen paths; see assets/samples/LICENSES.md)."""
    return [str(p) for p in sorted(SAMPLES_DIR.glob("*.jpg"))]


def user_errors(fn):
    """Turn a pipelines ``ValueError`` into a ``gr.Error`` that the user sees as a message.

    Generator functions (streamed results) stay generators, so errors raised mid-stream are
    converted too. On a ZeroGPU Space the function also runs under ``spaces.GPU``
    (:func:`pipelines.accel.gpu`; a no-op elsewhere)."""
    import inspect

    from pipelines.accel import gpu

    inner = gpu(fn)
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_wrapper(*args, **kwargs):
            try:
                yield from inner(*args, **kwargs)
            except ValueError as e:
                raise gr.Error(str(e)) from e

        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return inner(*args, **kwargs)
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
    return save_bytes_to_cache(buf.getvalue(), "image.jpg", get_upload_folder())
