"""The Transformer's pieces: multi-head attention, pre-norm layers, the encoder and the decoder.

Vaswani et al. 2017 with the pre-norm residual blocks of Wang et al. 2019 / Xiong et al. 2020
(layer normalisation before each sub-layer, one more after the last layer), as JoeyNMT and
fairseq's ``--encoder-normalize-before`` build it:

    x ← x + Dropout(SelfAttention(LN(x)))          (decoder: causal; keys and values cached)
    x ← x + Dropout(CrossAttention(LN(x), memory))  (decoder only)
    x ← x + Dropout(W_2 ReLU(W_1 LN(x) + b_1) + b_2)

Multi-head scaled dot-product attention (eqs. 1–2):

    head_i = softmax(Q W_i^Q (K W_i^K)ᵀ / √d_k) V W_i^V,  MultiHead = [head_1; …; head_H] W^O

Inputs are √d · E x + PE(position) with sinusoidal positions (§3.5).  The decoder plugs into
:class:`~nmt.models.seq2seq.Seq2Seq` like the recurrent styles: ``Seq2Seq.encode`` asks it to
project the encoder states into every layer's cross-attention keys and values once per batch
(``Memory.keys``: (batch, src_len, L·2·d)), and its state carries the self-attention keys and
values of the steps taken so far (``DecoderState.cache``: (batch, steps, L·2·d)), so a search step
costs one position, and a beam reorders the cache with the rest of the state.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from nmt.core.errors import NMTError
from nmt.core.special_ids import PAD_ID
from nmt.models.attention import Attention, masked_softmax
from nmt.models.decoder import (
    DECODER_STYLES,
    Decoder,
    DecoderFlops,
    DecoderOutput,
    DecoderSizes,
    DecoderState,
    DecoderStep,
    Memory,
    first_position,
)
from nmt.models.encoder import ENCODER_TYPES, EncoderOutput, EncoderSizes
from nmt.models.registry import Declared


def sinusoid_positions(positions: Tensor, dim: int) -> Tensor:
    """PE(p, 2i) = sin(p / 10000^(2i/d)), PE(p, 2i+1) = cos(…)  (Vaswani et al. 2017, §3.5).

    positions (...) long → (..., dim) fp32; ``dim`` even.
    """
    rates = torch.exp(
        torch.arange(0, dim, 2, device=positions.device, dtype=torch.float32)
        * (-math.log(10000.0) / dim)
    )  # (dim/2,)
    angles = positions.unsqueeze(-1).float() * rates  # (..., dim/2)
    return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(-2)  # sin, cos interleaved


class MultiHeadAttention(nn.Module):
    """Multi-head scaled dot-product attention over keys and values projected by the caller.

    The keys and values arrive as one tensor ``kv`` (batch, kv_len, 2·d) = [K W^K ; V W^V] from
    :meth:`project_kv`: the encoder's for cross-attention are projected once per batch, the
    decoder's own are projected one step at a time and cached.
    """

    def __init__(self, d_model: int, heads: int, dropout: float, kv_input_size: int | None = None):
        super().__init__()
        if d_model % heads:
            raise NMTError(f"heads: {heads} does not divide the model size {d_model}")
        self.heads = heads
        self.head_dim = d_model // heads
        self.q_proj = nn.Linear(d_model, d_model)
        self.kv_proj = nn.Linear(kv_input_size or d_model, 2 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)  # on the attention weights

    def project_kv(self, x: Tensor) -> Tensor:
        """x (batch, len, input) → [K ; V] (batch, len, 2·d)."""
        return self.kv_proj(x)

    def split_heads(self, x: Tensor) -> Tensor:
        """(batch, len, d) → (batch, heads, len, head_dim)."""
        return x.unflatten(-1, (self.heads, self.head_dim)).transpose(1, 2)

    def forward(self, x: Tensor, kv: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """x (batch, q_len, d) queries; kv (batch, kv_len, 2·d); mask bool (batch, q_len or 1,
        kv_len), True = may attend → output (batch, q_len, d), weights (batch, heads, q_len, kv_len).
        """
        keys, values = kv.chunk(2, dim=-1)
        q = self.split_heads(self.q_proj(x))  # (batch, heads, q_len, head_dim)
        k, v = self.split_heads(keys), self.split_heads(values)  # (batch, heads, kv_len, head_dim)
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)  # (batch, heads, q, kv)
        weights = masked_softmax(scores, mask.unsqueeze(1))  # normalised in fp32, every head
        context = self.dropout(weights).to(v.dtype) @ v  # (batch, heads, q_len, head_dim)
        context = context.transpose(1, 2).flatten(-2)  # (batch, q_len, d)
        return self.out_proj(context), weights

    @staticmethod
    def flops(d_model: int, kv_input_size: int, q_len: float, kv_len: float) -> tuple[int, float]:
        """(per key/value position: 2·in·2d for [K ; V]; per query: Q and W^O 2·2·d², scores
        and context 2·2·d·kv_len)."""
        per_query = 4 * d_model * d_model + 4 * d_model * kv_len
        return 4 * kv_input_size * d_model, per_query


class FeedForward(nn.Sequential):
    """W_2 Dropout(ReLU(W_1 x + b_1)) + b_2  (§3.3)."""

    def __init__(self, d_model: int, ff_size: int, dropout: float):
        super().__init__(
            nn.Linear(d_model, ff_size), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ff_size, d_model)
        )


class EncoderLayer(nn.Module):
    """x ← x + SelfAttention(LN(x));  x ← x + FF(LN(x))  (pre-norm)."""

    def __init__(self, d_model: int, heads: int, ff_size: int, dropout: float):
        super().__init__()
        self.self_norm = nn.LayerNorm(d_model)
        self.self_attn = MultiHeadAttention(d_model, heads, dropout)
        self.ff_norm = nn.LayerNorm(d_model)
        self.ff = FeedForward(d_model, ff_size, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """x (batch, src_len, d); mask (batch, 1, src_len) → x, weights (batch, heads, S, S)."""
        normed = self.self_norm(x)
        attended, weights = self.self_attn(normed, self.self_attn.project_kv(normed), mask)
        x = x + self.dropout(attended)
        return x + self.dropout(self.ff(self.ff_norm(x))), weights


def check_transformer_sizes(embed_dim: int, hidden_size: int, key: str) -> None:
    """A Transformer adds its embeddings to its residual stream: one size for both."""
    if embed_dim != hidden_size:
        raise NMTError(
            f"{key}.embed_dim: expected {hidden_size} (= {key}.hidden_size, the Transformer's "
            f"model size); got {embed_dim}"
        )
    if hidden_size % 2:
        raise NMTError(f"{key}.hidden_size: expected an even size (sinusoid positions)")


def embed_with_positions(embedded: Tensor, positions: Tensor) -> Tensor:
    """√d · E x + PE(position): embedded (..., d), positions (...) long → (..., d)."""
    d_model = embedded.size(-1)
    return embedded * math.sqrt(d_model) + sinusoid_positions(positions, d_model).to(embedded.dtype)


@ENCODER_TYPES.register("transformer")
class TransformerEncoder(nn.Module, Declared):
    """Embeddings with sinusoid positions, N pre-norm self-attention layers, a final LN.

    ``model.encoder``: ``hidden_size`` = ``embed_dim`` = d, ``num_layers``, ``heads``,
    ``ff_size``, ``dropout``.  The states at padded positions are zero, as the recurrent
    encoder's; ``final`` (the bridge's input when a recurrent decoder reads this encoder) is the
    mean of each sentence's real states.
    """

    config_keys = {"heads": int, "ff_size": int}

    def __init__(self, vocab_size: int, sizes: EncoderSizes, heads: int, ff_size: int):
        super().__init__()
        check_transformer_sizes(sizes.embed_dim, sizes.hidden_size, "model.encoder")
        d_model = sizes.hidden_size
        self.output_size = d_model
        self.embed = nn.Embedding(vocab_size, d_model, padding_idx=PAD_ID)
        nn.init.normal_(self.embed.weight, 0.0, d_model**-0.5)  # √d · E x then has unit scale
        with torch.no_grad():
            self.embed.weight[PAD_ID].zero_()
        self.dropout = nn.Dropout(sizes.dropout)
        self.layers = nn.ModuleList(
            EncoderLayer(d_model, heads, ff_size, sizes.dropout) for _ in range(sizes.num_layers)
        )
        self.final_norm = nn.LayerNorm(d_model)

    @classmethod
    def from_sizes(
        cls, vocab_size: int, sizes: EncoderSizes, heads: int, ff_size: int
    ) -> TransformerEncoder:
        """The encoder ``model.encoder`` describes (``type: transformer``)."""
        return cls(vocab_size, sizes, heads, ff_size)

    @classmethod
    def flops(cls, sizes: EncoderSizes, src_len: float, heads: int, ff_size: int) -> float:
        """Per source token: each layer's self-attention (Q, K, V, W^O: 8·d², scores and
        context 4·d·S) and feed-forward 4·d·ff."""
        d_model = sizes.hidden_size
        per_kv, per_query = MultiHeadAttention.flops(d_model, d_model, 1, src_len)
        return sizes.num_layers * (per_kv + per_query + 4 * d_model * ff_size)

    def forward(self, src: Tensor, src_lengths: Tensor) -> EncoderOutput:
        """src (batch, src_len) long, PAD_ID-padded; src_lengths (batch,)."""
        positions = torch.arange(src.size(1), device=src.device)  # (src_len,)
        real = positions < src_lengths.to(src.device).unsqueeze(1)  # (batch, src_len)
        x = self.dropout(embed_with_positions(self.embed(src), positions))
        mask = real.unsqueeze(1)  # (batch, 1, src_len): every query sees the real tokens
        for layer in self.layers:
            x, _ = layer(x, mask)
        states = self.final_norm(x).masked_fill(~real.unsqueeze(-1), 0.0)  # (batch, S, d)
        counts = real.sum(1, keepdim=True).clamp(min=1).to(states.dtype)  # (batch, 1)
        return EncoderOutput(states, states.sum(1) / counts)


def causal_mask(past: int, steps: int, device: torch.device) -> Tensor:
    """Which keys each new position may attend to: query i (absolute position past + i) sees
    keys 0 .. past + i, never a later one.  → bool (1, steps, past + steps), True = may attend."""
    keys_at = torch.arange(past + steps, device=device)  # (past + steps,)
    queries_at = past + torch.arange(steps, device=device).unsqueeze(1)  # (steps, 1)
    return (keys_at <= queries_at).unsqueeze(0)


class DecoderLayer(nn.Module):
    """Causal self-attention, cross-attention over the source, feed-forward; each pre-norm."""

    def __init__(self, d_model: int, value_size: int, heads: int, ff_size: int, dropout: float):
        super().__init__()
        self.self_norm = nn.LayerNorm(d_model)
        self.self_attn = MultiHeadAttention(d_model, heads, dropout)
        self.cross_norm = nn.LayerNorm(d_model)
        self.cross_attn = MultiHeadAttention(d_model, heads, dropout, kv_input_size=value_size)
        self.ff_norm = nn.LayerNorm(d_model)
        self.ff = FeedForward(d_model, ff_size, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        past_kv: Tensor,
        self_mask: Tensor,
        cross_kv: Tensor,
        src_mask: Tensor,
    ) -> tuple[Tensor, Tensor, LayerAttention]:
        """x (batch, steps, d): the new positions; past_kv (batch, past, 2d) the cached earlier
        ones (past may be 0); self_mask (batch or 1, steps, past + steps); cross_kv (batch, S, 2d);
        src_mask (batch, 1, S) → x, this layer's [K ; V] of all positions (batch, past+steps,
        2d), the attention weights."""
        normed = self.self_norm(x)
        new_kv = self.self_attn.project_kv(normed)  # (batch, steps, 2d)
        kv = torch.cat([past_kv, new_kv], dim=1)  # (batch, past + steps, 2d)
        attended, self_weights = self.self_attn(normed, kv, self_mask)
        x = x + self.dropout(attended)
        attended, cross_weights = self.cross_attn(self.cross_norm(x), cross_kv, src_mask)
        x = x + self.dropout(attended)
        x = x + self.dropout(self.ff(self.ff_norm(x)))
        return x, kv, LayerAttention(self_weights, cross_weights)


class LayerAttention(NamedTuple):
    """One decoder layer's attention weights, per head."""

    self_weights: Tensor | None  # (batch, heads, steps, past + steps); None: a recurrent decoder
    cross_weights: Tensor  # (batch, heads, steps, src_len)


@DECODER_STYLES.register("transformer")
class TransformerDecoder(Decoder):
    """N pre-norm decoder layers and a final LN; h̃_t is the top layer's normalised output.

    ``model.decoder``: ``hidden_size`` = ``embed_dim`` = d, ``num_layers``, ``heads``,
    ``ff_size``, ``dropout``; ``rnn_type``, ``bridge`` and ``model.attention`` are not read
    (its attention is scaled dot product, multi-head).  The attention weights it reports
    (``attn_weights``, what the explorer and the statistics read) are the top layer's
    cross-attention averaged over its heads; :meth:`attention_maps` gives every layer and head.
    """

    config_keys = {"heads": int, "ff_size": int}
    optional_keys = {"input_feeding": bool}  # accepted (false) because configs/train.yaml sets it
    uses_score = False

    def __init__(
        self,
        attention: Attention | None,
        sizes: DecoderSizes,
        heads: int,
        ff_size: int,
        input_feeding: bool = False,
    ):
        super().__init__()
        check_transformer_sizes(sizes.embed_dim, sizes.hidden_size, "model.decoder")
        if input_feeding:
            raise NMTError(
                "model.decoder.input_feeding: expected false for style 'transformer' "
                "(self-attention already reads every earlier step); got true"
            )
        self.hidden_size = d_model = sizes.hidden_size
        self.num_layers = sizes.num_layers
        self.heads = heads
        self.layers = nn.ModuleList(
            DecoderLayer(d_model, sizes.value_size, heads, ff_size, sizes.dropout)
            for _ in range(sizes.num_layers)
        )
        self.final_norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(sizes.dropout)  # on the embeddings with positions

    @classmethod
    def flops(
        cls, sizes: DecoderSizes, heads: int = 1, ff_size: int = 0, tgt_len: float = 0.0,
        **options: Any,
    ) -> DecoderFlops:  # fmt: skip
        """Per target token, per layer.  ``rnn`` (the self-attention): Q, K, V, W^O 8·d², scores
        and context 4·d·(T̄+1)/2 over the earlier positions; ``combine``: the cross-attention's
        Q and W^O 4·d² and the feed-forward 4·d·ff."""
        d_model, layers = sizes.hidden_size, sizes.num_layers
        self_attention = 8 * d_model * d_model + 4 * d_model * (tgt_len + 1) / 2
        return DecoderFlops(
            rnn=layers * self_attention,
            combine=layers * (4 * d_model * d_model + 4 * d_model * ff_size),
        )

    @classmethod
    def key_flops(cls, sizes: DecoderSizes, **options: Any) -> int:
        """Per source token: every layer's cross-attention [K ; V], 2·V·2d."""
        return sizes.num_layers * 4 * sizes.value_size * sizes.hidden_size

    @classmethod
    def attention_flops(cls, sizes: DecoderSizes, src_len: float, **options: Any) -> float:
        """Per target token: every layer's cross-attention scores and context, 4·d·S."""
        return sizes.num_layers * 4 * sizes.hidden_size * src_len

    def project_keys(self, values: Tensor) -> Tensor:
        """Every layer's cross-attention [K ; V] of the encoder states, once per batch:
        values (batch, S, value_size) → (batch, S, L·2·d)."""
        return torch.cat([layer.cross_attn.project_kv(values) for layer in self.layers], dim=-1)

    def init_state(self, memory: Memory) -> DecoderState:
        """Position 0 and an empty cache (batch, 0, L·2·d)."""
        batch = memory.src_mask.size(0)
        cache = memory.values.new_zeros(batch, 0, self.num_layers * 2 * self.hidden_size)
        return DecoderState(None, None, None, first_position(memory), cache)

    def run_layers(
        self, embedded: Tensor, state: DecoderState, memory: Memory
    ) -> tuple[Tensor, DecoderState, list[LayerAttention]]:
        """The new positions' embeddings (batch, steps, d), after dropout → h̃ (batch, steps, d),
        the state after them, every layer's attention."""
        steps = embedded.size(1)
        past = state.cache.size(1)
        positions = state.position.unsqueeze(1) + torch.arange(steps, device=embedded.device)
        x = self.dropout(embed_with_positions(embedded, positions))
        self_mask = causal_mask(past, steps, x.device)  # (1, steps, past + steps)
        src_mask = memory.src_mask.unsqueeze(1)  # (batch, 1, S)
        width = 2 * self.hidden_size
        caches, maps = [], []
        for i, layer in enumerate(self.layers):
            past_kv = state.cache[..., i * width : (i + 1) * width]  # (batch, past, 2d)
            cross_kv = memory.keys[..., i * width : (i + 1) * width]
            x, kv, weights = layer(x, past_kv, self_mask, cross_kv, src_mask)
            caches.append(kv)
            maps.append(weights)
        cache = torch.cat(caches, dim=-1)  # (batch, past + steps, L·2d)
        new_state = DecoderState(None, None, None, state.position + steps, cache)
        return self.final_norm(x), new_state, maps

    def forward(self, embedded: Tensor, state: DecoderState, memory: Memory) -> DecoderOutput:
        """Teacher-forced: all target positions at once under the causal mask."""
        attn_vectors, state, maps = self.run_layers(embedded, state, memory)
        return DecoderOutput(attn_vectors, maps[-1].cross_weights.mean(1), state)

    def step(self, embedded: Tensor, state: DecoderState, memory: Memory) -> DecoderStep:
        """One position: embedded (batch, d) → h̃_t (batch, d), the top layer's cross-attention
        (batch, S) averaged over heads, the state with this position's keys and values cached."""
        attn_vectors, state, maps = self.run_layers(embedded.unsqueeze(1), state, memory)
        return DecoderStep(attn_vectors.squeeze(1), maps[-1].cross_weights.mean(1)[:, 0], state)

    def attention_maps(self, embedded: Tensor, memory: Memory) -> list[LayerAttention]:
        """Every layer's self- and cross-attention per head for a whole target prefix
        (teacher-forced, as the explorer shows them): embedded (batch, T, d)."""
        return self.run_layers(embedded, self.init_state(memory), memory)[2]
