"""Shared validation of user-supplied scalars and prompts (every rule raises ``ValueError``
with a message meant for the user; ``demos.common.user_errors`` shows it as a ``gr.Error``).

Images are validated by :mod:`pipelines.images`. Numbers and prompts are checked here, once,
for every tab, because the UI's own bounds are not enough: gradio's slider bounds check lets
NaN through (every comparison with NaN is False), and API clients can send anything.

Rules:

* **Numbers** must be finite (NaN and ±inf are refused) and within the documented range.
  Integer parameters must be whole numbers (``3.0`` is fine, ``3.5`` is refused).
* **Seeds** are whole numbers in ``[0, MAX_SEED]`` (2^32 − 1: torch's CPU generator, a Mersenne
  Twister, keeps only the low 32 bits of a seed, so larger seeds would silently repeat images).
* **Guidance scales** w are in ``[0, MAX_GUIDANCE]``, the UI sliders' range too.
* **Prompts** are strings of at most :data:`MAX_PROMPT_CHARS` characters (longer ones are
  refused, not cut: CLIP reads only its first 77 tokens, roughly 300 characters, so a longer
  prompt would be silently truncated by the tokenizer). Any Unicode is accepted (the
  tokenizers are byte-level BPE); NUL and other C0 control characters except tab/newline are
  replaced by spaces, since they carry no meaning for a tokenizer.
"""

from __future__ import annotations

import math
import re

MAX_PROMPT_CHARS = 1000
MAX_SEED = 2**32 - 1
MAX_GUIDANCE = 30.0
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def number(name: str, value, lo: float | None = None, hi: float | None = None) -> float:
    """``value`` as a finite float in ``[lo, hi]`` (either bound optional), else ValueError."""
    if isinstance(value, bool):
        value = int(value)
    try:
        v = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        lo_s = "-∞" if lo is None else _fmt(lo)
        hi_s = "∞" if hi is None else _fmt(hi)
        raise ValueError(f"{name} must be between {lo_s} and {hi_s}, got {_fmt(value if isinstance(value, int) else v)}")
    return v


def _fmt(x) -> str:
    """Whole numbers in full (a seed's bound is 4294967295, not 4.29497e+09), others as %g."""
    if isinstance(x, int) or (isinstance(x, float) and x.is_integer() and abs(x) < 1e16):
        return str(int(x))
    return f"{x:g}"


def integer(name: str, value, lo: int | None = None, hi: int | None = None) -> int:
    """``value`` as a whole number in ``[lo, hi]``, else ValueError (NaN, inf, 2.5 refused)."""
    v = number(name, value, lo, hi)
    if v != int(v):
        raise ValueError(f"{name} must be a whole number, got {v:g}")
    return int(v)


def seed(value) -> int:
    """A seed: a whole number in ``[0, MAX_SEED]``; ``None``/empty means 0."""
    if value is None or value == "":
        return 0
    return integer("seed", value, 0, MAX_SEED)


def generator(value, device: str = "cpu"):
    """One fresh ``torch.Generator`` per request, seeded with :func:`seed` (``value``)."""
    import torch

    return torch.Generator(device).manual_seed(seed(value))


def choice(name: str, value, options) -> str:
    """``value`` must be one of ``options``."""
    options = list(options)
    if value not in options:
        raise ValueError(f"{name} must be one of {options}, got {value!r}")
    return value


def prompt(value, name: str = "prompt") -> str:
    """A prompt: a string of at most MAX_PROMPT_CHARS characters (control characters -> spaces)."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{name} must be text, got {type(value).__name__}")
    if len(value) > MAX_PROMPT_CHARS:
        raise ValueError(
            f"The {name} is too long: {len(value):,} characters; the limit is {MAX_PROMPT_CHARS} "
            f"(CLIP reads only its first 77 tokens, about 300 characters, anyway)."
        )
    return _CONTROL.sub(" ", value)
