"""Browser test of the Denoising viewer in real Chromium (shared harness: tests/conftest.py, tests/harness.py)."""

import pytest

from tests.harness import drag_slider, image_src, open_tab, wait_for_change

pytestmark = pytest.mark.browser


def test_viewer_streams_then_the_slider_scrubs(page):
    open_tab(page, "Denoising viewer")
    steps = page.locator("#viewer-steps input[type=number]")
    steps.fill("12")
    steps.press("Enter")
    page.locator("#viewer-run").click()
    # streamed frames arrive while it runs, then the run ends with "done"
    page.wait_for_selector("#viewer-x0 img", timeout=120_000)
    page.wait_for_function("() => document.querySelector('#viewer-info').innerText.includes('done')",
                           timeout=180_000)
    assert "step 12 / 12" in page.locator("#viewer-info").inner_text()
    # the filmstrip (and the scrubber's range) follow in an event chained on the run's success
    page.wait_for_function("() => document.querySelectorAll('#viewer-strip img').length >= 5", timeout=60_000)
    # frames are sent at the model's 32 px; the browser shows them large and unsmoothed
    img = page.locator("#viewer-x0 img").first
    assert img.bounding_box()["width"] >= 150 and img.evaluate("e => e.naturalWidth") == 32
    assert img.evaluate("e => getComputedStyle(e).imageRendering") == "pixelated"
    assert img.evaluate("e => getComputedStyle(e).objectFit") == "contain"  # scale-down would keep it 32 px
    before_x0, before_xt = image_src(page, "viewer-x0"), image_src(page, "viewer-xt")
    drag_slider(page, "viewer-scrub", 0.98, 0.05)
    wait_for_change(page, "viewer-xt", before_xt)
    page.wait_for_function("() => !document.querySelector('#viewer-info').innerText.includes('step 12 / 12')")
    info = page.locator("#viewer-info").inner_text()
    assert "step 1 /" in info or "step 2 /" in info, info
    assert image_src(page, "viewer-x0") != before_x0
    errors = page.locator(".toast-body.error")
    assert errors.count() == 0, errors.first.inner_text()
    page.wait_for_timeout(300)
    page.screenshot(path="/tmp/diffusion-lab-viewer.png", full_page=True)


def test_viewer_example_fills_the_inputs_and_runs(page):
    open_tab(page, "Denoising viewer")
    page.locator("#viewer-examples").get_by_text("a large yellow star on a black background").first.click()
    # the example sets 20 DPM-Solver++ steps and the run starts by itself
    page.wait_for_function("() => document.querySelector('#viewer-info').innerText.includes('done')",
                           timeout=180_000)
    assert "step 20 / 20" in page.locator("#viewer-info").inner_text()
    assert page.locator("#viewer-prompt textarea").input_value() == "a large yellow star on a black background"
    # the filmstrip (and the scrubber's range) follow in an event chained on the run's success
    page.wait_for_function("() => document.querySelectorAll('#viewer-strip img').length >= 5", timeout=60_000)
    errors = page.locator(".toast-body.error")
    assert errors.count() == 0, errors.first.inner_text()
