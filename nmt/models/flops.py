"""The model's matrix-multiply FLOPs per target token, from its settings and measured lengths.

:func:`flops_per_target_token` adds up, piece by piece, the matmuls one target token costs: the
encoder's and the key projection's per source token and the bridge's per sentence, spread over
the target tokens with the ratios of real (unpadded) lengths in :class:`LengthStats`, and the
decoder's, the attention's and the output layer's per target token. The score's and the decoder
style's pieces are their registered classes' ``flops`` (:data:`nmt.models.attention.SCORES`,
:data:`nmt.models.decoder.DECODER_STYLES`), so a new part brings its own count. ``nmt-benchmark``
divides these FLOPs by the measured time to compare the achieved rate with the GEMM peak.
"""

from __future__ import annotations

from dataclasses import dataclass

from nmt.core.special_ids import PAD_ID
from nmt.data.batching import Batch
from nmt.models.attention import SCORES, AttentionSettings, MultiHeadScoreAttention, ScoreFlops
from nmt.models.decoder import DECODER_STYLES, DecoderSizes
from nmt.models.encoder import ENCODER_TYPES, EncoderSettings, EncoderSizes
from nmt.models.seq2seq import ModelSettings

# Backward ≈ 2 × forward: each weight matmul y = W x needs one matmul for the gradient of x and
# one for the gradient of W.
TRAIN_FLOPS_FACTOR = 3


@dataclass
class LengthStats:
    """Real (unpadded) lengths of the batches measured, summed over their sentences."""

    sentences: int = 0
    src_tokens: int = 0  # Σ S_i, source subwords with </s>
    tgt_tokens: int = 0  # Σ T_i, predicted target tokens (tgt_out without padding)
    attended: int = 0  # Σ S_i · T_i, source positions attended over all target tokens

    def add(self, batch: Batch) -> None:
        """Count ``batch``'s sentences: source lengths (batch,), target lengths without padding."""
        src = batch.src_lengths.cpu()  # (batch,)
        tgt = (batch.tgt_out != PAD_ID).sum(1).cpu()  # (batch,)
        self.sentences += src.numel()
        self.src_tokens += int(src.sum())
        self.tgt_tokens += int(tgt.sum())
        self.attended += int((src * tgt).sum())

    @property
    def src_per_tgt(self) -> float:
        """Source tokens per target token: spreads the per-source-token pieces."""
        return self.src_tokens / self.tgt_tokens

    @property
    def attn_src_len(self) -> float:
        """Mean source length a target token attends over (weighted by target length)."""
        return self.attended / self.tgt_tokens

    @property
    def tgt_len(self) -> float:
        """Mean target length (a causal self-attention step reads about half of it)."""
        return self.tgt_tokens / self.sentences

    @property
    def sentences_per_tgt(self) -> float:
        """Sentences per target token: spreads the per-sentence pieces (the bridge)."""
        return self.sentences / self.tgt_tokens


@dataclass
class FlopCount:
    """Forward FLOPs per target token by piece; ``train`` adds the backward pass."""

    pieces: dict[str, float]

    @property
    def forward(self) -> float:
        return sum(self.pieces.values())

    @property
    def train(self) -> float:
        return TRAIN_FLOPS_FACTOR * self.forward


def flops_per_target_token(
    model: ModelSettings, tgt_vocab_size: int, lengths: LengthStats
) -> FlopCount:
    """Forward matmul FLOPs per target token, piece by piece (a multiply-add counts 2).

    Sizes: E_s, E_t embeddings; H_e encoder hidden per direction, D directions, L_e layers;
    V = D·H_e encoder output (values); H decoder hidden, L_d layers; A the concat layer;
    |V_t| target vocabulary; S the source length attended over. Per source token:

        encoder_rnn     Σ_layers D · rnn(in, H_e), in = E_s (first layer) or D·H_e
        attention_keys  concat 2·V·A; general 2·V·H; dot/scaled_dot 2·V·H if V ≠ H else 0;
                        location 0  (projected once per batch)

    per sentence: ``bridge`` 2·V·L_d·H (when ``bridge``); per target token:

        decoder_rnn     rnn(in, H) + (L_d − 1) · rnn(H, H); in = E_t + H (Luong, input
                        feeding), E_t (Luong), E_t + V (Bahdanau)
        attention       scores: dot/scaled_dot/general 2·H·S; concat 2·H·A (W_q q) + 2·A·S (vᵀ);
                        location 2·H·max_src_len (W_a q); then the context 2·S·V; type
                        local_p adds its window centre v_pᵀ tanh(W_p q): 2·H·H + 2·H (local
                        attention still scores all S positions, then masks the window)
        combine         Luong W_c: 2·(V + H)·H;  Bahdanau W_o: 2·(H + V + E_t)·H
        output_proj     2·H·|V_t|; tied with H ≠ E_t: 2·H·E_t + 2·E_t·|V_t|

    The score's and the decoder style's pieces are their classes' ``flops`` (the registries
    :data:`nmt.models.attention.SCORES`, :data:`nmt.models.decoder.DECODER_STYLES`). The
    per-source and per-sentence pieces are spread over the target tokens with the measured
    ratios. Padding is not counted: these are the FLOPs of the real tokens. Element-wise work
    (gate non-linearities, tanh, softmax, embeddings lookups) is left out.
    """
    enc, att, dec = model.encoder, model.attention, model.decoder
    values = encoder_output_size(enc)  # V
    hidden, embed = dec.hidden_size, dec.embed_dim  # H, E_t
    if model.tie_embeddings and hidden != embed:
        output_proj = 2 * hidden * embed + 2 * embed * tgt_vocab_size
    else:
        output_proj = 2 * hidden * tgt_vocab_size
    style = DECODER_STYLES.lookup(dec.style)
    sizes = DecoderSizes(
        dec.rnn_type,
        embed,
        hidden,
        dec.num_layers,
        dec.dropout,
        values,
        values,
        dec.bridge,
    )
    decoder = style.flops(sizes, tgt_len=lengths.tgt_len, **dec.options)
    if style.uses_score:
        score = SCORES.lookup(att.score)
        if att.heads > 1:
            attention = MultiHeadScoreAttention.flops(
                score, hidden, values, lengths.attn_src_len, att.heads, **att.options
            )
        else:
            attention = score.flops(hidden, values, lengths.attn_src_len, **att.options)
        keys = attention.keys
        attending = attention_flops(att, attention, values, hidden, lengths.attn_src_len)
    else:  # the style's own attention (the Transformer's cross-attention)
        keys = style.key_flops(sizes, **dec.options)
        attending = style.attention_flops(sizes, lengths.attn_src_len, **dec.options)
    encoder = "encoder_rnn" if enc.type == "rnn" else f"encoder_{enc.type}"
    return FlopCount(
        {
            encoder: encoder_flops(enc, lengths.src_tokens / lengths.sentences)
            * lengths.src_per_tgt,
            "attention_keys": keys * lengths.src_per_tgt,
            "bridge": (2 * values * dec.num_layers * hidden if dec.bridge else 0)
            * lengths.sentences_per_tgt,
            "decoder_rnn" if style.uses_score else "decoder_self_attention": float(decoder.rnn),
            "attention": attending,
            "combine": float(decoder.combine),
            "output_proj": float(output_proj),
        }
    )


def encoder_output_size(enc: EncoderSettings) -> int:
    """V, the width of the encoder states: D·H_e (rnn) or d (transformer)."""
    if enc.type == "rnn":
        return (2 if enc.bidirectional else 1) * enc.hidden_size
    return enc.hidden_size


def encoder_flops(enc: EncoderSettings, src_len: float) -> float:
    """Per source token, from the encoder type's class (``src_len``: the mean source length,
    which self-attention reads)."""
    kind = ENCODER_TYPES.lookup(enc.type)
    return kind.flops(EncoderSizes.of(enc), src_len=src_len, **enc.options)


def attention_flops(
    att: AttentionSettings, score: ScoreFlops, values: int, hidden: int, src_len: float
) -> float:
    """Per target token: the score's FLOPs over ``src_len`` positions, then the context 2·S·V."""
    # local_p: p_t = S·sigmoid(v_pᵀ tanh(W_p q)); configs saved before local attention: global
    centre = 2 * hidden * hidden + 2 * hidden if att.type == "local_p" else 0
    return score.scores + 2 * src_len * values + centre
