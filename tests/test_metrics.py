"""nmt.evaluation.metrics: our scores are sacrebleu's, degeneracy diagnostics give known answers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import sacrebleu

from nmt.core.errors import NMTError
from nmt.core.io import write_json
from nmt.evaluation.metrics import (
    DEFAULT_TOKENIZERS,
    degeneracy,
    format_table,
    is_degenerate,
    score_corpus,
)

REPO = Path(__file__).resolve().parents[1]
VALID = Path(os.environ.get("NMT_CORPORA", REPO.parent / "shared" / "corpora")) / "enko/valid.tsv"


@pytest.fixture(scope="module")
def references() -> list[str]:
    if not VALID.is_file():
        pytest.skip(f"{VALID} not present")
    lines = VALID.read_text(encoding="utf-8").splitlines()[:40]
    return [line.split("\t")[1] for line in lines]


def perturb(refs: list[str]) -> list[str]:
    """Drop the last word of every second line, swap the first two words of every third."""
    out = []
    for i, ref in enumerate(refs):
        words = ref.split()
        if i % 2 == 0 and len(words) > 1:
            words = words[:-1]
        if i % 3 == 0 and len(words) > 1:
            words[0], words[1] = words[1], words[0]
        out.append(" ".join(words))
    return out


def test_scores_equal_sacrebleu_directly(references):
    hyps = perturb(references)
    scores = score_corpus(hyps, references)

    assert list(scores) == ["bleu_ko-mecab", "bleu_char", "bleu_13a", "chrf", "ter"]
    for tok in DEFAULT_TOKENIZERS:
        expected = sacrebleu.corpus_bleu(hyps, [references], tokenize=tok).score
        assert scores[f"bleu_{tok}"]["score"] == pytest.approx(expected, abs=1e-9)
        assert 0 < scores[f"bleu_{tok}"]["score"] < 100
    assert scores["chrf"]["score"] == pytest.approx(
        sacrebleu.corpus_chrf(hyps, [references]).score, abs=1e-9
    )
    assert scores["ter"]["score"] == pytest.approx(
        sacrebleu.corpus_ter(hyps, [references]).score, abs=1e-9
    )


def test_signatures_name_tokenizer_and_version(references):
    scores = score_corpus(perturb(references), references)
    version = f"version:{sacrebleu.__version__}"
    assert "|tok:ko-mecab-" in scores["bleu_ko-mecab"]["signature"]
    assert "|tok:char|" in scores["bleu_char"]["signature"]
    assert "|tok:13a|" in scores["bleu_13a"]["signature"]
    assert "|nc:6|nw:0|" in scores["chrf"]["signature"]
    assert "|tok:tercom|" in scores["ter"]["signature"]
    for entry in scores.values():
        assert entry["signature"].startswith("nrefs:1|")
        assert entry["signature"].endswith(version)


def test_perfect_hypotheses_score_100(references):
    scores = score_corpus(references, references)
    for tok in DEFAULT_TOKENIZERS:
        assert scores[f"bleu_{tok}"]["score"] == pytest.approx(100.0)
        assert scores[f"bleu_{tok}"]["bp"] == pytest.approx(1.0)
    assert scores["chrf"]["score"] == pytest.approx(100.0)
    assert scores["ter"]["score"] == pytest.approx(0.0)


def test_bleu_details_are_reported():
    scores = score_corpus(["가 나 다"], ["가 나 다 라"], tokenizers=("13a",))
    bleu = scores["bleu_13a"]
    assert (bleu["hyp_len"], bleu["ref_len"]) == (3, 4)
    assert bleu["ratio"] == pytest.approx(0.75)
    assert bleu["precisions"][0] == pytest.approx(100.0)
    assert list(scores) == ["bleu_13a", "chrf", "ter"]


def test_length_mismatch_names_both_counts():
    with pytest.raises(NMTError, match="3 hypotheses but 2 references"):
        score_corpus(["a", "b", "c"], ["a", "b"])
    with pytest.raises(NMTError, match="1 hypotheses but 2 references"):
        degeneracy(["a"], ["a", "b"])


def test_empty_input_is_rejected():
    with pytest.raises(NMTError, match="nothing to score"):
        score_corpus([], [])


def test_unknown_tokenizer_lists_valid_ones():
    with pytest.raises(NMTError, match=r"\['mecab'\].*ko-mecab"):
        score_corpus(["a"], ["a"], tokenizers=("mecab",))


@pytest.mark.parametrize(
    "text",
    [
        "의 의 의 의",  # one token, 4 times
        "함수 를 함수 를 함수 를 함수 를",  # a 2-token unit, 4 times
        "a b c a b c a b c a b c",  # a 3-token unit
        "결과는 ____ 입니다",  # a character run inside a token
        "의의의의",
        "!!!!",
        "합니다합니다합니다합니다",  # a 3-character unit, no spaces
        "x" + "은행" * 5,
    ],
)
def test_repetition_loops_are_degenerate(text):
    assert is_degenerate(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "의 의 의",  # only 3 in a row
        "의 의 의 가 의",  # interrupted
        "a b c d a b c d a b c d a b c d",  # a 4-token unit is beyond the rule
        "가격은 10000원",  # digits
        "0xffff 와 YYYY-MM-DD",  # ASCII letters and digits
        "___",
        "합니다합니다합니다",
        "12345 12345 1234",
    ],
)
def test_ordinary_text_is_not_degenerate(text):
    assert not is_degenerate(text)


def test_degeneracy_known_answers():
    hyps = ["의 의 의 의", "", "좋은 아침", "____ 입니다"]
    refs = ["안녕 하세요", "좋은 아침", "좋은 아침", "abcd !!!!"]
    stats = degeneracy(hyps, refs, max_len_hits=[True, False, False, True])
    assert stats == {
        "repetition_rate": 0.5,
        "ref_repetition_rate": 0.25,
        "empty_rate": 0.25,
        "max_len_rate": 0.5,
        "len_ratio_chars": pytest.approx((4 + 0 + 4 + 7) / (5 + 4 + 4 + 8)),
    }
    assert "max_len_rate" not in degeneracy(hyps, refs)


def test_degeneracy_rejects_bad_inputs():
    with pytest.raises(ValueError, match="max_len_hits has 1 entries for 2"):
        degeneracy(["a", "b"], ["a", "b"], max_len_hits=[True])
    with pytest.raises(NMTError, match="references are all empty"):
        degeneracy(["a"], [" "])


def test_format_table_rows():
    scores = score_corpus(["가나다라 마바"], ["가나다라 마바"], tokenizers=("char",))
    table = format_table(scores, degeneracy(["가나다라 마바"], ["가나다라 마바"]))
    lines = table.splitlines()
    assert lines[0].split() == ["metric", "score", "signature"]
    assert lines[1].split()[:2] == ["bleu_char", "100.00"]
    assert lines[1].split()[2] == scores["bleu_char"]["signature"]
    assert any(line.split()[:2] == ["repetition_rate", "0.0%"] for line in lines)
    assert any(line.split()[:2] == ["len_ratio_chars", "1.000"] for line in lines)


def test_write_json_replaces_atomically(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("old", encoding="utf-8")
    write_json(target, {"bleu": 1.5, "text": "한국어"})
    assert json.loads(target.read_text(encoding="utf-8")) == {"bleu": 1.5, "text": "한국어"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]
    with pytest.raises(NMTError, match="does not exist"):
        write_json(tmp_path / "missing" / "r.json", {})
