"""Lecture mode: URL presets (parsing, round trip, in Chromium), presentation mode, determinism."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qsl, quote

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from demos import lecture

ROOT = Path(__file__).resolve().parents[2]
MODEL = "toy-sd (bundled, 32 px)"


def _registry():
    with gr.Blocks():
        reg = {
            "guidance": {"prompt": gr.Textbox("x"), "scale": gr.Slider(0, 20, value=5.0, step=0.5),
                         "steps": gr.Slider(2, 100, value=30, step=1), "sampler": gr.Dropdown(["DDIM", "Euler"]),
                         "seed": gr.Number(0, minimum=0, precision=0), "colour": gr.ColorPicker("#00c8ff")},
            "forward_noising": {"size": gr.Radio([128, 256, 512], value=256), "t": gr.Slider(0, 999, step=1)},
            "schedules": {"schedules": gr.CheckboxGroup(["linear", "cosine"]), "zero_snr": gr.Checkbox(False)},
        }
    return reg


def test_restore_parses_every_kind_of_control():
    reg = _registry()
    q = {"tab": "guidance", "prompt": "a red circle", "scale": "7.5", "steps": "12", "sampler": "Euler",
         "seed": "42", "colour": "#ff0000", "forward_noising.size": "512", "schedules.schedules": "linear,cosine",
         "schedules.zero_snr": "1", "present": "1"}
    tab, values, problems, present = lecture.restore_updates(q, reg)
    assert tab == "guidance" and problems == [] and present is True
    flat = [v[0] if v else None for v in values]
    assert flat == ["a red circle", 7.5, 12, "Euler", 42, "#ff0000", 512, None, ["linear", "cosine"], True]
    assert isinstance(flat[2], int) and isinstance(flat[6], int)


@pytest.mark.parametrize("key,raw,match", [
    ("scale", "nan", "finite"), ("scale", "1e9", "between"), ("scale", "abc", "number"),
    ("steps", "-3", "between"), ("sampler", "Heun", "one of"), ("seed", "-1", "between"),
    ("colour", "red); background:url(x)", "colour"), ("prompt", "x" * 5000, "too long"),
])
def test_bad_url_values_are_ignored_with_a_reason(key, raw, match):
    tab, values, problems, _ = lecture.restore_updates({"tab": "guidance", key: raw}, _registry())
    assert tab == "guidance" and all(v is None for v in values)
    assert len(problems) == 1 and key in problems[0] and match in problems[0], problems


def test_unknown_tab_and_keys_are_reported():
    tab, values, problems, present = lecture.restore_updates({"tab": "nope", "bogus": "1"}, _registry())
    assert tab is None and present is None and all(v is None for v in values)
    assert any("unknown tab" in p for p in problems) and any("bogus" in p for p in problems)
    assert lecture.resolve_tab("inpaint", {"inpainting": {}}) == "inpainting"  # alias


def test_link_round_trips():
    reg = _registry()
    values = ["a 'quoted' & prompt 一只", 7.5, 12, "Euler", 42, "#ff0000", 512, 10, ["cosine"], False]
    q = lecture.link_query("guidance", reg, values)
    parsed = dict(parse_qsl(q[1:], keep_blank_values=True))
    tab, restored, problems, _ = lecture.restore_updates(parsed, reg)
    assert tab == "guidance" and problems == []
    assert [v[0] if v else None for v in restored][:6] == values[:6]  # only the tab's own keys travel


# --------------------------------------------------------------------------------------
# In Chromium: a preset URL restores the tab and its controls
# --------------------------------------------------------------------------------------

PROMPT = "a yellow star on a navy background"


@pytest.mark.browser
def test_preset_url_restores_the_tab_and_its_controls(browser, app_url):
    url = (f"{app_url}?tab=guidance&prompt={quote(PROMPT)}&scale=7.5&seed=42&steps=12&sampler=Euler"
           "&colour=%23ff0000&present=1")
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        page.goto(url)
        page.wait_for_function(
            "() => [...document.querySelectorAll('button[role=tab]')].some(b => "
            "b.textContent.trim() === 'Guidance playground' && b.getAttribute('aria-selected') === 'true')")
        page.wait_for_function("() => document.querySelector('#guidance-w input[type=number]')?.value === '7.5'")
        tab = page.locator("#tab-guidance")
        page.locator("#guidance-advanced .label-wrap").click()  # the sampler lives in the Advanced accordion
        assert tab.get_by_label("prompt", exact=True).input_value() == PROMPT
        assert tab.get_by_label("seed", exact=True).input_value() == "42"
        assert page.locator("#guidance-w input[type=number]").input_value() == "7.5"
        assert tab.get_by_label("sampler", exact=True).input_value() == "Euler"
        page.wait_for_function("() => document.body.classList.contains('dl-presentation')")
        assert page.locator("#dl-present input[type=checkbox]").is_checked()
        size = page.evaluate("() => parseFloat(getComputedStyle(document.querySelector('#tab-guidance label span')"
                             " || document.body).fontSize)")
        assert size >= 18, size
        page.screenshot(path="/tmp/diffusion-lab-lecture.png", full_page=False)
        # the link button reproduces the preset (plus the tab's other controls)
        page.locator("#dl-link-btn").click()
        page.wait_for_function("() => document.querySelector('#dl-link textarea, #dl-link input')?.value"
                               ".includes('tab=guidance')")
        link = page.locator("#dl-link textarea, #dl-link input").first.input_value()
        params = dict(parse_qsl(link.split("?", 1)[1]))
        assert params["prompt"] == PROMPT and params["scale"] == "7.5" and params["seed"] == "42"
        assert params["sampler"] == "Euler" and params["steps"] == "12"
        # turning presentation off removes the class
        page.locator("#dl-present input[type=checkbox]").uncheck()
        page.wait_for_function("() => !document.body.classList.contains('dl-presentation')")
        assert page.locator(".toast-body.error").count() == 0
    finally:
        context.close()


@pytest.mark.browser
def test_bad_preset_warns_and_keeps_defaults(browser, app_url):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        page.goto(f"{app_url}?tab=inpaint&scale=NaN&seed=7")
        page.wait_for_function(
            "() => [...document.querySelectorAll('button[role=tab]')].some(b => "
            "b.textContent.trim() === 'Inpainting' && b.getAttribute('aria-selected') === 'true')")
        page.wait_for_selector(".toast-body")
        assert "finite" in page.locator(".toast-body").first.inner_text()
        page.locator("#inpaint-advanced .label-wrap").click()  # the seed lives in the Advanced accordion
        assert page.locator("#inpaint-advanced").get_by_label("seed", exact=True).input_value() == "7"
    finally:
        context.close()


# --------------------------------------------------------------------------------------
# Same seed, same image: across calls, sessions and process restarts
# --------------------------------------------------------------------------------------


def _pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.mark.api
def test_same_seed_same_image_across_calls_and_sessions(client, app_url):
    from gradio_client import Client

    args = (MODEL, "a red circle on a white background", "", 7.5, 4, "DDIM", 42)
    a, _ = client.predict(*args, api_name="/guidance_generate")
    b, _ = client.predict(*args, api_name="/guidance_generate")
    c, _ = Client(app_url, verbose=False).predict(*args, api_name="/guidance_generate")
    d, _ = client.predict(*args[:-1], 43, api_name="/guidance_generate")
    assert np.array_equal(_pixels(a), _pixels(b)) and np.array_equal(_pixels(a), _pixels(c))
    assert not np.array_equal(_pixels(a), _pixels(d))


RESTART_SCRIPT = """
import hashlib, sys
sys.path.insert(0, {root!r})
from pipelines.runtime import Runtime
from demos import guidance
rt = Runtime.create("cpu")
*_, (path, md) = guidance.generate(rt, {model!r}, "a red circle on a white background", "", 7.5, 4, "DDIM", 42)
from PIL import Image
print(hashlib.sha256(Image.open(path).convert("RGB").tobytes()).hexdigest())
"""


@pytest.mark.api
def test_same_seed_same_image_after_a_restart(client):
    """A fresh process (= an app restart) gives bit-identical pixels for the same seed."""
    a, _ = client.predict(MODEL, "a red circle on a white background", "", 7.5, 4, "DDIM", 42,
                          api_name="/guidance_generate")
    here = hashlib.sha256(Image.open(a).convert("RGB").tobytes()).hexdigest()
    out = subprocess.run([sys.executable, "-c", RESTART_SCRIPT.format(root=str(ROOT), model=MODEL)], cwd=ROOT,
                         capture_output=True, text=True, timeout=900,
                         env={"HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == here
