"""The evaluate command line: reports with signatures, and one-line errors with exit status 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nmt.core.errors import NMTError
from nmt.data.corpus import read_text_lines
from nmt.inference.search import SearchSettings

REPO = Path(__file__).resolve().parents[1]
REFS = ["파일을 엽니다.", "추상 객체 계층", "비트 (빅 엔디안 순서)"]


def run_cli(*args: str, cwd: Path, script: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    entry = [str(REPO / "scripts" / "evaluate.py")] if script else ["-m", "nmt.evaluate"]
    return subprocess.run(
        [sys.executable, *entry, *args], cwd=cwd, env=env, capture_output=True, text=True
    )


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "ref.ko").write_text("\n".join(REFS) + "\n", encoding="utf-8")
    (tmp_path / "good.ko").write_text("\n".join(REFS) + "\n", encoding="utf-8")
    (tmp_path / "bad.ko").write_text("파일을 연다.\n추상 추상 추상 추상\n비트\n", encoding="utf-8")
    return tmp_path


def test_two_systems_give_a_json_report_with_signatures(files):
    result = run_cli("hyp=[good.ko,bad.ko]", "ref=ref.ko", "json=report.json", cwd=files)
    assert result.returncode == 0, result.stderr

    report = json.loads((files / "report.json").read_text(encoding="utf-8"))
    assert report["ref"] == "ref.ko"
    good, bad = report["systems"]
    assert (good["system"], bad["system"], good["lines"]) == ("good.ko", "bad.ko", 3)
    assert good["scores"]["bleu_ko-mecab"]["score"] == pytest.approx(100.0)
    assert bad["scores"]["bleu_ko-mecab"]["score"] < 100.0
    assert "|tok:ko-mecab-" in bad["scores"]["bleu_ko-mecab"]["signature"]
    assert set(bad["scores"]) == {"bleu_ko-mecab", "bleu_char", "bleu_13a", "chrf", "ter"}
    assert all(entry["signature"].startswith("nrefs:1|") for entry in bad["scores"].values())
    assert bad["degeneracy"]["repetition_rate"] == pytest.approx(1 / 3)
    # the printed table has the same rows, and Hydra left nothing behind
    assert "== bad.ko vs ref.ko (3 lines)" in result.stdout
    assert bad["scores"]["chrf"]["signature"] in result.stdout
    assert sorted(p.name for p in files.iterdir()) == ["bad.ko", "good.ko", "ref.ko", "report.json"]


def test_script_wrapper_runs_from_another_folder(files, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    result = run_cli(
        f"hyp={files / 'good.ko'}", f"ref={files / 'ref.ko'}", cwd=elsewhere, script=True
    )
    assert result.returncode == 0, result.stderr
    assert "bleu_ko-mecab" in result.stdout


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda d: None, "missing.ko: hypothesis file not found"),
        (lambda d: (d / "empty.ko").write_bytes(b""), "empty.ko: hypothesis file is empty"),
        (
            lambda d: (d / "short.ko").write_text("한 줄\n", encoding="utf-8"),
            "short.ko has 1 lines but ref.ko has 3",
        ),
        (
            lambda d: (d / "latin1.ko").write_bytes("ok\ncaf\xe9\n".encode("latin-1")),
            "latin1.ko:2: invalid UTF-8",
        ),
    ],
    ids=["missing", "empty", "line-count", "utf8"],
)
def test_user_errors_exit_2_with_one_line(files, make, expected):
    make(files)
    name = expected.split(":")[0].split()[0]
    result = run_cli(f"hyp={name}", "ref=ref.ko", cwd=files)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ")
    assert expected in line


def test_missing_reference_is_named(files):
    result = run_cli("hyp=good.ko", "ref=nope.ko", cwd=files)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: nope.ko: reference file not found"


def test_read_text_lines_keeps_alignment(tmp_path):
    path = tmp_path / "h.ko"
    # an empty hypothesis, CRLF endings and a U+2028 inside a line all stay one line each
    path.write_bytes("첫째\r\n\r\n셋\u2028째\n".encode())
    assert read_text_lines(path, "hypothesis") == ["첫째", "", "셋\u2028째"]
    with pytest.raises(NMTError, match="reference file not found"):
        read_text_lines(tmp_path / "none", "reference")


def test_checkpoint_mode_decodes_then_scores(tiny_prepared, tmp_path):
    """The ckpt branch with a stand-in Translator that returns each source's reference: the
    prepared split is read (the same text validation scores) and scored at BLEU 100."""
    import types

    from omegaconf import OmegaConf

    from nmt.evaluation.testset import evaluate_translator, format_report

    valid = tiny_prepared.data.splits["valid"]
    reference_of = dict(zip(valid.src_text, valid.tgt_text, strict=True))
    train_cfg = OmegaConf.to_container(tiny_prepared.cfg, resolve=True)  # as a checkpoint stores it
    train_cfg["data"]["out_dir"] = str(tiny_prepared.data.out_dir)
    calls = []

    class StandIn:
        info = types.SimpleNamespace(source="best.pt", config=train_cfg)
        settings = SearchSettings(name="greedy", beam_size=1)
        markup = False
        glossary = None

        def translate(self, lines, progress=False):
            calls.append(list(lines))
            texts = valid.tgt_text if lines == valid.src_text else [reference_of[x] for x in lines]
            return [types.SimpleNamespace(text=t, hit_max_len=i == 1) for i, t in enumerate(texts)]

        def decoding_summary(self):
            cpu = {"model": "a CPU", "bf16_flags": [], "simulated": None}
            reason = "search.precision=fp32"
            return {"precision": "fp32", "precision_reason": reason, "backend": "torch",
                    "device": "cpu", "cpu": cpu}  # fmt: skip

    translator = StandIn()
    report = evaluate_translator(translator, split="valid", out_path=tmp_path / "hyp.ko")
    assert calls == [valid.src_text]
    out_dir = tiny_prepared.data.out_dir
    assert (report["src"], report["ref"]) == (str(out_dir / "valid.en"), str(out_dir / "valid.ko"))
    assert report["ckpt"] == "best.pt"
    assert report["systems"][0]["scores"]["bleu_ko-mecab"]["score"] == pytest.approx(100.0)
    assert report["systems"][0]["degeneracy"]["max_len_rate"] == pytest.approx(1 / len(calls[0]))
    assert "max_len_rate" in format_report(report)
    assert report["systems"][0]["decoding"]["precision"] == "fp32"
    assert report["systems"][0]["search"]["name"] == "greedy"  # what the card records
    assert "decoded in fp32 (search.precision=fp32), torch on cpu, CPU a CPU" in format_report(
        report
    )
    written = (tmp_path / "hyp.ko").read_text(encoding="utf-8")
    assert written == "".join(r + "\n" for r in valid.tgt_text)

    (tmp_path / "src.en").write_text(
        f"{valid.src_text[1]}\n{valid.src_text[0]}\n", encoding="utf-8"
    )
    (tmp_path / "ref.ko").write_text(
        f"{valid.tgt_text[1]}\n{valid.tgt_text[1]}\n", encoding="utf-8"
    )
    report = evaluate_translator(
        translator, src_path=tmp_path / "src.en", ref_path=tmp_path / "ref.ko"
    )
    assert 0 < report["systems"][0]["scores"]["bleu_char"]["score"] < 100
    with pytest.raises(NMTError, match="expected one of train, valid, test"):
        evaluate_translator(translator, split="dev")
    no_test = {**train_cfg, "data": {**train_cfg["data"], "test": None}}
    translator.info = types.SimpleNamespace(source="best.pt", config=no_test)
    with pytest.raises(NMTError, match="no test split"):
        evaluate_translator(translator, split="test")


def test_checkpoint_mode_with_a_glossary_counts_the_terms_met(tiny_checkpoint, tmp_path):
    from nmt.evaluation.testset import evaluate_checkpoint, format_report

    (tmp_path / "terms.tsv").write_text("file\t파일\nstation\t역\n", encoding="utf-8")
    sources = ["Open the file.", "The station is closed.", "Hello.", "Close the file."]
    (tmp_path / "src.en").write_text("\n".join(sources) + "\n", encoding="utf-8")
    (tmp_path / "ref.ko").write_text(
        "파일을 엽니다.\n역은 닫혔다.\n안녕.\n파일을 닫습니다.\n", "utf-8"
    )
    report = evaluate_checkpoint(
        tiny_checkpoint,
        {"name": "greedy"},
        "cpu",
        glossary=tmp_path / "terms.tsv",
        src_path=tmp_path / "src.en",
        ref_path=tmp_path / "ref.ko",
        out_path=tmp_path / "hyp.ko",
    )
    used = report["systems"][0]["glossary"]
    assert (used["sentences"], used["constraints"], used["met"], used["missed"]) == (3, 3, 3, [])
    hypotheses = read_text_lines(tmp_path / "hyp.ko", "hyp")
    assert "파일" in hypotheses[0] and "역" in hypotheses[1] and "파일" in hypotheses[3]
    assert f"glossary {tmp_path / 'terms.tsv'}: 3 of 3 terms met in 3 sentences" in format_report(
        report
    )
