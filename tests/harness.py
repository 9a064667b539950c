"""Helpers for browser tests (Playwright sync API). Add your tab's steps in tests/browser/test_browser.py."""

from __future__ import annotations

import time


def open_tab(page, name: str) -> None:
    """Click the tab button whose text is ``name`` (in gradio's "More tabs" menu when the tab bar overflows)
    and wait until it is selected."""
    page.wait_for_timeout(300)  # gradio moves the tabs that do not fit into the menu just after load
    tab = page.get_by_role("tab", name=name, exact=True)
    if not tab.is_visible():  # more tabs than fit: gradio lists the rest in its overflow menu
        page.locator(".overflow-menu > button").first.click()
        tab = page.locator(".overflow-dropdown button", has_text=name).first
    tab.click()
    page.wait_for_function(
        "n => [...document.querySelectorAll('button[role=tab]')]"
        ".some(b => b.textContent.trim() === n && b.getAttribute('aria-selected') === 'true')", arg=name)


def image_src(page, elem_id: str) -> str | None:
    """The ``src`` of the first <img> inside the element with ``elem_id`` (None if absent)."""
    img = page.locator(f"#{elem_id} img").first
    return img.get_attribute("src") if img.count() else None


def wait_for_change(page, elem_id: str, old: str | None, timeout: float = 30.0) -> str:
    """Poll until the image src inside ``elem_id`` differs from ``old``; return the new src."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        new = image_src(page, elem_id)
        if new and new != old:
            return new
        page.wait_for_timeout(100)
    raise AssertionError(f"image in #{elem_id} did not change within {timeout}s (still {old!r})")


def drag_slider(page, elem_id: str, start: float, end: float, steps: int = 12) -> None:
    """Drag the range input of slider ``elem_id`` with the mouse from fraction ``start`` to ``end``."""
    rng = page.locator(f"#{elem_id} input[type=range]")
    rng.scroll_into_view_if_needed()
    box = rng.bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + start * box["width"], y)
    page.mouse.down()
    for i in range(1, steps + 1):
        page.mouse.move(box["x"] + (start + (end - start) * i / steps) * box["width"], y)
        page.wait_for_timeout(30)
    page.mouse.up()
