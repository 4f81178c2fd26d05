"""Inline markup kept intact (nmt.data.markup): the spans found, masked and put back exactly
once, byte-identical, through the Translator, nmt-translate and the server."""

from __future__ import annotations

import asyncio

import pytest
import torch
from conftest import quote, run_main

from nmt.data.markup import (
    Protected,
    count_kept,
    find_spans,
    mask_pair,
    protect,
    restore_spans,
)

# one sentence per kind of span, and the spans it must yield
SPANS = {
    "Call :meth:`dict.items` now.": [":meth:`dict.items`"],
    "Use :c:func:`PyBuffer_Release` here.": [":c:func:`PyBuffer_Release`"],
    "See :ref:`the event loop <asyncio-event-loop>` first.": [
        ":ref:`the event loop <asyncio-event-loop>`"
    ],
    "Set ``shape[0]`` to 1.": ["``shape[0]``"],
    "Format %s and %d and %(name)s and %-5.2f.": ["%s", "%d", "%(name)s", "%-5.2f"],
    "Format {0}, {name}, {} and {name!r:>10}.": ["{0}", "{name}", "{}", "{name!r:>10}"],
    'Write <b>bold</b>, <br/> and <a href="x.html">a link</a>.': [
        "<b>",
        "</b>",
        "<br/>",
        '<a href="x.html">',
        "</a>",
    ],
    "Read https://docs.python.org/3/library/ and www.example.org.": [
        "https://docs.python.org/3/library/",
        "www.example.org",
    ],
}


@pytest.mark.parametrize("text", SPANS)
def test_every_kind_of_span_is_found(text):
    assert find_spans(text) == SPANS[text]


@pytest.mark.parametrize("text", ["50% of it, 100%.", "a < b > c", "Use %% for a percent sign."])
def test_prose_is_not_a_span(text):
    assert find_spans(text) == [] and protect(text).masked == text


def copying_model(protected: Protected) -> str:
    """A 'translation' that keeps every placeholder where it was (a model that copies)."""
    return protected.masked


def test_a_model_that_copies_the_placeholders_gets_the_text_back():
    for text in [*SPANS, "``x`` twice: ``x`` again", "``start`` in the middle ``end``"]:
        protected = protect(text)
        assert protected.spans and not find_spans(protected.masked)
        translation = copying_model(protected)
        assert restore_spans(translation, protected, [], [], torch.zeros(0, 0)) == text


def test_two_identical_spans_and_spans_at_the_start_and_end():
    text = "``x`` is ``x`` and ``y``"
    protected = protect(text)
    assert protected.masked == "ZZ1 is ZZ2 and ZZ3" and protected.spans == (
        "``x``",
        "``x``",
        "``y``",
    )
    # the model wrote the first placeholder twice (stuttered) and dropped the others
    out = restore_spans("ZZZ1 입니다 ZZ1 그리고", protected, [], [], torch.zeros(0, 0))
    assert out.count("``x``") == 2 and out.count("``y``") == 1
    assert "ZZ" not in out and "Z" not in out
    assert count_kept(text, out) == (3, 3)


def test_a_dropped_span_goes_before_the_word_that_attends_to_it_never_inside():
    protected = protect("Open :file:`a.txt` now")  # masked: "Open ZZ1 now"
    source = ["▁Open", "▁ZZ", "1", "▁now"]
    target = ["▁열", "기", "▁지금"]  # "열기 지금": the model dropped ZZ1

    def attending(row: int) -> torch.Tensor:
        """Rows: target pieces + </s>; columns: source pieces + </s>; target piece ``row``
        attends to ZZ 1 most."""
        attention = torch.tensor(
            [[0.9, 0.05, 0.0, 0.05, 0.0], [0.1, 0.1, 0.0, 0.8, 0.0], [0.0, 0.1, 0.0, 0.9, 0.0]]
            + [[0.0, 0.0, 0.0, 0.0, 1.0]]
        )
        attention[row] = torch.tensor([0.1, 0.6, 0.2, 0.1, 0.0])
        return attention

    # "기" is inside the word 열기: the span goes before the word, not into it (열 span 기)
    assert restore_spans("열기 지금", protected, source, target, attending(1)) == (
        ":file:`a.txt` 열기 지금"
    )
    assert restore_spans("열기 지금", protected, source, target, attending(2)) == (
        "열기 :file:`a.txt` 지금"
    )


def test_stray_placeholders_are_removed_and_unknown_numbers_too():
    protected = protect("``a`` and ``b``")
    out = restore_spans("ZZ1 ZZ 그리고 ZZ2 ZZ7", protected, [], [], torch.zeros(0, 0))
    assert out == "``a`` 그리고 ``b``"


def test_the_placeholder_letter_is_one_the_sentence_lacks():
    protected = protect("ZZ Top plays ``x``")
    assert protected.stem == "QQ" and protected.masked == "ZZ Top plays QQ1"


def test_a_training_pair_is_masked_on_both_sides():
    source = "Call :func:`open` with ``mode`` and see :ref:`the guide <io-guide>` or %s."
    target = "``mode``와 함께 :func:`open`을 호출하고 :ref:`안내서 <io-guide>`를 보세요."
    masked_source, masked_target = mask_pair(source, target)
    assert masked_source == "Call ZZ1 with ZZ2 and see ZZ3 or ZZ4."
    # the labelled role matched with its translated shown text; %s is not in the target
    assert masked_target == "ZZ2와 함께 ZZ1을 호출하고 ZZ3를 보세요."
    # a letter that either side holds is not the stem; a pair without markup is unchanged
    assert mask_pair("Zoom to %d.", "Zoom %d")[0] == "Zoom to QQ1."
    assert mask_pair("No markup.", "마크업 없음.") == ("No markup.", "마크업 없음.")


def test_kept_spans_are_counted_by_the_references_rule():
    source = "See :ref:`the loop <loop-ref>` and ``x`` and ``x``."
    assert count_kept(source, ":ref:`루프 <loop-ref>`와 ``x``") == (2, 3)  # shown text translated
    assert count_kept(source, ":ref:`루프 <other>` ``x`` ``x``") == (2, 3)  # the target changed
    assert count_kept("no spans", "없음") == (0, 0)


# ---------------------------------------------------------------------------- through the model


def test_the_translator_keeps_every_span_with_markup_on(tiny_checkpoint):
    """A model barely trained (2 steps) copies nothing: every span is still there, once."""
    from nmt.inference.translator import Translator

    translator = Translator.from_checkpoint(tiny_checkpoint, "cpu", beam_size=2, n_best=2)
    sentences = [*SPANS, "``x`` twice: ``x`` again", "plain text"]
    protected = translator.with_markup(True).translate(sentences)
    for sentence, result in zip(sentences, protected, strict=True):
        spans = find_spans(sentence)
        for hypothesis in result.nbest:
            assert count_kept(sentence, hypothesis.text) == (len(spans), len(spans)), (
                hypothesis.text
            )
    assert translator.markup is False  # with_markup made another translator
    raw = translator.translate(sentences)
    assert sum(count_kept(s, r.text)[0] for s, r in zip(sentences, raw, strict=True)) < sum(
        len(find_spans(s)) for s in sentences
    )
    assert protected[-1].text == raw[-1].text  # a sentence without markup is untouched


def test_nmt_translate_protects_markup_by_default(tiny_checkpoint, tmp_path):
    source = tmp_path / "in.en"
    source.write_text("Call :meth:`dict.items` with %s and ``x``.\n", encoding="utf-8")
    on = run_main("nmt.translate", f"ckpt={quote(tiny_checkpoint)}", f"input={quote(source)}")
    assert on.returncode == 0, on.stderr
    assert count_kept(source.read_text().strip(), on.stdout.strip()) == (3, 3)
    off = run_main(
        "nmt.translate", f"ckpt={quote(tiny_checkpoint)}", f"input={quote(source)}", "markup=false"
    )
    assert off.returncode == 0 and count_kept(source.read_text().strip(), off.stdout.strip())[0] < 3


def test_the_server_puts_the_spans_back(tiny_checkpoint):
    from test_serve import serving

    from nmt.inference.translator import Translator

    translator = Translator.from_checkpoint(tiny_checkpoint, "cpu").with_markup(True)
    text = "Use :func:`len` and ``x`` with {0}."

    async def go():
        async with serving(translator) as client:
            reply = await client.post("/v1/translate", json={"text": [text, "plain"]})
            return reply, await client.get("/v1/model")

    response, model = asyncio.run(go())
    assert response.status_code == 200, response.text
    first, second = response.json()["translations"]
    assert model.json()["markup"] is True
    assert count_kept(text, first["text"]) == (3, 3)
    assert first["text"] == translator.translate([text])[0].text
    assert second["text"] == translator.translate(["plain"])[0].text


def test_a_model_trained_on_masked_pairs_protects_markup_by_default(tiny_checkpoint):
    from dataclasses import replace as copy_with

    from nmt.inference.translator import ModelInfo, Translator

    plain = Translator.from_checkpoint(tiny_checkpoint, device="cpu")
    assert plain.markup is False  # trained on raw text: the API translates markup as text
    config = {**plain.info.config, "data": {**plain.info.config["data"], "mask_markup": True}}
    info = copy_with(plain.info, config=config)
    masked = Translator(plain.model, plain.src_vocab, plain.tgt_vocab, plain.settings, info=info)
    assert masked.markup is True
    assert masked.with_markup(False).markup is False
    assert isinstance(masked.info, ModelInfo)
