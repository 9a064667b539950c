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
from matplotlib.figure import Figure
from PIL import Image

SAMPLES_DIR = Path(__file__).resolve().parent.parent / "assets" / "samples"


def sample_paths() -> list[str]:
    """The bundled sample images (server-chosen paths; see assets/samples/LICENSES.md)."""
    return [str(p) for p in sorted(SAMPLES_DIR.glob("*.jpg"))]


def user_errors(fn):
    """Turn a pipelines ``ValueError`` into a ``gr.Error`` that the user sees as a message, and run the
    handler's body on the compute thread (:mod:`pipelines.serving.compute_thread`: on CPU, torch ops are ~2x
    slower when several threads use them).

    Generator functions (streamed results) stay generators, advanced one item at a time there, so
    errors raised mid-stream are converted too. On a ZeroGPU Space the function also runs under
    ``spaces.GPU`` (:func:`pipelines.models.accel.gpu`; a no-op elsewhere)."""
    import inspect

    from pipelines.serving import compute_thread
    from pipelines.models.accel import gpu

    inner = gpu(fn)
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_wrapper(*args, **kwargs):
            try:
                yield from compute_thread.iterate(inner(*args, **kwargs))
            except ValueError as e:
                raise gr.Error(str(e)) from e

        return with_hints(gen_wrapper, fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return compute_thread.call(inner, *args, **kwargs)
        except ValueError as e:
            raise gr.Error(str(e)) from e

    return with_hints(wrapper, fn)


def file_digest(path) -> str | None:
    """sha256 of a (server-side) file's bytes, for replay keys; None for no file."""
    import hashlib

    if not path:
        return None
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def room_limit(runtime) -> dict:
    """Event kwargs for the runs a whole room starts at once (viewer Denoise, Start here): on CPU up to
    ``DL_ROOM_RUNS`` (32) of them at once in one shared group, their UNet calls stacked on the compute thread
    (``pipelines.serving.compute_thread.batched``); the rest wait in gradio's queue, which shows each its place.
    Elsewhere (GPU: no compute thread) the app's default limit."""
    if runtime.device.type != "cpu":
        return {}
    return {"concurrency_limit": int(os.environ.get("DL_ROOM_RUNS", 32)), "concurrency_id": "room"}


def room_note(others: int) -> str:
    """What a run that shares the model says on its first frame: how many other runs are ahead in line."""
    if others <= 0:
        return ""
    return (f" · {others} other run{'s' if others > 1 else ''} ahead of you on the model: their steps and yours "
            "are computed together, one step each per turn")


def with_hints(wrapper, fn):
    """Give ``wrapper`` ``fn``'s resolved type hints, so that gradio sees a ``request: gr.Request`` parameter
    (and passes the request) also through ``functools.partial``, which carries no annotations."""
    import typing

    try:
        wrapper.__annotations__ = typing.get_type_hints(fn.func if isinstance(fn, functools.partial) else fn)
    except (NameError, TypeError):
        pass
    return wrapper


def session_of(request) -> str | None:
    """The browser session's id (gradio's ``session_hash``; one per page load or ``gradio_client.Client``)."""
    return getattr(request, "session_hash", None)


def image_file(x, px: int | None = None, fmt: str = "png", compress_level: int = 6) -> str:
    """One image -> a file in gradio's cache; returns its path.

    ``x``: a tensor ``[3, H, W]`` (or ``[1, 3, H, W]``) in [-1, 1], or uint8 ``[H, W, 3]``. With ``px``, small
    images are upscaled to ``px`` with nearest neighbour (model pixels stay visible) and large ones reduced
    (box). ``fmt``: ``png`` (lossless: noise stays noise) or ``jpeg`` (4:4:4, q95).
    """
    from pipelines import images

    if not isinstance(x, np.ndarray):
        x = x.detach().float().cpu()
        arr = images.tensor_to_uint8(x[0] if x.ndim == 4 else x)
    else:
        arr = x
    if px and arr.shape[1] != px:
        im = Image.fromarray(arr)
        size = (px, round(px * im.height / im.width))
        arr = np.asarray(im.resize(size, Image.Resampling.NEAREST if im.width < px else Image.Resampling.BOX))
    if fmt == "jpeg":
        return jpeg(arr, quality=95)
    return png(Image.fromarray(arr), compress_level=compress_level)


def conditional_model(runtime, name: str, session: str | None = None):
    """The diffusion model ``name`` (``session``: whose trained model, see :meth:`Runtime.diffusion`);
    ValueError when it cannot take a condition (CFG needs one: a prompt, or a digit's class)."""
    model = runtime.diffusion(name or None, session)  # ModelUnavailable is a ValueError
    if not model.conditional:
        raise ValueError(f"{name} is unconditional: classifier-free guidance needs a conditional model "
                         "(a text prompt, or a digit's class label)")
    return model


def conditional_names(runtime, digits: bool = False) -> list[str]:
    """Names of the conditional models in the registry (for guidance dropdowns); ``digits``: also the
    class-conditional digits models (bundled, and the one trained in this session)."""
    from pipelines.models.digits_model import is_class_conditional

    reg = runtime.registry
    return [n for n in reg.diffusion_names(digits=digits) if reg.spec(n).kind != "pixel"
            and (reg.spec(n).kind != "digits" or is_class_conditional(reg.spec(n).source))]


def snr_text(alpha_bar: float) -> str:
    """SNR = ᾱ/(1 − ᾱ) as text with its decibels, e.g. ``0.25 (−6.0 dB)``."""
    from pipelines.diffusion import maths, schedules

    snr = maths.snr(alpha_bar)
    if snr == float("inf"):
        return "∞"
    return f"{snr:.3g} ({schedules.snr_db(alpha_bar):+.1f} dB)" if snr > 0 else "0 (−∞ dB)"


def jpeg(arr: np.ndarray, quality: int = 90) -> str:
    """uint8 ``[H, W, 3]`` -> a JPEG (4:4:4, ``quality``) in gradio's cache; returns its path.

    Gradio's own encoding (JPEG q75 with 4:2:0 chroma, or slow WebP/PNG) smears the per-pixel
    noise this app is about; this keeps it visible (docs/measurements.md).
    """
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=quality, subsampling=0)
    return cache_file(buf.getvalue(), "image.jpg")


def png(im: Image.Image, compress_level: int = 6) -> str:
    """A PIL image -> a lossless PNG in gradio's cache (noise stays noise); returns its path.
    ``compress_level=1`` encodes faster for streamed frames at a few % more bytes."""
    buf = io.BytesIO()
    im.save(buf, "PNG", compress_level=compress_level)
    return cache_file(buf.getvalue(), "image.png")


def cache_file(data: bytes, name: str) -> str:
    """Put ``data`` in gradio's upload cache (content-addressed: ``<folder>/<sha256>/<name>``, the
    layout of ``gradio.processing_utils.save_bytes_to_cache``) and return its path.

    Unlike gradio's helper it does not rewrite a file that is already there (same hash, same bytes;
    re-runs re-send identical frames, and rewriting costs far more than the existence check). New files
    are written to a temp name and renamed, so a concurrent request never serves a half-written file."""
    folder = Path(get_upload_folder()) / hash_bytes(data)
    path = folder / name
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".part")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    return str(path.resolve())


def loss_figure(curves: dict[str, list[float]], title: str, ylabel: str, log: bool = True) -> Figure:
    """One line per curve (values per step), log y when positive; for guided-vs-unguided losses."""
    fig = Figure(figsize=(6, 3), layout="constrained")
    ax = fig.subplots()
    for label, ys in curves.items():
        if ys:
            ax.plot(range(1, len(ys) + 1), ys, "-", marker=".", label=label)
    ax.set(xlabel="step", ylabel=ylabel, title=title)
    if log and any(y > 0 for ys in curves.values() for y in ys):
        ax.set_yscale("log")
    ax.legend(fontsize=8)
    return fig


def sampler_follows_model(runtime, model_dd, sampler_dd) -> None:
    """Flow-matching models (toy-sd3, the flow digits) sample with Euler on the flow ODE only: choosing one in
    ``model_dd`` sets ``sampler_dd`` to Euler (the other samplers would be refused with a message)."""
    def pick(name, sampler, request: gr.Request):
        flow = runtime.flow_only(name, session_of(request))
        return gr.Dropdown(value="Euler") if flow and sampler != "Euler" else gr.skip()

    model_dd.change(user_errors(pick), [model_dd, sampler_dd], sampler_dd, api_visibility="private",
                    show_progress="hidden")


def i_start_note(strength, steps) -> str:
    """One line of Markdown tying the app's strength to CS180's i_start (strength = 1 − i_start / N)."""
    from pipelines.sketch import i_start_mapping

    m = i_start_mapping(strength, steps)
    return (f"CS180's **i_start = {m['i_start']}** of N = {m['n']} steps: strength = 1 − i_start/N = "
            f"{m['strength']:.3g} (CS180: the lower i_start, the more noise; here: the higher the strength).")


def prompt_note(runtime, model_name, prompt, request: gr.Request = None) -> str:
    """Markdown under a prompt box: the words the chosen bundled model never read in training, and which bundled
    model did. Empty when every word was seen, for models whose training vocabulary is unknown (hub models) and
    for models without a text encoder (digits)."""
    from pipelines.attention.tokens import VOCABULARY_KINDS, unseen_words

    reg = runtime.registry
    # only the bundled toy models know their training captions: decide from the spec, so choosing a hub model
    # in the dropdown does not load (or download) it for a note
    if not str(prompt or "").strip() or reg.spec(model_name or reg.default_diffusion).kind not in VOCABULARY_KINDS:
        return ""
    model = runtime.diffusion(model_name or None, session_of(request))
    try:
        words = unseen_words(model, prompt)
    except ValueError:  # no text encoder, or a prompt the run itself will refuse with its own message
        return ""
    if not words:
        return ""
    quoted = ", ".join(f"“{w}”" for w in words[:6]) + (" …" if len(words) > 6 else "")
    md = f"⚠️ **{model.name.split(' (')[0]}** never read {quoted} in training"
    if getattr(model, "captions", None) != "template":
        return md + ": it may misread this prompt."
    alt = next((n for n in reg.diffusion_names("toy") if reg.spec(n).captions == "natural"), None)
    md += " (it learnt one pattern: “a red circle on a navy background”)"
    return md + (f". **{alt.split(' (')[0]}** (Advanced → model) reads captions as people write them." if alt
                 else ": it may misread this prompt.")
