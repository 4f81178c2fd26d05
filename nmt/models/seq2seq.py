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

from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import Tensor, nn

from nmt.data.vocab import PAD_ID
from nmt.errors import NMTError
from nmt.models.attention import ATTENTION_TYPES, SCORES, build_attention
from nmt.models.decoder import DECODER_STYLES, Decoder, DecoderSizes, DecoderState, Memory
from nmt.models.encoder import RNN_TYPES, Encoder
from nmt.models.registry import Declared

# the keys of model.decoder every style reads (DecoderSizes); a style declares its own others
DECODER_KEYS = ("style", "rnn_type", "embed_dim", "hidden_size", "num_layers", "dropout", "bridge")


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
        encoder: Encoder,
        decoder: Decoder,
        tgt_vocab_size: int,
        tgt_embed_dim: int,
        tie_embeddings: bool,
        dropout: float,
    ):
        super().__init__()
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
        keys = self.decoder.attention.project_keys(values)  # once per batch
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


def build_model(model_cfg: Any, src_vocab_size: int, tgt_vocab_size: int) -> Seq2Seq:
    """A :class:`Seq2Seq` from ``model_cfg`` (an OmegaConf node or a plain dict).

    Every key is required and checked; unknown keys and bad values raise :class:`NMTError`
    naming the key and the valid choices.
    """
    cfg = to_plain_dict(model_cfg)
    check_keys(cfg, "model", required=("encoder", "attention", "decoder", "tie_embeddings"))
    enc = section(cfg, "encoder")
    att = section(cfg, "attention")
    dec = section(cfg, "decoder")
    tie = boolean(cfg, "model", "tie_embeddings")

    check_keys(
        enc,
        "model.encoder",
        required=("rnn_type", "embed_dim", "hidden_size", "num_layers", "bidirectional", "dropout"),
    )
    encoder = Encoder(
        vocab_size=src_vocab_size,
        rnn_type=choice(enc, "model.encoder", "rnn_type", RNN_TYPES),
        embed_dim=positive_int(enc, "model.encoder", "embed_dim"),
        hidden_size=positive_int(enc, "model.encoder", "hidden_size"),
        num_layers=positive_int(enc, "model.encoder", "num_layers"),
        bidirectional=boolean(enc, "model.encoder", "bidirectional"),
        dropout=probability(enc, "model.encoder", "dropout"),
    )

    score = SCORES[choice(att, "model.attention", "score", tuple(SCORES))]
    # type and window may be absent (checkpoints from before local attention): global
    check_keys(
        att,
        "model.attention",
        required=("score", *score.config_keys),
        optional=("type", "window", *score.optional_keys),
    )
    attention_type = (
        choice(att, "model.attention", "type", ATTENTION_TYPES) if "type" in att else "global"
    )
    if "style" not in dec:
        raise NMTError("model.decoder.style: missing")
    style = DECODER_STYLES[choice(dec, "model.decoder", "style", tuple(DECODER_STYLES))]
    check_keys(
        dec,
        "model.decoder",
        required=(*DECODER_KEYS, *style.config_keys),
        optional=tuple(style.optional_keys),
    )
    hidden = positive_int(dec, "model.decoder", "hidden_size")
    embed_dim = positive_int(dec, "model.decoder", "embed_dim")
    dropout = probability(dec, "model.decoder", "dropout")
    attention = build_attention(
        score.name,
        query_size=hidden,
        value_size=encoder.output_size,
        attention_type=attention_type,
        **declared_options(att, "model.attention", score),
        window=positive_int(att, "model.attention", "window") if "window" in att else None,
    )
    sizes = DecoderSizes(
        rnn_type=choice(dec, "model.decoder", "rnn_type", RNN_TYPES),
        embed_dim=embed_dim,
        hidden_size=hidden,
        num_layers=positive_int(dec, "model.decoder", "num_layers"),
        dropout=dropout,
        value_size=encoder.output_size,
        encoder_final_size=encoder.output_size,
        bridge=boolean(dec, "model.decoder", "bridge"),
    )
    decoder = style(attention, sizes, **declared_options(dec, "model.decoder", style))
    return Seq2Seq(encoder, decoder, tgt_vocab_size, embed_dim, tie, dropout)


def declared_options(cfg: Mapping, where: str, part: type[Declared]) -> dict[str, Any]:
    """The keys ``part`` (a registered score or decoder style) declares that ``cfg`` holds,
    each checked by its declared type: int a positive integer, bool true or false."""
    check = {int: positive_int, bool: boolean}
    keys = {**part.config_keys, **part.optional_keys}
    return {key: check[kind](cfg, where, key) for key, kind in keys.items() if key in cfg}


def to_plain_dict(cfg: Any) -> dict:
    """An OmegaConf node (interpolations resolved) or a mapping → a plain dict."""
    if isinstance(cfg, DictConfig):
        try:
            return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
        except OmegaConfBaseException as err:
            raise NMTError(f"model: {str(err).splitlines()[0]}") from None
    if isinstance(cfg, Mapping):
        return dict(cfg)
    raise NMTError(f"model: expected a mapping of options; got {type(cfg).__name__}")


def section(cfg: Mapping, name: str) -> Mapping:
    value = cfg[name]
    if not isinstance(value, Mapping):
        raise NMTError(f"model.{name}: expected a mapping of options; got {value!r}")
    return value


def check_keys(
    cfg: Mapping, where: str, required: tuple[str, ...], optional: tuple[str, ...] = ()
) -> None:
    """Every required key present, no key that is neither required nor optional."""
    for key in required:
        if key not in cfg:
            raise NMTError(f"{where}.{key}: missing")
    known = (*required, *optional)
    for key in cfg:
        if key not in known:
            raise NMTError(f"{where}.{key}: unknown option; expected only {', '.join(known)}")


def choice(cfg: Mapping, where: str, key: str, valid: tuple[str, ...]) -> str:
    value = cfg.get(key)
    if value not in valid:
        raise NMTError(f"{where}.{key}: expected one of {', '.join(valid)}; got {value!r}")
    return value


def positive_int(cfg: Mapping, where: str, key: str) -> int:
    value = cfg.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise NMTError(f"{where}.{key}: expected a positive integer; got {value!r}")
    return value


def boolean(cfg: Mapping, where: str, key: str) -> bool:
    value = cfg.get(key)
    if not isinstance(value, bool):
        raise NMTError(f"{where}.{key}: expected true or false; got {value!r}")
    return value


def probability(cfg: Mapping, where: str, key: str) -> float:
    value = cfg.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise NMTError(f"{where}.{key}: expected a number in [0, 1); got {value!r}")
    return float(value)
