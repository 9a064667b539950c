"""Browser test of the "Train your own" tab: train 2-D for a few seconds, the plot appears and changes."""

import pytest

from tests.harness import image_src, open_tab, wait_for_change

pytestmark = pytest.mark.browser


def test_train_2d_plot_streams_and_changes(page):
    open_tab(page, "Train your own")
    page.locator("#train2d-btn").click()
    first = wait_for_change(page, "train2d-plot", None, timeout=60)
    second = wait_for_change(page, "train2d-plot", first, timeout=60)  # streamed: a later plot replaces it
    assert second != first
    page.wait_for_function("() => /step \\d+/.test(document.querySelector('#train2d-status').innerText)")
    page.screenshot(path="/tmp/diffusion-lab-train2d.png", full_page=True)
    assert page.locator(".toast-body.error").count() == 0
    assert image_src(page, "train2d-plot")


def test_digits_skip_ahead_shows_a_grid(page):
    open_tab(page, "Train your own")
    page.get_by_role("button", name="Skip ahead (load the shipped checkpoint)").click()
    wait_for_change(page, "digits-grid", None, timeout=60)
    page.wait_for_function("() => document.querySelector('#digits-status').innerText.includes('digits-class-flow')")
    page.locator("#digits-grid").scroll_into_view_if_needed()
    page.screenshot(path="/tmp/diffusion-lab-digits.png", full_page=True)
    assert page.locator(".toast-body.error").count() == 0
