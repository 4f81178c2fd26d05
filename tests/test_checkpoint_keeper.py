"""nmt/training/keeper.py: which step checkpoints stay on disk (best-k by the early-stopping
metric, last-k, every validation), best.pt, last.pt and averaged.pt — without a trainer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nmt.models.checkpoint import load_checkpoint
from nmt.training.keeper import CheckpointKeeper, KeepPolicy, keep_newest, rank_checkpoints


def payload(step: int) -> dict:
    """A loadable checkpoint whose one weight is ``step``."""
    return {
        "model": {"w": torch.full((2,), float(step))},
        "progress": {"step": step},
        "config": {},
        "vocab": {"src_model": b"src", "tgt_model": b"tgt"},
    }


def run(keeper: CheckpointKeeper, scores: list[float]) -> tuple[list, list[str]]:
    """Validate with ``scores`` at steps 1, 2, …, writing what the keeper plans."""
    best: list = []
    recent: list[str] = []
    for step, score in enumerate(scores, start=1):
        plan = keeper.plan(best, recent, step, score)
        best, recent = plan.best, plan.recent
        keeper.write(plan, payload(step))
    return best, recent


def on_disk(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def test_best_k_and_last_k_stay_the_others_are_deleted(tmp_path):
    keeper = CheckpointKeeper(tmp_path, KeepPolicy(keep_best=2, keep_last=1))
    best, recent = run(keeper, [3.0, 5.0, 4.0, 1.0, 2.0])  # BLEU: higher is better
    assert best == [(5.0, "step0000002.pt"), (4.0, "step0000003.pt")]
    assert recent == ["step0000005.pt"]
    kept = {"step0000002.pt", "step0000003.pt", "step0000005.pt"}
    assert on_disk(tmp_path) == {"last.pt", "best.pt", *kept}
    assert load_checkpoint(tmp_path / "best.pt")["progress"]["step"] == 2
    assert load_checkpoint(tmp_path / "last.pt")["progress"]["step"] == 5


def test_a_loss_ranks_lowest_first_and_a_checkpoint_in_neither_list_is_never_written(tmp_path):
    keeper = CheckpointKeeper(tmp_path, KeepPolicy(keep_best=1, higher_is_better=False))
    plan = keeper.plan([(2.0, "step0000001.pt")], [], 2, 3.0)  # a worse loss
    assert (plan.write_step, plan.write_best, plan.delete) == (False, False, ["step0000002.pt"])
    best, _ = run(keeper, [2.0, 3.0, 1.0])
    assert best == [(1.0, "step0000003.pt")]
    assert on_disk(tmp_path) == {"last.pt", "best.pt", "step0000003.pt"}


def test_keep_every_validation_writes_and_keeps_them_all(tmp_path):
    keeper = CheckpointKeeper(tmp_path, KeepPolicy(keep_best=1, keep_every_validation=True))
    best, _ = run(keeper, [1.0, 3.0, 2.0])
    assert best == [(3.0, "step0000002.pt")]
    steps = {f"step000000{i}.pt" for i in (1, 2, 3)}
    assert on_disk(tmp_path) == {"last.pt", "best.pt", *steps}
    assert load_checkpoint(tmp_path / "best.pt")["progress"]["step"] == 2


def test_average_is_the_mean_of_the_newest_step_checkpoints(tmp_path):
    keeper = CheckpointKeeper(tmp_path, KeepPolicy(keep_best=1, keep_last=3, average_last=2))
    assert keeper.average() == []  # no step checkpoints yet: nothing written
    assert not (tmp_path / "averaged.pt").exists()
    run(keeper, [1.0, 2.0, 3.0])
    paths = keeper.average()
    assert [p.name for p in paths] == ["step0000002.pt", "step0000003.pt"]
    averaged = load_checkpoint(tmp_path / "averaged.pt")
    assert torch.equal(averaged["model"]["w"], torch.full((2,), 2.5))
    assert averaged["card"]["averaged_from"] == [str(p) for p in paths]


def test_write_last_writes_only_last_pt(tmp_path):
    CheckpointKeeper(tmp_path, KeepPolicy()).write_last(payload(7))
    assert on_disk(tmp_path) == {"last.pt"}


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_rank_checkpoints_breaks_ties_by_age(higher_is_better):
    best, dropped = rank_checkpoints([(1.0, "a")], 1.0, "b", 1, higher_is_better)
    assert (best, dropped) == ([(1.0, "a")], ["b"])


def test_keep_newest_with_keep_zero_drops_the_new_one():
    assert keep_newest(["a"], "b", 0) == ([], ["a", "b"])
