"""Where a training run keeps its files: the one spelling of the run-folder layout.

    RUN_DIR/
      .hydra/config.yaml          the composed config (what a sweep's table reads)
      train.log
      validations.jsonl           one JSON line per validation
      tensorboard/
      checkpoints/
        best.pt  last.pt  averaged.pt  step0000500.pt …

The trainer writes it; averaging, the comparison, the quality curve and the explorer read it.
"""

from __future__ import annotations

import re
from pathlib import Path

RUN_CONFIG = Path(".hydra") / "config.yaml"  # marks a folder as a run dir
CHECKPOINTS = "checkpoints"
BEST, LAST, AVERAGED = "best.pt", "last.pt", "averaged.pt"
VALIDATIONS = "validations.jsonl"
TENSORBOARD = "tensorboard"  # the events folder
STEP_CHECKPOINT = re.compile(r"step(\d+)\.pt")


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINTS


def checkpoint_path(run_dir: str | Path, name: str) -> Path:
    """``run_dir/checkpoints/name`` (``BEST``, ``LAST``, ``AVERAGED`` or a step checkpoint)."""
    return checkpoint_dir(run_dir) / name


def step_checkpoint_name(step: int) -> str:
    return f"step{step:07d}.pt"


def step_checkpoints(ckpt_dir: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every ``stepNNNNNNN.pt`` in ``ckpt_dir``, oldest first."""
    found = []
    for path in ckpt_dir.glob("step*.pt"):
        match = STEP_CHECKPOINT.fullmatch(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def newest_step_checkpoints(ckpt_dir: Path, k: int) -> list[Path]:
    """The ``k`` step checkpoints of ``ckpt_dir`` with the highest steps (fewer when fewer are
    there), oldest first."""
    return [path for _, path in step_checkpoints(ckpt_dir)[-k:]] if k > 0 else []


def checkpoint_of(run_dir: Path) -> Path | None:
    """The run's ``best.pt``, else its ``last.pt``; None when it has neither."""
    for name in (BEST, LAST):
        path = checkpoint_path(run_dir, name)
        if path.is_file():
            return path
    return None


def run_of_checkpoint(ckpt: Path) -> Path | None:
    """The run dir a checkpoint lies in (``RUN/checkpoints/x.pt`` → ``RUN``), else None."""
    return ckpt.parent.parent if ckpt.parent.name == CHECKPOINTS else None


def find_run_dirs(root: Path) -> list[Path]:
    """Every folder below ``root`` (itself included) that holds ``.hydra/config.yaml``, sorted."""
    return sorted(marker.parent.parent for marker in root.glob(f"**/{RUN_CONFIG}"))
