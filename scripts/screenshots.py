"""Screenshots of every tab as a student, a lecturer and a phone see them (for humans to look at).

    PYTHONPATH=. .venv/bin/python scripts/screenshots.py [OUT_DIR] [--tabs forward_noising,viewer]

Launches the app on a free port (bundled models, CPU) and saves, per tab, ``<tab>-normal.png``
(1366×768, first screen only), ``<tab>-presentation.png`` (1920×1080, ``present=1``) and
``<tab>-phone.png`` (390×844, the whole page) into OUT_DIR (default ``artifacts/screenshots``,
git-ignored; CI uploads it). The browser test ``tests/browser/test_browser_screens.py`` saves the same
views after a run of each tab.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

VIEWS = {"normal": ((1366, 768), ""), "presentation": ((1920, 1080), "&present=1"), "phone": ((390, 844), "")}


def shoot(url: str, out: Path, tabs: list[str], titles: dict[str, str]) -> list[Path]:
    from playwright.sync_api import sync_playwright

    from tests.conftest import CHROMIUM, CHROMIUM_ARGS

    saved = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        for view, ((w, h), extra) in VIEWS.items():
            ctx = browser.new_context(viewport={"width": w, "height": h})
            page = ctx.new_page()
            page.set_default_timeout(120_000)
            for tid in tabs:
                page.goto(f"{url}?tab={tid}{extra}")
                page.wait_for_function(
                    "n => [...document.querySelectorAll('button[role=tab]')].some(b => "
                    "b.textContent.trim() === n && b.getAttribute('aria-selected') === 'true')", arg=titles[tid])
                page.wait_for_timeout(2500)  # images, plots and fonts settle
                path = out / f"{tid}-{view}.png"
                page.screenshot(path=str(path), full_page=view == "phone")
                saved.append(path)
            ctx.close()
        browser.close()
    return saved


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", default="artifacts/screenshots")
    ap.add_argument("--tabs", default="", help="comma-separated tab ids (default: all)")
    args = ap.parse_args(argv)
    sys.path.insert(0, os.getcwd())
    import app
    from demos import lecture
    from pipelines.runtime import Runtime
    from tests.conftest import free_port

    mods = {lecture.tab_id(m): m for m in app.TAB_MODULES}
    tabs = [t for t in args.tabs.split(",") if t] or list(mods)
    titles = {t: importlib.import_module(mods[t]).TITLE for t in mods}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    demo = app.build_app(Runtime.create("cpu"))
    demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        for p in shoot(demo.local_url, out, tabs, titles):
            print(p)
    finally:
        demo.close()


if __name__ == "__main__":
    main()
