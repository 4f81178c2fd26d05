"""The training objective."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nmt.data.vocab import PAD_ID


def sequence_loss(
    logits: torch.Tensor, tgt_out: torch.Tensor, label_smoothing: float
) -> torch.Tensor:
    """Summed cross-entropy over real target tokens.  logits (batch, tgt_len, V), tgt_out (batch, tgt_len)."""
    return F.cross_entropy(
        logits.reshape(-1, logits.size(-1)).float(),
        tgt_out.reshape(-1),
        ignore_index=PAD_ID,
        reduction="sum",
        label_smoothing=label_smoothing,
    )
