"""Browser test of the "Noise tricks" tab in real Chromium: one anagram from the button, one from an example."""

import pytest

from tests.harness import open_tab

pytestmark = pytest.mark.browser


def _done(page, elem_id: str, timeout: float = 180_000) -> None:
    page.wait_for_function("id => document.querySelector(`#${id}`).innerText.includes('Done')", arg=elem_id,
                           timeout=timeout)


def test_anagram_runs_and_shows_both_views(page):
    open_tab(page, "Noise tricks")
    page.locator("#tricks-anagram-run").click()
    _done(page, "tricks-anagram-md")
    assert page.locator("#tricks-anagram img").count() >= 2
    assert "rendering judge" in page.locator("#tricks-anagram-md").inner_text()
    page.locator("#tricks-anagram-examples").get_by_text("rotated 90°").first.click()
    page.wait_for_function("() => document.querySelector('#tricks-b-prompt textarea').value.includes('cross')")
    _done(page, "tricks-anagram-md")
    errors = page.locator(".toast-body.error")
    assert errors.count() == 0, errors.first.inner_text()
    page.screenshot(path="/tmp/diffusion-lab-tricks.png", full_page=True)
