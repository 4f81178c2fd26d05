"""What a model file says about itself: a checkpoint's or an exported folder's model card.

``nmt-info`` prints :func:`describe_model`; ``/v1/model`` and the explorer show the same card
through :class:`~nmt.inference.translator.ModelInfo`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nmt.inference.onnx_backend import read_manifest
from nmt.models.card import card_of, format_version
from nmt.models.checkpoint import load_checkpoint


def describe_model(path: str | Path) -> dict[str, Any]:
    """``{source, kind, format_version, slim, bytes, card, config}`` of a checkpoint file or an
    ``nmt-export`` folder (its manifest's copy of the checkpoint's card). ``format_version`` is
    the file's; a checkpoint of an older format is described as it loads, migrated
    (``card.migrated_from_format`` says so)."""
    path = Path(path)
    if path.is_dir():
        manifest = read_manifest(path)
        source = manifest.get("source") or {}
        return {
            "source": str(path),
            "kind": "exported folder",
            "format_version": source.get("format_version"),
            "slim": True,
            "bytes": sum(f.stat().st_size for f in path.iterdir() if f.is_file()),
            "exported_from": source.get("checkpoint"),
            "card": manifest.get("card") or {},
            "config": manifest["config"],
        }
    checkpoint = load_checkpoint(path)
    card = card_of(checkpoint)
    return {
        "source": str(path),
        "kind": "checkpoint",
        "format_version": card.get("migrated_from_format") or format_version(checkpoint),
        "slim": bool(checkpoint.get("slim")),
        "bytes": path.stat().st_size,
        "card": card,
        "config": checkpoint["config"],
    }
