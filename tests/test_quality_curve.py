"""nmt-quality-curve (nmt/quality_curve.py) on a tiny run that kept every validation's checkpoint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import TINY_MODEL, build_trainer, quote, run_main

from nmt.evaluation import quality_curve

TINY_RUN = [
    *TINY_MODEL,
    "trainer.val_max_sentences=2",
    "trainer.num_attention_plots=0",
    "trainer.max_steps=4",
    "trainer.val_every_steps=2",
    "trainer.keep_best=1",
    "trainer.keep_every_validation=true",
]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny_run(tiny_prepared, tmp_path_factory) -> Path:
    """4 steps, validating at steps 2 and 4, both step checkpoints kept."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    run_dir = tmp_path_factory.mktemp("curve_run")
    data = tiny_prepared.data
    build_trainer(tiny_prepared.corpus.cfg(*TINY_RUN, out_dir=data.out_dir), run_dir, data).fit()
    torch.set_num_threads(threads)
    return run_dir


def run_curve(*args: str):
    """``nmt-quality-curve args... device=cpu``, which must succeed."""
    result = run_main("nmt.quality_curve", *args, "device=cpu")
    assert result.returncode == 0, result.stderr
    return result


def table_rows(markdown: str) -> list[list[str]]:
    rows = [line for line in markdown.splitlines() if line.startswith("| ")][1:]  # no header
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]


def test_one_row_per_checkpoint_and_a_plot(tiny_run):
    result = run_curve(f"runs=[{quote(tiny_run)}]", "max_sentences=3")
    rows = table_rows((tiny_run / "quality_curve.md").read_text(encoding="utf-8"))
    assert [row[1:3] for row in rows] == [["step0000002.pt", "2"], ["step0000004.pt", "4"]]
    report = json.loads((tiny_run / "quality_curve.json").read_text(encoding="utf-8"))
    (curve,) = report["runs"]
    assert curve["search"]["name"] == "greedy" and curve["max_sentences"] == 3
    minutes = [p["minutes"] for p in curve["points"]]
    assert 0 < minutes[0] < minutes[1]
    for point in curve["points"]:
        for key in ("valid_bleu", "valid_chrf", "test_bleu", "test_chrf"):
            assert 0.0 <= point[key] <= 100.0
    assert curve["signatures"]["bleu_ko-mecab"].startswith("nrefs:1|")
    assert (tiny_run / "quality_curve.png").read_bytes()[:8] == PNG_SIGNATURE
    assert "step0000004.pt" in result.stdout


def test_a_second_call_reuses_the_scores_unless_settings_change(tiny_run, monkeypatch):
    run_curve(f"runs=[{quote(tiny_run)}]", "max_sentences=3")
    before = (tiny_run / "quality_curve.json").read_text(encoding="utf-8")
    decoded = []
    real = quality_curve.evaluate_translator

    def counting(translator, *args, **kwargs):
        decoded.append(Path(translator.info.source).name)
        return real(translator, *args, **kwargs)

    monkeypatch.setattr(quality_curve, "evaluate_translator", counting)
    run_curve(f"runs={quote(tiny_run)}", "max_sentences=3")  # one run: the list's brackets optional
    assert decoded == []
    assert (tiny_run / "quality_curve.json").read_text(encoding="utf-8") == before
    run_curve(f"runs=[{quote(tiny_run)}]", "max_sentences=2")
    assert decoded == ["step0000002.pt"] * 2 + ["step0000004.pt"] * 2  # valid and test


def test_several_runs_on_one_figure(tiny_run, tmp_path):
    other = shutil.copytree(tiny_run, tmp_path / "other")
    out = tmp_path / "both"
    run_curve(
        f"runs=[{quote(tiny_run)},{quote(other)}]",
        "labels=[default,joeynmt_ref]",
        f"out={quote(out)}",
        "max_sentences=2",
        "beam=2",
    )
    rows = table_rows((out / "quality_curve.md").read_text(encoding="utf-8"))
    assert [row[0] for row in rows] == ["default", "default", "joeynmt_ref", "joeynmt_ref"]
    runs = json.loads((out / "quality_curve.json").read_text(encoding="utf-8"))["runs"]
    assert [r["search"]["beam_size"] for r in runs] == [2, 2]
    assert (out / "quality_curve.png").read_bytes()[:8] == PNG_SIGNATURE
    assert (other / "quality_curve.md").is_file()  # each run's own report too


def test_a_run_without_step_checkpoints_says_how_to_keep_them(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    result = run_main("nmt.quality_curve", f"runs=[{quote(tmp_path)}]", "device=cpu")
    assert result.returncode == 2
    assert "trainer.keep_every_validation=true" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "runs: no value; give the run dirs, runs=[RUN] or runs=[RUN_A,RUN_B]"),
        (["runs=[.,.]"], "runs: several run dirs; give out=DIR for the report of all of them"),
        (["runs=[.]", "labels=[a,b]"], "labels: 2 given for 1 run dirs"),
        (["runs=[.]", "beam=0"], "beam: expected an integer >= 1 or null; got 0"),
        (
            ["runs=[.]", "max_sentences=0"],
            "max_sentences: expected an integer >= 1 or null; got 0",
        ),
        (["runs=[.]", "fresh=1"], "fresh: expected true or false; got 1"),
        (["runs=[no/such/run]"], "runs: no/such/run: no such directory"),
        (["runs=[.]", "device=gpu"], "device: expected auto, cpu or cuda; got 'gpu'"),
    ],
)
def test_bad_keys_are_one_line_naming_the_key(args, message):
    result = run_main("nmt.quality_curve", *args)
    assert result.returncode == 2
    assert result.stderr == f"error: {message}\n"
