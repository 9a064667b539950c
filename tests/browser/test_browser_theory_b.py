"""Browser test of the Theory tab's "ELBO per t" section in real Chromium: one run from the button."""

import pytest

from tests.harness import open_tab

pytestmark = pytest.mark.browser


def test_elbo_section_runs_and_shows_the_bound(page):
    open_tab(page, "Theory")
    open_tab(page, "ELBO per t")
    page.locator("#elbo-stride input[type=number]").fill("240")
    page.locator("#elbo-stride input[type=number]").press("Enter")
    page.locator("#elbo-run").click()
    page.wait_for_function("() => document.querySelector('#elbo-info').innerText.includes('bits/dim')",
                           timeout=300_000)
    assert page.locator("#elbo-scenes img").count() >= 4
    assert page.locator("#elbo-plot img, #elbo-plot svg, #elbo-plot canvas").count() >= 1
    errors = page.locator(".toast-body.error")
    assert errors.count() == 0, errors.first.inner_text()
