"""The typed config schema (nmt/config/schema.py): every command's composed config is checked
before Hydra starts the job, so a wrong type or an out-of-range value is one line naming the key
and what it expects, exit status 2, and nothing on disk — no run dir, ``.hydra/``, log file or
``data/``.

A few cases run the real console entry in a fresh interpreter from an empty folder; the others
run the same entry points in this process (``run_main``: the same Hydra composition and hook).
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from conftest import REPO_ROOT, compose_config, run_main

from nmt.config.resolvers import group_options
from nmt.config.schema import COMMANDS, check_command
from nmt.core.errors import NMTError
from nmt.core.settings import describe, load_settings
from nmt.inference.search import SearchSettings
from nmt.training.optim import OptimSettings
from nmt.training.settings import TrainerSettings

# (command, overrides, the one line it prints)
BAD_VALUES = [
    ("nmt.train", ["trainer.max_steps=abc"],
     "trainer.max_steps: expected an integer >= 1 or null; got 'abc'"),
    ("nmt.train", ["trainer.max_minutes=abc"],
     "trainer.max_minutes: expected a number > 0 or null; got 'abc'"),
    ("nmt.train", ["optim.lr=abc"], "optim.lr: expected a number >= 0; got 'abc'"),
    ("nmt.train", ["optim.lr=-1"], "optim.lr: expected a number >= 0; got -1"),
    ("nmt.train", ["optim.betas=[0.9]"], "optim.betas: expected two numbers in [0, 1); got [0.9]"),
    ("nmt.train", ["optim.scheduler=cosine"],
     "optim.scheduler: expected one of none, plateau, inverse_sqrt; got 'cosine'"),
    ("nmt.train", ["data.batching.max_tokens=0"],
     "data.batching.max_tokens: expected an integer >= 1; got 0"),
    ("nmt.train", ["data.vocab.model_type=wordpiece"],
     "data.vocab.model_type: expected one of unigram, bpe; got 'wordpiece'"),
    ("nmt.train", ["model.encoder.dropout=1.5"],
     "model.encoder.dropout: expected a number in [0, 1); got 1.5"),
    ("nmt.train", ["model.encoder.hidden_size=abc"],
     "model.encoder.hidden_size: expected an integer >= 1; got 'abc'"),
    ("nmt.train", ["model.attention.window=0"],
     "model.attention.window: expected an integer >= 1 or null; got 0"),
    ("nmt.train", ["model.decoder.num_layers=1.5"],
     "model.decoder.num_layers: expected an integer >= 1; got 1.5"),
    ("nmt.train", ["model.tie_embeddings=1"], "model.tie_embeddings: expected true or false; got 1"),
    ("nmt.train", ["search.beam_size=0"], "search.beam_size: expected an integer >= 1; got 0"),
    ("nmt.train", ["trainer.precision=fp8"],
     "trainer.precision: expected one of auto, fp32, bf16, fp16; got 'fp8'"),
    ("nmt.train", ["trainer.accum_steps=0"], "trainer.accum_steps: expected an integer >= 1; got 0"),
    ("nmt.train", ["trainer.label_smoothing=1.5"],
     "trainer.label_smoothing: expected a number in [0, 1]; got 1.5"),
    ("nmt.train", ["trainer.max_steps=null"],
     "trainer: set at least one of max_steps, max_epochs, max_minutes"),
    ("nmt.train", ["+trainer.max_step=5"],
     "trainer.max_step: unknown setting; expected one of device, precision, max_steps, max_epochs, "
     "max_minutes, accum_steps, label_smoothing, param_init, teacher_forcing, val_every_steps, "
     "val_max_sentences, log_every_steps, early_stopping_metric, early_stopping_patience, "
     "keep_best, keep_last, keep_every_validation, average_last, resume, save_every_minutes, "
     "save_every_steps, preempt_signals, max_nonfinite_steps, num_samples, num_attention_plots, "
     "distributed, dist_timeout_minutes, num_threads, keep_freed_memory"),
    ("nmt.train", ["data=tsv", "trainer.max_steps=1"],
     "data.train: missing; give it on the command line (data.train=…)"),
    ("nmt.translate", ["input=-"], "ckpt: missing; give it on the command line (ckpt=…)"),
    ("nmt.prepare", ["data.clean.max_len=0"], "data.clean.max_len: expected an integer >= 1; got 0"),
    ("nmt.benchmark", ["benchmark.windows=0"], "benchmark.windows: expected an integer >= 1; got 0"),
    ("nmt.translate", ["ckpt=x.pt", "search.beam_size=0"],
     "search.beam_size: expected an integer >= 1; got 0"),
    ("nmt.evaluate", ["ckpt=x.pt", "split=dev"],
     "split: expected one of train, valid, test or null; got 'dev'"),
    ("nmt.serve", ["ckpt=x.pt", "port=abc"], "port: expected an integer in [0, 65535]; got 'abc'"),
    ("nmt.serve", ["ckpt=x.pt", "serve.timeout_s=0"], "serve.timeout_s: expected a number > 0; got 0"),
    ("nmt.export", ["ckpt=x.pt", "out=o", "opset=16"], "opset: expected an integer >= 17; got 16"),
    ("nmt.explore", ["ckpt=x.pt", "input=in.en", "n_best=0"],
     "n_best: expected an integer >= 1; got 0"),
    ("nmt.compare", ["sweep=.", "significance=t"], "significance: expected one of bs, ar; got 't'"),
    ("nmt.average", ["run_dir=.", "last=abc"], "last: expected an integer >= 1 or null; got 'abc'"),
    ("nmt.serve_bench", ["ckpt=x.pt", "clients=[0]"],
     "clients: expected an integer >= 1 or a non-empty list of integers >= 1; got [0]"),
]  # fmt: skip
FRESH = {"trainer.max_steps=abc", "optim.lr=abc"}  # a fresh interpreter costs seconds


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize(
    ("module", "args", "message"),
    [case for case in BAD_VALUES if case[1][0] in FRESH],
    ids=lambda v: v[0] if isinstance(v, list) else None,
)
def test_bad_values_stop_the_console_entry_with_one_line(tmp_path, module, args, message):
    """``python -m nmt.train …`` in a fresh interpreter, from an empty folder: one line, exit 2,
    the folder still empty (no outputs/, .hydra/, train.log or data/)."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    result = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (result.returncode, result.stderr) == (2, f"error: {message}\n")
    assert result.stdout == ""
    assert files_under(tmp_path) == []


@pytest.mark.parametrize(
    ("module", "args", "message"),
    [case for case in BAD_VALUES if case[1][0] not in FRESH],
    ids=lambda v: v[0] if isinstance(v, list) else None,
)
def test_bad_values_stop_every_command_with_one_line(tmp_path, monkeypatch, module, args, message):
    """The same entry points in this process: the same composition and the same hook."""
    monkeypatch.chdir(tmp_path)
    before = files_under(tmp_path)
    with warnings.catch_warnings(record=True) as caught:  # Hydra turns a callback's exception
        warnings.simplefilter("always")  # into a warning: the hook must raise none
        result = run_main(module, *args)
    assert (result.returncode, result.stderr) == (2, f"error: {message}\n")
    assert not [w for w in caught if "Callback" in str(w.message)]
    assert files_under(tmp_path) == before == []


def test_every_command_and_option_passes_its_schema():
    """The YAML defaults are valid: every command's config, and every option of every group that
    nmt-train composes (also +experiment), checked against the schema."""
    needs = {
        "train": ["trainer.max_steps=1"],
        "benchmark": [],
        "translate": ["ckpt=x"],
        "serve": ["ckpt=x"],
        "serve_bench": ["ckpt=x"],
        "export": ["ckpt=x", "out=y"],
        "explore": ["ckpt=x", "input=y"],
        "info": ["ckpt=x"],
    }
    for name in COMMANDS:
        check_command(name, compose_config(*needs.get(name, []), config_name=name))
    tsv = ["data.train=a", "data.valid=b", "data.test=c"]
    for group in ("data", "model/encoder", "model/attention", "model/decoder", "optim", "search"):
        for option in group_options(group, "checkpoint"):
            extra = tsv if (group, option) in (("data", "tsv"), ("data", "aligned")) else []
            cfg = compose_config(f"{group}={option}", "trainer.max_steps=1", *extra)
            check_command("train", cfg)
    for experiment in group_options("experiment"):
        check_command("train", compose_config(f"+experiment={experiment}", "trainer.max_steps=1"))


def test_the_settings_are_typed_objects():
    cfg = compose_config("trainer.max_steps=7", "optim=sgd")
    typed = check_command("train", cfg)
    assert typed.trainer.max_steps == 7 and isinstance(typed.trainer, TrainerSettings)
    assert isinstance(typed.optim, OptimSettings) and typed.optim.momentum == 0.9
    assert isinstance(typed.search, SearchSettings) and typed.search.beam_size == 5
    assert typed.model.attention.type == "global" and typed.model.attention.options == {}


def test_strict_where_omegaconf_would_convert():
    """OmegaConf's structured configs turn ``1`` and ``'yes'`` into true and ``'5'`` into 5; the
    schema refuses them, as the hand-written checks did."""
    base = {"name": "beam", "beam_size": 5}
    with pytest.raises(NMTError, match=r"^search.beam_size: expected an integer >= 1; got '5'$"):
        load_settings(SearchSettings, {**base, "beam_size": "5"}, "search")
    cfg = compose_config("trainer.max_steps=1")
    for value, shown in ((1, "1"), ("yes", "'yes'"), (None, "None")):
        cfg.model.encoder.bidirectional = value
        with pytest.raises(NMTError) as err:
            check_command("train", cfg)
        expected = f"model.encoder.bidirectional: expected true or false; got {shown}"
        assert str(err.value) == expected


def test_ranges_are_described_with_their_bounds():
    optim = dict(compose_config().optim)
    for key, value, expected in [
        ("plateau_factor", 0, "a number in (0, 1]"),
        ("warmup_steps", -1, "an integer >= 0"),
        ("clip_grad_norm", -1, "a number >= 0 or null"),
        ("lr", float("nan"), "a number >= 0"),
    ]:
        with pytest.raises(NMTError) as err:
            load_settings(OptimSettings, {**optim, key: value}, "optim")
        assert str(err.value) == f"optim.{key}: expected {expected}; got {value!r}"
    assert describe(list[int], {"ge": 1, "nonempty": True}) == "a non-empty list of integers >= 1"


def test_cfg_job_still_prints_the_config():
    """``--cfg job`` runs no callback: it prints the composed config, even an unfinished one."""
    result = run_main("nmt.train", "--cfg", "job")
    assert result.returncode == 0 and "max_steps: null" in result.stdout
