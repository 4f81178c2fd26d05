"""Summary statistics of attention matrices, for comparing attention variants.

Each matrix is (tgt_len, src_len): row i holds the weights target step i put on the source.

* entropy: mean over target steps of −Σⱼ wᵢⱼ log wᵢⱼ (nats). 0 = every step looks at one
  source token; log(src_len) = uniform attention.
* diagonal_mass: mean over steps of the weight within ±max(1, 10% of src_len) positions of the
  diagonal position j* = i·src_len/tgt_len. Near 1 for monotone, aligned attention.
* coverage_deviation: mean over source tokens of |cᵢ − 1|, where cⱼ = Σᵢ wᵢⱼ·src_len/tgt_len is
  the attention token j received, rescaled so that 1 means "its fair share". 0 = every source
  token attended equally in total; large = some tokens ignored, others attended repeatedly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

STATISTICS = ("attn_entropy", "attn_diagonal_mass", "attn_coverage_deviation")  # the keys returned


def attention_statistics(matrices: Sequence[torch.Tensor]) -> dict[str, float]:
    entropies, diagonal, coverage = [], [], []
    for attn in matrices:
        if attn.numel() == 0:
            continue
        attn = attn.float()
        tgt_len, src_len = attn.shape
        entropies.append(float(-(attn * attn.clamp_min(1e-12).log()).sum(-1).mean()))
        rows = torch.arange(tgt_len, dtype=torch.float32).unsqueeze(1)  # (tgt_len, 1)
        cols = torch.arange(src_len, dtype=torch.float32).unsqueeze(0)  # (1, src_len)
        band = max(1.0, 0.1 * src_len)
        near = (cols - rows * src_len / tgt_len).abs() <= band  # (tgt_len, src_len)
        diagonal.append(float((attn * near).sum(-1).mean()))
        received = attn.sum(0) * src_len / tgt_len  # (src_len,)
        coverage.append(float((received - 1).abs().mean()))
    if not entropies:
        return {}
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    return dict(zip(STATISTICS, map(mean, (entropies, diagonal, coverage)), strict=True))
