"""The translate command line on a checkpoint trained for a few steps on the tiny corpus."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
import torch
from conftest import quote, run_main

LINES = ["Open the file.", "", "The station is closed on Sundays.", "  Hello ,   world  "]


@pytest.fixture(scope="module")
def ckpt(tiny_checkpoint) -> Path:
    return tiny_checkpoint


class Stdin(io.TextIOWrapper):
    """A stand-in for ``sys.stdin``: text over bytes (``.buffer``), a terminal or a pipe."""

    def __init__(self, text: str, tty: bool = False):
        super().__init__(io.BytesIO(text.encode("utf-8")), encoding="utf-8")
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def translate(ckpt: Path, *args: str):
    return run_main("nmt.translate", f"ckpt={quote(ckpt)}", "search=greedy", *args)


def test_file_to_file_gives_one_line_per_input_line(ckpt, tmp_path):
    src, out = tmp_path / "in.en", tmp_path / "out.ko"
    src.write_text("".join(line + "\n" for line in LINES), encoding="utf-8")
    result = translate(ckpt, f"input={quote(src)}", f"output={quote(out)}")
    assert result.returncode == 0, result.stderr
    lines = out.read_text(encoding="utf-8").split("\n")
    assert lines[-1] == ""  # every line ends in a newline
    assert len(lines[:-1]) == len(LINES)
    assert lines[1] == ""  # an empty source gives an empty translation
    assert all(lines[i] for i in (0, 2, 3))
    assert result.stdout == ""


def test_stdin_to_stdout_matches_the_file_mode(ckpt, tmp_path, monkeypatch):
    src, out = tmp_path / "in.en", tmp_path / "out.ko"
    src.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    assert translate(ckpt, f"input={quote(src)}", f"output={quote(out)}").returncode == 0
    expected = out.read_text(encoding="utf-8")
    for args in (["input=-"], []):  # piped stdin is read without input=, and without prompts
        monkeypatch.setattr(sys, "stdin", Stdin("\n".join(LINES) + "\n"))
        result = translate(ckpt, *args)
        assert result.returncode == 0, result.stderr
        assert result.stdout == expected
        assert "en>" not in result.stderr + result.stdout


def test_beam_search_translates_too(ckpt, monkeypatch):
    monkeypatch.setattr(sys, "stdin", Stdin("Open the file.\nClose it.\n"))
    result = run_main(
        "nmt.translate", f"ckpt={quote(ckpt)}", "input=-", "search=beam", "search.beam_size=3"
    )
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 2


def test_attention_plot_writes_one_png_per_sentence(ckpt, tmp_path):
    src, plots = tmp_path / "in.en", tmp_path / "plots"
    src.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    args = [f"input={quote(src)}", f"output={quote(tmp_path / 'out.ko')}"]
    result = translate(ckpt, *args, f"attention_plot={quote(plots)}")
    assert result.returncode == 0, result.stderr
    # numbered by input line; the empty line has no attention to draw
    assert sorted(p.name for p in plots.iterdir()) == ["00001.png", "00003.png", "00004.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") for p in plots.iterdir())


def test_missing_checkpoint_is_one_line(tmp_path):
    missing = tmp_path / "no.pt"
    result = translate(missing, "input=-")
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: checkpoint not found: {missing}"


def test_missing_input_file_is_one_line(ckpt, tmp_path):
    result = translate(ckpt, f"input={quote(tmp_path / 'no.en')}")
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {tmp_path / 'no.en'}: input file not found"


def test_interactive_prompt_translates_until_end_of_input(ckpt, monkeypatch):
    monkeypatch.setattr(sys, "stdin", Stdin("Open the file.\nClose it.\n", tty=True))
    result = translate(ckpt)  # no input= on a terminal: the prompt, on stderr
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 2
    assert "en>" not in result.stdout and "ko>" not in result.stdout
    assert result.stderr.count("en> ") == 3 and result.stderr.count("ko> ") == 2
    assert "Ctrl-D" in result.stderr


def test_nbest_scores_and_alignment_formats(ckpt, monkeypatch):
    text = "Open the file.\n\nThe station is closed on Sundays.\n"
    args = ["search=beam", "search.beam_size=3", "search.n_best=3", "alignment=true"]
    monkeypatch.setattr(sys, "stdin", Stdin(text))
    result = translate(ckpt, *args)
    assert result.returncode == 0, result.stderr
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert [int(r[0]) for r in rows] == [0, 0, 0, 1, 2, 2, 2]  # the empty line has one, empty
    assert all(len(r) == 4 and float(r[1]) <= 0 for r in rows)
    assert rows[3][1:] == ["0.0000", "", ""]
    for row in rows[:3] + rows[4:]:
        pairs = [tuple(map(int, pair.split("-"))) for pair in row[3].split()]
        assert [t for _, t in pairs] == list(range(len(pairs)))  # one pair per target subword
        assert all(s >= 0 for s, _ in pairs)

    monkeypatch.setattr(sys, "stdin", Stdin(text))
    result = translate(ckpt, "scores=true")
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert len(rows) == 3 and all(len(r) == 2 for r in rows)
    float(rows[0][0])


def test_a_thousand_piped_lines_give_a_thousand_lines(ckpt, monkeypatch):
    lines = [f"Line {i}: open the file\u2028 and close it." for i in range(1000)]
    monkeypatch.setattr(sys, "stdin", Stdin("\n".join(lines) + "\n"))
    result = translate(ckpt, "search.batch_size=256")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1000


def test_checkpoint_from_another_model_version_is_one_line(ckpt, tmp_path):
    saved = torch.load(ckpt, weights_only=True)
    saved["model"]["encoder.renamed.weight"] = saved["model"].pop("encoder.embed.weight")
    other = tmp_path / "other.pt"
    torch.save(saved, other)
    result = translate(other, "input=-")
    assert result.returncode == 2
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1
    assert message.startswith(f"error: {other}: its weights do not fit the model")
    assert "encoder.renamed.weight" in message


# ------------------------------------------------------------------ the Python API


def test_translator_api_on_a_checkpoint(ckpt):
    from nmt import Translator

    translator = Translator.from_checkpoint(ckpt, device="cpu", beam_size=3, n_best=3)
    assert translator.settings.name == "beam" and translator.settings.n_best == 3
    first, empty = translator.translate(["Open the file.", ""])
    assert empty.text == "" and empty.tokens == [] and empty.attention.numel() == 0
    assert len(first.nbest) == 3 and first.nbest[0].text == first.text
    assert [h.search_score for h in first.nbest] == sorted(
        (h.search_score for h in first.nbest), reverse=True
    )
    rows = len(first.tokens) + (0 if first.hit_max_len else 1)
    assert first.attention.shape == (rows, len(first.source_tokens) + 1)
    assert torch.allclose(first.attention.sum(dim=1), torch.ones(rows), atol=1e-5)
    assert first.score <= 0 and first.confidence == pytest.approx(first.score / rows)
    assert first.entropy is not None and first.entropy >= 0
    assert "".join(first.source_tokens).replace("\u2581", " ").strip() == "Open the file."
    src_labels, tgt_labels = first.attention_labels()
    assert len(src_labels) == first.attention.shape[1] and src_labels[-1] == "</s>"
    assert tgt_labels[: len(first.tokens)] == first.tokens and tgt_labels[-1] == "</s>"
    assert translator.info.step == 2 and translator.info.source == str(ckpt)


def test_translator_does_not_import_training_code():
    import subprocess

    code = (
        "import sys, nmt.inference.translator; "
        "bad = [m for m in sys.modules if m in ('nmt.training.trainer', 'nmt.training.validation') "
        "or 'tensorboard' in m]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("case", ["missing", "text", "foreign", "tensor", "beam_size"])
def test_translator_bad_input_is_one_line(ckpt, tmp_path, case):
    from nmt import Translator
    from nmt.core.errors import NMTError

    path, search = tmp_path / f"{case}.pt", {}
    if case == "text":
        path.write_text("not a checkpoint\n", encoding="utf-8")
    elif case == "foreign":
        torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    elif case == "tensor":
        torch.save(torch.zeros(3), path)
    elif case == "beam_size":
        path, search = ckpt, {"beam_size": 0}
    with pytest.raises(NMTError) as raised:
        Translator.from_checkpoint(path, device="cpu", **search)
    message = str(raised.value)
    assert len(message.splitlines()) == 1
    assert (str(path) in message) if case != "beam_size" else message.startswith("search.beam_size")


# -- constraints and glossaries ----------------------------------------------------------------


def test_glossary_and_jsonl_constraints_reach_the_output(ckpt, tmp_path):
    glossary = tmp_path / "terms.tsv"
    glossary.write_text("# UI\nstation\t역\nfile\t파일\n", encoding="utf-8")
    src = tmp_path / "in.jsonl"
    src.write_text(
        '{"text": "The station is closed on Sundays.", "constraints": ["일요일"]}\n'
        "\n"  # blank lines are skipped
        '{"text": "Open the file."}\n'
        '{"text": "Hello, world."}\n',
        encoding="utf-8",
    )
    out = tmp_path / "out.jsonl"
    result = translate(
        ckpt, f"input={quote(src)}", f"output={quote(out)}", f"glossary={quote(glossary)}",
        "input_format=jsonl", "search=beam", "search.n_best=2",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r.get("constraints") for r in records] == [["일요일", "역"], ["파일"], None]
    for record in records[:2]:
        assert record["missing_constraints"] == []
        assert all(p in record["text"] for p in record["constraints"])
        assert len(record["nbest"]) == 2 and record["nbest"][0]["text"] == record["text"]
    assert "constraints: 3 of 3 met, in 2 sentences" in result.stderr


def test_a_constraint_that_cannot_fit_is_listed_on_stderr(ckpt, tmp_path, monkeypatch):
    too_long = " ".join(["일요일"] * 40)
    line = json.dumps({"text": "Open the file.", "constraints": [too_long]}, ensure_ascii=False)
    monkeypatch.setattr(sys, "stdin", Stdin(line + "\n"))
    result = translate(ckpt, "input_format=jsonl")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["missing_constraints"] == [too_long]
    assert f"line 1: constraint not met: '{too_long}'" in result.stderr
    assert "constraints: 0 of 1 met, in 1 sentences" in result.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"text": "a"}\n[1]\n', "in.jsonl:2: expected a JSON object; got list"),
        ('{"text": "a", "constraint": []}\n', "in.jsonl:1: constraint: unknown field"),
        ('{"text": "a", "constraints": "역"}\n', "in.jsonl:1: constraints: expected a list of strings"),
        ('{"text": "a", "constraints": [""]}\n', "in.jsonl:1: constraints[0]: expected a non-empty"),
        ('{"text": "a"\n', "in.jsonl:1: not a JSON object"),
        ('{"text": "a", "avoid": [" "]}\n', "in.jsonl:1: avoid[0]: expected a non-empty"),
    ],
)  # fmt: skip
def test_bad_jsonl_lines_name_the_line_and_field(ckpt, tmp_path, content, message):
    src = tmp_path / "in.jsonl"
    src.write_text(content, encoding="utf-8")
    result = translate(ckpt, f"input={quote(src)}", "input_format=jsonl")
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_avoided_words_are_not_produced_nor_a_longer_piece_that_starts_with_them(ckpt, tmp_path):
    from nmt import Translator

    translator = Translator.from_checkpoint(ckpt, device="cpu")  # greedy, as translate() runs
    sources = ["Open the file.", "Close the file.", "The station is closed on Sundays."]
    plain = translator.translate(sources)
    # the words the plain outputs spell with one piece each: avoided, none may come back, as
    # that piece or as a longer one that starts with it (a word and its particle)
    words = [sorted({p[1:] for p in t.tokens if p.startswith("▁") and len(p) > 1}) for t in plain]
    assert all(words)  # the guard: something to avoid in every sentence
    avoided = translator.translate(sources, avoid=words)
    for phrases, before, after in zip(words, plain, avoided, strict=True):
        assert after.tokens != before.tokens
        for piece in after.tokens:
            assert not any(piece.startswith("▁" + w) for w in phrases), (phrases, after.tokens)
    src = tmp_path / "in.jsonl"
    src.write_text(
        "".join(json.dumps({"text": s, "avoid": w}, ensure_ascii=False) + "\n"
                for s, w in zip(sources, words, strict=True)),
        encoding="utf-8",
    )  # fmt: skip
    result = translate(ckpt, f"input={quote(src)}", "input_format=jsonl")
    assert result.returncode == 0, result.stderr
    texts = [json.loads(line)["text"] for line in result.stdout.splitlines()]
    assert texts == [t.text for t in avoided]


def test_translator_constraints_api(ckpt):
    from nmt import Translator
    from nmt.core.errors import NMTError

    translator = Translator.from_checkpoint(ckpt, device="cpu", beam_size=3)
    plain, constrained = (
        translator.translate(["Open the file.", "Hello."], constraints=c)
        for c in (None, [[], ["파일", "녕"]])
    )
    assert constrained[0].text == plain[0].text and constrained[0].constraints == []
    assert constrained[1].constraints == ["파일", "녕"] and "파일" in constrained[1].text
    # 녕 is not in the tiny model's target vocabulary: no output can hold it
    assert constrained[1].missing_constraints == ["녕"]
    with pytest.raises(NMTError, match=r"constraints: expected one list per sentence \(2\); got 1"):
        translator.translate(["a", "b"], constraints=[["x"]])
    with pytest.raises(NMTError, match=r"constraints\[0\]\[1\]: expected a non-empty"):
        translator.translate(["a"], constraints=[["x", " "]])
    # a list of strings where a list of lists is expected: not one phrase per character
    with pytest.raises(NMTError, match=r"constraints\[0\]: expected a list of Korean phrases"):
        translator.translate(["a"], constraints=["저장"])
    with pytest.raises(NMTError, match=r"avoid\[0\]: expected a list of Korean phrases"):
        translator.translate(["a"], avoid=["저장"])
