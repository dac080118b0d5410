#!/usr/bin/env python
"""Regenerate the README's screenshots of the app on the demo archive (after `vidsift demo --no-app`).

    .venv/bin/python scripts/screenshot_app.py --db demo-out/vidsift.lance --archive demo-out/archive
"""
from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--mute-audio"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", default=str(REPO / "demo-out" / "vidsift.lance"))
    parser.add_argument("--archive", default=str(REPO / "demo-out" / "archive"))
    parser.add_argument("--query", default="a purple star")
    parser.add_argument("--out", default=str(REPO / "docs" / "app-search.png"))
    args = parser.parse_args(argv)

    from playwright.sync_api import sync_playwright

    from vidsift.app.web import AppConfig, start
    from vidsift.models.spec import resolve_spec

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo, url = start(AppConfig(db=args.db, spec=resolve_spec("shapes-tiny"), allow_dirs=(args.archive,), port=port))
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=FLAGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(60_000)
            page.goto(url)
            box = page.locator("#search-query textarea, #search-query input").first
            box.fill(args.query)
            page.locator("#search-button").click()
            page.wait_for_function("() => document.querySelectorAll('#search-results button.thumbnail-item img')"
                                   ".length > 0")
            page.locator("#search-results button.thumbnail-item").first.click()
            page.wait_for_function("() => { const v = document.querySelector('#player video');"
                                   " return v && v.readyState >= 2; }")
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=args.out, full_page=True)
            browser.close()
    finally:
        demo.close()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
