"""Glossaries: the matching rules, and errors that name the file and line."""

from __future__ import annotations

import pytest

from nmt.core.errors import NMTError
from nmt.data.glossary import Glossary

TERMS = {
    "Save": "저장",
    "Save As": "다른 이름으로 저장",
    "Writer": "Writer",
    "keyword argument": "키워드 인자",
    "C++": "C++",
    "As": "로서",
}


@pytest.fixture(scope="module")
def glossary() -> Glossary:
    return Glossary(TERMS)


@pytest.mark.parametrize(
    ("text", "terms"),
    [
        # the longest term at the leftmost position wins, and the next match starts after it
        ("Choose Save As to copy.", ["Save As"]),
        ("Save, then Save As.", ["Save", "Save As"]),
        # whole words only
        ("Saved files ask for nothing.", []),
        ("As said: Save.", ["As", "Save"]),
        # a term with a capital matches as written; an all-lowercase one in any case
        ("save as a writer", []),
        ("Keyword argument and KEYWORD ARGUMENT and keyword arguments", ["keyword argument"] * 2),
        ("Open Writer.", ["Writer"]),
        # an end that is punctuation may touch a word
        ("Compile C++code.", ["C++"]),
        ("at the start: Writer", ["Writer"]),
    ],
)
def test_matching_rules(glossary, text, terms):
    assert [m.term for m in glossary.find(text)] == terms


def test_each_korean_term_once_in_order(glossary):
    assert glossary.targets("Save As or Save, then Save As in Writer.") == [
        "다른 이름으로 저장",
        "저장",
        "Writer",
    ]
    matches = glossary.find("Use Save As.")
    assert ("Use Save As."[matches[0].start : matches[0].end]) == "Save As"


def test_a_glossary_file_reads_comments_and_normalises(tmp_path):
    path = tmp_path / "g.tsv"
    path.write_text("# UI terms\n\nSave  As\t다른 이름으로  저장\nWriter\tWriter\n", "utf-8")
    glossary = Glossary.read(path)
    assert len(glossary) == 2
    assert glossary.targets("Save As") == ["다른 이름으로 저장"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("Save\t저장\nSave As\n", "g.tsv:2: expected 'English term<TAB>Korean term' (one tab); got 1 column"),
        ("Save\t저장\t보관\n", "g.tsv:1: expected 'English term<TAB>Korean term' (one tab); got 3 columns"),
        ("Save\t \n", "g.tsv:1: the Korean term is empty"),
        ("\t저장\n", "g.tsv:1: the English term is empty"),
        ("Save\t저장\n# x\nSave\t보관\n", "g.tsv:3: 'Save' is listed twice with different translations: '저장' (line 1) and '보관'"),
        ("# nothing\n", "glossary=") ,
    ],
)  # fmt: skip
def test_bad_glossary_lines_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "g.tsv"
    path.write_text(content, "utf-8")
    with pytest.raises(NMTError) as err:
        Glossary.read(path)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_a_missing_or_binary_glossary_file_is_one_line(tmp_path):
    with pytest.raises(NMTError, match="glossary"):
        Glossary.read(tmp_path / "none.tsv")
    (tmp_path / "bin.tsv").write_bytes(b"Save\t\xff\xfe\n")
    with pytest.raises(NMTError, match="bin.tsv:1"):
        Glossary.read(tmp_path / "bin.tsv")


def test_a_term_in_a_labelled_roles_shown_text_is_translated_there(glossary):
    assert glossary.translate_shown_text(":ref:`Save As <save-as>`") == (
        ":ref:`다른 이름으로 저장 <save-as>`"
    )
    shown = glossary.translate_shown_text(":ref:`Use Save, then keyword argument <k>`")
    assert shown == ":ref:`Use 저장, then 키워드 인자 <k>`"
    # an unlabelled role, a literal, a URL: byte-identical
    for span in (":ref:`save-as`", "``Save As``", ":func:`Save`", "https://x.org/Save"):
        assert glossary.translate_shown_text(span) == span


def test_the_translator_applies_it_to_protected_spans(tiny_checkpoint):
    from nmt.inference.translator import Translator

    translator = Translator.from_checkpoint(tiny_checkpoint, device="cpu", name="greedy")
    text = "See :ref:`Save As <save-as>` and ``Save As``."
    [plain] = translator.with_markup(True).translate([text])
    [termed] = translator.with_markup(True).with_glossary(Glossary(TERMS)).translate([text])
    assert ":ref:`Save As <save-as>`" in plain.text
    assert ":ref:`다른 이름으로 저장 <save-as>`" in termed.text and "``Save As``" in termed.text
    assert termed.constraints == []  # the masked text holds no term: nothing was imposed
