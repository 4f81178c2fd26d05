"""Several models decoded as one: the step API of :class:`~nmt.models.Seq2Seq` over N members.

An :class:`Ensemble` is handed to the one search (:mod:`nmt.inference.search`) in place of a
model. At every step each member scores the next token from its own state, and the ensemble's
distribution combines theirs (:class:`EnsembleSettings`' ``combine``):

* ``log_prob`` (the default): the renormalised mean of their log-probabilities, a product of
  experts, as OpenNMT-py's ``-model a.pt b.pt`` combines them::

      log p(y_t | y_<t, x) = log_softmax( (1/N) Σ_n log p_n(y_t | y_<t, x) )

* ``prob``: the mean of their probabilities, as fairseq's ``--path a.pt:b.pt``::

      log p(y_t | y_<t, x) = log( (1/N) Σ_n p_n(y_t | y_<t, x) )

A hypothesis's ``log_prob`` is the sum of these ensemble log-probabilities. The attention it
reports is the mean of the members' weights over the source (``attention: mean``, the default)
or the first member's (``first``); either way each row sums to 1.

Members must share the source and the target vocabulary (the Translator checks it, naming both
files): the search feeds one token id to all of them. Their architectures may differ (GRU and
LSTM, any score function), and so may their backends (a checkpoint in torch, an exported folder
in onnxruntime).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor

from nmt.core.errors import NMTError
from nmt.core.settings import check_fields, setting
from nmt.models import DecoderState, Memory, StepOutput


@dataclass(frozen=True)
class EnsembleSettings:
    """The ``ensemble`` config group of the decoding commands: how the members' next-token
    distributions are combined (``log_prob`` or ``prob``, see the module docstring) and which
    attention an output reports (``mean`` or ``first``). Used only when ``ckpt`` is a list."""

    combine: str = setting(choices=("log_prob", "prob"), default="log_prob")
    attention: str = setting(choices=("mean", "first"), default="mean")

    def __post_init__(self) -> None:
        check_fields(self, "ensemble")


class EnsembleMemory(NamedTuple):
    """Each member's :class:`~nmt.models.Memory` of the same batch."""

    members: tuple[Memory, ...]

    def index_select(self, idx: Tensor) -> EnsembleMemory:
        """Reorder/repeat along the batch dimension; idx: LongTensor (new_batch,)."""
        return EnsembleMemory(tuple(m.index_select(idx) for m in self.members))


class EnsembleState(NamedTuple):
    """Each member's :class:`~nmt.models.DecoderState`."""

    members: tuple[DecoderState, ...]

    def index_select(self, idx: Tensor) -> EnsembleState:
        return EnsembleState(tuple(s.index_select(idx) for s in self.members))


class Ensemble:
    """N models behind the step API the searches use (``encode``, ``init_state``, ``step``)."""

    def __init__(self, models: Sequence[Any], settings: EnsembleSettings | None = None):
        if len(models) < 2:
            raise NMTError(f"an ensemble needs two models or more; got {len(models)}")
        self.models = list(models)
        self.settings = settings or EnsembleSettings()

    # ---------------------------------------------------------------- what decode_ids reads
    @property
    def training(self) -> bool:
        return any(m.training for m in self.models)

    def eval(self) -> Ensemble:
        for m in self.models:
            m.eval()
        return self

    def train(self, mode: bool = True) -> Ensemble:
        for m in self.models:
            m.train(mode)
        return self

    def parameters(self) -> Iterator[torch.nn.Parameter]:
        """Every member's parameters (an exported member has none to list)."""
        return itertools.chain.from_iterable(
            m.parameters() for m in self.models if hasattr(m, "parameters")
        )

    # ---------------------------------------------------------------- the step API
    def encode(self, src: Tensor, src_lengths: Tensor) -> EnsembleMemory:
        """src (batch, src_len) long; src_lengths (batch,) → every member's memory."""
        return EnsembleMemory(tuple(m.encode(src, src_lengths) for m in self.models))

    def init_state(self, memory: EnsembleMemory) -> EnsembleState:
        return EnsembleState(
            tuple(m.init_state(mem) for m, mem in zip(self.models, memory.members, strict=True))
        )

    def step(self, prev_tokens: Tensor, state: EnsembleState, memory: EnsembleMemory) -> StepOutput:
        """One step of every member: prev_tokens (batch,) → the combined log-probabilities
        (batch, V) in fp32 as the logits (the search's log_softmax renormalises them), the
        attention (batch, src_len), the members' next states."""
        outputs = [
            m.step(prev_tokens, s, mem)
            for m, s, mem in zip(self.models, state.members, memory.members, strict=True)
        ]
        # (members, batch, V)
        log_probs = torch.stack([torch.log_softmax(o.logits.float(), dim=-1) for o in outputs])
        if self.settings.combine == "prob":
            combined = torch.logsumexp(log_probs, dim=0) - math.log(len(outputs))
        else:
            combined = log_probs.mean(dim=0)
        if self.settings.attention == "first":
            attn_weights = outputs[0].attn_weights
        else:
            attn_weights = torch.stack([o.attn_weights.float() for o in outputs]).mean(dim=0)
        new_state = EnsembleState(tuple(o.state for o in outputs))
        return StepOutput(combined, attn_weights, new_state)  # type: ignore[arg-type]


def ensemble_card(
    sources: Sequence[str], cards: Sequence[dict[str, Any]], settings: EnsembleSettings
) -> dict:
    """The model card of an ensemble: how it combines its members, then each member's card."""
    combination = {
        "log_prob": "the mean of the members' log-probabilities per step, renormalised",
        "prob": "the mean of the members' probabilities per step",
    }[settings.combine]
    shown = "the mean of the members'" if settings.attention == "mean" else "the first member's"
    return {
        "ensemble": {
            "members": list(sources),
            "combination": combination,
            "attention": f"{shown} attention weights",
        },
        **{f"member {i}": card for i, card in enumerate(cards, start=1)},
    }
