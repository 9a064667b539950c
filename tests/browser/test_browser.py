"""Browser tests in real Chromium. Each tab adds its own steps here (see tests/harness.py).

Screenshots go to /tmp/diffusion-lab-*.png for a human to look at.
"""

import pytest

import app
from tests.harness import drag_slider, image_src, open_tab, wait_for_change

pytestmark = pytest.mark.browser


def test_every_tab_opens(page):
    import importlib

    titles = [importlib.import_module(m).TITLE for m in app.TAB_MODULES]
    for title in titles:
        open_tab(page, title)
    errors = page.locator(".toast-body.error")
    assert errors.count() == 0, errors.first.inner_text()


def test_forward_noising_slider_drag_updates_x_t(page):
    open_tab(page, "Forward noising")
    page.wait_for_selector("#forward-xt img")
    before = image_src(page, "forward-xt")
    formula_before = page.locator("#forward-formula").inner_text()
    drag_slider(page, "forward-t", 0.2, 0.9)
    after = wait_for_change(page, "forward-xt", before)
    assert after != before
    page.wait_for_function(
        "old => document.querySelector('#forward-formula').innerText !== old", arg=formula_before)
    value = int(page.locator("#forward-t input[type=number]").input_value())
    assert value > 600, value  # the slider really moved right
    page.wait_for_timeout(500)
    page.screenshot(path="/tmp/diffusion-lab-forward.png", full_page=True)


def test_schedules_tab_renders_plot_grid_and_table(page):
    open_tab(page, "Schedules")
    page.wait_for_selector("#schedules-plot img", timeout=90_000)
    page.wait_for_selector("#schedules-grid img")
    page.wait_for_function("() => document.querySelector('#schedules-table').innerText.includes('leaks')")
    assert "scaled_linear" in page.locator("#schedules-table").inner_text()
    page.wait_for_timeout(500)
    page.screenshot(path="/tmp/diffusion-lab-schedules.png", full_page=True)


def _gallery_images(page, elem_id: str, n: int, timeout: float = 120_000) -> None:
    page.wait_for_function(
        "([id, n]) => document.querySelectorAll(`#${id} img`).length >= n", arg=[elem_id, n], timeout=timeout)


def test_guidance_playground_generate_and_colour(page):
    open_tab(page, "Guidance playground")
    page.locator("#guidance-run").click()
    page.wait_for_selector("#guidance-image img", timeout=120_000)
    page.locator("#guidance-colour-run").scroll_into_view_if_needed()
    page.locator("#guidance-colour-run").click()
    _gallery_images(page, "guidance-colour", 2)
    errors = page.locator(".toast-body.error")
    assert errors.count() == 0, errors.first.inner_text()
    page.wait_for_timeout(500)
    page.screenshot(path="/tmp/diffusion-lab-guidance.png", full_page=True)


def test_clip_guidance_run_shows_with_and_without(page):
    open_tab(page, "CLIP guidance")
    page.locator("#clip-run").click()
    _gallery_images(page, "clip-gallery", 2)
    errors = page.locator(".toast-body.error")
    assert errors.count() == 0, errors.first.inner_text()
    page.wait_for_timeout(500)
    page.screenshot(path="/tmp/diffusion-lab-clip-guidance.png", full_page=True)


def _paint_strokes(page, elem_id: str, strokes: list[tuple[float, float, float, float]]) -> None:
    """Drag the mouse over the ImageEditor canvas ``elem_id``; strokes are (x0, y0, x1, y1) fractions
    of the drawn image's box (the visible canvas)."""
    page.locator(f"#{elem_id} button[aria-label='Brush']").click()
    box = page.locator(f"#{elem_id} canvas").first.bounding_box()
    for x0, y0, x1, y1 in strokes:
        page.mouse.move(box["x"] + x0 * box["width"], box["y"] + y0 * box["height"])
        page.mouse.down()
        for i in range(1, 16):
            f = i / 15
            page.mouse.move(box["x"] + (x0 + (x1 - x0) * f) * box["width"],
                            box["y"] + (y0 + (y1 - y0) * f) * box["height"])
            page.wait_for_timeout(20)
        page.mouse.up()


def _fetch_image(page, elem_id: str):
    import io

    import numpy as np
    from PIL import Image

    src = image_src(page, elem_id)
    return np.asarray(Image.open(io.BytesIO(page.request.get(src).body())).convert("RGB"))


def test_inpainting_paint_mask_with_the_mouse_and_inpaint(page):
    open_tab(page, "Inpainting")
    page.wait_for_selector("#inpaint-editor canvas")
    page.wait_for_timeout(1000)  # let the sample background load onto the canvas
    _paint_strokes(page, "inpaint-editor", [(0.42, 0.45, 0.58, 0.45), (0.42, 0.52, 0.58, 0.52)])
    page.wait_for_selector("#inpaint-mask img", timeout=60_000)
    page.wait_for_function("() => document.querySelector('#inpaint-mask-info').innerText.includes('Mask covers')")
    mask = _fetch_image(page, "inpaint-mask")[..., 0] > 127
    assert 0.005 < mask.mean() < 0.5, mask.mean()  # the strokes, not nothing and not everything
    h, w = mask.shape
    assert mask[int(0.4 * h):int(0.6 * h), int(0.35 * w):int(0.65 * w)].any()  # where we painted
    assert not mask[: h // 5].any() and not mask[-h // 5:].any()
    page.locator("#inpaint-advanced .label-wrap").click()  # steps live in the Advanced accordion
    steps = page.locator("#inpaint-steps input[type=number]")
    steps.fill("10")  # default resampling (r = 3, j = 5) on 10 steps: 20 UNet calls, cheap on a busy CPU
    steps.press("Enter")
    before = image_src(page, "inpaint-result")
    page.locator("#inpaint-run").click()
    page.wait_for_function("() => document.querySelector('#inpaint-info').innerText.includes('Done')",
                           timeout=300_000)
    assert "20 UNet calls (10 DDIM steps, 3 resample" in page.locator("#inpaint-info").inner_text()
    wait_for_change(page, "inpaint-result", before)
    # the streamed composites are JPEGs; the final one is a lossless PNG (it may render a moment after the text)
    page.wait_for_function("() => (document.querySelector('#inpaint-result img') || {}).src?.endsWith('.png')",
                           timeout=30_000)
    result = _fetch_image(page, "inpaint-result")
    assert result.shape[:2] == mask.shape
    errors = page.locator(".toast-body.error")
    assert errors.count() == 0, errors.first.inner_text()
    page.wait_for_timeout(300)
    page.screenshot(path="/tmp/diffusion-lab-inpainting.png", full_page=True)


def test_guidance_example_runs_on_click_and_is_cached(page):
    """An example row fills the inputs and runs; its result is cached (for every user) after the first run."""
    import os
    from pathlib import Path

    open_tab(page, "Guidance playground")
    row = page.locator("#guidance-examples").get_by_text("a yellow star on a navy background").first
    row.click()
    page.wait_for_selector("#guidance-image img", timeout=120_000)
    first = _fetch_image(page, "guidance-image")
    assert page.locator("#guidance-prompt textarea").input_value() == "a yellow star on a navy background"
    cache = Path(os.environ["GRADIO_EXAMPLES_CACHE"])
    def cached() -> bool:
        return any(len(p.read_text().splitlines()) >= 2 for p in cache.rglob("log.csv"))

    for _ in range(100):  # the cache write lands after the result is shown: poll for it (up to ~10 s)
        if cached():
            break
        page.wait_for_timeout(100)
    assert cached(), list(cache.rglob("log.csv"))
    page.reload()
    page.wait_for_selector("button[role=tab]")
    open_tab(page, "Guidance playground")
    page.locator("#guidance-examples").get_by_text("a yellow star on a navy background").first.click()
    page.wait_for_selector("#guidance-image img", timeout=30_000)
    again = _fetch_image(page, "guidance-image")
    assert again.shape == first.shape and abs(again.astype(int) - first.astype(int)).max() <= 8  # JPEG re-encode
    errors = page.locator(".toast-body.error")
    assert errors.count() == 0, errors.first.inner_text()


def test_clip_guidance_example_runs_on_click(page):
    open_tab(page, "CLIP guidance")
    page.locator("#clip-examples").get_by_text("steers: blue square (defaults)").first.click()
    _gallery_images(page, "clip-gallery", 2)
    page.wait_for_function("() => (document.querySelector('#clip-info')?.innerText || '').includes('Judged by')",
                           timeout=300_000)
    assert "✅ reached" in page.locator("#clip-info").inner_text()  # the example does what its label says
    errors = page.locator(".toast-body.error")
    assert errors.count() == 0, errors.first.inner_text()


def test_inpainting_example_button_masks_and_runs(page):
    open_tab(page, "Inpainting")
    page.locator("#inpaint-example").click()
    page.wait_for_function("() => document.querySelector('#inpaint-info').innerText.includes('Done')",
                           timeout=300_000)
    mask = _fetch_image(page, "inpaint-mask")[..., 0] > 127
    assert 0.5 < mask.mean() < 0.7, mask.mean()  # the centre disc, radius 0.44 of the side
    h, w = mask.shape
    assert mask[h // 2, w // 2] and not mask[2, 2]
    assert page.locator("#inpaint-editor").count() == 1
    errors = page.locator(".toast-body.error")
    assert errors.count() == 0, errors.first.inner_text()
