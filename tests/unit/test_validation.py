"""pipelines.validation: the rules at the boundary, with hard-coded limits (never the module's constants),
so raising a limit or dropping a rule makes a test fail."""

from __future__ import annotations

import math

import pytest

from pipelines import validation as V


# ------------------------------------------------------------------ prompts


def test_prompt_of_1000_characters_is_accepted_and_1001_refused():
    assert V.prompt("a" * 1000) == "a" * 1000
    assert V.prompt("é" * 1000) == "é" * 1000  # characters, not bytes
    with pytest.raises(ValueError, match="too long: 1,001 characters; the limit is 1000"):
        V.prompt("a" * 1001)
    with pytest.raises(ValueError, match="negative prompt is too long"):
        V.prompt("b" * 4000, "negative prompt")


def test_control_characters_become_spaces_tab_and_newline_stay():
    assert V.prompt("a\x00b\x01c\x08d\x1fe\x7ff") == "a b c d e f"
    assert V.prompt("a\x0bb\x0cc\x0dd\x1be") == "a b c d e"  # vertical tab, form feed, CR, ESC
    assert V.prompt("line one\nline\ttwo") == "line one\nline\ttwo"
    assert V.prompt("日本語 🙂 ünïcödé") == "日本語 🙂 ünïcödé"  # any printable Unicode is kept
    assert V.prompt("\x00" * 1000) == " " * 1000


def test_prompt_types():
    assert V.prompt(None) == "" and V.prompt("") == ""
    for bad in (3, ["a"], b"bytes"):
        with pytest.raises(ValueError, match="prompt must be text"):
            V.prompt(bad)


# ------------------------------------------------------------------ numbers


@pytest.mark.parametrize("value,expected", [(3, 3.0), ("2.5", 2.5), (True, 1.0), (0, 0.0), (1e300, 1e300)])
def test_number_accepts(value, expected):
    assert V.number("x", value) == expected


@pytest.mark.parametrize("value,match", [
    (float("nan"), "x must be a finite number"), (math.inf, "finite"), (-math.inf, "finite"), ("nan", "finite"),
    ("abc", "x must be a number"), (None, "must be a number"), ([1], "must be a number"), (10**400, "must be a number"),
])
def test_number_refuses(value, match):
    with pytest.raises(ValueError, match=match):
        V.number("x", value)


def test_number_bounds_are_inclusive():
    assert V.number("w", 0.0, 0.0, 100.0) == 0.0 and V.number("w", 100.0, 0.0, 100.0) == 100.0
    with pytest.raises(ValueError, match="w must be between 0 and 100, got 100.5"):
        V.number("w", 100.5, 0.0, 100.0)
    with pytest.raises(ValueError, match="between 0 and 100, got -0.001"):
        V.number("w", -0.001, 0.0, 100.0)
    with pytest.raises(ValueError, match="between -∞ and 5"):
        V.number("w", 6, hi=5)
    with pytest.raises(ValueError, match="between 1 and ∞"):
        V.number("w", 0, lo=1)


def test_integer():
    assert V.integer("steps", 3.0, 1, 1000) == 3 and isinstance(V.integer("steps", "7", 1, 1000), int)
    with pytest.raises(ValueError, match="steps must be a whole number, got 3.5"):
        V.integer("steps", 3.5, 1, 1000)
    with pytest.raises(ValueError, match="between 1 and 1000"):
        V.integer("steps", 1001, 1, 1000)
    with pytest.raises(ValueError, match="finite"):
        V.integer("steps", float("nan"))


def test_seed():
    assert V.seed(None) == 0 and V.seed("") == 0 and V.seed(42) == 42 and V.seed(42.0) == 42
    assert V.seed(2**32 - 1) == 2**32 - 1  # torch's CPU generator keeps 32 bits of a seed: the top of the range
    for bad in (-1, 2**32, 2**53 + 2, 1.5, float("nan")):
        with pytest.raises(ValueError, match="seed"):
            V.seed(bad)


def test_choice():
    assert V.choice("sampler", "DDIM", ["DDIM", "Euler"]) == "DDIM"
    with pytest.raises(ValueError, match=r"sampler must be one of \['DDIM', 'Euler'\], got 'Heun'"):
        V.choice("sampler", "Heun", ("DDIM", "Euler"))
