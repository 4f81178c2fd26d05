"""Recurrent encoder: embeddings + (bi)GRU/LSTM, padding kept out of every real state.

h_j = [→h_j ; ←h_j]  (Bahdanau et al. 2015, §3.2): with a bidirectional RNN each source
position is annotated with the forward and backward states concatenated.

Padding never reaches a real position's state: the forward direction reads each sentence from
its first token, so padding only follows the real tokens; the backward direction reads each
sentence reversed *within its own length* (:func:`reverse_within_lengths`), so it starts at that
sentence's last real token. States at padded positions are set to exactly zero.  This gives the
same states as packed sequences at half the CPU cost: PyTorch's packed-RNN backward re-zeroes
the whole gradient buffer at every time step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from nmt.core.errors import NMTError
from nmt.core.settings import setting
from nmt.core.special_ids import PAD_ID
from nmt.models.cells import LAYER_NORMS, LayerNormRNN, LayerNorms, uses_residual
from nmt.models.registry import Declared, Registry

RNN_TYPES = ("gru", "lstm")
RNN_GATES = {"gru": 3, "lstm": 4}


@dataclass(frozen=True, kw_only=True)
class EncoderSettings:
    """``type`` (``rnn``, the default, or ``transformer``), the keys every encoder reads, and
    those the type's class declares (``heads``, ``ff_size``) in ``options``.  ``rnn_type`` and
    ``bidirectional`` are the recurrent encoder's."""

    REGISTRY: ClassVar[Callable[[], Mapping[str, Any]]] = staticmethod(lambda: ENCODER_TYPES)
    PART_FIELD: ClassVar[str] = "type"

    type: str = setting(choices=lambda: ENCODER_TYPES, default="rnn")
    rnn_type: str | None = setting(choices=RNN_TYPES, default=None)
    embed_dim: int = setting(ge=1)
    hidden_size: int = setting(ge=1)  # per direction (rnn); the model size d (transformer)
    num_layers: int = setting(ge=1)
    bidirectional: bool = setting(default=False)
    dropout: float = setting(ge=0, lt=1)
    layer_norm: str = setting(choices=LAYER_NORMS, default="none")  # the recurrent encoder's
    residual_from: int | None = setting(ge=2, default=None)  # 1-based layer; the recurrent's
    word_dropout: float = setting(ge=0, lt=1, default=0.0)  # whole tokens → <unk>, training
    options: dict[str, Any] = field(default_factory=dict)  # the type's declared keys


@dataclass(frozen=True)
class EncoderSizes:
    """The ``model.encoder`` keys every encoder type is built from."""

    rnn_type: str | None
    embed_dim: int
    hidden_size: int
    num_layers: int
    bidirectional: bool
    dropout: float
    layer_norm: str = "none"
    residual_from: int | None = None

    @classmethod
    def of(cls, enc: EncoderSettings) -> EncoderSizes:
        return cls(
            enc.rnn_type, enc.embed_dim, enc.hidden_size, enc.num_layers, enc.bidirectional,
            enc.dropout, enc.layer_norm, enc.residual_from,
        )  # fmt: skip


# an encoder type is built as cls.from_sizes(vocab_size, EncoderSizes, **its declared keys)
ENCODER_TYPES: Registry[type[Any]] = Registry("model.encoder.type")


class EncoderOutput(NamedTuple):
    states: Tensor  # (batch, src_len, num_directions*hidden), zeros at padded positions
    final: Tensor  # (batch, num_directions*hidden): top layer's last states, [→h_last ; ←h_1]


def rnn_class(rnn_type: str, key: str) -> type[nn.RNNBase]:
    """nn.GRU or nn.LSTM for ``rnn_type``; ``key`` names the config entry in the error."""
    if rnn_type == "gru":
        return nn.GRU
    if rnn_type == "lstm":
        return nn.LSTM
    raise NMTError(f"{key}: expected one of {', '.join(RNN_TYPES)}; got {rnn_type!r}")


def rnn_flops(rnn_type: str, input_size: int, hidden_size: int) -> int:
    """Matmul FLOPs of one RNN layer, one direction, one token: W_ih x + W_hh h for every gate.

    2 · gates · hidden · (input + hidden), gates = 3 (GRU) or 4 (LSTM).
    """
    return 2 * RNN_GATES[rnn_type] * hidden_size * (input_size + hidden_size)


def run_rnn(rnn: nn.RNNBase, inputs: Tensor, state: Any = None) -> tuple[Tensor, Any]:
    """``rnn(inputs, state)``, in fp32 when CPU autocast is on (inputs and state cast to fp32).

    Under CPU autocast ``nn.LSTM`` calls oneDNN's bf16 LSTM, which cannot be built on CPUs
    without AVX-512 ("could not create a primitive descriptor for the LSTM forward propagation
    primitive"), and ``nn.GRU`` is not autocast on the CPU at all; so on the CPU the recurrences
    over whole sequences run in fp32 for both (the projections and the output layer around them
    still use bf16).  On CUDA autocast applies as usual (cuDNN's RNNs in the low precision).
    """
    if inputs.device.type != "cpu" or not torch.is_autocast_enabled("cpu"):
        return rnn(inputs, state)
    if isinstance(state, tuple):
        state = tuple(s.float() for s in state)
    elif state is not None:
        state = state.float()
    with torch.autocast("cpu", enabled=False):
        return rnn(inputs.float(), state)


def reverse_within_lengths(x: Tensor, lengths: Tensor) -> Tensor:
    """Reverse the first ``lengths[b]`` steps of each sequence; padded steps stay in place.

    x (batch, seq_len, dim); lengths (batch,). Applying it twice gives ``x`` back.
    """
    positions = torch.arange(x.size(1), device=x.device).unsqueeze(0)  # (1, seq_len)
    reversed_positions = lengths.unsqueeze(1) - 1 - positions  # (batch, seq_len)
    index = torch.where(reversed_positions >= 0, reversed_positions, positions)
    return x.gather(1, index.unsqueeze(-1).expand_as(x))


@ENCODER_TYPES.register("rnn")
class Encoder(nn.Module, Declared):
    """Embed the source and run an N-layer (bi)directional GRU or LSTM over it.

    Each layer is one RNN per direction; dropout is applied to the embeddings and, for N > 1,
    between layers.
    """

    @classmethod
    def from_sizes(cls, vocab_size: int, sizes: EncoderSizes) -> Encoder:
        """The encoder ``model.encoder`` describes (``type: rnn``)."""
        if sizes.rnn_type is None:
            raise NMTError(
                f"model.encoder.rnn_type: missing (expected one of {', '.join(RNN_TYPES)})"
            )
        return cls(
            vocab_size, sizes.rnn_type, sizes.embed_dim, sizes.hidden_size, sizes.num_layers,
            sizes.bidirectional, sizes.dropout, sizes.layer_norm, sizes.residual_from,
        )  # fmt: skip

    @classmethod
    def flops(cls, sizes: EncoderSizes, src_len: float) -> float:
        """Per source token: Σ_layers D · rnn(in, H_e), in = E_s (first layer) or D·H_e."""
        directions = 2 if sizes.bidirectional else 1
        inputs = [sizes.embed_dim] + [directions * sizes.hidden_size] * (sizes.num_layers - 1)
        return sum(directions * rnn_flops(sizes.rnn_type, i, sizes.hidden_size) for i in inputs)

    def __init__(
        self,
        vocab_size: int,
        rnn_type: str,
        embed_dim: int,
        hidden_size: int,
        num_layers: int,
        bidirectional: bool,
        dropout: float,
        layer_norm: str = "none",
        residual_from: int | None = None,
    ):
        super().__init__()
        self.num_layers = num_layers
        self.residual_from = residual_from
        self.num_directions = 2 if bidirectional else 1
        self.output_size = self.num_directions * hidden_size
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD_ID)
        self.dropout = nn.Dropout(dropout)
        fused = rnn_class(rnn_type, "model.encoder.rnn_type")

        def rnn(size: int) -> nn.Module:
            if layer_norm == "cell":  # per-gate layer norm inside the cell (nmt.models.cells)
                return LayerNormRNN(rnn_type, size, hidden_size)
            return fused(size, hidden_size, batch_first=True)

        input_sizes = [embed_dim] + [self.output_size] * (num_layers - 1)
        self.forward_rnns = nn.ModuleList(rnn(size) for size in input_sizes)
        self.backward_rnns = nn.ModuleList(rnn(size) for size in input_sizes if bidirectional)
        self.norms = LayerNorms(layer_norm, self.output_size, num_layers)

    def forward(self, src: Tensor, src_lengths: Tensor) -> EncoderOutput:
        """src (batch, src_len) long padded with PAD_ID; src_lengths (batch,), any order."""
        lengths = src_lengths.to(src.device)
        x = self.dropout(self.embed(src))  # (batch, src_len, embed_dim)
        for layer in range(self.num_layers):
            layer_input = x
            if layer > 0:
                x = self.dropout(self.norms(x, layer - 1))  # between: LN of the layer below
            forward_states, _ = run_rnn(self.forward_rnns[layer], x)  # (batch, src_len, hidden)
            if self.num_directions == 1:
                x = forward_states
            else:
                backward_states, _ = run_rnn(
                    self.backward_rnns[layer], reverse_within_lengths(x, lengths)
                )
                backward_states = reverse_within_lengths(backward_states, lengths)
                x = torch.cat([forward_states, backward_states], dim=-1)  # (batch, S, 2*hidden)
            if uses_residual(self.residual_from, layer):  # from layer residual_from (≥ 2) up
                x = x + layer_input
        real = torch.arange(src.size(1), device=src.device).unsqueeze(0) < lengths.unsqueeze(1)
        states = x.masked_fill(~real.unsqueeze(-1), 0.0)  # (batch, src_len, num_directions*hidden)
        hidden = forward_states.size(-1)
        last = (lengths - 1).view(-1, 1, 1).expand(-1, 1, hidden)  # (batch, 1, hidden)
        final = [forward_states.gather(1, last).squeeze(1)]  # →h at each sentence's last token
        if self.num_directions == 2:
            final.append(backward_states[:, 0])  # ←h_1: the backward pass ends at position 0
        return EncoderOutput(
            states, torch.cat(final, dim=-1)
        )  # final: (batch, num_directions*hidden)


def build_encoder(enc: EncoderSettings, vocab_size: int) -> nn.Module:
    """The encoder ``model.encoder`` names by its ``type``, with its declared keys."""
    kind = ENCODER_TYPES.lookup(enc.type)
    return kind.from_sizes(vocab_size, EncoderSizes.of(enc), **enc.options)
