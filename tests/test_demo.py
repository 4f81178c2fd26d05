"""nmt-serve's demo page (``GET /``, ``nmt.serving.demo``): the rendered page, and the page in a
real Chromium (Playwright) against a real ``nmt-serve`` process.

The server runs a tiny checkpoint whose embeddings, RNN inputs and attention weights are scaled
×10: after two steps of training the attention is nearly uniform and the same for every
hypothesis (one shade for every cell), scaled it is peaked and differs between the n-best
hypotheses, so the page's shading is checked against weights that tell them apart. The browser
tests type with the keyboard and compare the page with what ``POST /v1/translate`` answers
for the same sentence and settings; every request but the server's own is aborted, and each
test asserts that none was made and that the console had no error.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import torch
from conftest import quote

import scripts.demo_screenshot
import scripts.explorer_screenshot
from nmt.evaluation.attention_grid import SCRIPT, inline_attention_grid, read_asset
from nmt.evaluation.explorer import render_html
from nmt.serving.demo import (
    INLINE_SCRIPT,
    content_security_policy,
    page_settings,
    render_demo,
)
from nmt.serving.load_test import ServerProcess
from nmt.serving.settings import ServeSettings

SENTENCE = "Open the file."
MAX_SENTENCE_TOKENS = 24  # the server's limit here, so a too-long input is short to type
SETTINGS_BLOCK = re.compile(r'<script type="application/json" id="demo-settings">(.*?)</script>')
# the weights the scaled checkpoint multiplies by SCALE
SCALED = (
    "encoder.embed.weight",
    "encoder.forward_rnns.0.weight_ih_l0",
    "encoder.backward_rnns.0.weight_ih_l0",
    "tgt_embed.weight",
    "output_proj.weight",
    "decoder.rnn.layers.weight_ih_l0",
    "decoder.attention.score.query_proj.weight",
    "decoder.attention.score.key_proj.weight",
    "decoder.attention.score.v.weight",
)
SCALE = 10.0


# --------------------------------------------------------------------------------------------
# The page as rendered
# --------------------------------------------------------------------------------------------


def test_the_page_loads_nothing_from_another_host():
    page = render_demo(ServeSettings())
    assert "http://" not in page and "https://" not in page
    links = re.findall(r"""\s(?:src|href|action)\s*=\s*["']([^"']*)""", page, re.I)
    assert links == ["data:,"], links  # the empty favicon, so the browser asks for none
    assert len(re.findall(r"\bfetch\(\w", page)) == 1  # in api(), on these relative paths
    assert re.findall(r'api\("([^"]+)"', page) == ["v1/translate", "v1/model"]
    assert "@import" not in page and "url(" not in page  # no stylesheet or font to fetch


def test_the_page_carries_the_settings_but_never_the_api_key():
    limits = ServeSettings.from_config({"api_key": "s3cret", "max_beam_size": 3})
    page = render_demo(limits)
    assert "s3cret" not in page
    (block,) = SETTINGS_BLOCK.findall(page)
    assert json.loads(block) == page_settings(limits)
    assert json.loads(block)["api_key_required"] is True
    assert json.loads(block)["beam_size"] == 3  # the default 5, cut to serve.max_beam_size


def test_the_explorer_and_the_demo_share_one_attention_grid():
    grid = read_asset(SCRIPT)
    assert "function matrixTable" in grid and "function highlight" in grid
    demo, explorer = render_demo(ServeSettings()), render_html({"title": "t"})
    for page in (demo, explorer):
        assert page.count(grid) == 1
        assert "function matrixTable" not in page.replace(grid, "")  # no second copy
        assert "__ATTENTION_GRID" not in page
    with pytest.raises(RuntimeError, match=r"page.html: expected one /\*__ATTENTION_GRID_CSS"):
        inline_attention_grid("<style></style>", "page.html")


def test_the_policy_allows_exactly_the_pages_own_scripts():
    page = render_demo(ServeSettings())
    policy = content_security_policy(page)
    assert len(INLINE_SCRIPT.findall(page)) == 2  # the grid, then the page's own
    assert policy.count("'sha256-") == 3  # the two scripts and the style
    assert "connect-src 'self'" in policy and "default-src 'none'" in policy
    assert "unsafe-inline" not in policy


# --------------------------------------------------------------------------------------------
# A real server
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def peaked_checkpoint(tiny_checkpoint, tmp_path_factory) -> Path:
    """``tiny_checkpoint`` with the :data:`SCALED` weights × :data:`SCALE`."""
    checkpoint = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)
    checkpoint["model"] = {
        name: tensor * SCALE if name in SCALED else tensor
        for name, tensor in checkpoint["model"].items()
    }
    path = tmp_path_factory.mktemp("demo") / "peaked.pt"
    torch.save(checkpoint, path)
    return path


@pytest.fixture(scope="module")
def server(peaked_checkpoint):
    process = ServerProcess(
        f"ckpt={quote(peaked_checkpoint)}",
        f"serve.max_sentence_tokens={MAX_SENTENCE_TOKENS}",
        "serve.threads=1",
    )
    try:
        process.wait_ready(timeout=90)
        yield process
    finally:
        assert process.stop() == 0, process.output()


def api_translate(server, text: str | list[str], beam: int = 5) -> httpx.Response:
    """What the page asks for: ``n_best`` = the beam size, with the attention."""
    body = {"text": text, "beam_size": beam, "n_best": beam, "return_attention": True}
    return httpx.post(server.url + "/v1/translate", json=body, timeout=60)


def test_the_page_is_served_at_the_root_with_its_policy(server):
    response = httpx.get(server.url + "/", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["content-security-policy"] == content_security_policy(response.text)
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "/" not in httpx.get(server.url + "/openapi.json", timeout=10).json()["paths"]


# --------------------------------------------------------------------------------------------
# The page in Debian's Chromium
# --------------------------------------------------------------------------------------------


class DemoTab(scripts.demo_screenshot.ServerPage):
    """The script's tab on the server, with the readings the tests make."""

    def result(self, sentence: int = 0):
        return self.page.locator(f'#results .result[data-sentence="{sentence}"]')

    def cell_colours(self, sentence: int = 0) -> list[tuple[float, float, float, float]]:
        """(r, g, b, alpha) of each heat-map cell's computed background, row by row."""
        return (
            self.result(sentence)
            .locator(".grid table.matrix td")
            .evaluate_all(
                """nodes => nodes.map(n => {
                const m = getComputedStyle(n).backgroundColor.match(/rgba?\\(([^)]*)\\)/);
                const p = m[1].split(',').map(Number);
                return p.length === 4 ? p : [...p, 1];
            })"""
            )
        )

    def translate_requests(self) -> list[str]:
        return [url for url in self.requests if url.endswith("/v1/translate")]

    def close(self) -> None:
        assert self.errors == [], self.errors
        assert self.blocked == [], self.blocked
        assert all(url.startswith(self.origin + "/") for url in self.requests), self.requests
        self.page.close()


@pytest.fixture
def tab(browser, server):
    tab = DemoTab(browser, server.url + "/")
    yield tab
    tab.close()  # asserts: no console error, no request but to the server


def shading_of(matrix: list[list[float]]) -> list[float]:
    """The explorer's shade of each weight, row by row: sqrt(w), 1 at most, to 3 decimals."""
    return [round(min(1.0, math.sqrt(w)) if w > 0 else 0.0, 3) for row in matrix for w in row]


def shaded_as(colours: list[tuple], matrix: list[list[float]]) -> bool:
    """Whether the cells are the explorer's blue with the shade of each weight: Chromium keeps
    an alpha of 8 bits (and prints it to 2 or 3 decimals), so within one step of 1/255."""
    if len(colours) != sum(len(row) for row in matrix):
        return False
    assert {tuple(c[:3]) for c in colours} == {(29, 78, 216)}
    shades = zip(colours, shading_of(matrix), strict=True)
    return all(abs(shown - expected) * 255 <= 1 + 1e-6 for (*_, shown), expected in shades)


def far_apart(a: list[list[float]], b: list[list[float]]) -> bool:
    """Two attention matrices whose shading differs visibly (by 0.05 in some cell, or shape)."""
    shades_a, shades_b = shading_of(a), shading_of(b)
    if len(shades_a) != len(shades_b):
        return True
    return max(abs(x - y) for x, y in zip(shades_a, shades_b, strict=True)) > 0.05


def test_typing_and_enter_show_the_apis_translation_and_its_attention(tab, server):
    assert tab.page.evaluate("document.activeElement.id") == "text"  # the box has the focus
    tab.translate(SENTENCE)
    expected = api_translate(server, SENTENCE).json()["translations"][0]
    assert tab.result().locator(".translation").inner_text() == expected["text"]
    assert tab.message().startswith("translated in ")
    entries = tab.result().locator("button.alt")
    assert entries.count() == len(expected["nbest"]) == 5
    scores = tab.result().locator("button.alt .score").all_inner_texts()
    assert scores == [
        f"{h['score']:.2f} · conf {h['confidence']:.2f}".replace("-", "\u2212")
        for h in expected["nbest"]
    ]
    assert entries.first.get_attribute("aria-checked") == "true"
    assert shaded_as(tab.cell_colours(), expected["nbest"][0]["attention"])
    # hovering target subword 1 shades the source subwords by its row, as in the explorer
    tab.result().locator('.grid .row.tgt [data-tgt-index="1"]').hover()
    sources = tab.result().locator(".grid .row.src [data-src-index]")
    shown = sources.evaluate_all("nodes => nodes.map(n => Number(n.dataset.weight))")
    assert shown == pytest.approx(expected["nbest"][0]["attention"][1], abs=0.0005)


def test_another_hypothesis_chosen_with_the_keyboard_is_shaded_by_its_weights(tab, server):
    tab.translate(SENTENCE)
    nbest = api_translate(server, SENTENCE).json()["translations"][0]["nbest"]
    best = nbest[0]["attention"]
    rank = next(r for r, h in enumerate(nbest) if far_apart(h["attention"], best))
    for _ in range(3):  # Tab from the box: the beam size, Translate, the n-best group
        tab.page.keyboard.press("Tab")
    focused = tab.page.evaluate(
        "[document.activeElement.getAttribute('role'), document.activeElement.dataset.rank]"
    )
    assert focused == ["radio", "0"]
    for _ in range(rank):
        tab.page.keyboard.press("ArrowDown")
    assert tab.page.evaluate("document.activeElement.dataset.rank") == str(rank)
    checked = tab.result().locator('button.alt[aria-checked="true"]')
    assert checked.count() == 1 and checked.get_attribute("data-rank") == str(rank)
    assert shaded_as(tab.cell_colours(), nbest[rank]["attention"])
    assert not shaded_as(tab.cell_colours(), best)  # the shading changed with the choice
    tokens = tab.result().locator(".grid .row.tgt [data-tgt-index]").all_inner_texts()
    assert "".join(tokens) == "".join(t.lstrip("\u2581") or "\u2581" for t in nbest[rank]["tokens"])
    tab.page.keyboard.press("Home")  # back to the best, still by keyboard
    assert shaded_as(tab.cell_colours(), best)


def test_shift_enter_starts_a_second_sentence(tab, server):
    tab.translate("Open the file.\nWhere is the station?")
    expected = api_translate(server, ["Open the file.", "Where is the station?"]).json()
    shown = tab.page.locator("#results .result .translation").all_inner_texts()
    assert shown == [t["text"] for t in expected["translations"]]
    assert shaded_as(tab.cell_colours(1), expected["translations"][1]["nbest"][0]["attention"])


def test_an_empty_box_is_refused_on_the_page_without_a_request(tab):
    tab.translate("Where is the station?")  # a translation on screen, then an empty box
    assert tab.page.locator("#results .result").count() == 1
    requests = tab.translate_requests()
    for text in ("", "   \n  "):
        tab.translate(text)
        assert tab.message() == "text: the box is empty; type an English sentence to translate"
        assert tab.page.get_attribute("#message", "role") == "alert"
        assert tab.page.get_attribute("#text", "aria-invalid") == "true"
    assert tab.translate_requests() == requests  # no request for the empty box
    assert tab.page.locator("#results .result").count() == 0  # the old translation went


def test_a_too_long_input_shows_the_servers_detail(tab, server):
    long_text = " ".join(["station"] * 40)
    expected = api_translate(server, long_text)
    assert expected.status_code == 413
    before = tab.handled()
    tab.page.fill("#text", long_text)  # typing 300 characters would only take longer
    tab.page.focus("#text")
    tab.page.keyboard.press("Enter")
    tab.wait_until_handled(before)
    assert tab.message() == f"413: {expected.json()['detail']}"
    assert (
        tab.message().startswith("413: text: ") and "serve.max_sentence_tokens=24" in tab.message()
    )
    assert tab.page.get_attribute("#text", "aria-invalid") == "true"
    assert tab.page.locator("#results .result").count() == 0


def test_a_bad_beam_size_shows_the_422_naming_the_field(tab):
    tab.page.fill("#beam", "17")
    tab.translate(SENTENCE)
    assert tab.message() == (
        "422: beam_size: expected an integer in 1..16 (serve.max_beam_size); got 17"
    )
    assert tab.page.get_attribute("#beam", "aria-invalid") == "true"


def test_the_model_card_shows_the_checkpoint(tab):
    assert tab.page.get_attribute("#card", "data-state") == "shown"
    assert "peaked@2" in tab.page.inner_text("#model-name")
    steps = tab.page.locator('#card [data-key="step"] dd').all_inner_texts()
    assert "2" in steps


def test_a_card_in_v1_model_is_rendered_as_nested_sections(tab):
    card = {
        "code": {"version": "0.1.0", "commit": "abc123", "dirty": False},
        "training": {"steps": 344, "data": {"pairs": {"train": 1000}}, "corpora": ["enko", "x"]},
        "tests": [{"name": "test_a", "passed": True}, {"name": "test_b", "passed": False}],
        "created": "2026-12-07T12:00:00Z",
    }
    body = json.dumps({"model": "fake@344", "card": card, "checkpoint": {"step": 1}})
    tab.page.route(
        "**/v1/model",
        lambda route: route.fulfill(status=200, content_type="application/json", body=body),
    )
    tab.page.reload()
    tab.page.wait_for_selector('#card[data-state="shown"]')
    assert tab.page.get_attribute("#card", "data-source") == "card"
    headings = tab.page.locator("#card-body h3, #card-body h4, #card-body h5").all_inner_texts()
    assert headings == ["code", "training", "data", "pairs", "tests 1", "tests 2"]

    def value(section: str, key: str) -> str:
        row = f'#card [data-section="{section}"] > dl > [data-key="{key}"] dd'
        return tab.page.inner_text(row)

    assert value("training", "steps") == "344"
    assert value("training", "corpora") == "enko, x"  # a list, joined
    assert value("pairs", "train") == "1000"
    assert value("tests 2", "passed") == "false"
    assert tab.page.inner_text('#card-body > dl [data-key="created"] dd') == card["created"]
    assert tab.page.locator('#card [data-section="checkpoint"]').count() == 0  # the card wins
    assert "fake@344" in tab.page.inner_text("#model-name")


def test_a_server_glossary_is_underlined_on_the_page(browser, peaked_checkpoint, tmp_path):
    glossary = tmp_path / "terms.tsv"
    glossary.write_text("file\t파일\n", encoding="utf-8")
    process = ServerProcess(
        f"ckpt={quote(peaked_checkpoint)}", f"glossary={quote(glossary)}", "serve.threads=1"
    )
    try:
        process.wait_ready(timeout=90)
        expected = api_translate(process, SENTENCE).json()["translations"][0]
        assert expected["constraints"] == ["파일"] and "파일" in expected["text"]
        tab = DemoTab(browser, process.url + "/")
        try:
            tab.translate(SENTENCE)
            marked = tab.result().locator(".grid .row.tgt .tok.constrained")
            shown = marked.evaluate_all("nodes => nodes.map(n => Number(n.dataset.tgtIndex))")
            assert shown == expected["nbest"][0]["constrained_tokens"] != []
        finally:
            tab.close()
    finally:
        assert process.stop() == 0, process.output()


def test_with_an_api_key_the_page_asks_for_it_and_sends_it(browser, peaked_checkpoint):
    keyed = ServerProcess(f"ckpt={quote(peaked_checkpoint)}", "serve.api_key=s3cret")
    try:
        keyed.wait_ready(timeout=90)
        tab = DemoTab(browser, keyed.url + "/")
        assert tab.page.is_visible("#api-key")
        assert tab.page.get_attribute("#card", "data-state") == "needs-key"
        tab.translate(SENTENCE)
        assert tab.message() == (
            "401: API key missing: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
        )
        assert tab.page.get_attribute("#api-key", "aria-invalid") == "true"
        tab.page.fill("#api-key", "s3cret")
        tab.page.press("#api-key", "Tab")  # a change event: the card is fetched with the key
        tab.page.wait_for_selector('#card[data-state="shown"]')
        tab.translate(SENTENCE)
        assert tab.message().startswith("translated in ")
        assert tab.page.locator("#results .result .translation").count() == 1
        tab.close()
    finally:
        assert keyed.stop() == 0, keyed.output()


def test_the_screenshot_script_writes_a_png(peaked_checkpoint, tmp_path):
    """As a user runs it (a process of its own: Playwright's sync API runs one per thread)."""
    if not scripts.explorer_screenshot.CHROMIUM.exists():
        pytest.skip(f"{scripts.explorer_screenshot.CHROMIUM} not found")
    out = tmp_path / "demo.png"
    script = Path(scripts.demo_screenshot.__file__)
    command = [sys.executable, str(script), str(peaked_checkpoint), str(out), "--rank", "1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert out.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and out.stat().st_size > 10_000
    assert "console errors: 0 []" in result.stdout and "blocked: []" in result.stdout
