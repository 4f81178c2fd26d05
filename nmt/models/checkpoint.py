"""Checkpoints: one dict per file, written atomically, loaded with ``weights_only=True``.

A checkpoint holds everything needed to continue a run exactly or to translate with it:

    model, optimizer, schedule      state dicts
    rng                             torch (CPU and CUDA) and Python RNG states
    progress                        step, epoch, batches done in the epoch, early-stopping state
    config                          the resolved config of the run (a plain dict)
    vocab                           the SentencePiece models' paths and bytes
    format_version, card            the format (2) and the model card (:mod:`nmt.models.card`)

It contains only tensors, plain containers, numbers, strings and bytes, so the safe
``torch.load(weights_only=True)`` reads it: loading a checkpoint never runs pickled code.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from nmt.core.errors import NMTError
from nmt.core.io import write_atomic, write_error
from nmt.core.settings import load_settings
from nmt.data.vocab import Vocab
from nmt.models.card import migrate_checkpoint
from nmt.models.seq2seq import ModelSettings, build_model

if TYPE_CHECKING:
    from nmt.models import Seq2Seq


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` durably and atomically (:func:`nmt.core.io.write_atomic`): a crash
    never leaves half a file, and a full disk is one line naming the file, the old one intact."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise write_error(path, err) from None
    write_atomic(path, lambda f: torch.save(payload, f))


INFERENCE_KEYS = ("model", "config", "vocab")  # what translating with a checkpoint needs
TRAINING_KEYS = ("optimizer", "schedule", "scaler", "progress", "rng", "world_size")  # resuming
# what a slim checkpoint keeps beside INFERENCE_KEYS: what it says about itself (nmt-info, /v1/model)
DESCRIPTIVE_KEYS = ("format_version", "card")
PROGRESS_SUMMARY = ("step", "minutes", "best_score")


def slim_checkpoint(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """``checkpoint`` for shipping: the weights, config and vocabularies a translation needs, what
    it says about itself (its model card, its step, minutes and best score) and ``slim: True`` — no optimiser, schedule or RNG state (Adam's two moments alone
    are twice the weights). It loads wherever a checkpoint does, except as ``trainer.resume``."""
    keep = (*INFERENCE_KEYS, *DESCRIPTIVE_KEYS)
    slim = {key: checkpoint[key] for key in keep if key in checkpoint}
    progress = checkpoint.get("progress") or {}
    slim["progress"] = {key: progress[key] for key in PROGRESS_SUMMARY if key in progress}
    slim["slim"] = True
    return slim


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", keys: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Read an nmt checkpoint safely; one line naming ``path`` when it is not one.

    The file must be a dict holding :data:`INFERENCE_KEYS` and ``keys`` (e.g.
    :data:`TRAINING_KEYS` to resume). A file that would run pickled code is refused unread.
    A checkpoint of an older format is migrated in memory (:func:`nmt.models.card.migrate_checkpoint`).
    """
    path = Path(path)
    if not path.is_file():
        raise NMTError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise NMTError(f"{path}: {unpickling_problem(err)}") from None
    except Exception as err:  # an empty, truncated or damaged file
        raise NMTError(f"{path}: not a readable nmt checkpoint ({damage(err)})") from None
    check_checkpoint(checkpoint, path, keys)
    return migrate_checkpoint(checkpoint, path)


def unpickling_problem(err: pickle.UnpicklingError) -> str:
    """What ``torch.load(weights_only=True)`` refused, without torch's advice to load unsafely."""
    if "GLOBAL" in str(err).upper():
        return (
            "refused: it holds pickled Python objects (classes or functions), which an nmt "
            "checkpoint never does and which could run code; nothing in it was loaded"
        )
    return "not a checkpoint file (neither torch's zip format nor a pickle)"


def damage(err: Exception) -> str:
    if isinstance(err, EOFError):
        return "the file is empty or cut short"
    if "central directory" in str(err) or "zip archive" in str(err):
        return "a truncated or damaged zip archive"
    return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}".rstrip(": ")


def check_checkpoint(checkpoint: Any, path: Path, keys: tuple[str, ...] = ()) -> None:
    """Raise one line unless ``checkpoint`` is a dict holding :data:`INFERENCE_KEYS` (dicts) and
    ``keys``."""
    expected = f"expected a dict with keys {', '.join(INFERENCE_KEYS)} (what nmt.train writes)"
    if not isinstance(checkpoint, dict):
        raise NMTError(f"{path}: not an nmt checkpoint: {expected}; found a {describe(checkpoint)}")
    missing = [k for k in INFERENCE_KEYS if k not in checkpoint]
    if missing:
        raise NMTError(
            f"{path}: not an nmt checkpoint: {expected}; found a dict with keys "
            f"{', '.join(map(str, list(checkpoint)[:6])) or '(none)'}, without {', '.join(missing)}"
        )
    for key in INFERENCE_KEYS:
        if not isinstance(checkpoint[key], dict):
            raise NMTError(
                f"{path}: not an nmt checkpoint: its {key!r} is a {describe(checkpoint[key])}, "
                "expected a dict"
            )
    missing = [k for k in keys if k not in checkpoint]
    if missing and checkpoint.get("slim"):
        raise NMTError(
            f"{path}: a slim checkpoint (weights, config and vocabularies for translating, "
            "written by nmt-average slim=true) cannot be resumed: resume from the run's "
            "checkpoints/last.pt"
        )
    if missing:
        raise NMTError(
            f"{path}: holds weights but not the training state to continue from "
            f"(no {', '.join(missing)}); resume from a checkpoint that nmt.train wrote"
        )


def describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor of shape {tuple(value.shape)}"
    return type(value).__name__


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
) -> tuple[Seq2Seq, Vocab, Vocab, dict[str, Any]]:
    """``(model, src_vocab, tgt_vocab, config)`` from a loaded checkpoint, the model in eval
    mode on ``device``, ``config`` the run's config as the checkpoint stores it (a plain dict);
    ``path`` names the file in errors."""
    config = checkpoint["config"]
    # the stored config is parsed once, here, where it is read from the file
    try:
        model_settings = load_settings(ModelSettings, config.get("model"), "model")
    except NMTError as err:
        raise NMTError(f"{path}: its stored config: {err}") from None
    src_vocab, tgt_vocab = vocabs_from(checkpoint)
    model = build_model(model_settings, len(src_vocab), len(tgt_vocab))
    load_model_state(model, checkpoint["model"], path)
    model.to(device).eval()
    return model, src_vocab, tgt_vocab, config


def load_for_inference(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[Seq2Seq, Vocab, Vocab, dict[str, Any]]:
    """Return ``(model, src_vocab, tgt_vocab, config)`` from a checkpoint, the model in eval mode."""
    return model_from_checkpoint(load_checkpoint(path, map_location=device), path, device)
