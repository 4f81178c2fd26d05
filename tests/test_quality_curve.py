"""scripts/quality_curve.py on a tiny run that kept every validation's checkpoint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import TINY_MODEL

from nmt import quality_curve
from nmt.trainer import Trainer

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
    Trainer(tiny_prepared.corpus.cfg(*TINY_RUN, out_dir=data.out_dir), run_dir, data).fit()
    torch.set_num_threads(threads)
    return run_dir


def table_rows(markdown: str) -> list[list[str]]:
    rows = [line for line in markdown.splitlines() if line.startswith("| ")][1:]  # no header
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]


def test_one_row_per_checkpoint_and_a_plot(tiny_run, capsys):
    quality_curve.main([str(tiny_run), "--max-sentences", "3", "--device", "cpu"])
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
    assert "step0000004.pt" in capsys.readouterr().out


def test_a_second_call_reuses_the_scores_unless_settings_change(tiny_run, monkeypatch):
    quality_curve.main([str(tiny_run), "--max-sentences", "3", "--device", "cpu"])
    before = (tiny_run / "quality_curve.json").read_text(encoding="utf-8")
    decoded = []
    real = quality_curve.evaluate_translator

    def counting(translator, *args, **kwargs):
        decoded.append(Path(translator.info.source).name)
        return real(translator, *args, **kwargs)

    monkeypatch.setattr(quality_curve, "evaluate_translator", counting)
    quality_curve.main([str(tiny_run), "--max-sentences", "3", "--device", "cpu"])
    assert decoded == []
    assert (tiny_run / "quality_curve.json").read_text(encoding="utf-8") == before
    quality_curve.main([str(tiny_run), "--max-sentences", "2", "--device", "cpu"])
    assert decoded == ["step0000002.pt"] * 2 + ["step0000004.pt"] * 2  # valid and test


def test_several_runs_on_one_figure(tiny_run, tmp_path):
    other = shutil.copytree(tiny_run, tmp_path / "other")
    out = tmp_path / "both"
    quality_curve.main(
        [str(tiny_run), str(other), "--labels", "default", "joeynmt_ref", "--out", str(out)]
        + ["--max-sentences", "2", "--beam", "2", "--device", "cpu"]
    )
    rows = table_rows((out / "quality_curve.md").read_text(encoding="utf-8"))
    assert [row[0] for row in rows] == ["default", "default", "joeynmt_ref", "joeynmt_ref"]
    runs = json.loads((out / "quality_curve.json").read_text(encoding="utf-8"))["runs"]
    assert [r["search"]["beam_size"] for r in runs] == [2, 2]
    assert (out / "quality_curve.png").read_bytes()[:8] == PNG_SIGNATURE
    assert (other / "quality_curve.md").is_file()  # each run's own report too


def test_a_run_without_step_checkpoints_says_how_to_keep_them(tmp_path, capsys):
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(SystemExit) as exit_:
        quality_curve.main([str(tmp_path), "--device", "cpu"])
    assert exit_.value.code == 2
    assert "trainer.keep_every_validation=true" in capsys.readouterr().err


def test_several_runs_need_out(tmp_path):
    with pytest.raises(SystemExit) as exit_:
        quality_curve.main([str(tmp_path), str(tmp_path)])
    assert exit_.value.code == 2  # argparse's usage error
