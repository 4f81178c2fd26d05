"""Checkpoint averaging: the element-wise mean of the weights of the last k checkpoints.

The mean of the weights along the end of a run usually decodes better than any single one of
them (Vaswani et al. 2017, §6.1; fairseq's ``average_checkpoints.py``):

    θ̄ = (1/k) Σ_{i=1..k} θ_i

Floating-point tensors of the ``model`` state dicts are averaged (summed in float64, stored in
their own dtype); integer buffers are taken from the last checkpoint. Everything else — config,
vocabulary, progress, optimiser state — is the last checkpoint's; its model card gets
``averaged_from`` (the inputs) and a new ``created``, and keeps the last checkpoint's validation
only as ``validation_of_last`` when more than one was averaged (it scored other weights), so the result loads like any checkpoint (``nmt.models.checkpoint.load_for_inference``,
``python -m nmt.translate ckpt=…``). The trainer writes ``checkpoints/averaged.pt`` this way at
the end of a run with ``trainer.average_last=k``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from nmt.core.errors import NMTError
from nmt.models.card import card_of, utc_now
from nmt.models.checkpoint import load_checkpoint


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
    return {**last, "model": averaged, "card": averaged_card(card_of(last), paths)}


def averaged_card(card: dict[str, Any], paths: Sequence[str | Path]) -> dict[str, Any]:
    """The last input's card for the mean of ``paths`` (see the module's docstring)."""
    card = {**card, "created": utc_now(), "averaged_from": [str(p) for p in paths]}
    if len(paths) > 1 and card.get("validation"):
        card["validation_of_last"] = card.pop("validation")
    return card


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
