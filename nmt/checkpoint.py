"""Checkpoints: one dict per file, written atomically, loaded with ``weights_only=True``.

A checkpoint holds everything needed to continue a run exactly or to translate with it:

    model, optimizer, schedule      state dicts
    rng                             torch (CPU and CUDA) and Python RNG states
    progress                        step, epoch, batches done in the epoch, early-stopping state
    config                          the resolved config of the run (a plain dict)
    vocab                           the SentencePiece models' paths and bytes

It contains only tensors, plain containers, numbers, strings and bytes, so the safe
``torch.load(weights_only=True)`` reads it: loading a checkpoint never runs pickled code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import DictConfig, OmegaConf

from nmt.data.vocab import Vocab
from nmt.errors import NMTError

if TYPE_CHECKING:
    from nmt.models import Seq2Seq


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` via a temporary file, so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise NMTError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # a truncated or foreign file
        # torch's messages run over several lines (weights_only's advice): keep the first sentence
        detail = str(err).strip().splitlines()[0].split(". ")[0] if str(err).strip() else ""
        raise NMTError(
            f"{path}: not a readable nmt checkpoint ({type(err).__name__}: {detail})"
        ) from None


def load_model_state(model: torch.nn.Module, state: dict[str, Any], path: str | Path) -> None:
    """``model.load_state_dict(state)``, or one line naming the checkpoint when they do not fit
    (a checkpoint from another version of the model code)."""
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        detail = " ".join(str(err).split())
        raise NMTError(
            f"{path}: its weights do not fit the model this code builds from its config ({detail})"
        ) from None


def vocab_payload(src_vocab: Vocab, tgt_vocab: Vocab) -> dict[str, Any]:
    return {
        "src_path": str(src_vocab.path),
        "tgt_path": str(tgt_vocab.path),
        "src_model": src_vocab.model_bytes(),
        "tgt_model": tgt_vocab.model_bytes(),
    }


def vocabs_from(checkpoint: dict[str, Any]) -> tuple[Vocab, Vocab]:
    v = checkpoint["vocab"]
    return Vocab(model_proto=v["src_model"]), Vocab(model_proto=v["tgt_model"])


def model_from_checkpoint(
    checkpoint: dict[str, Any], path: str | Path, device: str | torch.device = "cpu"
) -> tuple[Seq2Seq, Vocab, Vocab, DictConfig]:
    """``(model, src_vocab, tgt_vocab, cfg)`` from a loaded checkpoint, the model in eval mode
    on ``device``; ``path`` names the file in errors."""
    from nmt.models import build_model

    cfg: DictConfig = OmegaConf.create(checkpoint["config"])
    src_vocab, tgt_vocab = vocabs_from(checkpoint)
    model = build_model(cfg.model, len(src_vocab), len(tgt_vocab))
    load_model_state(model, checkpoint["model"], path)
    model.to(device).eval()
    return model, src_vocab, tgt_vocab, cfg


def load_for_inference(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[Seq2Seq, Vocab, Vocab, DictConfig]:
    """Return ``(model, src_vocab, tgt_vocab, cfg)`` from a checkpoint, the model in eval mode."""
    return model_from_checkpoint(load_checkpoint(path, map_location=device), path, device)
