"""The parity grid of ONNX export: every encoder × score × decoder style × input feeding, at
tiny size, exported and checked against eager PyTorch (:mod:`nmt.inference.onnx_export`).

Used by tests/test_export.py (one test per combination) and by scripts/export_parity.py (the
parity table of docs/export.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from nmt.core.settings import load_settings
from nmt.inference.onnx_export import export_model
from nmt.models import SCORES, Seq2Seq, build_model
from nmt.models.seq2seq import ModelSettings

PARITY_ENCODERS = ("gru", "lstm")
PARITY_SCORES = tuple(SCORES)  # every registered score function
PARITY_DECODERS = (("luong", True), ("luong", False), ("bahdanau", False))
TINY_MAX_SRC_LEN = 10  # location: shorter than the longest checked source (13)


def tiny_model_config(
    rnn_type: str, score: str, style: str, input_feeding: bool, **decoder: Any
) -> dict[str, Any]:
    """A tiny model of the grid: 2-layer bidirectional encoder (8 per direction), 2-layer
    decoder of 12 (≠ 16, so dot and scaled_dot project their keys), tied embeddings of 8."""
    sizes = {"max_src_len": TINY_MAX_SRC_LEN}  # any other size a score declares: 8
    attention: dict[str, Any] = {"score": score}
    for key, kind in SCORES[score].config_keys.items():
        attention[key] = sizes.get(key, 8) if kind is int else False
    return {
        "encoder": {
            "rnn_type": rnn_type,
            "embed_dim": 8,
            "hidden_size": 8,
            "num_layers": 2,
            "bidirectional": True,
            "dropout": 0.1,
        },
        "attention": attention,
        "decoder": {
            "style": style,
            "rnn_type": rnn_type,
            "embed_dim": 8,
            "hidden_size": 12,
            "num_layers": 2,
            "dropout": 0.1,
            "input_feeding": input_feeding,
            "bridge": True,
            **decoder,
        },
        "tie_embeddings": True,
    }


def parity_grid() -> list[tuple[str, str, str, bool]]:
    """(encoder, score, style, input_feeding) for every combination: 2 × 5 × 3 = 30 with the
    five built-in scores."""
    return [
        (rnn, score, style, feeding)
        for rnn in PARITY_ENCODERS
        for score in PARITY_SCORES
        for style, feeding in PARITY_DECODERS
    ]


def tiny_model(model_cfg: dict[str, Any], seed: int = 0) -> Seq2Seq:
    """A random model of 30 source and 40 target ids, in eval mode.

    Every parameter is drawn from N(0, 0.5²) rather than the small initialisation, so that
    logits spread over several nats and attention is far from uniform: a wrong score, gate or
    mask then shows in the log-probabilities instead of hiding under near-equal values.
    """
    torch.manual_seed(seed)
    model = build_model(load_settings(ModelSettings, model_cfg, "model"), 30, 40).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.5)
    return model


def tiny_parity(
    model_cfg: dict[str, Any], folder: Path, exporter: str = "legacy", seed: int = 0
) -> dict[str, Any]:
    """Export :func:`tiny_model` into ``folder`` and return the parity :func:`export_model`
    measured (NMTError past the tolerance)."""
    model = tiny_model(model_cfg, seed)
    opset = 18 if exporter == "dynamo" else 17
    return export_model(model, folder, {"model": model_cfg}, exporter, opset)["parity"]
