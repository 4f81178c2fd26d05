"""The attention explorer: its payload, its command line, and the page in a real browser.

The checkpoints are tiny models trained for two steps on the tiny corpus (two score functions on
one vocabulary, and one on another vocabulary), so their attention is nearly uniform: the tests
check that the page shows exactly the model's weights, not that the weights mean anything.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import sacrebleu
import torch
from conftest import TINY_MODEL, build_trainer, quote, run_main
from omegaconf import OmegaConf

import scripts.explorer_screenshot
from nmt.evaluation.explorer import WEIGHT_SCALE, explore, json_for_script
from nmt.inference.translator import Translator
from nmt.models.checkpoint import load_checkpoint

SOURCES = [
    "Open the file.",
    "",  # blank lines are skipped; the line numbers stay those of the file
    "The station is closed on Sundays.",
    "Type </script><!-- to close the block & see.",  # must not end the data block early
]
REFERENCES = ["파일을 엽니다.", "", "그 역은 일요일에 닫습니다.", "</script>를 입력하세요."]
PAGE_SEARCH = {"beam_size": 2}  # the browser tests' page: beam search, so the n-best has 2 entries
DATA_BLOCK = re.compile(r'<script type="application/json" id="explorer-data">(.*?)</script>', re.S)


def train_tiny(cfg, run_dir: Path, data) -> Path:
    """Two steps of a tiny model in this process; the run dir as Hydra leaves it (with
    ``.hydra/config.yaml``), so it also stands for a sweep's run dir."""
    build_trainer(cfg, run_dir, data).fit()
    (run_dir / ".hydra").mkdir()
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    return run_dir / "checkpoints" / "best.pt"


def tiny_cfg(tiny_prepared, attention: str, *extra: str, out_dir: Path | None = None):
    return tiny_prepared.corpus.cfg(
        *TINY_MODEL,
        f"model/attention={attention}",
        "trainer.max_steps=2",
        "trainer.val_max_sentences=1",
        "trainer.num_attention_plots=0",
        *extra,
        out_dir=out_dir or tiny_prepared.data.out_dir,
    )


@pytest.fixture(scope="module")
def sweep(tiny_prepared, tmp_path_factory) -> Path:
    """A sweep dir with two run dirs, ``concat`` and ``dot``, on the same vocabulary."""
    root = tmp_path_factory.mktemp("explore_sweep")
    for attention in ("concat", "dot"):
        train_tiny(tiny_cfg(tiny_prepared, attention), root / attention, tiny_prepared.data)
    return root


@pytest.fixture(scope="module")
def other_vocab_ckpt(tiny_prepared, tmp_path_factory) -> Path:
    """A checkpoint whose source SentencePiece model has another size (400, not 500)."""
    from conftest import prepare

    root = tmp_path_factory.mktemp("explore_other_vocab")
    cfg = tiny_cfg(tiny_prepared, "dot", "data.vocab.src_size=400", out_dir=root / "prepared")
    data = prepare(cfg.data, seed=cfg.seed, log=lambda _: None)
    return train_tiny(cfg, root / "run", data)


@pytest.fixture(scope="module")
def texts(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("explore_text")
    src, ref = folder / "in.en", folder / "ref.ko"
    src.write_text("".join(s + "\n" for s in SOURCES), encoding="utf-8")
    ref.write_text("".join(r + "\n" for r in REFERENCES), encoding="utf-8")
    return src, ref


def ckpts(sweep: Path) -> list[Path]:
    return [sweep / name / "checkpoints" / "best.pt" for name in ("concat", "dot")]


def read_payload(page: Path) -> dict:
    blocks = DATA_BLOCK.findall(page.read_text(encoding="utf-8"))
    assert len(blocks) == 1
    return json.loads(blocks[0])


def weights(hyp: dict) -> torch.Tensor:
    return torch.tensor(hyp["attention"], dtype=torch.float64) / WEIGHT_SCALE


# --------------------------------------------------------------------------------------------
# The payload and the file
# --------------------------------------------------------------------------------------------


def test_payload_rows_sum_to_one_and_shapes_match_the_tokens(sweep, texts, tmp_path):
    src, ref = texts
    payload = explore([str(p) for p in ckpts(sweep)], src, ref, tmp_path / "page.html", n_best=2)
    assert read_payload(tmp_path / "page.html") == payload
    assert [s["line"] for s in payload["sentences"]] == [1, 3, 4]
    assert [m["label"] for m in payload["models"]] == ["concat · gru · luong", "dot · gru · luong"]
    for sentence in payload["sentences"]:
        assert len(sentence["outputs"]) == 2
        for output in sentence["outputs"]:
            assert len(output["nbest"]) == 1  # greedy search keeps one hypothesis
            for hyp in output["nbest"]:
                rows = len(hyp["tokens"]) + (0 if hyp["hit_max_len"] else 1)
                matrix = weights(hyp)
                assert matrix.shape == (rows, len(sentence["source_tokens"]) + 1)
                rounding = 0.5 / WEIGHT_SCALE * matrix.shape[1]  # each weight is rounded
                assert torch.allclose(matrix.sum(1), torch.ones(rows).double(), atol=rounding)
                assert {"bleu", "chrf", "entropy", "coverage_deviation", "confidence"} <= hyp.keys()


def test_payload_holds_the_translators_output(sweep, texts, tmp_path):
    src, ref = texts
    payload = explore(str(ckpts(sweep)[0]), src, ref, tmp_path / "page.html")
    translator = Translator.from_checkpoint(ckpts(sweep)[0], "cpu")
    for sentence, truth in zip(
        payload["sentences"],
        translator.translate([SOURCES[0], SOURCES[2], SOURCES[3]]),
        strict=True,
    ):
        best = sentence["outputs"][0]["nbest"][0]
        assert sentence["source_tokens"] == truth.source_tokens
        assert best["tokens"] == truth.tokens and best["text"] == truth.text
        assert torch.allclose(weights(best), truth.attention.double(), atol=0.5 / WEIGHT_SCALE)
        reference = REFERENCES[sentence["line"] - 1]
        expected_bleu = sacrebleu.sentence_bleu(truth.text, [reference], tokenize="ko-mecab").score
        assert best["bleu"] == pytest.approx(expected_bleu, abs=1e-4)
        expected_chrf = sacrebleu.sentence_chrf(truth.text, [reference]).score
        assert best["chrf"] == pytest.approx(expected_chrf, abs=1e-4)


def test_a_hypothesis_cut_at_the_length_limit_has_one_row_per_token(sweep, texts, tmp_path):
    search = {"max_len_ratio": 0.0, "max_len_offset": 2}  # two tokens, then the limit
    payload = explore(str(ckpts(sweep)[1]), texts[0], None, tmp_path / "p.html", search=search)
    cut = [s["outputs"][0]["nbest"][0] for s in payload["sentences"]]
    assert any(h["hit_max_len"] for h in cut)
    for hyp in cut:
        assert len(hyp["attention"]) == len(hyp["tokens"]) + (0 if hyp["hit_max_len"] else 1)
    assert "bleu" not in cut[0] and payload["bleu_tokenizer"] is None  # no ref= given


def test_text_cannot_end_the_data_block():
    text = json_for_script({"s": "a </script><!-- b & c \u2028"})
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == {"s": "a </script><!-- b & c \u2028"}


def test_command_line_on_a_sweep_dir_writes_one_page(sweep, texts, tmp_path):
    out = tmp_path / "sweep.html"
    src, ref = texts
    result = run_main(
        "nmt.explore",
        f"ckpt={quote(sweep)}",
        f"input={quote(src)}",
        f"ref={quote(ref)}",
        f"out={quote(out)}",
        "max_sentences=2",
        "progress=false",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"wrote {out}: 2 sentences × 2 model(s), ")
    assert "note: the first 2 of 3 sentences (max_sentences=2)" in result.stderr
    page = out.read_text(encoding="utf-8")
    assert "http://" not in page and "https://" not in page  # nothing to fetch
    assert [m["attention"] for m in read_payload(out)["models"]] == ["concat", "dot"]


def explore_cli(*args: str):
    return run_main("nmt.explore", *args, "progress=false")


def test_a_missing_checkpoint_is_one_line(texts, tmp_path):
    missing = tmp_path / "no.pt"
    result = explore_cli(f"ckpt={quote(missing)}", f"input={quote(texts[0])}")
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: checkpoint not found: {missing}"


def test_an_empty_input_file_is_one_line(sweep, tmp_path):
    empty = tmp_path / "empty.en"
    empty.write_text("", encoding="utf-8")
    result = explore_cli(f"ckpt={quote(ckpts(sweep)[0])}", f"input={quote(empty)}")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: {empty}: input file is empty, expected one sentence per line"
    )


def test_checkpoints_with_different_vocabularies_are_one_line(sweep, other_vocab_ckpt, texts):
    first = ckpts(sweep)[0]
    result = explore_cli(
        f"ckpt=[{quote(first)},{quote(other_vocab_ckpt)}]", f"input={quote(texts[0])}"
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: ckpt: {other_vocab_ckpt} and {first} have different source vocabularies "
        "(400 and 500 subwords): compare checkpoints trained on the same prepared data"
    )


def test_a_reference_file_of_another_length_is_one_line(sweep, texts, tmp_path):
    short = tmp_path / "short.ko"
    short.write_text("하나\n", encoding="utf-8")
    result = explore_cli(
        f"ckpt={quote(ckpts(sweep)[0])}", f"input={quote(texts[0])}", f"ref={quote(short)}"
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: {short} has 1 lines but {texts[0]} has 4: expected one reference per input line"
    )


# --------------------------------------------------------------------------------------------
# The page in Debian's Chromium, offline
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compare_page(sweep, texts, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("explore_page") / "compare.html"
    src, ref = texts
    return out, explore([str(p) for p in ckpts(sweep)], src, ref, out, search=PAGE_SEARCH)


class OfflinePage(scripts.explorer_screenshot.OfflinePage):
    """The script's offline tab, with the readings the tests make."""

    def attr(self, locator, name: str) -> list[str | None]:
        """``name`` of every element ``locator`` matches, in one round trip."""
        return locator.evaluate_all("(nodes, name) => nodes.map(n => n.getAttribute(name))", name)

    def source_weights(self, model: int) -> list[float]:
        values = self.attr(self.panel(model).locator("[data-src-index]"), "data-weight")
        assert None not in values, values
        return [float(v) for v in values]

    def shades(self, locator) -> list[float]:
        """The alpha of each element's computed background colour (0 for transparent)."""
        return locator.evaluate_all(
            """nodes => nodes.map(n => {
                const m = getComputedStyle(n).backgroundColor.match(/rgba?\\(([^)]*)\\)/);
                const parts = m ? m[1].split(',').map(Number) : [];
                return parts.length === 4 ? parts[3] : (parts.length === 3 ? 1 : 0);
            })"""
        )

    def close(self) -> None:
        assert self.errors == [], self.errors
        assert self.requests == [self.url] and self.blocked == [], (self.requests, self.blocked)
        self.page.close()


@pytest.fixture
def page(browser, compare_page):
    tab = OfflinePage(browser, compare_page[0])
    yield tab
    tab.close()  # asserts: no console errors, no request but the page itself


def truth(sweep, model: int, line: int):
    """The model's own translation of input line ``line``, from the inference layer."""
    translator = Translator.from_checkpoint(ckpts(sweep)[model], "cpu", **PAGE_SEARCH, n_best=2)
    return translator.translate([SOURCES[line - 1]])[0]


def close_to(shown: list[float], expected: torch.Tensor) -> bool:
    """The page's 3-decimal weights are the model's, rounded to 3 decimals."""
    return all(abs(a - float(b)) <= 0.0005 + 1e-9 for a, b in zip(shown, expected, strict=True))


def test_the_page_loads_offline_with_both_models_side_by_side(page, compare_page):
    labels = page.page.locator("#pane .panel h2").all_inner_texts()
    assert labels == ["concat · gru · luong", "dot · gru · luong"]
    assert page.page.locator("#sentence-list button.sent").count() == 3
    source = page.page.locator("#sentence-list button.sent").nth(2).get_attribute("title")
    assert source == SOURCES[3]  # the </script> in the text came through intact


def test_each_panel_folds_its_model_card(page, sweep):
    card = page.panel(0).locator("details.card")
    assert card.locator("summary").text_content() == "model card"
    assert not card.locator('section[data-section="training"]').is_visible()  # folded
    card.locator("summary").click()
    training = card.locator('section[data-section="training"]')
    steps = training.locator('dl.kv div[data-key="steps"] dd').inner_text()
    assert steps == str(load_checkpoint(ckpts(sweep)[0])["card"]["training"]["steps"])
    signature = card.locator('section[data-section="signatures"] div[data-key="bleu"] dd')
    assert signature.inner_text().startswith("nrefs:1|")


def test_hovering_a_target_subword_shows_its_attention_row(page, sweep):
    page.page.click('#model-picker button[data-model="1"]')  # the single-model view of dot
    assert page.page.locator("#pane .panel").count() == 1
    expected = truth(sweep, 1, 1)
    targets = page.panel(1).locator(".row.tgt [data-tgt-index]")
    assert targets.count() == expected.attention.shape[0]
    sources = page.panel(1).locator(".row.src [data-src-index]")
    assert sources.count() == len(expected.source_tokens) + 1
    assert page.attr(sources, "data-weight") == [None] * sources.count()
    steps = targets.count()
    for i in sorted({0, 1, 2, steps // 2, steps - 1} & set(range(steps))):  # the last: </s> or cut
        targets.nth(i).hover()
        row = expected.attention[i]
        assert close_to(page.source_weights(1), row), (i, page.source_weights(1), row)
        shades = page.shades(sources)
        assert shades[int(row.argmax())] == max(shades) > 0
        assert all(  # a larger weight never gets a lighter shade
            shades[a] <= shades[b]
            for a in range(len(row))
            for b in range(len(row))
            if row[a] < row[b]
        )
    page.page.mouse.move(5, 5)  # leave: the weights go away
    assert page.attr(sources, "data-weight") == [None] * sources.count()


def test_keyboard_focus_and_arrow_keys_move_along_the_target(page, sweep):
    page.page.click('#model-picker button[data-model="0"]')  # concat alone
    expected = truth(sweep, 0, 1)
    first = page.panel(0).locator(".row.tgt [data-tgt-index]").first
    first.focus()
    assert close_to(page.source_weights(0), expected.attention[0])
    page.page.keyboard.press("ArrowRight")
    focused = page.page.evaluate("document.activeElement.dataset.tgtIndex")
    assert focused == "1"
    assert close_to(page.source_weights(0), expected.attention[1])


def test_hovering_a_source_subword_shows_which_targets_attend_to_it(page, sweep):
    expected = truth(sweep, 0, 1)
    page.panel(0).locator(".row.src [data-src-index]").nth(1).hover()
    targets = page.panel(0).locator(".row.tgt [data-tgt-index]")
    shown = [float(v) for v in page.attr(targets, "data-weight")]
    assert close_to(shown, expected.attention[:, 1])
    assert page.attr(page.panel(0).locator("[data-src-index]"), "data-weight")[1] is None


def test_compare_view_synchronises_the_hover(page, sweep):
    assert page.page.locator("#pane .panel").count() == 2  # compare is the default with 2 models
    dot, concat = truth(sweep, 1, 1), truth(sweep, 0, 1)
    page.panel(0).locator(".row.tgt [data-tgt-index]").nth(0).hover()
    assert close_to(page.source_weights(0), concat.attention[0])
    assert close_to(page.source_weights(1), dot.attention[0])  # the same step of the other model
    page.page.click("#toggle-compare")
    assert page.page.locator("#pane .panel").count() == 1
    assert page.page.get_attribute("#toggle-compare", "aria-pressed") == "false"
    page.page.keyboard.press("c")
    assert page.page.locator("#pane .panel").count() == 2


def test_matrix_view_toggles_and_its_cells_hover_like_the_subwords(page, sweep, tmp_path):
    page.page.click('#sentence-list button[data-index="1"]')  # input line 3
    expected = truth(sweep, 0, 3)
    assert page.page.locator("table.matrix").count() == 0
    page.page.click("#toggle-matrix")
    assert page.page.locator("table.matrix").count() == 2
    cells = page.panel(0).locator("table.matrix td")
    assert cells.count() == expected.attention.numel()
    page.panel(0).locator('table.matrix td[data-row="1"][data-col="0"]').hover()
    assert close_to(page.source_weights(0), expected.attention[1])
    page.page.screenshot(path=str(tmp_path / "explorer.png"))
    assert (tmp_path / "explorer.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    page.page.click("#toggle-matrix")
    assert page.page.locator("table.matrix").count() == 0


def test_choosing_an_n_best_entry_shows_its_attention(page, sweep):
    page.page.click('#model-picker button[data-model="0"]')
    runner_up = truth(sweep, 0, 1).nbest[1]
    page.panel(0).locator('button.alt[data-rank="1"]').click()
    assert (
        page.panel(0).locator('button.alt[data-rank="1"]').get_attribute("aria-pressed") == "true"
    )
    targets = page.panel(0).locator(".row.tgt [data-tgt-index]")
    assert targets.count() == runner_up.attention.shape[0]
    targets.nth(0).hover()
    assert close_to(page.source_weights(0), runner_up.attention[0])


def test_a_screenshot_of_the_compare_view(page, tmp_path):
    page.panel(1).locator(".row.tgt [data-tgt-index]").nth(0).hover()
    path = tmp_path / "compare.png"
    page.page.screenshot(path=str(path), full_page=True)
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and path.stat().st_size > 10_000


def test_a_glossary_constrains_the_outputs_and_the_page_underlines_them(
    browser, sweep, texts, tmp_path
):
    glossary = tmp_path / "terms.tsv"
    glossary.write_text("file\t파일\nstation\t역\n", encoding="utf-8")
    out = tmp_path / "glossary.html"
    payload = explore(
        [str(ckpts(sweep)[0])], texts[0], texts[1], out, search=PAGE_SEARCH, glossary=glossary
    )
    first, second, third = (s["outputs"][0]["nbest"][0] for s in payload["sentences"])
    assert first["constraints"] == ["파일"] and second["constraints"] == ["역"]
    assert "constraints" not in third
    for hyp in (first, second):
        assert hyp["missing_constraints"] == [] and hyp["constraints"][0] in hyp["text"]
        assert hyp["constrained_tokens"]
    tab = OfflinePage(browser, out)
    try:
        marked = tab.panel(0).locator(".row.tgt .tok.constrained")
        shown = [int(i) for i in tab.attr(marked, "data-tgt-index")]
        assert shown == first["constrained_tokens"]
        line = tab.panel(0).locator("p.constraints .met").inner_text()
        assert line.startswith("파일")
    finally:
        tab.close()


# --------------------------------------------------------------------------------------------
# A Transformer: every layer's and head's attention
# --------------------------------------------------------------------------------------------

TINY_TRANSFORMER = [
    "model/encoder=transformer",
    "model/decoder=transformer",
    "model.encoder.num_layers=1",
    "model.encoder.heads=2",
    "model.encoder.ff_size=32",
    "model.decoder.num_layers=2",
    "model.decoder.heads=2",
    "model.decoder.ff_size=32",
]


@pytest.fixture(scope="module")
def transformer_page(tiny_prepared, texts, tmp_path_factory) -> tuple[Path, dict, Path]:
    root = tmp_path_factory.mktemp("explore_transformer")
    ckpt = train_tiny(
        tiny_cfg(tiny_prepared, "dot", *TINY_TRANSFORMER), root / "run", tiny_prepared.data
    )
    out = root / "transformer.html"
    return out, explore([str(ckpt)], texts[0], texts[1], out, search=PAGE_SEARCH), ckpt


def test_a_transformers_payload_holds_every_layer_and_head(transformer_page):
    out, payload, ckpt = transformer_page
    assert payload["models"][0]["label"] == "multi-head · transformer · transformer"
    translator = Translator.from_checkpoint(ckpt, "cpu", **PAGE_SEARCH, n_best=2)
    best = translator.translate([SOURCES[0]])[0]
    maps = translator.attention_heads(best)
    entry = read_payload(out)["sentences"][0]["outputs"][0]["nbest"]
    heads = entry[0]["heads"]
    assert "heads" not in entry[1]  # the best hypothesis only
    assert (heads["layers"], heads["heads"]) == (2, 2)
    rows, cols = best.attention.shape
    for layer, expected in zip(heads["cross"], maps, strict=True):
        shown = torch.tensor(layer, dtype=torch.float64) / WEIGHT_SCALE  # (heads, rows, cols)
        assert shown.shape == (2, rows, cols)
        assert (shown - expected.cross_weights.double()).abs().max() <= 0.0005 + 1e-9
    self_top = torch.tensor(heads["self"][1], dtype=torch.float64) / WEIGHT_SCALE
    assert self_top.shape == (2, rows, rows) and self_top.triu(1).abs().max() == 0.0
    # what the grid shows by default is the reported attention: the top layer's mean
    assert torch.allclose(maps[-1].cross_weights.mean(0), best.attention, atol=1e-6)


def test_the_page_shows_the_chosen_layer_and_head(browser, transformer_page):
    out, _, ckpt = transformer_page
    tab = OfflinePage(browser, out)
    translator = Translator.from_checkpoint(ckpt, "cpu", **PAGE_SEARCH, n_best=2)
    maps = translator.attention_heads(translator.translate([SOURCES[0]])[0])
    picker = tab.panel(0).locator("select.head-picker")
    assert picker.input_value() == "mean"
    picker.select_option("cross:0:1")  # layer 1, head 2
    tab.panel(0).locator(".row.tgt [data-tgt-index]").nth(0).hover()
    assert close_to(tab.source_weights(0), maps[0].cross_weights[1, 0])
    tab.panel(0).locator("select.head-picker").select_option("self:1:0")
    matrix = tab.panel(0).locator("table.matrix")
    assert matrix.count() == 1
    assert matrix.locator("thead th").nth(1).inner_text() == "<s>"
    tab.close()


def test_a_multi_head_recurrent_models_heads_are_in_the_payload(tiny_prepared, texts, tmp_path):
    """model.attention.heads=2 with a GRU decoder: one layer of cross-attention heads (no
    self-attention), their mean the attention the model reports."""
    cfg = tiny_cfg(tiny_prepared, "general", "model.attention.heads=2")
    ckpt = train_tiny(cfg, tmp_path / "run", tiny_prepared.data)
    out = tmp_path / "multi_head.html"
    payload = explore([str(ckpt)], texts[0], None, out, search=PAGE_SEARCH)
    best = payload["sentences"][0]["outputs"][0]["nbest"][0]
    heads = best["heads"]
    assert (heads["layers"], heads["heads"]) == (1, 2) and "self" not in heads
    shown = torch.tensor(heads["cross"][0], dtype=torch.float64) / WEIGHT_SCALE
    assert (shown.mean(0) - weights(best)).abs().max() <= 0.001 + 1e-9
    assert torch.allclose(
        shown.sum(-1), torch.ones(shown.shape[:2], dtype=torch.float64), atol=0.01
    )
