"""The attention grid shared by the self-contained HTML pages: the explorer's and nmt-serve's demo.

``attention_grid.js`` (the global ``AttentionGrid``: subword chips, the heat map, the shading
of one hypothesis's attention by weight, hover and keyboard helpers) and ``attention_grid.css``
sit beside this module, in the ``nmt.evaluation`` package. A page template holds the markers
:data:`CSS_MARKER` (inside its ``<style>``) and :data:`JS_MARKER` (alone in a ``<script>``
before the page's own script); :func:`inline_attention_grid` puts the two files there, so the
pages shade with one code and still load nothing from the network.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

SCRIPT = "attention_grid.js"
STYLE = "attention_grid.css"
CSS_MARKER = "/*__ATTENTION_GRID_CSS__*/"
JS_MARKER = "/*__ATTENTION_GRID_JS__*/"


def read_asset(name: str) -> str:
    """The text of ``name`` in the ``nmt.evaluation`` package (the wheel ships it)."""
    return resources.files("nmt.evaluation").joinpath(name).read_text(encoding="utf-8")


def inline_attention_grid(template: str, template_name: str) -> str:
    """``template`` with the grid's CSS and JavaScript in place of its two markers.

    RuntimeError when a marker is missing or doubled, or when an asset holds text that would
    end its ``<style>``/``<script>`` block early."""
    for marker, asset, closing in ((CSS_MARKER, STYLE, "</style"), (JS_MARKER, SCRIPT, "</script")):
        if template.count(marker) != 1:
            raise RuntimeError(f"{template_name}: expected one {marker} placeholder")
        text = read_asset(asset)
        if closing in text.lower() or "<!--" in text:
            raise RuntimeError(f"{asset}: contains {closing} or <!--, which would end its block")
        template = template.replace(marker, text)
    return template


def json_for_script(payload: Any) -> str:
    """``payload`` as JSON that is safe inside ``<script type="application/json">``.

    ``<``, ``>`` and ``&`` become ``\\u003c``/``\\u003e``/``\\u0026``, so no text (``</script>``,
    ``<!--``) can end the block early; JSON.parse turns them back into the characters.
    """
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, escape)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
