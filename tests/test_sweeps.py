"""Sweeps on the tiny corpus: the sweep scripts (scripts/sweep_attention.sh,
scripts/sweep_recipes.sh) and a plain ``nmt-train -m`` multirun's folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO_ROOT, TINY_MODEL, quote, run_main
from omegaconf import OmegaConf

TINY_RUN = [
    *TINY_MODEL,
    "trainer.max_steps=2",
    "trainer.val_every_steps=2",
    "trainer.val_max_sentences=2",
    "trainer.num_attention_plots=0",
]


def run_script(script: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``bash scripts/<script> args...`` with this interpreter first on PATH (the scripts call
    ``python``)."""
    full_env = dict(os.environ, **env)
    full_env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), full_env["PATH"]])
    return subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / script), *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def run_config(run_dir: Path):
    return OmegaConf.load(run_dir / ".hydra" / "config.yaml")


def test_recipe_sweep_changes_one_setting_per_run_and_compares(tiny_prepared, tmp_path):
    sweep = tmp_path / "recipes"
    env = {"SWEEP_DIR": str(sweep), "VARIANTS": "default ls0", "MINUTES": "5"}
    data = tiny_prepared.corpus.overrides(tiny_prepared.data.out_dir)
    result = run_script("sweep_recipes.sh", env, *data, *TINY_RUN)
    assert result.returncode == 0, result.stderr[-3000:]

    assert run_config(sweep / "default").trainer.label_smoothing == 0.1
    assert run_config(sweep / "ls0").trainer.label_smoothing == 0.0
    assert run_config(sweep / "ls0").trainer.max_minutes == 5
    report = (sweep / "comparison.md").read_text(encoding="utf-8")
    runs_table, variants_table = (part.split("\n\n")[1] for part in report.split("## ")[1:3])
    first_cells = lambda table: [line.split(" | ")[0] for line in table.splitlines()][2:]  # noqa: E731
    assert first_cells(runs_table) == ["| default", "| ls0"]
    # one config each, so two variants, told apart by their run's name; the first is the baseline
    assert first_cells(variants_table) == [
        "| general/gru/luong (default) (baseline)",
        "| general/gru/luong (ls0)",
    ]
    runs = json.loads((sweep / "comparison.json").read_text(encoding="utf-8"))
    assert all(run["test_bleu"] is not None for run in runs)  # --evaluate-test ran


def test_recipe_sweep_rejects_an_unknown_variant(tmp_path):
    result = run_script("sweep_recipes.sh", {"SWEEP_DIR": str(tmp_path), "VARIANTS": "bogus"})
    assert result.returncode == 2
    assert "unknown variant 'bogus'" in result.stderr
    assert "known:" in result.stderr
    assert not any(tmp_path.iterdir())  # nothing trained


def test_attention_sweep_names_runs_by_variant(tiny_prepared, tmp_path):
    sweep = tmp_path / "attention"
    env = {
        "SWEEP_DIR": str(sweep),
        "ATTENTIONS": "dot,location",
        "ENCODERS": "lstm",
        "TYPES": "global,local_p",
        "SEEDS": "1",
        "COMPARE": "0",
    }
    data = tiny_prepared.corpus.overrides(tiny_prepared.data.out_dir)
    result = run_script("sweep_attention.sh", env, *data, *TINY_RUN)
    assert result.returncode == 0, result.stderr[-3000:]

    runs = sorted(p.name for p in sweep.iterdir() if (p / ".hydra").is_dir())
    assert runs == [
        "0_global-dot-lstm-luong-seed1",
        "1_local_p-dot-lstm-luong-seed1",
        "2_global-location-lstm-luong-seed1",
        "3_local_p-location-lstm-luong-seed1",
    ]
    config = run_config(sweep / runs[3])
    assert (config.model.attention.score, config.model.attention.type) == ("location", "local_p")
    assert config.seed == 1
    assert not (sweep / "comparison.md").exists()  # COMPARE=0


def test_attention_sweep_over_heads_names_and_labels_each_count(tiny_prepared, tmp_path):
    """HEADS: the multi-head rows of the attention comparison; each H its own run name and its
    own variant label in nmt-compare (concat, concat-H2)."""
    from nmt.evaluation.sweep import Run, read_variant

    sweep = tmp_path / "heads"
    env = {"SWEEP_DIR": str(sweep), "ATTENTIONS": "concat", "ENCODERS": "gru", "HEADS": "1,2",
           "SEEDS": "1", "COMPARE": "0"}  # fmt: skip
    data = tiny_prepared.corpus.overrides(tiny_prepared.data.out_dir)
    result = run_script("sweep_attention.sh", env, *data, *TINY_RUN)
    assert result.returncode == 0, result.stderr[-3000:]

    runs = sorted(p.name for p in sweep.iterdir() if (p / ".hydra").is_dir())
    assert runs == ["0_global-concat-h1-gru-luong-seed1", "1_global-concat-h2-gru-luong-seed1"]
    assert run_config(sweep / runs[1]).model.attention.heads == 2
    labels = [Run(name, **read_variant(sweep / name)).key for name in runs]
    assert labels == ["concat/gru/luong", "concat-H2/gru/luong"]


def test_a_multirun_makes_one_flat_folder_per_job(tiny_prepared, tmp_path):
    """configs/train.yaml's hydra.sweep.subdir turns each / of a group override into '.', so
    model/attention=dot,general makes two sibling folders (Hydra's override_dirname alone
    nests model/ → attention=dot); nmt-compare names the runs after them."""
    sweep = tmp_path / "multirun"
    common = [*tiny_prepared.corpus.overrides(tiny_prepared.data.out_dir), *TINY_RUN]
    keys = ",".join(arg.split("=")[0] for arg in common)  # kept out of the folder names
    result = run_main(
        "nmt.train",
        "-m",
        *common,
        "model/attention=dot,general",
        f"hydra.sweep.dir={quote(sweep)}",
        f"hydra.job.config.override_dirname.exclude_keys=[{keys}]",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["model.attention=dot", "model.attention=general"]
    assert run_config(sweep / jobs[0]).model.attention.score == "dot"
    assert (sweep / jobs[1] / "checkpoints" / "last.pt").is_file()

    result = run_main("nmt.compare", f"sweep={quote(sweep)}")
    assert result.returncode == 0, result.stderr
    names = [r["name"] for r in json.loads((sweep / "comparison.json").read_text(encoding="utf-8"))]
    assert names == ["model.attention=dot", "model.attention=general"]


TINY_TRANSFORMER = [
    *(f"model.{side}.{key}={value}" for side in ("encoder", "decoder")
      for key, value in (("embed_dim", 16), ("hidden_size", 16), ("num_layers", 1),
                         ("heads", 2), ("ff_size", 32))),
]  # fmt: skip


def test_transformer_sweep_runs_every_seed_and_compares(tiny_prepared, tmp_path):
    sweep = tmp_path / "transformer"
    env = {"SWEEP_DIR": str(sweep), "VARIANTS": "preset dropout0.2", "SEEDS": "1 2"}
    data = tiny_prepared.corpus.overrides(tiny_prepared.data.out_dir)
    result = run_script("sweep_transformer.sh", env, *data, *TINY_RUN, *TINY_TRANSFORMER)
    assert result.returncode == 0, result.stderr[-3000:]
    config = run_config(sweep / "dropout0.2" / "seed2")
    assert config.model.decoder.style == "transformer" and config.model.decoder.dropout == 0.2
    assert config.seed == 2 and config.trainer.max_minutes == 30
    report = (sweep / "comparison.md").read_text(encoding="utf-8")
    variants_table = report.split("## ")[2].split("\n\n")[1]
    rows = [line.split(" | ")[0] for line in variants_table.splitlines()][2:]
    assert rows == [  # one variant per folder, both seeds in it; the preset is the baseline
        "| multi-head/transformer/transformer (dropout0.2/seed1)",
        "| multi-head/transformer/transformer (preset/seed1) (baseline)",
    ]
    runs = json.loads((sweep / "variants.json").read_text(encoding="utf-8"))
    assert [len(variant["runs"]) for variant in runs] == [2, 2]


def test_transformer_sweep_rejects_an_unknown_variant(tmp_path):
    result = run_script("sweep_transformer.sh", {"SWEEP_DIR": str(tmp_path), "VARIANTS": "x"})
    assert result.returncode == 2 and "unknown variant 'x'" in result.stderr


def test_transformer_sweep_side_by_side_gives_each_seed_one_thread(tiny_prepared, tmp_path):
    sweep = tmp_path / "side_by_side"
    env = {"SWEEP_DIR": str(sweep), "VARIANTS": "dropout0.1", "SEEDS": "1 2",
           "SIDE_BY_SIDE": "1", "COMPARE": "0"}  # fmt: skip
    data = tiny_prepared.corpus.overrides(tiny_prepared.data.out_dir)
    result = run_script("sweep_transformer.sh", env, *data, *TINY_RUN, *TINY_TRANSFORMER)
    assert result.returncode == 0, result.stderr[-3000:]
    for seed in (1, 2):
        run = sweep / "dropout0.1" / f"seed{seed}"
        config = run_config(run)
        assert config.seed == seed and config.trainer.num_threads == 1
        assert config.model.decoder.dropout == 0.1
        assert (run / "checkpoints" / "last.pt").is_file()
    assert not (sweep / "comparison.md").exists()  # COMPARE=0


def test_transformer_sweep_side_by_side_fails_when_a_run_fails(tmp_path):
    env = {"SWEEP_DIR": str(tmp_path), "VARIANTS": "preset", "SEEDS": "x",
           "SIDE_BY_SIDE": "1", "COMPARE": "0"}  # fmt: skip
    result = run_script("sweep_transformer.sh", env)
    assert result.returncode != 0 and "seed" in result.stderr
