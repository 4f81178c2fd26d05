"""Attentional encoder-decoder models: recurrent, Transformer, and the pairs of the two.

    model = build_model(cfg.model, src_vocab_size, tgt_vocab_size)
    out = model(src, src_lengths, tgt_in)               # Seq2SeqOutput(logits, attn_weights)
    memory = model.encode(src, src_lengths)             # Memory(values, keys, src_mask, final)
    state = model.init_state(memory)                    # DecoderState(hidden, cell, attn_vector, position)
    logits, attn_weights, state = model.step(prev_tokens, state, memory)   # StepOutput

``src_mask`` is bool (batch, src_len) with True = real token, everywhere.
"""

from nmt.models.attention import (
    ATTENTION_TYPES,
    SCORES,
    Attention,
    AttentionOutput,
    Score,
    build_attention,
)
from nmt.models.decoder import DECODER_STYLES, Decoder, DecoderState, Memory
from nmt.models.encoder import ENCODER_TYPES, Encoder, EncoderOutput
from nmt.models.seq2seq import Seq2Seq, Seq2SeqOutput, StepOutput, build_model, init_uniform_
from nmt.models.transformer import TransformerDecoder, TransformerEncoder  # registers them

__all__ = [
    "ATTENTION_TYPES",
    "DECODER_STYLES",
    "ENCODER_TYPES",
    "SCORES",
    "Attention",
    "AttentionOutput",
    "Decoder",
    "DecoderState",
    "Encoder",
    "EncoderOutput",
    "Memory",
    "Score",
    "Seq2Seq",
    "Seq2SeqOutput",
    "StepOutput",
    "TransformerDecoder",
    "TransformerEncoder",
    "build_attention",
    "build_model",
    "init_uniform_",
]
