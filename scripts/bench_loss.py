"""Forward + backward time of the training loss at enko's batch shapes: F.cross_entropy against
nmt.models.loss.sequence_loss (same value and gradient, fused backward), interleaved, median of 5.

    python scripts/bench_loss.py
"""

import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from nmt.core.runtime import keep_freed_memory  # noqa: E402
from nmt.core.special_ids import PAD_ID  # noqa: E402
from nmt.models.loss import sequence_loss  # noqa: E402


def reference(logits: torch.Tensor, tgt_out: torch.Tensor, smoothing: float) -> torch.Tensor:
    return F.cross_entropy(
        logits.reshape(-1, logits.size(-1)).float(),
        tgt_out.reshape(-1),
        ignore_index=PAD_ID,
        reduction="sum",
        label_smoothing=smoothing,
    )


def main() -> None:
    keep_freed_memory(torch.device("cpu"))  # as in training: the (N, V) tensors reuse freed memory
    # (batch, tgt_len) of a 4,096-token enko batch: ~119 sentences padded to ~33 targets
    for name, vocab, smoothing in (("joeynmt_ref", 8000, 0.0), ("default", 4000, 0.1)):
        logits = torch.randn(119, 33, vocab, requires_grad=True)
        tgt_out = torch.randint(PAD_ID + 1, vocab, (119, 33))
        tgt_out[:, 29:] = PAD_ID
        times: dict[str, list[float]] = {"F.cross_entropy": [], "nmt.models.loss": []}
        for _ in range(7):
            for label, loss_fn in (
                ("F.cross_entropy", reference),
                ("nmt.models.loss", sequence_loss),
            ):
                start = time.perf_counter()
                loss_fn(logits, tgt_out, smoothing).backward()
                times[label].append(time.perf_counter() - start)
                logits.grad = None
        medians = {k: f"{1000 * statistics.median(v[2:]):.0f} ms" for k, v in times.items()}
        print(
            f"{name} (V={vocab}, label smoothing {smoothing}, {torch.get_num_threads()} threads): {medians}"
        )


if __name__ == "__main__":
    main()
