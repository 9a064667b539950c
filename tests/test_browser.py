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
