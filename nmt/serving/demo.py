"""The demo page ``nmt-serve`` answers at ``/``: one self-contained HTML page on the JSON API.

The page (the template ``demo.html`` beside this module) has a text box, the translation, the
n-best list with scores, the attention of the chosen hypothesis shaded as the explorer shades it
(the same code: :mod:`nmt.evaluation.attention_grid` inlines it into both pages), and the model
card from ``GET /v1/model``. It calls ``POST v1/translate`` and ``GET v1/model`` with fetch()
and loads nothing else: the CSS and JavaScript are inline, and the response's
Content-Security-Policy (:func:`content_security_policy`) lets the page connect to its own
server only and run only its own inline scripts.

What the page needs from the server's settings sits in a ``<script type="application/json">``
block (:func:`page_settings`): the default and largest beam size, the request limits for its
help line, and whether an API key is needed (then the page shows a key field and sends the key
as ``Authorization: Bearer KEY``). The key itself never goes into the page.
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib import resources
from typing import Any

from nmt.evaluation.attention_grid import inline_attention_grid, json_for_script
from nmt.serving.settings import ServeSettings

TEMPLATE = "demo.html"  # beside this module, in the nmt.serving package
SETTINGS_MARKER = "__DEMO_SETTINGS__"
DEFAULT_BEAM_SIZE = 5  # the page's starting beam (and n-best list) size, at most max_beam_size
INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.S)
INLINE_STYLE = re.compile(r"<style>(.*?)</style>", re.S)


def page_settings(limits: ServeSettings) -> dict[str, Any]:
    """What the page reads from the server's settings (no secret: not the API key)."""
    return {
        "beam_size": min(DEFAULT_BEAM_SIZE, limits.max_beam_size),
        "max_beam_size": limits.max_beam_size,
        "max_sentences": limits.max_sentences_per_request,
        "max_sentence_tokens": limits.max_sentence_tokens,
        "api_key_required": limits.api_key is not None,
    }


def render_demo(limits: ServeSettings) -> str:
    """The demo page for a server with ``limits``: the template with the attention grid and
    the page settings filled in."""
    template = resources.files("nmt.serving").joinpath(TEMPLATE).read_text(encoding="utf-8")
    page = inline_attention_grid(template, TEMPLATE)
    if page.count(SETTINGS_MARKER) != 1:
        raise RuntimeError(f"{TEMPLATE}: expected one {SETTINGS_MARKER} placeholder")
    return page.replace(SETTINGS_MARKER, json_for_script(page_settings(limits)))


def content_security_policy(page: str) -> str:
    """A policy that runs only ``page``'s own inline scripts and styles (by their SHA-256) and
    lets it fetch from its own server only: no other host, no plug-ins, no frames, no forms."""
    scripts = " ".join(_sha256_source(s) for s in INLINE_SCRIPT.findall(page))
    styles = " ".join(_sha256_source(s) for s in INLINE_STYLE.findall(page))
    return (
        f"default-src 'none'; script-src {scripts}; style-src {styles}; connect-src 'self'; "
        "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


def demo_headers(page: str) -> dict[str, str]:
    """The headers the page is served with: its policy, no MIME sniffing, no referrer."""
    return {
        "Content-Security-Policy": content_security_policy(page),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }


def _sha256_source(text: str) -> str:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return f"'sha256-{base64.b64encode(digest).decode('ascii')}'"
