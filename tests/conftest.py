"""Shared fixtures: the app launched once per session, a gradio_client per test, a Chromium page.

Reuse them from any test module:

* ``app_url``: base URL of Diffusion Lab (``app.build_app``) served in a background thread.
* ``client``: a fresh ``gradio_client.Client`` (its own session, so its own ``gr.State``).
* ``page``: a Playwright page (real Chromium, /usr/bin/chromium) already on ``app_url``;
  see ``tests/harness.py`` for ``open_tab`` and friends.
"""

from __future__ import annotations

import os
import socket

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

CHROMIUM = os.environ.get("DL_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _patient_url_check() -> None:
    """gradio's launch probes its own URL with 3 s timeouts and refuses to start when they pass; on the
    shared, overloaded 2-core machine the freshly started server can take longer to answer (the tests then
    failed before running). Probe for up to 120 s instead."""
    import httpx
    from gradio import networking

    def url_ok(url: str) -> bool:
        try:
            return httpx.head(url, timeout=120).status_code < 400
        except httpx.HTTPError:
            return False

    networking.url_ok = url_ok


@pytest.fixture(scope="session")
def app_url():
    import app
    from pipelines.runtime import Runtime

    _patient_url_check()
    demo = app.build_app(Runtime.create("cpu"))
    demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                quiet=True, share=False, **app.launch_kwargs(demo))
    yield demo.local_url
    demo.close()


@pytest.fixture
def client(app_url):
    from gradio_client import Client

    return Client(app_url, verbose=False, download_files=True)


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM):
        pytest.fail(f"Chromium not found at {CHROMIUM} (./scripts/test.sh installs Debian's chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, app_url):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(60_000)
    pg.goto(app_url, timeout=180_000)  # the first load of a fresh app builds every tab's page: slow on a busy CPU
    pg.wait_for_selector("button[role=tab]", timeout=180_000)
    yield pg
    context.close()
