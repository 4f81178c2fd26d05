"""nmt-compare (nmt/compare.py) on fabricated sweeps: run dirs written the way nmt.train writes them, with
known numbers, so every cell of the table is known in advance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import quote, run_main
from omegaconf import OmegaConf
from PIL import Image
from torch.utils.tensorboard import SummaryWriter

from nmt import compare

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def write_run(
    run_dir: Path,
    config,
    validations: list[dict] | None = None,
    tokens_per_s: list[float] | None = None,
    test_scores: tuple[float, float] | None = None,
    checkpoint: tuple[str, dict[str, torch.Tensor]] | None = None,
) -> None:
    """A run dir as nmt.train leaves it: .hydra/config.yaml (unresolved, as Hydra saves it),
    validations.jsonl, TensorBoard events, test_scores.json (an nmt.evaluate report) and a
    checkpoint (only its ``model`` entry matters here)."""
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(config, run_dir / ".hydra" / "config.yaml")
    if validations is not None:
        with open(run_dir / "validations.jsonl", "w", encoding="utf-8") as f:
            for record in validations:
                f.write(json.dumps(record) + "\n")
    if tokens_per_s is not None:
        writer = SummaryWriter(str(run_dir / "tensorboard"))
        for step, value in enumerate(tokens_per_s, start=1):
            writer.add_scalar("train/tokens_per_s", value, step)
            writer.add_scalar("train/loss", 5.0, step)
        writer.close()
    if test_scores is not None:
        bleu, chrf = test_scores
        report = {
            "ref": "test.ko",
            "split": "test",
            "systems": [
                {
                    "system": "best.pt",
                    "lines": 3,
                    "scores": {"bleu_ko-mecab": {"score": bleu}, "chrf": {"score": chrf}},
                }
            ],
        }
        (run_dir / "test_scores.json").write_text(json.dumps(report))
    if checkpoint is not None:
        name, model = checkpoint
        (run_dir / "checkpoints").mkdir()
        torch.save({"model": model, "config": {}}, run_dir / "checkpoints" / name)


def validation(step: int, bleu: float, chrf: float, entropy: float, diag: float, cov: float):
    """One line of validations.jsonl, with the fields nmt.validation writes."""
    return {
        "step": step,
        "loss": 4.0,
        "perplexity": 10_000.0 / step,  # falls as training goes on
        "bleu": bleu,
        "chrf": chrf,
        "scores": {"bleu_ko-mecab": {"score": bleu, "signature": "…"}, "chrf": {"score": chrf}},
        "diagnostics": {
            "repetition_rate": 0.1,
            "max_len_rate": 0.0,
            "len_ratio_chars": 1.0,
            "attn_entropy": entropy,
            "attn_diagonal_mass": diag,
            "attn_coverage_deviation": cov,
        },
    }


@pytest.fixture
def sweep(tmp_path, compose_config) -> Path:
    """Three runs: a complete one, one named as configs/train.yaml's hydra.sweep.subdir names a
    job (the overrides, '/' turned into '.') with neither test scores nor TensorBoard events, and
    one a level deeper (a second half of a sweep run into SWEEP_DIR/rest) that never validated."""
    root = tmp_path / "sweep"
    weight = torch.zeros(3, 4)
    write_run(
        root / "concat-gru-luong",
        compose_config("model/attention=concat"),
        validations=[
            validation(200, 5.0, 20.0, 2.0, 0.25, 1.5),
            validation(400, 4.5, 22.5, 1.234, 0.5678, 0.9012),
        ],
        tokens_per_s=[100.0, 300.0, 200.0],
        test_scores=(7.25, 30.5),
        checkpoint=("best.pt", {"w": weight, "b": torch.zeros(5), "tied": weight}),
    )
    write_run(
        root / "model.attention=dot,model.encoder=lstm",
        compose_config("model/attention=dot", "model/encoder=lstm", "model/decoder=bahdanau"),
        validations=[validation(100, 1.5, 10.25, 3.0, 0.125, 0.75)],
        checkpoint=("last.pt", {"x": torch.zeros(10)}),
    )
    write_run(root / "rest" / "general-gru-luong", compose_config("model/attention=general"))
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root


EXPECTED_ROWS = [
    "| model.attention=dot,model.encoder=lstm | dot | lstm | bahdanau | 100 | 1.50 | 100.0 | — | — "
    "| — | 10 | 3.000 | 0.125 | 0.750 | no test_scores.json (evaluate_test=true); "
    "no train/tokens_per_s logged |",
    "| rest/general-gru-luong | general | gru | luong | — | — | — | — | — | — | — | — | — | — "
    "| no validations yet; no test_scores.json (evaluate_test=true); no checkpoint |",
    "| concat-gru-luong | concat | gru | luong | 400 | 5.00 | 25.0 | 7.25 | 30.50 | 200 | 17 "
    "| 1.234 | 0.568 | 0.901 |  |",
]


def table_rows(markdown: str) -> list[str]:
    lines = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| run | attention | encoder | decoder | steps |")
    return lines[1:]


def test_table_holds_exactly_the_runs_numbers(sweep, tmp_path):
    out = tmp_path / "report"
    result = run_main("nmt.compare", f"sweep={quote(sweep)}", f"out={quote(out)}")
    assert result.returncode == 0, result.stderr
    assert table_rows((out / "comparison.md").read_text()) == EXPECTED_ROWS
    assert table_rows(result.stdout) == EXPECTED_ROWS
    assert not (sweep / "comparison.md").exists()  # out=, not the sweep dir

    runs = {r["name"]: r for r in json.loads((out / "comparison.json").read_text())}
    concat = runs["concat-gru-luong"]
    assert concat["variant"] == "concat × gru × luong"
    assert (concat["valid_bleu"], concat["valid_chrf"]) == (5.0, 22.5)  # best, not last
    assert concat["valid_perplexity"] == 25.0  # the last validation's
    assert (concat["test_bleu"], concat["test_chrf"]) == (7.25, 30.5)
    assert concat["tokens_per_s"] == 200.0  # the median
    assert concat["parameters"] == 17  # the tied matrix once
    assert concat["attn_diagonal_mass"] == 0.5678
    assert concat["curve"] == [[200, 5.0], [400, 4.5]]
    assert runs["rest/general-gru-luong"]["curve"] == []

    for name in compare.PLOTS:
        data = (out / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE), name
        with Image.open(out / name) as image:
            image.verify()
            assert image.size[0] > 100 and image.size[1] > 100


def test_report_goes_to_the_sweep_dir_by_default(sweep):
    result = run_main("nmt.compare", f"sweep={quote(sweep)}")
    assert result.returncode == 0, result.stderr
    for name in ("comparison.md", "comparison.json", *compare.PLOTS):
        assert (sweep / name).is_file(), name


def test_unreadable_validation_line_is_noted(tmp_path, compose_config):
    root = tmp_path / "sweep"
    write_run(root / "run", compose_config(), validations=[validation(50, 2.0, 9.0, 1, 0.5, 0.5)])
    with open(root / "run" / "validations.jsonl", "a") as f:
        f.write('{"step": 100, "bl')  # an interrupted write
    [run] = compare.compare(root, log=lambda _: None)
    assert run.steps == 50
    assert "validations.jsonl line 2 unreadable" in run.notes


def test_evaluate_test_writes_missing_scores_and_keeps_existing_ones(
    tmp_path, compose_config, monkeypatch
):
    root = tmp_path / "sweep"
    model = ("best.pt", {"w": torch.zeros(2)})
    write_run(root / "scored", compose_config(), test_scores=(9.5, 40.0), checkpoint=model)
    write_run(root / "unscored", compose_config("search=greedy"), checkpoint=model)
    write_run(root / "untrained", compose_config())
    calls = []

    def fake_evaluate(ckpt, search_cfg, split, device):
        calls.append((Path(ckpt), search_cfg.name, split, device))
        return {"systems": [{"scores": {"bleu_ko-mecab": {"score": 3.5}, "chrf": {"score": 12.0}}}]}

    monkeypatch.setattr(compare, "evaluate_checkpoint", fake_evaluate)
    result = run_main("nmt.compare", f"sweep={quote(root)}", "evaluate_test=true", "device=cpu")
    assert result.returncode == 0, result.stderr
    # only the run with a best.pt and no test_scores.json, with its own search settings
    assert calls == [(root / "unscored" / "checkpoints" / "best.pt", "greedy", "test", "cpu")]
    runs = {r["name"]: r for r in json.loads((root / "comparison.json").read_text())}
    assert (runs["unscored"]["test_bleu"], runs["unscored"]["test_chrf"]) == (3.5, 12.0)
    assert runs["scored"]["test_bleu"] == 9.5


@pytest.mark.parametrize("make", [lambda d: d.mkdir(), lambda d: None], ids=["empty", "missing"])
def test_no_runs_is_an_error(tmp_path, make):
    sweep = tmp_path / "sweep"
    make(sweep)
    result = run_main("nmt.compare", f"sweep={quote(sweep)}")
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {sweep}: ")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "sweep" / "comparison.md").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "sweep: no value; give the sweep's folder (its hydra.sweep.dir), sweep=DIR"),
        (["sweep=.", "evaluate_test=yes"], "evaluate_test: expected true or false, got 'yes'"),
        (["sweep=.", "device=gpu"], "device: expected auto, cpu or cuda; got 'gpu'"),
    ],
)
def test_bad_keys_are_one_line_naming_the_key(args, message):
    result = run_main("nmt.compare", *args)
    assert result.returncode == 2
    assert result.stderr == f"error: {message}\n"
