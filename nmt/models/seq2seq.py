"""Encoder → attention ↔ decoder → logits, and the step interface used by search.

    memory = model.encode(src, src_lengths)              # once per batch
    state = model.init_state(memory)
    logits, attn_weights, state = model.step(prev_tokens, state, memory)   # per target step

:meth:`Seq2Seq.forward` is the teacher-forced pass: the decoder loop computes only the
attentional vectors h̃_t, and the vocabulary-size output projection runs once over all steps.
:meth:`Seq2Seq.step` does the same math one step at a time, so greedy search reproduces the
argmax of the teacher-forced logits on its own prefix.

Output layer: p(y_t | y_<t, x) = softmax(W_out h̃_t + b)  (Luong et al. 2015, eq. 6).  With
``tie_embeddings`` W_out is the target embedding matrix E (Press & Wolf 2017); when the decoder
hidden size differs from the embedding size, h̃_t first goes through a learned projection
P (embed_dim × hidden, no bias): logits = E P h̃_t + b.  A tied E is initialised from
N(0, 1/embed_dim) so that the initial logits stay small.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from nmt.core.settings import setting
from nmt.core.special_ids import EOS_ID, PAD_ID, UNK_ID
from nmt.models.attention import AttentionSettings, build_attention
from nmt.models.decoder import (
    DECODER_STYLES,
    Decoder,
    DecoderSettings,
    DecoderSizes,
    DecoderState,
    Memory,
)
from nmt.models.encoder import EncoderSettings, build_encoder

# the keys of model.decoder every style reads (DecoderSizes); a style declares its own others
DECODER_KEYS = ("style", "rnn_type", "embed_dim", "hidden_size", "num_layers", "dropout", "bridge")


@dataclass(frozen=True, kw_only=True)
class ModelSettings:
    encoder: EncoderSettings = setting()
    attention: AttentionSettings = setting()
    decoder: DecoderSettings = setting()
    tie_embeddings: bool = setting()


class Seq2SeqOutput(NamedTuple):
    logits: Tensor  # (batch, tgt_len, tgt_vocab)
    attn_weights: Tensor  # (batch, tgt_len, src_len)


class StepOutput(NamedTuple):
    logits: Tensor  # (batch, tgt_vocab)
    attn_weights: Tensor  # (batch, src_len)
    state: DecoderState


class Seq2Seq(nn.Module):
    """An attentional encoder-decoder.  See the module docstring for the interface."""

    def __init__(
        self,
        encoder: nn.Module,
        decoder: Decoder,
        tgt_vocab_size: int,
        tgt_embed_dim: int,
        tie_embeddings: bool,
        dropout: float,
        word_dropout: tuple[float, float] = (0.0, 0.0),
    ):
        super().__init__()
        self.word_dropout = word_dropout  # (source, target) rates, training only
        self.encoder = encoder
        self.decoder = decoder
        self.tgt_embed = nn.Embedding(tgt_vocab_size, tgt_embed_dim, padding_idx=PAD_ID)
        self.output_dropout = nn.Dropout(dropout)  # on h̃ before the output projection
        hidden = decoder.hidden_size
        if tie_embeddings:
            # P: h̃ (hidden) → embedding space, only when the sizes differ
            self.pre_output_proj = (
                nn.Linear(hidden, tgt_embed_dim, bias=False)
                if hidden != tgt_embed_dim
                else nn.Identity()
            )
            self.output_proj = nn.Linear(tgt_embed_dim, tgt_vocab_size)
            self.output_proj.weight = self.tgt_embed.weight  # tied: W_out = E
            # N(0, 1/embed_dim) rather than N(0, 1), so that the initial logits E P h̃ stay O(1)
            with torch.no_grad():
                self.tgt_embed.weight.normal_(0.0, tgt_embed_dim**-0.5)
                self.tgt_embed.weight[PAD_ID].zero_()
        else:
            self.pre_output_proj = nn.Identity()
            self.output_proj = nn.Linear(hidden, tgt_vocab_size)

    def num_parameters(self) -> int:
        """Trainable parameters, a tied matrix counted once."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def encode(self, src: Tensor, src_lengths: Tensor) -> Memory:
        """src (batch, src_len) long, PAD_ID-padded; src_lengths (batch,) in any order."""
        values, final = self.encoder(src, src_lengths)  # (batch, src_len, value_size)
        keys = self.decoder.project_keys(values)  # once per batch
        same = keys is values  # dot/scaled_dot with equal sizes, location
        values = cast_for_decoding(values)
        keys = values if same else cast_for_decoding(keys)
        # from the lengths, not the ids, so whatever sits in the padding is never attended to
        positions = torch.arange(src.size(1), device=src.device)  # (src_len,)
        src_mask = positions < src_lengths.to(src.device).unsqueeze(1)  # (batch, src_len)
        return Memory(values, keys, src_mask, final)

    def init_state(self, memory: Memory) -> DecoderState:
        return self.decoder.init_state(memory)

    def logits(self, attn_vectors: Tensor) -> Tensor:
        """h̃ (..., hidden) → logits (..., tgt_vocab)."""
        return self.output_proj(self.pre_output_proj(self.output_dropout(attn_vectors)))

    def step(self, prev_tokens: Tensor, state: DecoderState, memory: Memory) -> StepOutput:
        """One decoder step.  prev_tokens (batch,) long → logits (batch, tgt_vocab),
        attn_weights (batch, src_len), the next state."""
        embedded = self.tgt_embed(prev_tokens)  # (batch, embed_dim)
        out = self.decoder.step(embedded, state, memory)
        return StepOutput(self.logits(out.attn_vector), out.attn_weights, out.state)

    def forward(
        self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor, teacher_forcing: float = 1.0
    ) -> Seq2SeqOutput:
        """src (batch, src_len); src_lengths (batch,); tgt_in (batch, tgt_len) = <s> y_1 .. y_{n}.

        teacher_forcing < 1: at each step, each sentence independently feeds the model's own
        argmax instead of the reference token with probability 1 - teacher_forcing.
        """
        if self.training:  # whole source and target words replaced by <unk> (word dropout)
            src = drop_words(src, self.word_dropout[0])
            tgt_in = drop_words(tgt_in, self.word_dropout[1])
        memory = self.encode(src, src_lengths)
        state = self.init_state(memory)
        if teacher_forcing >= 1.0:
            embedded = self.tgt_embed(tgt_in)  # (batch, tgt_len, embed_dim)
            out = self.decoder(embedded, state, memory)  # h̃: (batch, tgt_len, hidden)
            return Seq2SeqOutput(self.logits(out.attn_vectors), out.attn_weights)
        return self.forward_sampled(tgt_in, state, memory, teacher_forcing)

    def forward_sampled(
        self, tgt_in: Tensor, state: DecoderState, memory: Memory, teacher_forcing: float
    ) -> Seq2SeqOutput:
        """Step by step, mixing reference tokens and the model's own argmax (scheduled sampling)."""
        tokens = tgt_in[:, 0]  # (batch,)
        logits, attn_weights = [], []
        for t in range(tgt_in.size(1)):
            out = self.step(tokens, state, memory)
            logits.append(out.logits)
            attn_weights.append(out.attn_weights)
            state = out.state
            if t + 1 < tgt_in.size(1):
                use_reference = torch.rand(tokens.shape, device=tokens.device) < teacher_forcing
                predicted = out.logits.detach().argmax(-1)  # (batch,)
                tokens = torch.where(use_reference, tgt_in[:, t + 1], predicted)
        # stacked: (batch, tgt_len, tgt_vocab), (batch, tgt_len, src_len)
        return Seq2SeqOutput(torch.stack(logits, 1), torch.stack(attn_weights, 1))


def attention_label(score: str, decoder_style: str) -> str:
    """The attention a model's label names: its score, or ``multi-head`` for a decoder style
    that brings its own attention (the Transformer's, ``uses_score`` false)."""
    style = DECODER_STYLES.get(decoder_style)
    return "multi-head" if style is not None and not style.uses_score else score


def drop_words(ids: Tensor, rate: float) -> Tensor:
    """Word dropout (Gal & Ghahramani 2016; Sennrich & Zhang 2019): each real token of ``ids``
    (not ``<pad>``, ``<s>``, ``</s>``) becomes ``<unk>`` with probability ``rate``.  The
    sentence keeps its length, so the batch's lengths and masks stay as they are."""
    if rate <= 0.0:
        return ids
    droppable = ids > EOS_ID  # the specials are 0..3 (nmt.core.special_ids)
    dropped = torch.rand(ids.shape, device=ids.device) < rate
    return ids.masked_fill(droppable & dropped, UNK_ID)


def cast_for_decoding(memory: Tensor) -> Tensor:
    """``memory`` in autocast's dtype when decoding (no gradient) under autocast; else as is.

    Every decoder step multiplies the keys and values again (scores, context), and autocast
    would cast an fp32 tensor to bf16 at each of those products; cast once, the steps read the
    same bf16 numbers, so the outputs are identical.  Not in training, where one bf16 copy
    would sum its gradient from all steps in bf16 instead of fp32.
    """
    device = memory.device.type
    if torch.is_grad_enabled() or not torch.is_autocast_enabled(device):
        return memory
    return memory.to(torch.get_autocast_dtype(device))


# --------------------------------------------------------------------------------------------
# Building from the config group ``model`` (configs/model/*)


def build_model(
    m: ModelSettings, src_vocab_size: int, tgt_vocab_size: int, param_init: float | None = None
) -> Seq2Seq:
    """A :class:`Seq2Seq` from the ``model`` settings; fresh weights
    from U(−param_init, param_init) when it is given (``trainer.param_init``, :func:`init_uniform_`),
    else PyTorch's per-layer defaults.

    The keys, types and ranges were checked when the settings were built (:class:`ModelSettings`),
    the score's and the decoder style's own keys by what their classes declare.
    """
    enc, att, dec = m.encoder, m.attention, m.decoder
    encoder = build_encoder(enc, src_vocab_size)
    style = DECODER_STYLES.lookup(dec.style)
    attention = (
        build_attention(
            att.score,
            query_size=dec.hidden_size,
            value_size=encoder.output_size,
            attention_type=att.type,
            window=att.window,
            heads=att.heads,
            **att.options,
        )
        if style.uses_score
        else None  # the style brings its own attention (the Transformer's)
    )
    sizes = DecoderSizes(
        rnn_type=dec.rnn_type,
        embed_dim=dec.embed_dim,
        hidden_size=dec.hidden_size,
        num_layers=dec.num_layers,
        dropout=dec.dropout,
        value_size=encoder.output_size,
        encoder_final_size=encoder.output_size,
        bridge=dec.bridge,
        layer_norm=dec.layer_norm,
        residual_from=dec.residual_from,
    )
    decoder = style(attention, sizes, **dec.options)
    model = Seq2Seq(
        encoder,
        decoder,
        tgt_vocab_size,
        dec.embed_dim,
        m.tie_embeddings,
        dec.dropout,
        (enc.word_dropout, dec.word_dropout),
    )
    if param_init is not None:
        init_uniform_(model, param_init)
    return model


def init_uniform_(model: nn.Module, bound: float) -> None:
    """Draw every parameter from U(−bound, bound), the embeddings' padding rows then zero
    (OpenNMT-py's ``param_init``; ``trainer.param_init``).  PyTorch's per-layer defaults give
    a 512-unit GRU ±0.044 and a 1024-input linear ±0.031, and ``nn.Embedding`` N(0, 1).
    Layer norms keep their gain 1 and bias 0: a random gain would scale each feature at random."""
    norms = {id(p) for m in model.modules() if isinstance(m, nn.LayerNorm) for p in m.parameters()}
    with torch.no_grad():
        for param in model.parameters():
            if id(param) not in norms:  # a layer norm keeps its gain 1 and bias 0
                param.uniform_(-bound, bound)
        for module in model.modules():
            if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                module.weight[module.padding_idx].zero_()
