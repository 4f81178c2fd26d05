"""Screenshot nmt-serve's demo page (``/``) in Debian's Chromium, against a real server process.

    python scripts/demo_screenshot.py CKPT OUT.png [--text "Where is the station?"] [--beam 5]
        [--rank 0] [--hover 0] [--width 1280] [--height 900] [--colors 256]
        [--serve serve.key=value …]

Starts ``nmt-serve`` on CKPT (127.0.0.1, a free port, with the ``--serve`` overrides), opens
``/``, types ``--text`` with the keyboard and presses Enter, waits for the translation, chooses
n-best entry ``--rank`` (0: the best) with the keyboard, hovers target subword ``--hover`` of the
chosen hypothesis (-1: none), and saves a full-page screenshot. Every request to another host is
aborted; console errors and blocked requests are printed, and exit status 1 says there were some.
``--colors N`` writes a palette PNG of N colours (smaller; 0 keeps the browser's RGB PNG).

The tab here (:class:`ServerPage`) is also the browser tests' (tests/test_demo.py).
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path
from urllib.parse import urlsplit

try:
    from scripts.explorer_screenshot import CHROMIUM, launch
except ModuleNotFoundError:  # run as a file: python scripts/demo_screenshot.py
    from explorer_screenshot import CHROMIUM, launch

# Chromium logs each 4xx/5xx answer to fetch() as a console error; the page shows those itself.
HTTP_STATUS_LOG = "Failed to load resource: the server responded with a status of"


class ServerPage:
    """A tab on a server's page with every request to another origin aborted and recorded, and
    the console errors (but the HTTP statuses the page reports itself) and uncaught exceptions
    collected."""

    def __init__(self, browser, url: str, width: int = 1280, height: int = 900):
        self.url = url
        self.origin = "{0.scheme}://{0.netloc}".format(urlsplit(url))
        self.page = browser.new_page(viewport={"width": width, "height": height})
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.blocked: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda err: self.errors.append(str(err)))
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.route("**/*", self._route)
        self.page.goto(url)
        self.page.wait_for_selector("#card[data-state]")  # the model card's fetch settled

    def _console(self, message) -> None:
        if message.type == "error" and not message.text.startswith(HTTP_STATUS_LOG):
            self.errors.append(message.text)

    def _route(self, route) -> None:
        if route.request.url.startswith(self.origin + "/"):
            route.continue_()
        else:
            self.blocked.append(route.request.url)
            route.abort()

    def handled(self) -> int:
        """How many Translates are over: refused on the page, or answered by the server
        (``#results[data-handled]``)."""
        return int(self.page.get_attribute("#results", "data-handled") or 0)

    def translate(self, text: str) -> None:
        """Type ``text`` into the box with the keyboard (a newline as Shift+Enter), press Enter,
        and wait until the page has shown the outcome (a translation or a message)."""
        before = self.handled()
        self.page.focus("#text")
        self.page.keyboard.press("Control+A")
        self.page.keyboard.press("Delete")
        for i, line in enumerate(text.split("\n")):
            if i:
                self.page.keyboard.press("Shift+Enter")
            self.page.keyboard.type(line)
        self.page.keyboard.press("Enter")
        self.wait_until_handled(before)

    def wait_until_handled(self, before: int) -> None:
        """Until more than ``before`` Translates are over."""
        self.page.wait_for_function(
            "n => Number(document.querySelector('#results').dataset.handled || 0) > n", arg=before
        )

    def choose(self, rank: int, sentence: int = 0) -> None:
        """Choose n-best entry ``rank`` with the keyboard: focus the group, then ↓ or ↑."""
        result = self.page.locator(f'#results .result[data-sentence="{sentence}"]')
        result.locator('button.alt[aria-checked="true"]').focus()
        current = int(result.locator('button.alt[aria-checked="true"]').get_attribute("data-rank"))
        key = "ArrowDown" if rank > current else "ArrowUp"
        for _ in range(abs(rank - current)):
            self.page.keyboard.press(key)

    def message(self) -> str:
        return self.page.inner_text("#message").strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ckpt", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--text", default="Where is the nearest train station?")
    parser.add_argument("--beam", type=int, default=None, help="default: the page's")
    parser.add_argument("--rank", type=int, default=0, help="the n-best entry to show (0: best)")
    parser.add_argument("--hover", type=int, default=0, help="target subword index; -1: none")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=900)
    parser.add_argument("--colors", type=int, default=256)
    parser.add_argument("--serve", nargs="*", default=[], help="nmt-serve overrides")
    args = parser.parse_args()
    if not CHROMIUM.exists():
        print(f"error: {CHROMIUM} not found (apt-get install -y chromium fonts-noto-cjk)")
        return 2
    if not args.ckpt.is_file():
        print(f"error: checkpoint not found: {args.ckpt}")
        return 2
    from playwright.sync_api import sync_playwright

    from nmt.serving.load_test import ServerProcess

    server = ServerProcess(f"ckpt='{args.ckpt}'", *args.serve)
    try:
        server.wait_ready(timeout=180)
        with sync_playwright() as playwright:
            browser = launch(playwright)
            tab = ServerPage(browser, server.url + "/", args.width, args.height)
            if args.beam is not None:
                tab.page.fill("#beam", str(args.beam))
            tab.translate(args.text)
            if tab.page.locator("#results .result").count():
                tab.choose(args.rank)
                if args.hover >= 0:
                    tok = f'#results .grid .row.tgt [data-tgt-index="{args.hover}"]'
                    tab.page.locator(tok).first.hover()
            png = tab.page.screenshot(full_page=True)
            message = tab.message()
            browser.close()
    finally:
        server.stop()
    write_png(png, args.out, args.colors)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB); the page says: {message}")
    print(f"console errors: {len(tab.errors)} {tab.errors}")
    print(f"requests: {tab.requests}; blocked: {tab.blocked}")
    return 1 if tab.errors or tab.blocked else 0


def write_png(png: bytes, out: Path, colors: int) -> None:
    """The browser's PNG as it is, or as a palette of ``colors`` colours."""
    if not colors:
        out.write_bytes(png)
        return
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=colors)
    image.save(out, optimize=True)


if __name__ == "__main__":
    sys.exit(main())
