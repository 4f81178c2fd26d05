"""Which checkpoints a run keeps on disk, and writing them: :class:`CheckpointKeeper`.

After every validation the trainer writes ``last.pt`` and ``stepNNNNNNN.pt``; a step checkpoint
stays while it ranks among the best ``trainer.keep_best`` by the early-stopping metric or the
newest ``trainer.keep_last`` (with ``trainer.keep_every_validation``: always), and ``best.pt`` is
a copy of the best one. Files that drop out of both lists are deleted. At the end of a run with
``trainer.average_last=k``, ``averaged.pt`` is the mean of the newest k step checkpoints on disk
(:mod:`nmt.training.averaging`).

The two lists — (score, file) best first, and file names oldest first — live in the trainer's
``Progress``, so a resumed run continues them; the keeper gets them and returns the new ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nmt.core.run_dir import (
    AVERAGED,
    BEST,
    LAST,
    newest_step_checkpoints,
    step_checkpoint_name,
)
from nmt.models.checkpoint import save_checkpoint
from nmt.training.averaging import average_checkpoints
from nmt.training.settings import TrainerSettings

Ranked = list[tuple[float, str]]  # (validation score, file name), best first


def rank_checkpoints(
    best: Ranked, score: float, name: str, keep: int, higher_is_better: bool
) -> tuple[Ranked, list[str]]:
    """Add checkpoint ``name`` with its validation ``score`` to the ``best`` list.

    Returns the best ``keep`` entries, best first (on a tie the older checkpoint ranks first),
    and the names of the checkpoints that dropped out of the list (possibly ``name`` itself).
    """
    ranked = sorted([*best, (score, name)], key=lambda e: -e[0] if higher_is_better else e[0])
    return ranked[:keep], [n for _, n in ranked[keep:]]


def keep_newest(recent: list[str], name: str, keep: int) -> tuple[list[str], list[str]]:
    """Add checkpoint ``name`` to the ``recent`` list (oldest first) and keep the newest ``keep``.

    Returns the new list and the names that dropped out of it (possibly ``name`` itself).
    """
    window = [*recent, name]
    cut = max(len(window) - keep, 0)
    return window[cut:], window[:cut]


@dataclass(frozen=True)
class KeepPolicy:
    """``trainer.keep_best``, ``keep_last``, ``keep_every_validation``, ``average_last``, and
    whether a higher score is better (every early-stopping metric but the loss)."""

    keep_best: int = 3
    keep_last: int = 0
    keep_every_validation: bool = False
    average_last: int = 0
    higher_is_better: bool = True

    @classmethod
    def from_settings(cls, t: TrainerSettings) -> KeepPolicy:
        """From the ``trainer`` settings."""
        return cls(
            t.keep_best,
            t.keep_last,
            t.keep_every_validation,
            t.average_last,
            higher_is_better=t.early_stopping_metric != "loss",
        )


@dataclass(frozen=True)
class KeepPlan:
    """What to write and delete after the validation of one step."""

    name: str  # stepNNNNNNN.pt of the step
    best: Ranked  # the new best list
    recent: list[str]  # the new newest list
    write_step: bool  # write ``name``
    write_best: bool  # it is the best: copy it to best.pt
    delete: list[str]  # step checkpoints that dropped out of both lists


class CheckpointKeeper:
    """Plans (:meth:`plan`) and writes (:meth:`write`, :meth:`write_last`, :meth:`average`) the
    checkpoints of ``ckpt_dir`` by a :class:`KeepPolicy`. Writing is rank 0's."""

    def __init__(self, ckpt_dir: Path, policy: KeepPolicy):
        self.ckpt_dir = Path(ckpt_dir)
        self.policy = policy

    def plan(self, best: Ranked, recent: list[str], step: int, score: float) -> KeepPlan:
        """Rank the checkpoint of ``step`` (validation ``score``) into the two lists."""
        k, name = self.policy, step_checkpoint_name(step)
        best, dropped = rank_checkpoints(best, score, name, k.keep_best, k.higher_is_better)
        recent, expired = keep_newest(recent, name, k.keep_last)
        kept = {n for _, n in best} | set(recent)
        gone = list(dict.fromkeys(n for n in dropped + expired if n not in kept))  # once each
        return KeepPlan(
            name=name,
            best=best,
            recent=recent,
            write_step=name in kept or k.keep_every_validation,
            write_best=best[0][1] == name,
            delete=[] if k.keep_every_validation else gone,
        )

    def write(self, plan: KeepPlan, payload: dict[str, Any]) -> None:
        """The step checkpoint and best.pt as ``plan`` says, last.pt, then the deletions."""
        if plan.write_step:
            save_checkpoint(self.ckpt_dir / plan.name, payload)
        if plan.write_best:
            save_checkpoint(self.ckpt_dir / BEST, payload)
        self.write_last(payload)
        for old in plan.delete:
            (self.ckpt_dir / old).unlink(missing_ok=True)

    def write_last(self, payload: dict[str, Any]) -> None:
        save_checkpoint(self.ckpt_dir / LAST, payload)

    def average(self) -> list[Path]:
        """Write averaged.pt, the mean of the newest ``average_last`` step checkpoints on disk;
        return their paths, oldest first (none: nothing written)."""
        paths = newest_step_checkpoints(self.ckpt_dir, self.policy.average_last)
        if paths:
            save_checkpoint(self.ckpt_dir / AVERAGED, average_checkpoints(paths))
        return paths
