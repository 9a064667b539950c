"""Browser test of "Inside the model" in real Chromium: record the maps, then scrub them by step and layer."""

import pytest

from tests.harness import drag_slider, image_src, open_tab, wait_for_change

pytestmark = pytest.mark.browser


def test_record_then_scrub_the_maps(page):
    open_tab(page, "Inside the model")
    steps = page.locator("#inside-steps input[type=number]")
    steps.fill("6")
    steps.press("Enter")
    page.locator("#inside-maps-run").click()
    page.wait_for_function("() => document.querySelectorAll('#inside-maps img').length >= 9", timeout=180_000)
    page.wait_for_selector("#inside-final img", timeout=60_000)
    before = image_src(page, "inside-maps")
    drag_slider(page, "inside-step", 0.98, 0.02)  # to step 1: the maps of the first step only
    wait_for_change(page, "inside-maps", before, timeout=60)
    after_step = image_src(page, "inside-maps")
    page.locator("#inside-layer input").click()
    page.get_by_role("option", name="mid (8×8)").click()
    page.wait_for_function("() => document.querySelector('#inside-layer input').value.startsWith('mid')",
                           timeout=30_000)
    wait_for_change(page, "inside-maps", after_step, timeout=120)
    errors = page.locator(".toast-body.error")
    assert errors.count() == 0, errors.first.inner_text()
    page.screenshot(path="/tmp/diffusion-lab-inside.png", full_page=True)
