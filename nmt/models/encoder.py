"""Recurrent encoder: embeddings + (bi)GRU/LSTM over packed sequences.

h_j = [→h_j ; ←h_j]  (Bahdanau et al. 2015, §3.2): with a bidirectional RNN each source
position is annotated with the forward and backward states concatenated.  The sequences are
packed, so padding never enters the recurrence: the backward direction starts at each
sentence's own last real token, and the states at padded positions are exactly zero.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from nmt.data.vocab import PAD_ID
from nmt.errors import NMTError

RNN_TYPES = ("gru", "lstm")


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


class Encoder(nn.Module):
    """Embed the source and run an N-layer (bi)directional GRU or LSTM over it.

    Dropout is applied to the embeddings and, for N > 1, between layers.
    """

    def __init__(
        self,
        vocab_size: int,
        rnn_type: str,
        embed_dim: int,
        hidden_size: int,
        num_layers: int,
        bidirectional: bool,
        dropout: float,
    ):
        super().__init__()
        self.num_layers = num_layers
        self.num_directions = 2 if bidirectional else 1
        self.output_size = self.num_directions * hidden_size
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD_ID)
        self.dropout = nn.Dropout(dropout)
        self.rnn = rnn_class(rnn_type, "model.encoder.rnn_type")(
            embed_dim,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
        )

    def forward(self, src: Tensor, src_lengths: Tensor) -> EncoderOutput:
        """src (batch, src_len) long padded with PAD_ID; src_lengths (batch,), any order."""
        batch, src_len = src.shape
        embedded = self.dropout(self.embed(src))  # (batch, src_len, embed_dim)
        packed = pack_padded_sequence(
            embedded, src_lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        packed_states, final = self.rnn(packed)
        states, _ = pad_packed_sequence(packed_states, batch_first=True, total_length=src_len)
        # states: (batch, src_len, num_directions*hidden)
        h_n = final[0] if isinstance(final, tuple) else final  # LSTM: (h_n, c_n)
        # h_n: (num_layers*num_directions, batch, hidden), back in the input's batch order
        top = h_n.view(self.num_layers, self.num_directions, batch, -1)[-1]
        # top: (num_directions, batch, hidden) → (batch, num_directions*hidden)
        top = torch.cat(top.unbind(0), dim=-1)
        return EncoderOutput(states, top)
