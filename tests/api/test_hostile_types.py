"""Wrong kinds of values in every parameter of every endpoint: None, a string, a list, an object.

Each must get a *clear* answer: either success (a documented default, e.g. ``None`` prompt = empty prompt,
``None`` seed = 0) or an error whose message names the parameter, never gradio's generic "upstream app
raised an exception" (which is what an uncaught AttributeError or pydantic error gives). Raw HTTP, so any
JSON value can be sent.
"""

from __future__ import annotations

import json
import re

import pytest

from tests.api.test_hostile import _numeric_calls, files, raw_call  # noqa: F401 - fixture re-used

pytestmark = pytest.mark.api

WRONG = {"none": None, "string": "abc", "list": [1, 2], "object": {"a": 1}}
APIS = ["forward_load", "forward_mix", "forward_compare", "schedules_update", "viewer_run", "three_ways",
        "sampler_race", "oracle", "guidance_generate", "guidance_decompose", "guidance_tradeoff", "guidance_colour",
        "clip_guidance_run", "inpaint", "sketch", "sketch_strip"]


def _error_message(text: str) -> str | None:
    """The message of an SSE error answer ("" for gradio's generic one), None when it succeeded."""
    if "event: complete" in text:
        return None
    m = re.search(r"event: error\ndata: (.*)", text)
    assert m, text[-300:]
    data = json.loads(m.group(1))
    if isinstance(data, dict):
        data = data.get("error")
    return data if isinstance(data, str) else ""


@pytest.mark.parametrize("api", APIS)
def test_wrong_kinds_get_clear_messages(app_url, files, api):  # noqa: F811
    data, _ = _numeric_calls(app_url, files)[api]
    generic = []
    for i in range(len(data)):
        for label, value in WRONG.items():
            bad = list(data)
            bad[i] = value
            msg = _error_message(raw_call(app_url, api, bad))
            if msg == "" or (msg is not None and len(msg) < 10):
                generic.append(f"{api}[{i}]={label}: {msg!r}")
            elif msg is not None:
                print(f"{api}[{i}]={label}: {msg}")  # for review with -s
    assert not generic, "generic errors:\n" + "\n".join(generic)


@pytest.mark.parametrize("seed", [2**32, 2**33, 2**63 - 1, -1])
def test_seeds_outside_the_range_are_refused_with_it(app_url, seed):
    data = ["toy-sd (bundled, 32 px)", "a red circle", "", 5.0, 2, "DDIM", seed]
    msg = _error_message(raw_call(app_url, "guidance_generate", data))
    assert msg and "4294967295" in msg and "seed" in msg, msg


@pytest.mark.parametrize("api,data,i", [
    ("forward_mix", ["linear", 10], 1),
    ("guidance_generate", ["toy-sd (bundled, 32 px)", "a red circle", "", 5.0, 2, "DDIM", 0], 4),
    ("sketch_strip", None, 4),
])
def test_fractional_counts_are_refused_everywhere(app_url, files, api, data, i):  # noqa: F811
    if data is None:
        data = list(_numeric_calls(app_url, files)[api][0])
    data = list(data)
    data[i] = 2.5
    msg = _error_message(raw_call(app_url, api, data))
    assert msg and "whole number" in msg, msg


def test_sketch_strip_with_too_few_steps_names_the_steps(app_url, files):  # noqa: F811
    data = list(_numeric_calls(app_url, files)["sketch_strip"][0])
    data[4] = 3
    msg = _error_message(raw_call(app_url, "sketch_strip", data))
    assert msg and msg.startswith("steps must be between 4") and "strength" not in msg, msg
