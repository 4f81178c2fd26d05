"""DDP on the CPU (gloo): torchrun with 2 ranks against one process with gradient accumulation.

TokenBatcher gives rank r the batches r, r+2, r+4, … of an epoch, so with one batch per rank
each step of 2 ranks sees batches (0, 1), (2, 3), … — the groups one process takes with
``trainer.accum_steps=2``. The loss is divided by the step's target tokens over all ranks,
so the two runs take the same optimiser steps (dropout 0: no rank-dependent masks).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT, TINY_MODEL, quote, run_main

from nmt.training.distributed import TORCHRUN_VARS

COMMON = [
    *TINY_MODEL,
    "model/attention=concat",
    "model.attention.hidden_size=16",
    "model.encoder.dropout=0",
    "model.decoder.dropout=0",
    "trainer.val_max_sentences=2",
    "trainer.num_attention_plots=0",
    "trainer.val_every_steps=2",
    "trainer.keep_best=10",
]


def train_args(tiny_prepared, run_dir: Path, *overrides: str) -> list[str]:
    return [
        *tiny_prepared.corpus.overrides(tiny_prepared.data.out_dir),
        *COMMON,
        f"hydra.run.dir={quote(run_dir)}",
        *overrides,
    ]


def torchrun(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``torchrun --standalone --nproc_per_node=2 -m nmt.train args`` as a user runs it."""
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_VARS}
    env.pop("HYDRA_FULL_ERROR", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    env["OMP_NUM_THREADS"] = "1"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    return subprocess.run(
        [*command, "-m", "nmt.train", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_parameters(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6), name


@pytest.fixture(scope="module")
def one_process(tiny_prepared, tmp_path_factory) -> Path:
    """4 steps of 2 accumulated batches, checkpoints at steps 2 and 4."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    run_dir = tmp_path_factory.mktemp("one_process")
    args = train_args(tiny_prepared, run_dir, "trainer.accum_steps=2", "trainer.max_steps=4")
    result = run_main("nmt.train", *args)
    torch.set_num_threads(threads)
    assert result.returncode == 0, result.stderr
    return run_dir


def test_two_ranks_match_one_process_and_resume_in_one(one_process, tiny_prepared, tmp_path):
    cwd, run_dir = tmp_path / "cwd", tmp_path / "ddp"
    cwd.mkdir()
    args = train_args(tiny_prepared, run_dir, "trainer.distributed=true", "trainer.max_steps=2")
    result = torchrun(args, cwd)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    ddp = load(run_dir / "checkpoints" / "last.pt")
    assert (ddp["world_size"], len(ddp["rng"]), ddp["progress"]["step"]) == (2, 2, 2)
    assert ddp["progress"]["batches_in_epoch"] == 4  # counted over both ranks
    assert_same_parameters(
        ddp["model"], load(one_process / "checkpoints" / "step0000002.pt")["model"]
    )

    # only rank 0 wrote, and only into the run dir
    assert list(cwd.iterdir()) == []
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        "best.pt",
        "last.pt",
        "step0000002.pt",
    ]
    writers = {
        re.search(r"\.(\d+)\.\d+$", p.name).group(1) for p in (run_dir / "tensorboard").iterdir()
    }
    assert len(writers) == 1  # one process id in the event file names
    assert len((run_dir / "validations.jsonl").read_text().splitlines()) == 1
    log = (run_dir / "train.log").read_text()
    assert log.count("effective batch ≤ 1,024 tokens per optimiser step") == 1
    assert "trainer.accum_steps=1 × 2 ranks" in log

    # resumed in one process with accumulation: the run continues as the one-process run did
    resume = ["trainer.accum_steps=2", "trainer.max_steps=4", "trainer.resume=true"]
    result = run_main("nmt.train", *train_args(tiny_prepared, run_dir, *resume))
    assert result.returncode == 0, result.stderr
    assert "resume: 2 ranks saved, 1 now: RNG reseeded" in (run_dir / "train.log").read_text()
    resumed = load(run_dir / "checkpoints" / "last.pt")
    assert resumed["progress"]["step"] == 4
    assert_same_parameters(resumed["model"], load(one_process / "checkpoints" / "last.pt")["model"])


def test_distributed_without_torchrun_is_one_line(tmp_path, monkeypatch):
    for name in TORCHRUN_VARS:
        monkeypatch.delenv(name, raising=False)
    result = run_main(
        "nmt.train",
        "trainer.distributed=true",
        "trainer.max_steps=1",
        f"hydra.run.dir={quote(tmp_path)}",
    )
    assert result.returncode == 2
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1
    assert message.startswith("error: trainer.distributed=true needs torchrun's environment")
    assert "torchrun --nproc_per_node=N -m nmt.train trainer.distributed=true" in message


def test_several_processes_without_distributed_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    result = run_main("nmt.train", "trainer.max_steps=1", f"hydra.run.dir={quote(tmp_path)}")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: launched as one of 2 processes (WORLD_SIZE=2) but trainer.distributed=false: "
        "add trainer.distributed=true"
    )
