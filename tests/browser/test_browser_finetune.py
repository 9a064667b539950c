"""Browser test of Train your own → "Fine-tune toy-sd": a few steps, the before/after samples appear and change."""

import pytest

from tests.harness import image_src, open_tab, wait_for_change

pytestmark = pytest.mark.browser


def test_finetune_a_few_steps_changes_the_samples(page):
    open_tab(page, "Train your own")
    open_tab(page, "Fine-tune toy-sd")
    steps = page.locator("#ft-steps input[type=number]")
    steps.fill("3")
    steps.press("Enter")
    page.locator("#ft-train-btn").click()
    first = wait_for_change(page, "ft-samples", None, timeout=240)  # step 0: the copy still equals the bundled model
    second = wait_for_change(page, "ft-samples", first, timeout=240)  # after the steps: the fine-tuned row moved
    assert second != first
    page.wait_for_function("() => /Step 3 .*done/.test(document.querySelector('#ft-status').innerText)",
                           timeout=240_000)
    assert "read back" in page.locator("#ft-judge").inner_text()
    assert image_src(page, "ft-loss")
    page.screenshot(path="/tmp/diffusion-lab-finetune.png", full_page=True)
    assert page.locator(".toast-body.error").count() == 0
