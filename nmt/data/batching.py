"""Token-budget batches of similar-length sentences.

Sentences are grouped into buckets by source length, so a batch holds sentences of nearly equal
length and little padding. A batch is filled until ``batch_size × longest side`` would exceed
``max_tokens`` (padding counts: it costs compute). Every epoch the order inside buckets and the
order of batches are shuffled with ``seed + epoch``, so runs are reproducible and resumable.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from nmt.core.settings import setting
from nmt.core.special_ids import EOS_ID, PAD_ID


@dataclass(frozen=True, kw_only=True)
class BatchingSettings:
    max_tokens: int = setting(ge=1)  # source or target subwords per batch, padding included
    bucket_width: int = setting(ge=1)
    seed: int = setting()


@dataclass
class Batch:
    """A padded batch. Masks follow one convention everywhere: True marks a real token."""

    src: torch.Tensor  # (batch, src_len) source ids ending in </s>
    src_lengths: torch.Tensor  # (batch,)
    tgt_in: torch.Tensor  # (batch, tgt_len) <s> y1 … yn
    tgt_out: torch.Tensor  # (batch, tgt_len) y1 … yn </s>
    indices: list[int]  # positions of these sentences in their split

    @property
    def num_tgt_tokens(self) -> int:
        return int((self.tgt_out != PAD_ID).sum())

    @property
    def num_src_tokens(self) -> int:
        return int(self.src_lengths.sum())

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            src=self.src.to(device, non_blocking=True),
            src_lengths=self.src_lengths.to(device, non_blocking=True),
            tgt_in=self.tgt_in.to(device, non_blocking=True),
            tgt_out=self.tgt_out.to(device, non_blocking=True),
            indices=self.indices,
        )


def pad(seqs: Sequence[Sequence[int]]) -> torch.Tensor:
    """Stack id lists into a (len(seqs), longest) tensor, right-padded with PAD_ID."""
    out = torch.full((len(seqs), max(len(s) for s in seqs)), PAD_ID, dtype=torch.long)
    for row, seq in enumerate(seqs):
        out[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
    return out


def collate(
    src: Sequence[Sequence[int]], tgt: Sequence[Sequence[int]], indices: list[int]
) -> Batch:
    """Build a Batch from source ids (… </s>) and target ids (<s> … </s>)."""
    tgt_tensor = pad(tgt)
    return Batch(
        src=pad(src),
        src_lengths=torch.tensor([len(s) for s in src], dtype=torch.long),
        tgt_in=tgt_tensor[:, :-1].masked_fill(tgt_tensor[:, :-1] == EOS_ID, PAD_ID).contiguous(),
        tgt_out=tgt_tensor[:, 1:].contiguous(),
        indices=indices,
    )


class TokenBatcher:
    """Length-bucketed, token-budget batching over one split."""

    def __init__(
        self,
        src: Sequence[Sequence[int]],
        tgt: Sequence[Sequence[int]],
        max_tokens: int,
        bucket_width: int = 1,
        seed: int = 0,
        shuffle: bool = True,
    ):
        self.src, self.tgt = src, tgt
        self.max_tokens = max_tokens
        self.bucket_width = max(1, bucket_width)
        self.seed = seed
        self.shuffle = shuffle

    def _batch_indices(self, epoch: int) -> list[list[int]]:
        rng = random.Random(self.seed + epoch)
        order = list(range(len(self.src)))
        if self.shuffle:
            rng.shuffle(order)  # ties inside a bucket fall in a fresh order every epoch
        # Stable sort: by source bucket, then by target length inside it.
        order.sort(key=lambda i: (len(self.src[i]) // self.bucket_width, len(self.tgt[i])))
        batches: list[list[int]] = []
        current: list[int] = []
        longest = 0
        for i in order:
            length = max(len(self.src[i]), len(self.tgt[i]))
            if current and (len(current) + 1) * max(longest, length) > self.max_tokens:
                batches.append(current)
                current, longest = [], 0
            current.append(i)
            longest = max(longest, length)
        if current:
            batches.append(current)
        if self.shuffle:
            rng.shuffle(batches)
        return batches

    def epoch(self, epoch: int, rank: int = 0, world_size: int = 1) -> Iterator[Batch]:
        """The batches of one epoch; with several ranks, this rank's disjoint share.

        Every rank computes the same shuffled batch list (same seed) and takes every
        ``world_size``-th batch; the last few batches are dropped so that each rank gets the
        same number of steps.
        """
        batches = self._batch_indices(epoch)
        usable = len(batches) - len(batches) % world_size
        for indices in batches[rank:usable:world_size]:
            yield collate([self.src[i] for i in indices], [self.tgt[i] for i in indices], indices)

    def num_batches(self, epoch: int = 0, world_size: int = 1) -> int:
        batches = len(self._batch_indices(epoch))
        return batches // world_size

    def padding_ratio(self, epoch: int = 0) -> float:
        """Share of padding in the padded source and target tensors of one epoch."""
        real = padded = 0
        for indices in self._batch_indices(epoch):
            src_lens = [len(self.src[i]) for i in indices]
            tgt_lens = [len(self.tgt[i]) - 1 for i in indices]  # tgt_in / tgt_out drop one token
            real += sum(src_lens) + sum(tgt_lens)
            padded += len(indices) * (max(src_lens) + max(tgt_lens))
        return 1.0 - real / max(padded, 1)
