"""Attentional RNN decoders: ``bahdanau`` (attend, then step) and ``luong`` (step, then attend).

Both produce, per target step t, an *attentional vector* h̃_t (batch, hidden) from which
:class:`~nmt.models.seq2seq.Seq2Seq` predicts y_t with one output projection, and both work
with every score function, GRU or LSTM, and 1..N layers (the query is the top layer's state).

Decoder state travels explicitly in :class:`DecoderState`; nothing is kept on the modules
between calls.  It counts the target steps taken (``position``), so that local-m attention
(window centre p_t = t) gives the same weights one step at a time as over all steps at once.
:meth:`DecoderState.index_select` and :meth:`Memory.index_select` reorder or repeat the batch
for beam search.
"""

from __future__ import annotations

import contextlib
import dataclasses
from abc import ABCMeta, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nmt.core.errors import NMTError
from nmt.core.settings import setting
from nmt.models.attention import Attention
from nmt.models.cells import LAYER_NORMS, LayerNormRNN, LayerNorms, step_layer, uses_residual
from nmt.models.encoder import RNN_TYPES, rnn_class, rnn_flops, run_rnn
from nmt.models.registry import Declared, Registry


@dataclass(frozen=True, kw_only=True)
class DecoderSettings:
    """The keys every style has, plus those the style's class declares (``input_feeding``)
    in ``options``."""

    REGISTRY: ClassVar[Callable[[], Mapping[str, Any]]] = staticmethod(lambda: DECODER_STYLES)
    PART_FIELD: ClassVar[str] = "style"

    style: str = setting(choices=lambda: DECODER_STYLES)
    rnn_type: str | None = setting(choices=RNN_TYPES, default=None)  # the recurrent styles'
    embed_dim: int = setting(ge=1)
    hidden_size: int = setting(ge=1)
    num_layers: int = setting(ge=1)
    dropout: float = setting(ge=0, lt=1)
    bridge: bool = setting(default=False)  # the recurrent styles' initial state
    layer_norm: str = setting(choices=LAYER_NORMS, default="none")  # the recurrent styles'
    residual_from: int | None = setting(ge=2, default=None)  # 1-based layer; the recurrent styles'
    word_dropout: float = setting(ge=0, lt=1, default=0.0)  # whole tokens → <unk>, training
    options: dict[str, Any] = field(default_factory=dict)  # the style's declared keys


class Memory(NamedTuple):
    """What the decoder reads from the encoder, computed once per batch by ``Seq2Seq.encode``."""

    values: Tensor  # (batch, src_len, value_size): encoder states h_j, zeros at padding
    keys: Tensor  # (batch, src_len, key_size): Attention.project_keys(values)
    src_mask: Tensor  # bool (batch, src_len), True = real token
    final: Tensor  # (batch, encoder final size): input of the bridge

    def index_select(self, idx: Tensor) -> Memory:
        """Reorder/repeat along the batch dimension; idx: LongTensor (new_batch,)."""
        return Memory(*(t.index_select(0, idx) for t in self))


class DecoderState(NamedTuple):
    """The decoder's state between two steps: a recurrent style's RNN state, or the
    Transformer's cache of the earlier steps' self-attention keys and values."""

    hidden: Tensor | None  # (num_layers, batch, hidden): s_{t-1} per layer (LSTM: h); RNN only
    cell: Tensor | None  # (num_layers, batch, hidden): LSTM memory cell c_{t-1}; None for GRU
    attn_vector: Tensor | None  # (batch, hidden): h̃_{t-1} for Luong input feeding, else None
    position: Tensor  # (batch,) long: t, the 0-based target step the next step computes
    cache: Tensor | None = None  # (batch, t, L·2·d): the Transformer's [K ; V] per layer

    def index_select(self, idx: Tensor) -> DecoderState:
        """Reorder/repeat along the batch dimension; idx: LongTensor (new_batch,)."""
        return DecoderState(
            None if self.hidden is None else self.hidden.index_select(1, idx),
            None if self.cell is None else self.cell.index_select(1, idx),
            None if self.attn_vector is None else self.attn_vector.index_select(0, idx),
            self.position.index_select(0, idx),
            None if self.cache is None else self.cache.index_select(0, idx),
        )


class DecoderStep(NamedTuple):
    attn_vector: Tensor  # (batch, hidden): h̃_t
    attn_weights: Tensor  # (batch, src_len)
    state: DecoderState


class DecoderOutput(NamedTuple):
    attn_vectors: Tensor  # (batch, tgt_len, hidden): h̃_1..h̃_T
    attn_weights: Tensor  # (batch, tgt_len, src_len)
    state: DecoderState


class DecoderRNN(nn.Module):
    """An N-layer GRU or LSTM that runs a whole sequence or one step, on the same weights.

    :meth:`sequence` runs ``nn.GRU``/``nn.LSTM`` over all steps in one call (the time loop in
    C++), for inputs known in advance: the Luong decoder without input feeding.  :meth:`forward`
    takes one step, the loop of input feeding, of the Bahdanau decoder and of search: layer 0's
    input is split into the part known before the loop (the target embedding, projected for
    all steps at once by :meth:`project_known`) and the part fed back inside it; the upper
    layers step with ``torch.gru_cell``/``torch.lstm_cell``.  Dropout between layers, as in
    ``nn.GRU``.

    ``layer_norm`` (:data:`~nmt.models.cells.LAYER_NORMS`) and ``residual_from`` build the
    stack layer by layer instead of one fused module: ``cell`` uses the per-gate layer-normalised
    cells of :mod:`nmt.models.cells`, ``between`` normalises each layer's output before the next
    layer, and from layer ``residual_from`` (1-based, ≥ 2) up each layer's input is added to its
    output on the way to the next layer.  The decoder's output (the query, h_t) is the top
    layer's state itself, so that a step and a whole sequence read the same state.
    """

    def __init__(
        self,
        rnn_type: str,
        input_size: int,
        hidden_size: int,
        num_layers: int,
        dropout: float,
        layer_norm: str = "none",
        residual_from: int | None = None,
    ):
        super().__init__()
        self.is_lstm = rnn_type == "lstm"
        self.num_layers = num_layers
        self.layer_norm = layer_norm
        self.residual_from = residual_from
        rnn = rnn_class(rnn_type, "model.decoder.rnn_type")
        self.fused = layer_norm == "none" and residual_from is None  # today's one module
        if self.fused:
            self.layers = rnn(
                input_size,
                hidden_size,
                num_layers=num_layers,
                batch_first=True,
                dropout=dropout if num_layers > 1 else 0.0,
            )
        else:
            sizes = [input_size] + [hidden_size] * (num_layers - 1)
            self.stack = nn.ModuleList(
                LayerNormRNN(rnn_type, size, hidden_size)
                if layer_norm == "cell"
                else rnn(size, hidden_size, batch_first=True)
                for size in sizes
            )
            self.norms = LayerNorms(layer_norm, hidden_size, num_layers)
        self.dropout = nn.Dropout(dropout)

    def layer_weights(self, layer: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """W_ih, W_hh, b_ih, b_hh of a fused or plain stacked layer (not ``cell``)."""
        names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        if self.fused:
            return tuple(getattr(self.layers, f"{name}_l{layer}") for name in names)
        return tuple(getattr(self.stack[layer], f"{name}_l0") for name in names)

    def between_layers(self, output: Tensor, layer_input: Tensor, layer: int) -> Tensor:
        """Layer ``layer``'s output on its way to the next layer: + its input (residual),
        normalised (``between``), dropout."""
        if uses_residual(self.residual_from, layer):
            output = output + layer_input
        return self.dropout(self.norms(output, layer))

    def sequence(
        self, inputs: Tensor, hidden: Tensor, cell: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """inputs (batch, steps, input_size) → top layer's outputs (batch, steps, hidden) and
        the final (hidden, cell), each (num_layers, batch, hidden)."""
        if self.fused:
            if self.is_lstm:
                outputs, (hidden, cell) = run_rnn(self.layers, inputs, (hidden, cell))
                return outputs, hidden, cell
            outputs, hidden = run_rnn(self.layers, inputs, hidden)
            return outputs, hidden, None
        x, hiddens, cells = inputs, [], []
        for layer, rnn in enumerate(self.stack):
            if layer > 0:
                x = self.between_layers(outputs, x, layer - 1)
            state = (
                (hidden[layer : layer + 1], cell[layer : layer + 1])
                if self.is_lstm
                else hidden[layer : layer + 1]
            )
            outputs, state = run_rnn(rnn, x, state)
            hiddens.append(state[0] if self.is_lstm else state)
            if self.is_lstm:
                cells.append(state[1])
        return outputs, torch.cat(hiddens), (torch.cat(cells) if self.is_lstm else None)

    def project_known(self, known: Tensor) -> Tensor:
        """W_k x + b_ih for the first input columns of layer 0, the ones known before the loop
        (``cell``: W_k x, normalised with the rest of the input inside the step).

        known (..., k) → (..., gates*hidden).  In a teacher-forced pass the known inputs are the
        target embeddings of every step, so this is one large matrix product per batch instead
        of a small one per step.
        """
        if self.layer_norm == "cell":
            return F.linear(known, self.stack[0].weight_ih.weight[:, : known.size(-1)])
        w_ih, _, b_ih, _ = self.layer_weights(0)
        return F.linear(known, w_ih[:, : known.size(-1)], b_ih)

    def forward(
        self, known: Tensor, fed_back: Tensor | None, hidden: Tensor, cell: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        """One step.  Layer 0's input is [x_known ; x_fed_back]:

        known (batch, gates*hidden) = project_known(x_known); fed_back (batch, f) is the part
        computed inside the loop (h̃_{t-1} or c_t), or None; hidden, cell (num_layers, batch,
        hidden).  Returns the new (hidden, cell).
        """
        x, c = self.first_layer_step(known, fed_back, hidden[0], None if cell is None else cell[0])
        hiddens, cells = [x], [c]
        layer_input = None  # layer 0's input is not one tensor here: no residual around it
        for layer in range(1, self.num_layers):
            layer_cell = None if cell is None else cell[layer]
            if self.fused:
                x = self.dropout(x)
                if self.is_lstm:
                    x, c = torch.lstm_cell(
                        x, (hidden[layer], layer_cell), *self.layer_weights(layer)
                    )
                else:
                    x = torch.gru_cell(x, hidden[layer], *self.layer_weights(layer))
            else:
                x = layer_input = self.between_layers(x, layer_input, layer - 1)
                x, c = step_layer(self.stack[layer], x, hidden[layer], layer_cell)
            hiddens.append(x)
            cells.append(c)
        # stacked: (num_layers, batch, hidden)
        return torch.stack(hiddens), (torch.stack(cells) if self.is_lstm else None)

    def first_layer_step(
        self, known: Tensor, fed_back: Tensor | None, hidden: Tensor, cell: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        """Layer 0's step from its input split in two: hidden, cell (batch, hidden) → the new
        (hidden, cell); ``cell`` normalises [W_k x ; W_f f] whole, after the sum."""
        w_ih = (
            self.stack[0].weight_ih.weight
            if self.layer_norm == "cell"
            else self.layer_weights(0)[0]
        )
        gates_in = known
        if fed_back is not None:
            gates_in = gates_in + F.linear(fed_back, w_ih[:, w_ih.size(1) - fed_back.size(-1) :])
        if self.layer_norm == "cell":
            first = self.stack[0]
            return first.step(first.norm_ih(gates_in), hidden, cell)
        _, w_hh, _, b_hh = self.layer_weights(0)
        gates_hidden = F.linear(hidden, w_hh, b_hh)  # (batch, gates*hidden)
        # Under autocast the products arrive in bf16; the gates and the state are kept in fp32
        # (no-ops in fp32), so rounding does not build up along the recurrence.
        gates_in, gates_hidden = gates_in.float(), gates_hidden.float()
        if self.is_lstm:
            return lstm_cell_from_gates(gates_in + gates_hidden, cell)
        return gru_cell_from_gates(gates_in, gates_hidden, hidden), None


def gru_cell_from_gates(gates_in: Tensor, gates_hidden: Tensor, h: Tensor) -> Tensor:
    """GRU update from W_i x + b_i and W_h h + b_h, as ``torch.gru_cell`` computes it:

    r = σ(i_r + h_r),  z = σ(i_z + h_z),  n = tanh(i_n + r ⊙ h_n),  h' = (1 − z) ⊙ n + z ⊙ h.
    """
    i_r, i_z, i_n = gates_in.chunk(3, dim=-1)
    h_r, h_z, h_n = gates_hidden.chunk(3, dim=-1)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return n + z * (h - n)


def lstm_cell_from_gates(gates: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """LSTM update from W_i x + W_h h + b, as ``torch.lstm_cell`` computes it:

    c' = σ(f) ⊙ c + σ(i) ⊙ tanh(g),  h' = σ(o) ⊙ tanh(c').
    """
    i, f, g, o = gates.chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


@dataclass(frozen=True)
class DecoderSizes:
    """The settings both decoder styles are built from (``model.decoder`` and the encoder's)."""

    rnn_type: str | None  # gru | lstm; None for the Transformer
    embed_dim: int
    hidden_size: int
    num_layers: int
    dropout: float
    value_size: int  # of the encoder states the attention reads
    encoder_final_size: int  # input of the bridge
    bridge: bool
    layer_norm: str = "none"  # none | between | cell (nmt.models.cells)
    residual_from: int | None = None  # residual connections from this layer (1-based) up


def first_position(memory: Memory) -> Tensor:
    """t = 0 for every sentence: (batch,) long."""
    return torch.zeros(memory.final.size(0), dtype=torch.long, device=memory.final.device)


class DecoderFlops(NamedTuple):
    """Matmul FLOPs of a decoder style per target token (a multiply-add counts 2)."""

    rnn: float  # the decoder RNN's layers
    combine: float  # the layer that forms h̃_t (Luong W_c, Bahdanau W_o)


class Decoder(nn.Module, Declared, metaclass=ABCMeta):
    """A decoder style: what :class:`~nmt.models.seq2seq.Seq2Seq` and the search call.

    A style is a subclass registered with ``@DECODER_STYLES.register(name)``
    (``model.decoder.style: name``), built as ``cls(attention, sizes, **options)`` with the
    ``model.decoder`` keys it declares beyond :class:`DecoderSizes`' (``config_keys``,
    ``optional_keys``).  ``uses_score``: whether it reads ``model.attention`` (the recurrent
    styles) or brings its own attention (``attention`` is then None).
    """

    uses_score: ClassVar[bool] = True
    hidden_size: int  # of h̃_t

    @classmethod
    @abstractmethod
    def flops(cls, sizes: DecoderSizes, **options: Any) -> DecoderFlops:
        """Matmul FLOPs per target token (see :class:`DecoderFlops`)."""

    def project_keys(self, values: Tensor) -> Tensor:
        """What the steps read as ``Memory.keys``, from the encoder states, once per batch."""
        return self.attention.project_keys(values)

    @abstractmethod
    def init_state(self, memory: Memory) -> DecoderState:
        """The state before target step 0 from the encoder's ``memory``."""

    @abstractmethod
    def forward(self, embedded: Tensor, state: DecoderState, memory: Memory) -> DecoderOutput:
        """Teacher-forced pass.  embedded (batch, tgt_len, embed_dim): E y_0..E y_{T-1}, before
        dropout → h̃_1..h̃_T (batch, tgt_len, hidden), α (batch, tgt_len, src_len), the end state.
        """

    @abstractmethod
    def step(self, embedded: Tensor, state: DecoderState, memory: Memory) -> DecoderStep:
        """One target step.  embedded: (batch, embed_dim), the embedding of y_{t-1}."""


class RecurrentDecoder(Decoder):
    """What both recurrent styles share: the RNN, the bridge, embedding dropout, the attention.

    Bridge (``bridge=True``): s_0 = tanh(W_b · encoder final + b_b), one hidden-size slice per
    decoder layer, where encoder final is the top encoder layer's last state
    [→h_S ; ←h_1] (cf. Bahdanau et al. 2015, appendix A.2.2, s_0 = tanh(W_s ←h_1)).  An LSTM's
    memory cell starts equal to s_0.  ``bridge=False``: s_0 = 0.

    A recurrent style defines :meth:`rnn_input_size`, :meth:`flops`, :meth:`init_state`,
    :meth:`forward` and :meth:`step_after_dropout`.
    """

    def __init__(self, attention: Attention, sizes: DecoderSizes, rnn_input_size: int):
        super().__init__()
        if sizes.rnn_type is None:
            raise NMTError(
                f"model.decoder.rnn_type: missing (expected one of {', '.join(RNN_TYPES)})"
            )
        self.attention = attention
        self.hidden_size = sizes.hidden_size
        self.num_layers = sizes.num_layers
        self.is_lstm = sizes.rnn_type == "lstm"
        self.rnn = DecoderRNN(
            sizes.rnn_type,
            rnn_input_size,
            sizes.hidden_size,
            sizes.num_layers,
            sizes.dropout,
            sizes.layer_norm,
            sizes.residual_from,
        )
        self.bridge = (
            nn.Linear(sizes.encoder_final_size, sizes.num_layers * sizes.hidden_size)
            if sizes.bridge
            else None
        )
        self.dropout = nn.Dropout(sizes.dropout)  # on the target embeddings

    @classmethod
    @abstractmethod
    def rnn_input_size(cls, sizes: DecoderSizes, **options: Any) -> int:
        """The width of the decoder RNN's input x_t."""

    @classmethod
    def rnn_flops(cls, sizes: DecoderSizes, **options: Any) -> int:
        """rnn(in, H) + (L_d − 1) · rnn(H, H), in = :meth:`rnn_input_size`."""
        first = rnn_flops(sizes.rnn_type, cls.rnn_input_size(sizes, **options), sizes.hidden_size)
        rest = rnn_flops(sizes.rnn_type, sizes.hidden_size, sizes.hidden_size)
        return first + (sizes.num_layers - 1) * rest

    def init_rnn_state(self, memory: Memory) -> tuple[Tensor, Tensor | None]:
        """(s_0, c_0), each (num_layers, batch, hidden); c_0 is None for a GRU."""
        batch = memory.final.size(0)
        if self.bridge is None:
            hidden = memory.final.new_zeros(self.num_layers, batch, self.hidden_size)
        else:
            hidden = torch.tanh(self.bridge(memory.final)).float()  # (batch, num_layers*hidden)
            hidden = hidden.view(batch, self.num_layers, self.hidden_size).transpose(0, 1)
            hidden = hidden.contiguous()  # (num_layers, batch, hidden)
        return hidden, (hidden if self.is_lstm else None)

    @contextlib.contextmanager
    def deferred_value_grads(self, memory: Memory) -> Iterator[Memory]:
        """``memory`` for a teacher-forced loop of steps, whose values' gradient is formed once
        after the loop (:meth:`Attention.deferred_value_grads`; the keys too where they are the
        values)."""
        with self.attention.deferred_value_grads(memory.values) as values:
            keys = values if memory.keys is memory.values else memory.keys
            yield memory._replace(values=values, keys=keys)

    def step(self, embedded: Tensor, state: DecoderState, memory: Memory) -> DecoderStep:
        """One target step.  embedded: (batch, embed_dim), the embedding of y_{t-1}."""
        return self.step_after_dropout(self.dropout(embedded), state, memory)

    @abstractmethod
    def step_after_dropout(
        self, embedded: Tensor, state: DecoderState, memory: Memory
    ) -> DecoderStep:
        """One step on an embedding that already went through dropout (the teacher-forced
        ``forward`` applies dropout once to all steps, then calls this per step).
        embedded (batch, embed_dim) → h̃_t (batch, hidden), α_t (batch, src_len), next state."""


DECODER_STYLES: Registry[type[Decoder]] = Registry("model.decoder.style")


@DECODER_STYLES.register("luong")
class LuongDecoder(RecurrentDecoder):
    """Step the RNN, then attend with its new state  (Luong et al. 2015, §3).

        x_t   = [E y_{t-1} ; h̃_{t-1}]  with input feeding (§3.3), else E y_{t-1}
        h_t   = RNN(x_t, h_{t-1})
        query = h_t (top layer);  context c_t, weights α_t = Attention(query, keys, values)
        h̃_t  = tanh(W_c [c_t ; h_t])                                          (eq. 5)

    h̃_0 = 0.  Without input feeding the RNN does not depend on the attention, so the
    teacher-forced :meth:`forward` steps only the RNN and then attends with all queries and
    applies W_c in one batched call.
    """

    config_keys = {"input_feeding": bool}

    def __init__(self, attention: Attention, sizes: DecoderSizes, input_feeding: bool):
        hidden = sizes.hidden_size
        super().__init__(attention, sizes, self.rnn_input_size(sizes, input_feeding))
        self.input_feeding = input_feeding
        self.combine = nn.Linear(sizes.value_size + hidden, hidden, bias=False)  # W_c

    @classmethod
    def rnn_input_size(cls, sizes: DecoderSizes, input_feeding: bool, **options: Any) -> int:
        """E_t + H with input feeding ([E y_{t-1} ; h̃_{t-1}]), else E_t."""
        return sizes.embed_dim + (sizes.hidden_size if input_feeding else 0)

    @classmethod
    def flops(cls, sizes: DecoderSizes, **options: Any) -> DecoderFlops:
        """The RNN on x_t, and W_c: 2·(V + H)·H."""
        hidden = sizes.hidden_size
        combine = 2 * (sizes.value_size + hidden) * hidden
        return DecoderFlops(cls.rnn_flops(sizes, **options), combine)

    def init_state(self, memory: Memory) -> DecoderState:
        hidden, cell = self.init_rnn_state(memory)
        attn_vector = (
            hidden.new_zeros(hidden.size(1), self.hidden_size) if self.input_feeding else None
        )
        return DecoderState(hidden, cell, attn_vector, first_position(memory))

    def attend_and_combine(
        self, outputs: Tensor, memory: Memory, positions: Tensor
    ) -> tuple[Tensor, Tensor]:
        """h_t (batch, steps, hidden) at target steps ``positions`` (batch, steps) →
        h̃_t (batch, steps, hidden), α_t (batch, steps, src_len)."""
        context, attn_weights = self.attention(
            outputs, memory.keys, memory.values, memory.src_mask, positions
        )
        # context: (batch, steps, value_size)
        attn_vectors = torch.tanh(self.combine(torch.cat([context, outputs], dim=-1)))
        return attn_vectors, attn_weights  # (batch, steps, hidden), (batch, steps, src_len)

    def step_after_dropout(
        self, embedded: Tensor, state: DecoderState, memory: Memory
    ) -> DecoderStep:
        return self.step_projected(self.rnn.project_known(embedded), state, memory)

    def step_projected(self, known: Tensor, state: DecoderState, memory: Memory) -> DecoderStep:
        """One step from the projected embedding  known (batch, gates*hidden)."""
        # RNN input [E y_{t-1} ; h̃_{t-1}]: the embedding part arrives projected.
        hidden, cell = self.rnn(known, state.attn_vector, state.hidden, state.cell)
        # hidden: (num_layers, batch, hidden)
        attn_vector, attn_weights = self.attend_and_combine(
            hidden[-1].unsqueeze(1), memory, state.position.unsqueeze(1)
        )
        attn_vector = attn_vector.squeeze(1)  # (batch, hidden)
        new_state = DecoderState(
            hidden, cell, attn_vector if self.input_feeding else None, state.position + 1
        )
        return DecoderStep(attn_vector, attn_weights.squeeze(1), new_state)

    def forward(self, embedded: Tensor, state: DecoderState, memory: Memory) -> DecoderOutput:
        """Teacher-forced pass.  embedded: (batch, tgt_len, embed_dim) for y_0..y_{T-1}."""
        embedded = self.dropout(embedded)
        if not self.input_feeding:
            # The RNN runs over all steps in one call; attention and W_c once over all steps.
            outputs, hidden, cell = self.rnn.sequence(embedded, state.hidden, state.cell)
            steps = torch.arange(embedded.size(1), device=embedded.device)  # (tgt_len,)
            positions = state.position.unsqueeze(1) + steps  # (batch, tgt_len)
            attn_vectors, attn_weights = self.attend_and_combine(outputs, memory, positions)
            end = DecoderState(hidden, cell, None, state.position + embedded.size(1))
            return DecoderOutput(attn_vectors, attn_weights, end)
        attn_vectors, attn_weights = [], []
        known = self.rnn.project_known(embedded)  # (batch, tgt_len, gates*hidden), once
        with self.deferred_value_grads(memory) as memory:
            # unbind, not known[:, t]: its backward is one stack, not a zeroed copy per step
            for known_t in known.unbind(1):  # (batch, gates*hidden)
                out = self.step_projected(known_t, state, memory)
                attn_vectors.append(out.attn_vector)
                attn_weights.append(out.attn_weights)
                state = out.state
        # stacked: (batch, tgt_len, hidden), (batch, tgt_len, src_len)
        return DecoderOutput(torch.stack(attn_vectors, 1), torch.stack(attn_weights, 1), state)


@DECODER_STYLES.register("bahdanau")
class BahdanauDecoder(RecurrentDecoder):
    """Attend with the previous state, then step the RNN on [E y_{t-1} ; c_t]  (Bahdanau et al. 2015).

        query = s_{t-1} (top layer);  context c_t, weights α_t = Attention(query, keys, values)
                                                                         (§3.1, eqs. 5-6)
        s_t   = RNN([E y_{t-1} ; c_t], s_{t-1})                          (eq. 4, appendix A.2.2)
        h̃_t  = tanh(W_o [s_t ; c_t ; E y_{t-1}] + b_o)                   (eq. 4, g(y_{t-1}, s_t, c_t))

    The deep output g of eq. 4 is one tanh layer here (the paper's appendix uses a maxout
    layer).  h̃_t does not feed back, so the teacher-forced :meth:`forward` computes it for all
    steps at once after the loop.  There is no input feeding: the context already enters the
    RNN input.  ``input_feeding`` is accepted, as false only, because configs/train.yaml and
    the configs saved in checkpoints set it for every style.
    """

    optional_keys = {"input_feeding": bool}

    def __init__(self, attention: Attention, sizes: DecoderSizes, input_feeding: bool = False):
        if input_feeding:
            raise NMTError(
                "model.decoder.input_feeding: expected false for style 'bahdanau' "
                "(its context already enters the RNN input); got true"
            )
        super().__init__(attention, sizes, self.rnn_input_size(sizes))
        self.pre_output = nn.Linear(  # W_o
            sizes.hidden_size + sizes.value_size + sizes.embed_dim, sizes.hidden_size
        )

    @classmethod
    def rnn_input_size(cls, sizes: DecoderSizes, **options: Any) -> int:
        """E_t + V: [E y_{t-1} ; c_t]."""
        return sizes.embed_dim + sizes.value_size

    @classmethod
    def flops(cls, sizes: DecoderSizes, **options: Any) -> DecoderFlops:
        """The RNN on [E y_{t-1} ; c_t], and W_o: 2·(H + V + E_t)·H."""
        hidden = sizes.hidden_size
        combine = 2 * (hidden + sizes.value_size + sizes.embed_dim) * hidden
        return DecoderFlops(cls.rnn_flops(sizes, **options), combine)

    def init_state(self, memory: Memory) -> DecoderState:
        hidden, cell = self.init_rnn_state(memory)
        return DecoderState(hidden, cell, None, first_position(memory))

    def recur(
        self, known: Tensor, state: DecoderState, memory: Memory
    ) -> tuple[Tensor, Tensor, DecoderState]:
        """Attend with s_{t-1}, then step the RNN.  known (batch, gates*hidden): the projected
        embedding of y_{t-1} → context c_t (batch, value_size), α_t (batch, src_len), state with s_t."""
        query = state.hidden[-1].unsqueeze(1)  # (batch, 1, hidden): top layer's s_{t-1}
        context, attn_weights = self.attention(
            query, memory.keys, memory.values, memory.src_mask, state.position.unsqueeze(1)
        )
        context = context.squeeze(1)  # (batch, value_size)
        # RNN input [E y_{t-1} ; c_t]: the embedding part arrives projected.
        hidden, cell = self.rnn(
            known, context, state.hidden, state.cell
        )  # (num_layers, batch, hidden)
        next_state = DecoderState(hidden, cell, None, state.position + 1)
        return context, attn_weights.squeeze(1), next_state

    def output(self, top: Tensor, context: Tensor, embedded: Tensor) -> Tensor:
        """h̃ = tanh(W_o [s ; c ; E y_prev] + b_o); inputs (..., ·) → (..., hidden)."""
        return torch.tanh(self.pre_output(torch.cat([top, context, embedded], dim=-1)))

    def step_after_dropout(
        self, embedded: Tensor, state: DecoderState, memory: Memory
    ) -> DecoderStep:
        context, attn_weights, state = self.recur(self.rnn.project_known(embedded), state, memory)
        attn_vector = self.output(state.hidden[-1], context, embedded)  # (batch, hidden)
        return DecoderStep(attn_vector, attn_weights, state)

    def forward(self, embedded: Tensor, state: DecoderState, memory: Memory) -> DecoderOutput:
        """Teacher-forced pass.  embedded: (batch, tgt_len, embed_dim) for y_0..y_{T-1}."""
        embedded = self.dropout(embedded)
        tops, contexts, attn_weights = [], [], []
        known = self.rnn.project_known(embedded)  # (batch, tgt_len, gates*hidden), once
        with self.deferred_value_grads(memory) as memory:
            for known_t in known.unbind(1):  # (batch, gates*hidden)
                context, weights, state = self.recur(known_t, state, memory)
                tops.append(state.hidden[-1])
                contexts.append(context)
                attn_weights.append(weights)
        tops = torch.stack(tops, 1)  # (batch, tgt_len, hidden)
        contexts = torch.stack(contexts, 1)  # (batch, tgt_len, value_size)
        attn_vectors = self.output(tops, contexts, embedded)  # (batch, tgt_len, hidden)
        return DecoderOutput(attn_vectors, torch.stack(attn_weights, 1), state)


@DECODER_STYLES.register("rnmt")
class RNMTDecoder(RecurrentDecoder):
    """The RNMT+ decoder (Chen et al. 2018, §3.1): attend with the bottom layer, feed the
    context to every layer above it and to the output.

        h¹_t  = RNN₁(E y_{t-1}, h¹_{t-1})                            the bottom layer
        c_t, α_t = Attention(h¹_t, keys, values)                    its output is the query
        hˡ_t  = RNNₗ([xˡ_t ; c_t], hˡ_{t-1}),  xˡ_t = h^{l-1}_t (+ x^{l-1}_t from residual_from up)
        h̃_t  = tanh(W_o [x^{L+1}_t ; c_t])                          to the softmax

    No step depends on an earlier step's attention, so the teacher-forced :meth:`forward` runs
    each layer over the whole target in one call (``nn.GRU`` / ``nn.LSTM``, or the layer-
    normalised cells with ``layer_norm: cell``); search steps every layer once per position.
    ``residual_from`` (1-based, ≥ 2): each layer from it up adds its input x (not the context)
    to its output; ``layer_norm: between`` normalises each layer's output before the next.
    ``input_feeding`` is accepted as false only (configs/train.yaml sets it).
    """

    optional_keys = {"input_feeding": bool}

    def __init__(self, attention: Attention, sizes: DecoderSizes, input_feeding: bool = False):
        if input_feeding:
            raise NMTError(
                "model.decoder.input_feeding: expected false for style 'rnmt' "
                "(every layer above the bottom one reads the step's context); got true"
            )
        bottom = dataclasses.replace(sizes, num_layers=1, residual_from=None)
        super().__init__(attention, bottom, self.rnn_input_size(sizes))
        self.num_layers = sizes.num_layers
        hidden, width = sizes.hidden_size, sizes.hidden_size + sizes.value_size
        if sizes.bridge:  # s_0 for every layer, as the other styles
            self.bridge = nn.Linear(sizes.encoder_final_size, sizes.num_layers * hidden)
        self.layer_norm, self.residual_from = sizes.layer_norm, sizes.residual_from
        rnn = rnn_class(sizes.rnn_type, "model.decoder.rnn_type")
        self.upper = nn.ModuleList(
            LayerNormRNN(sizes.rnn_type, width, hidden)
            if sizes.layer_norm == "cell"
            else rnn(width, hidden, batch_first=True)
            for _ in range(sizes.num_layers - 1)
        )
        self.norms = LayerNorms(sizes.layer_norm, hidden, sizes.num_layers)
        self.pre_output = nn.Linear(hidden + sizes.value_size, hidden)  # W_o

    @classmethod
    def rnn_input_size(cls, sizes: DecoderSizes, **options: Any) -> int:
        """E_t: the bottom layer reads the embedding alone."""
        return sizes.embed_dim

    @classmethod
    def flops(cls, sizes: DecoderSizes, **options: Any) -> DecoderFlops:
        """rnn(E_t, H) + (L_d − 1)·rnn(H + V, H); W_o: 2·(H + V)·H."""
        hidden, width = sizes.hidden_size, sizes.hidden_size + sizes.value_size
        rnn = rnn_flops(sizes.rnn_type, sizes.embed_dim, hidden)
        rnn += (sizes.num_layers - 1) * rnn_flops(sizes.rnn_type, width, hidden)
        return DecoderFlops(rnn, 2 * width * hidden)

    def init_state(self, memory: Memory) -> DecoderState:
        hidden, cell = self.init_rnn_state(memory)
        return DecoderState(hidden, cell, None, first_position(memory))

    def next_input(self, output: Tensor, layer_input: Tensor, layer: int) -> Tensor:
        """Layer ``layer``'s (0-based) output on its way up: + its input from residual_from
        up, normalised with ``between``."""
        if uses_residual(self.residual_from, layer):
            output = output + layer_input
        return self.norms(output, layer)

    def output(self, top: Tensor, context: Tensor) -> Tensor:
        """h̃ = tanh(W_o [x^{L+1} ; c])."""
        return torch.tanh(self.pre_output(torch.cat([top, context], dim=-1)))

    def forward(self, embedded: Tensor, state: DecoderState, memory: Memory) -> DecoderOutput:
        """Teacher-forced: every layer over the whole target in one call."""
        embedded = self.dropout(embedded)
        lstm = self.is_lstm
        bottom, h, c = self.rnn.sequence(
            embedded, state.hidden[:1], state.cell[:1] if lstm else None
        )  # (batch, tgt_len, hidden)
        steps = torch.arange(embedded.size(1), device=embedded.device)
        positions = state.position.unsqueeze(1) + steps  # (batch, tgt_len)
        context, attn_weights = self.attention(
            bottom, memory.keys, memory.values, memory.src_mask, positions
        )  # (batch, tgt_len, value_size), (batch, tgt_len, src_len)
        x, hiddens, cells = self.norms(bottom, 0), [h], [c]
        for layer, rnn in enumerate(self.upper, start=1):
            layer_state = (
                (state.hidden[layer : layer + 1], state.cell[layer : layer + 1])
                if lstm
                else state.hidden[layer : layer + 1]
            )
            out, layer_state = run_rnn(rnn, torch.cat([self.dropout(x), context], -1), layer_state)
            hiddens.append(layer_state[0] if lstm else layer_state)
            cells.append(layer_state[1] if lstm else None)
            x = self.next_input(out, x, layer)
        end = DecoderState(
            torch.cat(hiddens),
            torch.cat(cells) if lstm else None,
            None,
            state.position + embedded.size(1),
        )
        return DecoderOutput(self.output(x, context), attn_weights, end)

    def step_after_dropout(
        self, embedded: Tensor, state: DecoderState, memory: Memory
    ) -> DecoderStep:
        lstm = self.is_lstm
        bottom_h, bottom_c = self.rnn(
            self.rnn.project_known(embedded),
            None,
            state.hidden[:1],
            state.cell[:1] if lstm else None,
        )  # (1, batch, hidden)
        context, attn_weights = self.attention(
            bottom_h[0].unsqueeze(1),
            memory.keys,
            memory.values,
            memory.src_mask,
            state.position.unsqueeze(1),
        )
        context = context.squeeze(1)  # (batch, value_size)
        x, hiddens = self.norms(bottom_h[0], 0), [bottom_h[0]]
        cells = [bottom_c[0]] if lstm else []
        for layer, rnn in enumerate(self.upper, start=1):
            inputs = torch.cat([self.dropout(x), context], -1)  # (batch, hidden + value_size)
            cell = state.cell[layer] if lstm else None
            h, cell = step_layer(rnn, inputs, state.hidden[layer], cell)
            hiddens.append(h)
            if lstm:
                cells.append(cell)
            x = self.next_input(h, x, layer)
        new_state = DecoderState(
            torch.stack(hiddens),  # (num_layers, batch, hidden)
            torch.stack(cells) if lstm else None,
            None,
            state.position + 1,
        )
        return DecoderStep(self.output(x, context), attn_weights.squeeze(1), new_state)
