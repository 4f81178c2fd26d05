"""Checkpoint averaging: the element-wise mean of the weights of the last k checkpoints.

    nmt-average run_dir=RUN last=5               # → RUN/checkpoints/averaged.pt
    nmt-average ckpts=[a.pt,b.pt] out=avg.pt     # or python -m nmt.average …

The mean of the weights along the end of a run usually decodes better than any single one of
them (Vaswani et al. 2017, §6.1; fairseq's ``average_checkpoints.py``):

    θ̄ = (1/k) Σ_{i=1..k} θ_i

Floating-point tensors of the ``model`` state dicts are averaged (summed in float64, stored in
their own dtype); integer buffers are taken from the last checkpoint. Everything else — config,
vocabulary, progress, optimiser state — is the last checkpoint's, and ``averaged_from`` lists the
inputs, so the result loads like any checkpoint (``nmt.models.checkpoint.load_for_inference``,
``python -m nmt.translate ckpt=…``). The trainer writes ``checkpoints/averaged.pt`` this way at
the end of a run with ``trainer.average_last=k``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig

import nmt.config.resolvers  # noqa: F401  (the resolvers configs/ uses)
from nmt.config.schema import AverageConfig
from nmt.core.errors import NMTError, exit_on_user_error, str_list
from nmt.core.paths import CONFIG_DIR
from nmt.core.settings import load_settings
from nmt.models.checkpoint import load_checkpoint, save_checkpoint

STEP_CHECKPOINT = re.compile(r"step(\d+)\.pt")


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


def average_checkpoints(paths: Sequence[str | Path]) -> dict[str, Any]:
    """The last checkpoint of ``paths`` with its ``model`` weights replaced by the mean over all.

    Checkpoints are read one at a time (memory: one checkpoint plus a float64 sum of the model).
    Raises NMTError when the model state dicts differ in their keys or shapes, or the
    vocabularies differ, naming the file and the key.
    """
    if not paths:
        raise NMTError("no checkpoints to average")
    first_path, first = Path(paths[0]), load_checkpoint(paths[0])
    reference: dict[str, torch.Tensor] = first["model"]
    total = {k: v.double() for k, v in reference.items() if v.is_floating_point()}
    last = first
    for path in paths[1:]:
        last = load_checkpoint(path)
        check_same_architecture(first_path, first, Path(path), last)
        for key in total:
            total[key] += last["model"][key].double()

    averaged: dict[str, torch.Tensor] = {}
    shared: dict[tuple, torch.Tensor] = {}  # a tied matrix stays one tensor under both names
    for key, tensor in last["model"].items():
        value = (total[key] / len(paths)).to(tensor.dtype) if key in total else tensor
        averaged[key] = shared.setdefault(storage_key(tensor), value)
    return {**last, "model": averaged, "averaged_from": [str(p) for p in paths]}


def storage_key(tensor: torch.Tensor) -> tuple:
    return (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))


def check_same_architecture(
    ref_path: Path, ref: dict[str, Any], path: Path, other: dict[str, Any]
) -> None:
    """One line naming the file and key where ``other`` cannot be averaged with ``ref``."""
    a, b = ref["model"], other["model"]
    missing, extra = sorted(a.keys() - b.keys()), sorted(b.keys() - a.keys())
    if missing or extra:
        what = f"lacks {missing[0]!r}" if missing else f"has {extra[0]!r}, which {ref_path} lacks"
        raise NMTError(
            f"{path}: model {what} ({len(missing)} missing, {len(extra)} extra keys): "
            "checkpoints of different architectures cannot be averaged"
        )
    for key, tensor in a.items():
        if b[key].shape != tensor.shape or b[key].is_floating_point() != tensor.is_floating_point():
            raise NMTError(
                f"{path}: model key {key!r} is {b[key].dtype} {tuple(b[key].shape)}, but "
                f"{tensor.dtype} {tuple(tensor.shape)} in {ref_path}: checkpoints of different "
                "architectures cannot be averaged"
            )
    for side in ("src_model", "tgt_model"):
        if ref["vocab"][side] != other["vocab"][side]:
            raise NMTError(
                f"{path}: vocab {side} differs from {ref_path}'s: checkpoints trained with "
                "different SentencePiece models cannot be averaged"
            )


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------


def inputs_of(cfg: DictConfig) -> tuple[list[Path], Path]:
    """The checkpoints to average and where the mean goes: ``ckpts`` and ``out``, or the ``last``
    newest step checkpoints of ``run_dir`` (by default into its ``checkpoints/averaged.pt``)."""
    if (cfg.ckpts is None) == (cfg.run_dir is None):
        raise NMTError(
            "give either ckpts=[A.pt,B.pt,...] out=PATH, or run_dir=RUN last=K "
            f"(got {'both' if cfg.ckpts is not None else 'neither'})"
        )
    last = load_settings(AverageConfig, cfg).last
    if cfg.ckpts is not None:
        if last is not None:
            raise NMTError("last: goes with run_dir=RUN, not with ckpts=[...]")
        if cfg.out is None:
            raise NMTError("ckpts: needs out=PATH, where to write the average")
        return [Path(p) for p in str_list(cfg.ckpts, "ckpts")], Path(cfg.out)
    if last is None:
        raise NMTError("run_dir: needs last=K (K >= 1), how many step checkpoints to average")
    ckpt_dir = Path(cfg.run_dir) / "checkpoints"
    if not ckpt_dir.is_dir():
        raise NMTError(f"run_dir: {ckpt_dir}: no such directory; give a training run's folder")
    paths = newest_step_checkpoints(ckpt_dir, last)
    if len(paths) < last:
        raise NMTError(
            f"{ckpt_dir}: {len(paths)} step checkpoints (stepNNNNNNN.pt), last={last} "
            "asked; train with trainer.keep_last=K or trainer.keep_every_validation=true"
        )
    return paths, Path(cfg.out) if cfg.out is not None else ckpt_dir / "averaged.pt"


@hydra.main(config_path=str(CONFIG_DIR), config_name="average", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    paths, output = inputs_of(cfg)
    payload = average_checkpoints(paths)
    save_checkpoint(output, payload)
    print(f"wrote {output}: the mean of {len(paths)} checkpoints ({', '.join(map(str, paths))})")


if __name__ == "__main__":
    main()
