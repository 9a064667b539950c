"""Browser test of the Theory tab in real Chromium: Langevin beside DDIM, then the prediction targets."""

import pytest

from tests.harness import open_tab

pytestmark = pytest.mark.browser


def _set(page, elem_id: str, value: str) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(value)
    box.press("Enter")


def test_theory_tab_runs_langevin_and_the_targets(page):
    open_tab(page, "Theory")
    _set(page, "theory-lv-levels", "2")
    _set(page, "theory-lv-steps", "1")
    page.locator("#theory-langevin-run").click()
    page.wait_for_function("() => document.querySelector('#theory-langevin-info').innerText.includes('DDIM (3 steps')",
                           timeout=600_000)
    assert page.locator("#theory-langevin-image img").count() == 1
    assert page.locator("#theory-ddim-image img").count() == 1
    open_tab(page, "Prediction targets")
    page.locator("#theory-targets-run").click()
    page.wait_for_function("() => document.querySelectorAll('#theory-targets-gallery img').length == 9",
                           timeout=600_000)
    assert "ᾱ = " in page.locator("#theory-targets-info").inner_text()
    errors = page.locator(".toast-body.error")
    assert errors.count() == 0, errors.first.inner_text()
