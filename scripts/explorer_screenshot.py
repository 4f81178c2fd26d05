"""Screenshot an explorer page (``python -m nmt.explore``) in Debian's Chromium, offline.

    python scripts/explorer_screenshot.py explorer.html out.png [--sentence 3] [--model 0]
        [--hover 2] [--matrix] [--single] [--width 1280] [--height 820] [--colors 256]

``--hover I`` hovers target subword I of model ``--model``'s panel (the compare view synchronises
the other panels); ``--single`` shows that model alone; ``--matrix`` turns the heat maps on. Every
request except the page itself is aborted; console errors and blocked requests are printed, and
exit status 1 says there were some. ``--colors N`` writes a palette PNG of N colours (smaller;
0 keeps the browser's RGB PNG).

The launch settings here are also the browser tests' (tests/test_explore.py).
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")  # Debian's; Playwright's own download cannot work offline
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def launch(playwright):
    """Debian's Chromium, headless, with the background services that phone home turned off."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


class OfflinePage:
    """A tab on a file:// page with every other request aborted and recorded, and the console
    errors and uncaught exceptions collected."""

    def __init__(self, browser, path: Path, width: int = 1280, height: int = 900):
        self.url = path.resolve().as_uri()
        self.page = browser.new_page(viewport={"width": width, "height": height})
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.blocked: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda err: self.errors.append(str(err)))
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.route("**/*", self._route)
        self.page.goto(self.url)
        self.page.wait_for_selector("[data-tgt-index]")

    def _route(self, route) -> None:
        if route.request.url == self.url:
            route.continue_()
        else:
            self.blocked.append(route.request.url)
            route.abort()

    def panel(self, model: int):
        return self.page.locator(f'#pane .panel[data-model="{model}"]')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("page", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--sentence", type=int, default=0, help="0-based, in the page's list")
    parser.add_argument("--model", type=int, default=0)
    parser.add_argument("--hover", type=int, default=None, help="target subword index")
    parser.add_argument("--matrix", action="store_true")
    parser.add_argument("--single", action="store_true")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=820)
    parser.add_argument("--colors", type=int, default=256)
    args = parser.parse_args()
    if not CHROMIUM.exists():
        print(f"error: {CHROMIUM} not found (apt-get install -y chromium fonts-noto-cjk)")
        return 2
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch(playwright)
        tab = OfflinePage(browser, args.page, args.width, args.height)
        tab.page.click(f'#sentence-list button[data-index="{args.sentence}"]')
        if args.single:
            tab.page.click(f'#model-picker button[data-model="{args.model}"]')
        if args.matrix:
            tab.page.click("#toggle-matrix")
        if args.hover is not None:
            tab.panel(args.model).locator(f'.row.tgt [data-tgt-index="{args.hover}"]').hover()
        png = tab.page.screenshot()
        browser.close()
    if args.colors:
        from PIL import Image

        image = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=args.colors)
        image.save(args.out, optimize=True)
    else:
        args.out.write_bytes(png)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")
    print(f"console errors: {len(tab.errors)} {tab.errors}")
    print(f"requests: {tab.requests}; blocked: {tab.blocked}")
    return 1 if tab.errors or tab.blocked else 0


if __name__ == "__main__":
    sys.exit(main())
