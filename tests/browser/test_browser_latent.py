"""Browser test of the Latent space tab in real Chromium (shared harness: tests/conftest.py, tests/harness.py)."""

import pytest

from tests.harness import open_tab

pytestmark = pytest.mark.browser


def test_latent_tab_encodes_a_photo_and_interpolates(page):
    open_tab(page, "Latent space")
    # a sample photo from the examples, then the run button
    page.locator("#latent-image").scroll_into_view_if_needed()
    page.get_by_role("button", name="Encode → decode").click()
    page.wait_for_function("() => document.querySelector('#latent-info').innerText.includes('PSNR')",
                           timeout=120_000)
    assert "16×16×4" in page.locator("#latent-info").inner_text()
    page.wait_for_function("() => document.querySelectorAll('#latent-roundtrip img').length == 4", timeout=60_000)
    page.wait_for_function("() => document.querySelectorAll('#latent-channels img').length == 4", timeout=60_000)
    page.get_by_text("Interpolation: lerp vs slerp").click()
    page.locator("#latent-interp-run").click()
    page.wait_for_function("() => document.querySelectorAll('#latent-slerp img').length == 7", timeout=120_000)
    assert page.locator("#latent-lerp img").count() == 7
    errors = page.locator(".toast-body.error")
    assert errors.count() == 0, errors.first.inner_text()
    page.wait_for_timeout(300)
    page.screenshot(path="/tmp/diffusion-lab-latent.png", full_page=True)


def test_choosing_toy_sd3_in_the_viewer_switches_to_euler_and_runs(page):
    open_tab(page, "Denoising viewer")
    page.locator("#tab-denoising_viewer").get_by_text("Advanced", exact=True).first.click()
    page.locator("#viewer-model input").click()
    page.get_by_role("option", name="toy-sd3 (bundled, 64 px, latent)").click()
    page.wait_for_selector("#viewer-preview", state="visible")
    steps = page.locator("#viewer-steps input[type=number]")
    steps.fill("6")
    steps.press("Enter")
    page.locator("#viewer-run").click()
    page.wait_for_function("() => document.querySelector('#viewer-info').innerText.includes('done')",
                           timeout=180_000)
    assert page.locator("#viewer-preview img").evaluate("e => e.naturalWidth") == 64
    errors = page.locator(".toast-body.error")
    assert errors.count() == 0, errors.first.inner_text()
