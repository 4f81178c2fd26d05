"""Layer-normalised recurrent cells (Ba et al. 2016), per gate, as RNMT+ and Sockeye 1 use them.

Layer normalisation inside the cell normalises each gate's input-side and hidden-side products
separately, over the hidden units, with a learned gain and bias per gate (``GateNorm``):

    GRU   [i_r; i_z; i_n] = LN(W_i x),  [h_r; h_z; h_n] = LN(W_h h)
          r = σ(i_r + h_r),  z = σ(i_z + h_z),  n = tanh(i_n + r ⊙ h_n),  h' = (1 − z) ⊙ n + z ⊙ h
    LSTM  [i; f; g; o] = LN(W_i x) + LN(W_h h) + b
          c' = σ(f) ⊙ c + σ(i) ⊙ tanh(g),  h' = σ(o) ⊙ tanh(LN_c(c'))

(LN's own bias takes the place of the cell's biases.)  The fused ``nn.GRU`` / ``nn.LSTM`` kernels
cannot normalise inside the recurrence, so :class:`LayerNormRNN` runs the time loop in Python;
the input side, which does not depend on the recurrence, is projected and normalised for all
positions in one product before the loop.  ``model.encoder.layer_norm`` /
``model.decoder.layer_norm``: ``cell`` uses these cells; ``between`` keeps the fused kernels and
normalises each layer's output instead (:class:`LayerNorms`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LAYER_NORMS = ("none", "between", "cell")  # model.encoder.layer_norm, model.decoder.layer_norm
GATES = {"gru": 3, "lstm": 4}


class GateNorm(nn.Module):
    """Layer normalisation of each gate's slice: (..., gates·H) → (..., gates·H)."""

    def __init__(self, gates: int, hidden_size: int, bias: bool = True):
        super().__init__()
        self.gates, self.hidden_size = gates, hidden_size
        self.weight = nn.Parameter(torch.ones(gates * hidden_size))
        self.bias = nn.Parameter(torch.zeros(gates * hidden_size)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        per_gate = x.float().unflatten(-1, (self.gates, self.hidden_size))  # (..., gates, H)
        normed = F.layer_norm(per_gate, (self.hidden_size,)).flatten(-2) * self.weight
        return normed if self.bias is None else normed + self.bias


class LayerNormRNN(nn.Module):
    """One layer of a per-gate layer-normalised GRU or LSTM, one direction.

    ``forward(inputs, state)`` runs a whole sequence like ``nn.GRU(batch_first=True)`` /
    ``nn.LSTM``: inputs (batch, T, input) → outputs (batch, T, H) and the final state, (1, batch,
    H) (a tuple (h, c) for the LSTM).  :meth:`step` is one step on input-side gates already
    normalised (:meth:`input_gates`), the decoder's loop.
    """

    def __init__(self, rnn_type: str, input_size: int, hidden_size: int):
        super().__init__()
        self.is_lstm = rnn_type == "lstm"
        self.hidden_size = hidden_size
        gates = GATES[rnn_type]
        self.weight_ih = nn.Linear(input_size, gates * hidden_size, bias=False)
        self.weight_hh = nn.Linear(hidden_size, gates * hidden_size, bias=False)
        self.norm_ih = GateNorm(gates, hidden_size)
        self.norm_hh = GateNorm(gates, hidden_size, bias=False)  # norm_ih's bias is the gates'
        self.norm_cell = nn.LayerNorm(hidden_size) if self.is_lstm else None

    def input_gates(self, inputs: Tensor) -> Tensor:
        """LN(W_i x) for any number of positions: (..., input) → (..., gates·H) fp32."""
        return self.norm_ih(self.weight_ih(inputs))

    def step(self, gates_in: Tensor, hidden: Tensor, cell: Tensor | None) -> tuple[Tensor, Any]:
        """gates_in (batch, gates·H) from :meth:`input_gates`; hidden, cell (batch, H) →
        the new (hidden, cell); cell None for a GRU."""
        gates_hidden = self.norm_hh(self.weight_hh(hidden))  # (batch, gates·H) fp32
        if self.is_lstm:
            i, f, g, o = (gates_in + gates_hidden).chunk(4, dim=-1)
            cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
            return torch.sigmoid(o) * torch.tanh(self.norm_cell(cell)), cell
        i_r, i_z, i_n = gates_in.chunk(3, dim=-1)
        h_r, h_z, h_n = gates_hidden.chunk(3, dim=-1)
        r = torch.sigmoid(i_r + h_r)
        z = torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        return n + z * (hidden.float() - n), None

    def forward(self, inputs: Tensor, state: Any = None) -> tuple[Tensor, Any]:
        batch = inputs.size(0)
        if state is None:
            zeros = inputs.new_zeros(batch, self.hidden_size, dtype=torch.float32)
            hidden, cell = zeros, (zeros if self.is_lstm else None)
        elif self.is_lstm:
            hidden, cell = state[0][0].float(), state[1][0].float()
        else:
            hidden, cell = state[0].float(), None
        gates_in = self.input_gates(inputs)  # (batch, T, gates·H): all positions at once
        outputs = []
        for gates_t in gates_in.unbind(1):
            hidden, cell = self.step(gates_t, hidden, cell)
            outputs.append(hidden)
        final = hidden.unsqueeze(0)
        return torch.stack(outputs, 1), ((final, cell.unsqueeze(0)) if self.is_lstm else final)


class LayerNorms(nn.Module):
    """``between``: an ``nn.LayerNorm`` on the output of each layer but the last, before dropout
    and the next layer; or nothing (``none``, ``cell``)."""

    def __init__(self, layer_norm: str, size: int, num_layers: int):
        super().__init__()
        count = num_layers - 1 if layer_norm == "between" else 0
        self.norms = nn.ModuleList(nn.LayerNorm(size) for _ in range(count))

    def forward(self, x: Tensor, layer: int) -> Tensor:
        """x, the output of ``layer`` (0-based), to be the next layer's input."""
        return self.norms[layer](x) if layer < len(self.norms) else x


def uses_residual(residual_from: int | None, layer: int) -> bool:
    """Whether 0-based ``layer`` adds its input to its output: from the ``residual_from``-th
    layer (1-based, RNMT+ "from the third layer up" is 3) up; never when None."""
    return residual_from is not None and layer + 1 >= residual_from


def step_layer(
    rnn: nn.Module, inputs: Tensor, hidden: Tensor, cell: Tensor | None
) -> tuple[Tensor, Tensor | None]:
    """One step of one layer built as a module of its own: a :class:`LayerNormRNN`, or a
    one-layer ``nn.GRU`` / ``nn.LSTM`` stepped with ``torch.gru_cell`` / ``torch.lstm_cell`` on
    its weights.  inputs (batch, input); hidden, cell (batch, H) → (hidden, cell); cell None
    for a GRU."""
    if isinstance(rnn, LayerNormRNN):
        return rnn.step(rnn.input_gates(inputs), hidden, cell)
    weights = (rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0)
    if isinstance(rnn, nn.LSTM):
        return torch.lstm_cell(inputs, (hidden, cell), *weights)
    return torch.gru_cell(inputs, hidden, *weights), None
