"""Input components that validate before gradio touches the payload (gradio-side only).

Subclasses of gradio components with ``is_template = True``, so the browser uses the stock
front-end component. (gradio writes a ``components.pyi`` type stub next to this file on import;
it is git-ignored.)
"""

from __future__ import annotations

import math

import gradio as gr


def _check_upload(data) -> None:
    """A FileData (or raw bytes) from the client -> ValueError unless it is a safe image."""
    from pipelines import images

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


class SafeImage(gr.Image):
    """``gr.Image`` whose uploads are validated by :mod:`pipelines.images` *before* gradio opens
    them: a corrupt, empty, truncated, tiny or bomb file gets our clear message instead of a
    generic "could not preprocess" error, and nothing decodes more than MAX_PIXELS."""

    is_template = True  # same front-end component as gr.Image

    def preprocess(self, payload):
        try:
            _check_upload(payload)
        except ValueError as e:
            raise gr.Error(str(e)) from e
        return super().preprocess(payload)


class SafeImageEditor(gr.ImageEditor):
    """``gr.ImageEditor`` whose background, layers and composite are validated before gradio
    decodes them (it would otherwise convert a 144-megapixel upload to RGBA in full)."""

    is_template = True  # same front-end component as gr.ImageEditor

    def preprocess(self, payload):
        if payload is not None:
            src = payload
            if payload.id is not None:  # the browser canvas sends its images as blobs first
                src = self.blob_storage.get(payload.id)
            try:
                for part in () if src is None else (src.background, *(src.layers or []), src.composite):
                    _check_upload(part)
            except ValueError as e:
                raise gr.Error(str(e)) from e
        return super().preprocess(payload)


def seed_input(label: str = "seed", **kwargs) -> SafeNumber:
    """The one seed box: whole numbers 0 … ``validation.MAX_SEED`` (the range the API enforces too)."""
    from pipelines import validation

    return SafeNumber(0, label=label, minimum=0, maximum=validation.MAX_SEED, step=1, **kwargs)
