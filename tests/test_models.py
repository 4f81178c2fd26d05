"""Encoder, decoders and Seq2Seq: every option combination, masking, the step API, learnability."""

from __future__ import annotations

import contextlib
import itertools
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import build_model
from torch import nn

from nmt.core.errors import NMTError
from nmt.core.special_ids import BOS_ID, EOS_ID, PAD_ID
from nmt.data.vocab import Vocab, train_sentencepiece
from nmt.models import SCORES, Seq2Seq
from nmt.models.attention import Attention

SRC_VOCAB, TGT_VOCAB = 23, 19
CONFIGS = Path(__file__).parents[1] / "configs"


def model_cfg(
    rnn_type: str = "gru",
    score: str = "concat",
    style: str = "luong",
    *,
    bidirectional: bool = True,
    enc_layers: int = 1,
    dec_layers: int = 1,
    input_feeding: bool | None = None,
    bridge: bool = True,
    tie: bool = False,
    embed_dim: int = 6,
    enc_hidden: int = 5,
    dec_hidden: int = 7,
    dropout: float = 0.0,
    attention_type: str | None = None,
    window: int | None = None,
) -> dict:
    """A tiny config shaped like configs/model/*; sizes differ so that mix-ups fail loudly.
    Without ``attention_type`` the attention section has no ``type`` (global, as in older
    checkpoints)."""
    attention = {"score": score}
    if attention_type is not None:
        attention["type"] = attention_type
    if window is not None:
        attention["window"] = window
    if score == "concat":
        attention["hidden_size"] = 4
    if score == "location":
        attention["max_src_len"] = 10
    return {
        "encoder": {
            "rnn_type": rnn_type,
            "embed_dim": embed_dim,
            "hidden_size": enc_hidden,
            "num_layers": enc_layers,
            "bidirectional": bidirectional,
            "dropout": dropout,
        },
        "attention": attention,
        "decoder": {
            "style": style,
            "rnn_type": rnn_type,
            "embed_dim": embed_dim,
            "hidden_size": dec_hidden,
            "num_layers": dec_layers,
            "dropout": dropout,
            "input_feeding": (style == "luong") if input_feeding is None else input_feeding,
            "bridge": bridge,
        },
        "tie_embeddings": tie,
    }


def make_model(seed: int = 0, **kwargs) -> Seq2Seq:
    torch.manual_seed(seed)
    return build_model(model_cfg(**kwargs), SRC_VOCAB, TGT_VOCAB)


def pad(seqs: list[list[int]], width: int | None = None) -> torch.Tensor:
    width = width or max(map(len, seqs))
    return torch.tensor([s + [PAD_ID] * (width - len(s)) for s in seqs])


def tiny_batch(seed: int = 1):
    """Three sentence pairs of unsorted lengths, padded; ids avoid the special tokens."""
    g = torch.Generator().manual_seed(seed)
    src_lengths, tgt_lengths = [4, 6, 2], [3, 5, 2]
    src = pad([torch.randint(4, SRC_VOCAB, (n,), generator=g).tolist() for n in src_lengths])
    tgt = [torch.randint(4, TGT_VOCAB, (n,), generator=g).tolist() for n in tgt_lengths]
    tgt_in = pad([[BOS_ID] + y for y in tgt])
    tgt_out = pad([y + [EOS_ID] for y in tgt])
    return src, torch.tensor(src_lengths), tgt_in, tgt_out


def loss_of(logits: torch.Tensor, tgt_out: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.flatten(0, 1), tgt_out.flatten(), ignore_index=PAD_ID)


def check_forward_backward(model: Seq2Seq, record_property=None) -> None:
    src, src_lengths, tgt_in, tgt_out = tiny_batch()
    out = model(src, src_lengths, tgt_in)
    assert out.logits.shape == (3, tgt_in.size(1), TGT_VOCAB)
    assert out.attn_weights.shape == (3, tgt_in.size(1), src.size(1))
    src_pad = (src == PAD_ID).unsqueeze(1).expand_as(out.attn_weights)
    assert torch.all(out.attn_weights[src_pad] == 0.0)
    torch.testing.assert_close(out.attn_weights.sum(-1), torch.ones(3, tgt_in.size(1)))

    loss_of(out.logits, tgt_out).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} gets no gradient"
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{name} has an all-zero gradient"
    n = model.num_parameters()
    assert n == sum(p.numel() for p in model.parameters())
    if record_property is not None:
        record_property("num_parameters", n)
    print(f"{n} parameters")


# ---------------------------------------------------------------------------------------------
# every option combination runs forward and backward


@pytest.mark.parametrize("style", ["luong", "bahdanau"])
@pytest.mark.parametrize("score", SCORES)
@pytest.mark.parametrize("rnn_type", ["gru", "lstm"])
def test_every_combination_runs_forward_and_backward(rnn_type, score, style, record_property):
    check_forward_backward(make_model(rnn_type=rnn_type, score=score, style=style), record_property)


VARIANTS = {
    "unidirectional": dict(bidirectional=False),
    "two-layers-gru": dict(enc_layers=2, dec_layers=2, dropout=0.3),
    "two-layers-lstm": dict(rnn_type="lstm", enc_layers=2, dec_layers=2),
    "three-dec-layers-one-enc": dict(dec_layers=3, bidirectional=False),
    "no-bridge": dict(bridge=False),
    "no-input-feeding": dict(input_feeding=False),
    "tied-same-size": dict(tie=True, dec_hidden=6),
    "tied-projected": dict(tie=True),
    "dot-same-size-keys": dict(score="dot", enc_hidden=7, bidirectional=False, dec_hidden=7),
}


@pytest.mark.parametrize(
    "variant, style",
    [
        (variant, style)
        for variant in VARIANTS
        for style in ["luong", "bahdanau"]
        if not (style == "bahdanau" and variant == "no-input-feeding")  # a Luong option
    ],
)
def test_variants_run_forward_and_backward(variant, style, record_property):
    kwargs = VARIANTS[variant]
    check_forward_backward(make_model(style=style, **kwargs), record_property)


# ---------------------------------------------------------------------------------------------
# padding


@pytest.mark.parametrize("style", ["luong", "bahdanau"])
@pytest.mark.parametrize("score", SCORES)
def test_padding_content_and_amount_change_nothing(score, style):
    model = make_model(score=score, style=style, dropout=0.3).eval()
    src, src_lengths, tgt_in, _ = tiny_batch()
    with torch.no_grad():
        out = model(src, src_lengths, tgt_in)
        # other token ids at the padded positions, and three more padded columns
        noisy = torch.cat([src, torch.zeros(3, 3, dtype=torch.long)], dim=1)
        real = noisy != PAD_ID
        noisy[~real] = torch.randint(4, SRC_VOCAB, (int((~real).sum()),))
        noisy_out = model(noisy, src_lengths, tgt_in)
    torch.testing.assert_close(noisy_out.logits, out.logits)
    torch.testing.assert_close(noisy_out.attn_weights[:, :, : src.size(1)], out.attn_weights)
    assert torch.all(noisy_out.attn_weights[:, :, src.size(1) :] == 0.0)


@pytest.mark.parametrize("rnn_type", ["gru", "lstm"])
@pytest.mark.parametrize("style", ["luong", "bahdanau"])
def test_each_sentence_of_a_padded_unsorted_batch_equals_it_alone(style, rnn_type):
    model = make_model(rnn_type=rnn_type, style=style, enc_layers=2).eval()
    src, src_lengths, tgt_in, tgt_out = tiny_batch()
    with torch.no_grad():
        batch_out = model(src, src_lengths, tgt_in)
        for i in range(3):
            n, m = int(src_lengths[i]), int((tgt_out[i] != PAD_ID).sum())
            alone = model(src[i : i + 1, :n], src_lengths[i : i + 1], tgt_in[i : i + 1, :m])
            torch.testing.assert_close(alone.logits[0], batch_out.logits[i, :m])
            torch.testing.assert_close(alone.attn_weights[0], batch_out.attn_weights[i, :m, :n])


def test_encoder_states_are_zero_at_padding_and_final_is_last_real_state():
    model = make_model(enc_layers=2)
    src, src_lengths, _, _ = tiny_batch()
    memory = model.encode(src, src_lengths)
    assert memory.values.shape == (3, src.size(1), 2 * 5)
    assert memory.src_mask.dtype == torch.bool
    assert torch.equal(memory.src_mask, src != PAD_ID)  # tiny_batch has no PAD inside
    assert torch.all(memory.values[~memory.src_mask] == 0.0)
    for i, n in enumerate(src_lengths.tolist()):
        forward_last = memory.values[i, n - 1, :5]  # →h at the last real token
        backward_first = memory.values[i, 0, 5:]  # ←h at the first token
        torch.testing.assert_close(memory.final[i], torch.cat([forward_last, backward_first]))


# ---------------------------------------------------------------------------------------------
# the step interface used by search


STEP_CASES = {
    "luong-gru": dict(style="luong"),
    "luong-no-input-feeding": dict(style="luong", input_feeding=False),
    "luong-lstm-2-layers": dict(style="luong", rnn_type="lstm", enc_layers=2, dec_layers=2),
    "luong-location-tied": dict(style="luong", score="location", tie=True),
    "bahdanau-gru": dict(style="bahdanau"),
    "bahdanau-lstm-2-layers-dot": dict(
        style="bahdanau", rnn_type="lstm", dec_layers=2, score="dot"
    ),
    # local_m needs the target position t: the all-steps path of the Luong decoder without input
    # feeding and the step path must agree on it
    "luong-no-input-feeding-local_m": dict(
        style="luong", input_feeding=False, attention_type="local_m", window=1
    ),
    "luong-no-input-feeding-local_p": dict(
        style="luong", input_feeding=False, score="general", attention_type="local_p", window=1
    ),
    "luong-local_m-location": dict(
        style="luong", score="location", attention_type="local_m", window=1
    ),
    "bahdanau-lstm-local_m": dict(
        style="bahdanau", rnn_type="lstm", attention_type="local_m", window=1
    ),
    "bahdanau-local_p-dot": dict(style="bahdanau", score="dot", attention_type="local_p", window=2),
}


@pytest.mark.parametrize("case", STEP_CASES)
def test_step_by_step_equals_teacher_forced_forward(case):
    model = make_model(dropout=0.3, **STEP_CASES[case]).eval()
    src, src_lengths, tgt_in, _ = tiny_batch()
    with torch.no_grad():
        forward = model(src, src_lengths, tgt_in)
        memory = model.encode(src, src_lengths)
        state = model.init_state(memory)
        for t in range(tgt_in.size(1)):
            logits, attn_weights, state = model.step(tgt_in[:, t], state, memory)
            assert logits.shape == (3, TGT_VOCAB)
            torch.testing.assert_close(logits, forward.logits[:, t])
            torch.testing.assert_close(attn_weights, forward.attn_weights[:, t])


@pytest.mark.parametrize(
    "style, input_feeding", [("luong", False), ("luong", True), ("bahdanau", False)]
)
def test_local_m_window_follows_the_target_position_in_the_model(style, input_feeding):
    window = 1
    model = make_model(
        style=style, input_feeding=input_feeding, attention_type="local_m", window=window
    ).eval()
    src, src_lengths, tgt_in, _ = tiny_batch()
    with torch.no_grad():
        weights = model(src, src_lengths, tgt_in).attn_weights  # (batch, tgt_len, src_len)
    t = torch.arange(tgt_in.size(1)).view(1, -1, 1)
    centre = torch.minimum(t, src_lengths.view(-1, 1, 1) - 1)  # p_t = min(t, S - 1)
    s = torch.arange(src.size(1)).view(1, 1, -1)
    inside = ((s - centre).abs() <= window) & (s < src_lengths.view(-1, 1, 1))
    assert torch.all(weights[~inside] == 0.0)
    assert torch.all(weights[inside] > 0.0)


@pytest.mark.parametrize("style", ["luong", "bahdanau"])
def test_local_p_model_trains_every_parameter(style):
    """Forward and backward: W_p and v_p (and everything else) get a gradient; the weights keep
    the (batch, tgt_len, src_len) shape with exact zeros on padding."""
    model = make_model(style=style, score="general", attention_type="local_p", window=2)
    src, src_lengths, tgt_in, tgt_out = tiny_batch()
    out = model(src, src_lengths, tgt_in)
    assert out.attn_weights.shape == (3, tgt_in.size(1), src.size(1))
    src_pad = (src == PAD_ID).unsqueeze(1).expand_as(out.attn_weights)
    assert torch.all(out.attn_weights[src_pad] == 0.0)
    loss_of(out.logits, tgt_out).backward()
    names = [name for name, _ in model.named_parameters()]
    assert "decoder.attention.local.position_hidden.weight" in names  # W_p
    assert "decoder.attention.local.position_out.weight" in names  # v_p
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{name} gets no gradient"
    hidden = 7
    assert model.num_parameters() - make_model(style=style, score="general").num_parameters() == (
        hidden * hidden + hidden
    )


def first_two_steps(model: Seq2Seq):
    """Memory, the state after one step on <s>, and the next step's inputs, in eval mode."""
    src, src_lengths, tgt_in, _ = tiny_batch()
    memory = model.encode(src, src_lengths)
    _, _, state = model.step(tgt_in[:, 0], model.init_state(memory), memory)
    return memory, state, tgt_in[:, 1]


def masked_attention(scores: torch.Tensor, memory) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference softmax over real positions and context, written out: (batch, src_len) scores."""
    weights = scores.exp() * memory.src_mask
    weights = weights / weights.sum(-1, keepdim=True)
    return torch.einsum("bs,bsv->bv", weights, memory.values), weights


def test_luong_step_follows_the_equations():
    """h_t = GRU([E y; h̃_{t-1}], h_{t-1}); α = softmax(h_tᵀ W_k h_j); h̃_t = tanh(W_c [c; h_t])."""
    model = make_model(score="dot", style="luong").eval()  # keys: projected 10 → 7
    with torch.no_grad():
        memory, state, prev = first_two_steps(model)
        assert state.attn_vector is not None and state.attn_vector.abs().sum() > 0
        logits, attn_weights, new_state = model.step(prev, state, memory)

        x = torch.cat([model.tgt_embed(prev), state.attn_vector], dim=-1)
        h = torch.gru_cell(x, state.hidden[0], *model.decoder.rnn.layer_weights(0))
        keys = memory.values @ model.decoder.attention.score.key_proj.weight.T
        context, weights = masked_attention(torch.einsum("bh,bsh->bs", h, keys), memory)
        h_tilde = torch.tanh(model.decoder.combine(torch.cat([context, h], dim=-1)))
    torch.testing.assert_close(attn_weights, weights)
    torch.testing.assert_close(new_state.hidden[0], h)
    torch.testing.assert_close(new_state.attn_vector, h_tilde)
    torch.testing.assert_close(logits, model.output_proj(h_tilde))


def test_bahdanau_step_follows_the_equations():
    """α = softmax(vᵀ tanh(W_q s_{t-1} + W_k h_j)); s_t = GRU([E y; c], s_{t-1});
    h̃_t = tanh(W_o [s_t; c; E y])."""
    model = make_model(score="concat", style="bahdanau").eval()
    score = model.decoder.attention.score
    with torch.no_grad():
        memory, state, prev = first_two_steps(model)
        logits, attn_weights, new_state = model.step(prev, state, memory)

        s_prev, embedded = state.hidden[0], model.tgt_embed(prev)
        hidden = torch.tanh(score.query_proj(s_prev).unsqueeze(1) + score.key_proj(memory.values))
        context, weights = masked_attention(score.v(hidden).squeeze(-1), memory)
        s = torch.gru_cell(
            torch.cat([embedded, context], dim=-1), s_prev, *model.decoder.rnn.layer_weights(0)
        )
        h_tilde = torch.tanh(model.decoder.pre_output(torch.cat([s, context, embedded], dim=-1)))
    torch.testing.assert_close(attn_weights, weights)
    torch.testing.assert_close(new_state.hidden[0], s)
    torch.testing.assert_close(logits, model.output_proj(h_tilde))


@pytest.mark.parametrize("rnn_type", ["gru", "lstm"])
def test_bridge_sets_the_initial_state(rnn_type):
    src, src_lengths, _, _ = tiny_batch()
    model = make_model(rnn_type=rnn_type, dec_layers=2)
    memory = model.encode(src, src_lengths)
    state = model.init_state(memory)
    expected = torch.tanh(model.decoder.bridge(memory.final)).view(3, 2, 7).transpose(0, 1)
    torch.testing.assert_close(state.hidden, expected)  # (num_layers, batch, hidden)
    if rnn_type == "lstm":
        torch.testing.assert_close(state.cell, state.hidden)  # c_0 = s_0
    else:
        assert state.cell is None
    assert torch.equal(state.attn_vector, torch.zeros(3, 7))  # h̃_0 = 0 for input feeding

    no_bridge = make_model(rnn_type=rnn_type, dec_layers=2, bridge=False)
    state = no_bridge.init_state(no_bridge.encode(src, src_lengths))
    assert torch.equal(state.hidden, torch.zeros(2, 3, 7))
    assert not any("bridge" in name for name, _ in no_bridge.named_parameters())


def test_dropout_is_active_in_training_mode():
    model = make_model(dropout=0.5)
    src, src_lengths, tgt_in, _ = tiny_batch()
    torch.manual_seed(1)
    first = model(src, src_lengths, tgt_in).logits
    second = model(src, src_lengths, tgt_in).logits
    assert not torch.allclose(first, second)
    # on h̃ before the output projection too
    attn_vectors = torch.ones(4, 7)
    assert not torch.allclose(model.logits(attn_vectors), model.eval().logits(attn_vectors))


@pytest.mark.parametrize("style", ["luong", "bahdanau"])
def test_index_select_reorders_and_repeats_the_batch(style):
    model = make_model(style=style, rnn_type="lstm", dec_layers=2).eval()
    src, src_lengths, tgt_in, _ = tiny_batch()
    idx = torch.tensor([2, 2, 0, 1, 1, 0])
    with torch.no_grad():
        memory = model.encode(src, src_lengths)
        state = model.init_state(memory)
        logits, _, state = model.step(tgt_in[:, 0], state, memory)
        next_logits, next_weights, _ = model.step(tgt_in[:, 1], state, memory)
        beam_memory, beam_state = memory.index_select(idx), state.index_select(idx)
        beam_logits, beam_weights, _ = model.step(tgt_in[idx, 1], beam_state, beam_memory)
    torch.testing.assert_close(beam_logits, next_logits[idx])
    torch.testing.assert_close(beam_weights, next_weights[idx])


@pytest.mark.parametrize("style", ["luong", "bahdanau"])
def test_teacher_forcing_zero_feeds_the_models_own_argmax(style):
    model = make_model(style=style).eval()
    src, src_lengths, tgt_in, _ = tiny_batch()
    with torch.no_grad():
        sampled = model(src, src_lengths, tgt_in, teacher_forcing=0.0)
        memory = model.encode(src, src_lengths)
        state, tokens = model.init_state(memory), tgt_in[:, 0]
        for t in range(tgt_in.size(1)):
            logits, _, state = model.step(tokens, state, memory)
            torch.testing.assert_close(sampled.logits[:, t], logits)
            tokens = logits.argmax(-1)
        # mixing with probability 1 of the reference is the teacher-forced pass
        state = model.init_state(memory)
        mixed = model.forward_sampled(tgt_in, state, memory, teacher_forcing=1.0)
        torch.testing.assert_close(mixed.logits, model(src, src_lengths, tgt_in).logits)


def test_scheduled_sampling_trains():
    model = make_model(dropout=0.2)
    src, src_lengths, tgt_in, tgt_out = tiny_batch()
    out = model(src, src_lengths, tgt_in, teacher_forcing=0.5)
    assert out.logits.shape == (3, tgt_in.size(1), TGT_VOCAB)
    loss_of(out.logits, tgt_out).backward()
    assert model.encoder.embed.weight.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------
# tied embeddings, parameter counts, configs


def test_tied_embeddings_share_one_matrix():
    untied, tied = make_model(dec_hidden=6), make_model(dec_hidden=6, tie=True)
    assert tied.output_proj.weight is tied.tgt_embed.weight
    assert untied.num_parameters() - tied.num_parameters() == TGT_VOCAB * 6

    # hidden 7 ≠ embedding 6: the untied 7×vocab output matrix becomes a 7→6 projection
    projected = make_model(tie=True)
    assert projected.output_proj.weight is projected.tgt_embed.weight
    assert make_model().num_parameters() - projected.num_parameters() == 7 * TGT_VOCAB - 7 * 6


@pytest.mark.parametrize("tie", [False, True])
def test_uniform_init_draws_every_parameter_within_the_bound(tie):
    """trainer.param_init=r: every weight in U(−r, r), the padding rows zero, ties kept."""
    from nmt.models import init_uniform_

    model = make_model(tie=tie)
    init_uniform_(model, 0.1)
    for name, param in model.named_parameters():
        assert param.abs().max() <= 0.1, name
    weights = torch.cat([p.flatten() for p in model.parameters()])
    assert weights.std().item() == pytest.approx(0.2 / 12**0.5, rel=0.1)  # U(−0.1, 0.1): 0.058
    for embed in (model.encoder.embed, model.tgt_embed):
        assert embed.weight[PAD_ID].abs().sum() == 0
    assert (model.output_proj.weight is model.tgt_embed.weight) == tie


def compose_model_cfg(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        return compose("train", overrides=overrides).model


def test_reference_config_parameter_count():
    """biGRU 256 encoder, GRU 256 Luong decoder with input feeding, concat attention, 8k/8k."""
    model = build_model(compose_model_cfg(["+experiment=joeynmt_ref"]), 8000, 8000)
    e, h, v, a = 256, 256, 8000, 256
    gru = lambda inp: 3 * h * (inp + h) + 2 * 3 * h  # noqa: E731
    expected = (
        v * e  # source embeddings
        + 2 * gru(e)  # bidirectional encoder
        + h * a + 2 * h * a + a + a  # concat: W_q, W_k (+ bias), v
        + gru(e + h)  # decoder GRU, input [embedding; h̃]
        + 2 * h * h + h  # bridge
        + (2 * h + h) * h  # W_c
        + v * e  # target embeddings
        + h * v + v  # output projection
    )  # fmt: skip
    assert model.num_parameters() == expected
    tied = build_model(
        compose_model_cfg(["+experiment=joeynmt_ref", "model.tie_embeddings=true"]), 8000, 8000
    )
    assert tied.num_parameters() == expected - v * e
    print(f"reference model: {expected} parameters ({expected - v * e} tied)")


def test_every_config_file_builds_a_model():
    from hydra import compose, initialize_config_dir

    src, src_lengths, tgt_in, _ = tiny_batch()
    combinations = [("gru", score, "luong") for score in SCORES] + [
        ("lstm", "concat", "luong"),
        ("gru", "dot", "bahdanau"),
        ("lstm", "location", "bahdanau"),
    ]
    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        for encoder, attention, decoder in combinations:
            overrides = [
                f"model/encoder={encoder}",
                f"model/attention={attention}",
                f"model/decoder={decoder}",
            ]
            model = build_model(compose("train", overrides=overrides).model, SRC_VOCAB, TGT_VOCAB)
            assert model.decoder.rnn.is_lstm == (encoder == "lstm")  # interpolated rnn_type
            with torch.no_grad():
                out = model(src, src_lengths, tgt_in)
            assert out.logits.shape == (3, tgt_in.size(1), TGT_VOCAB), overrides


@pytest.mark.parametrize(
    "change, message",
    [
        (("attention", "score", "foo"), "model.attention.score: expected one of "
         f"{', '.join(SCORES)}; got 'foo'"),  # the registry's names, in registration order
        (("encoder", "rnn_type", "rnn"), "model.encoder.rnn_type: expected one of gru, lstm or null; got 'rnn'"),
        (("decoder", "rnn_type", "GRU"), "model.decoder.rnn_type: expected one of gru, lstm or null; got 'GRU'"),
        (("decoder", "style", "joey"), "model.decoder.style: expected one of luong, bahdanau, rnmt, transformer; got 'joey'"),
        (("decoder", "num_layers", 0), "model.decoder.num_layers: expected an integer >= 1; got 0"),
        (("encoder", "dropout", 1.5), "model.encoder.dropout: expected a number in [0, 1); got 1.5"),
        (("encoder", "bidirectional", "yes"), "model.encoder.bidirectional: expected true or false"),
        (("attention", "hidden_size", 8), "model.attention.hidden_size: unknown setting for score 'dot'"),
        (("decoder", "input_feed", True), "model.decoder.input_feed: unknown setting for style 'luong'; expected one of style"),
        (("attention", "type", "local"), "model.attention.type: expected one of global, local_m, "
         "local_p; got 'local'"),
        (("attention", "window", 0), "model.attention.window: expected an integer >= 1 or null; got 0"),
        (("attention", "window", 2.5), "model.attention.window: expected an integer >= 1 or null; "
         "got 2.5"),
        ((None, "tie_embeddings", 1), "model.tie_embeddings: expected true or false; got 1"),
    ],
)  # fmt: skip
def test_bad_config_values_are_rejected_with_the_valid_ones(change, message):
    cfg = model_cfg(score="dot")
    group, key, value = change
    (cfg if group is None else cfg[group])[key] = value
    with pytest.raises(NMTError) as err:
        build_model(cfg, SRC_VOCAB, TGT_VOCAB)
    assert message in str(err.value)


def test_local_attention_needs_a_window_and_location_needs_its_maximum():
    cfg = model_cfg(score="dot", attention_type="local_p")
    with pytest.raises(NMTError, match=r"^model\.attention\.window: required by type 'local_p'$"):
        build_model(cfg, SRC_VOCAB, TGT_VOCAB)
    # local_p's p_t = S·sigmoid(…) uses each sentence's own length S and needs no maximum; the
    # location score does, whatever the type
    cfg = model_cfg(score="location", attention_type="local_p", window=3)
    del cfg["attention"]["max_src_len"]
    with pytest.raises(NMTError, match=r"^model\.attention\.max_src_len: missing$"):
        build_model(cfg, SRC_VOCAB, TGT_VOCAB)


def test_local_attention_from_the_config_files():
    """``model/attention=general model.attention.type=local_p`` is Luong's local-p (general)."""
    src, src_lengths, tgt_in, _ = tiny_batch()
    default = compose_model_cfg([])
    assert (default.attention.type, default.attention.window) == ("global", 10)
    assert build_model(default, SRC_VOCAB, TGT_VOCAB).decoder.attention.local is None
    for attention_type in ("local_m", "local_p"):
        cfg = compose_model_cfg(
            ["model/attention=general", f"model.attention.type={attention_type}",
             "model.attention.window=3"]
        )  # fmt: skip
        model = build_model(cfg, SRC_VOCAB, TGT_VOCAB)
        local = model.decoder.attention.local
        assert (local.attention_type, local.window, local.sigma) == (attention_type, 3, 1.5)
        with torch.no_grad():
            assert model(src, src_lengths, tgt_in).attn_weights.shape == (3, tgt_in.size(1), 6)


def test_missing_options_are_named():
    cfg = model_cfg(score="location")
    del cfg["attention"]["max_src_len"]
    with pytest.raises(NMTError, match=r"model\.attention\.max_src_len: missing"):
        build_model(cfg, SRC_VOCAB, TGT_VOCAB)
    cfg = model_cfg(style="bahdanau", input_feeding=True)
    with pytest.raises(NMTError, match=r"model\.decoder\.input_feeding: expected false"):
        build_model(cfg, SRC_VOCAB, TGT_VOCAB)


# ---------------------------------------------------------------------------------------------
# learnability: a tiny model of each score function memorises 32 real sentence pairs


def corpus_dir() -> Path:
    return Path(os.environ.get("NMT_CORPORA", Path(__file__).parents[2] / "shared/corpora"))


@pytest.fixture(scope="module")
def overfit_batch(tmp_path_factory):
    """32 short English→Korean pairs (≤ 12 subwords) from the enko corpus, as id tensors."""
    path = corpus_dir() / "enko/train.tsv"
    if not path.exists():
        pytest.skip(f"corpus not found: {path} (set NMT_CORPORA)")
    with open(path, encoding="utf-8") as f:
        pairs = [line.rstrip("\n").split("\t") for line in itertools.islice(f, 2000)]
    tmp = tmp_path_factory.mktemp("spm")
    src_vocab = Vocab(train_sentencepiece([en for en, _ in pairs], tmp / "en", 500))
    tgt_vocab = Vocab(
        train_sentencepiece([ko for _, ko in pairs], tmp / "ko", 1000, character_coverage=0.995)
    )
    chosen = []
    for src_ids, tgt_ids in zip(
        src_vocab.encode([en for en, _ in pairs]),
        tgt_vocab.encode([ko for _, ko in pairs]),
        strict=True,
    ):
        if 3 <= len(src_ids) <= 12 and 3 <= len(tgt_ids) <= 12:
            chosen.append((src_ids, tgt_ids))
        if len(chosen) == 32:
            break
    assert len(chosen) == 32
    src = pad([s for s, _ in chosen])
    src_lengths = torch.tensor([len(s) for s, _ in chosen])
    tgt_in = pad([[BOS_ID] + t for _, t in chosen])
    tgt_out = pad([t + [EOS_ID] for _, t in chosen])
    return src, src_lengths, tgt_in, tgt_out, len(src_vocab), len(tgt_vocab)


OVERFIT_CASES = [(score, "luong", "gru") for score in SCORES] + [("concat", "bahdanau", "lstm")]


@pytest.mark.parametrize("score, style, rnn_type", OVERFIT_CASES)
def test_tiny_model_overfits_32_sentence_pairs(score, style, rnn_type, overfit_batch):
    src, src_lengths, tgt_in, tgt_out, src_vocab_size, tgt_vocab_size = overfit_batch
    cfg = model_cfg(
        rnn_type, score, style, embed_dim=64, enc_hidden=64, dec_hidden=64, tie=style == "bahdanau"
    )
    if score == "concat":
        cfg["attention"]["hidden_size"] = 64
    if score == "location":
        cfg["attention"]["max_src_len"] = src.size(1)
    torch.manual_seed(0)
    model = build_model(cfg, src_vocab_size, tgt_vocab_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-2)
    losses = []
    for _ in range(100):  # about 25 steps are needed
        loss = loss_of(model(src, src_lengths, tgt_in).logits, tgt_out)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if losses[-1] < 0.1:
            break
    print(
        f"{score}/{style}/{rnn_type}: loss {losses[0]:.2f} → {losses[-1]:.3f} in {len(losses)} steps"
    )
    assert losses[-1] < 0.1, f"{score}: loss after {len(losses)} steps is {losses[-1]:.3f}"


@pytest.mark.parametrize("rnn_type", ["gru", "lstm"])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_encoder_states_equal_a_packed_bidirectional_rnn(rnn_type, num_layers):
    """The per-direction, reverse-within-length encoder computes what packed sequences compute."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    from nmt.models.encoder import Encoder

    torch.manual_seed(0)
    encoder = Encoder(50, rnn_type, 8, 6, num_layers, bidirectional=True, dropout=0.0).eval()
    packed_rnn = (nn.GRU if rnn_type == "gru" else nn.LSTM)(
        8, 6, num_layers=num_layers, batch_first=True, bidirectional=True
    )
    for layer in range(num_layers):
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            fwd = getattr(encoder.forward_rnns[layer], f"{name}_l0")
            bwd = getattr(encoder.backward_rnns[layer], f"{name}_l0")
            getattr(packed_rnn, f"{name}_l{layer}").data.copy_(fwd)
            getattr(packed_rnn, f"{name}_l{layer}_reverse").data.copy_(bwd)
    lengths = torch.tensor([5, 2, 7, 1])
    src = torch.randint(4, 50, (4, 7)).masked_fill(torch.arange(7) >= lengths.unsqueeze(1), 0)
    out = encoder(src, lengths)
    packed = pack_padded_sequence(
        encoder.embed(src), lengths, batch_first=True, enforce_sorted=False
    )
    expected, final = packed_rnn(packed)
    expected, _ = pad_packed_sequence(expected, batch_first=True, total_length=7)
    h_n = final[0] if rnn_type == "lstm" else final
    top = h_n.view(num_layers, 2, 4, 6)[-1]
    assert torch.allclose(out.states, expected, atol=1e-6)
    assert torch.allclose(out.final, torch.cat([top[0], top[1]], dim=-1), atol=1e-6)


@pytest.mark.parametrize("rnn_type", ["gru", "lstm"])
def test_decoder_rnn_sequence_equals_its_steps(rnn_type):
    """The one-call sequence path (Luong without input feeding) and the step path agree."""
    from nmt.models.decoder import DecoderRNN

    torch.manual_seed(0)
    rnn = DecoderRNN(rnn_type, input_size=5, hidden_size=4, num_layers=2, dropout=0.3).eval()
    inputs = torch.randn(3, 6, 5)
    hidden = torch.randn(2, 3, 4)
    cell = torch.randn(2, 3, 4) if rnn_type == "lstm" else None
    outputs, final_hidden, final_cell = rnn.sequence(inputs, hidden, cell)
    stepped = []
    for x in inputs.unbind(1):
        hidden, cell = rnn(rnn.project_known(x), None, hidden, cell)
        stepped.append(hidden[-1])
    torch.testing.assert_close(outputs, torch.stack(stepped, 1))
    torch.testing.assert_close(final_hidden, hidden)
    if rnn_type == "lstm":
        torch.testing.assert_close(final_cell, cell)


@pytest.mark.parametrize("rnn_type", ["gru", "lstm"])
def test_decoder_rnn_split_input_equals_the_full_cell(rnn_type):
    """[known ; fed_back] through project_known + forward equals the cell on the concatenation."""
    from nmt.models.decoder import DecoderRNN

    torch.manual_seed(0)
    rnn = DecoderRNN(rnn_type, input_size=7, hidden_size=4, num_layers=1, dropout=0.0)
    known, fed_back = torch.randn(3, 5), torch.randn(3, 2)
    hidden = torch.randn(1, 3, 4)
    cell = torch.randn(1, 3, 4) if rnn_type == "lstm" else None
    new_hidden, new_cell = rnn(rnn.project_known(known), fed_back, hidden, cell)
    x = torch.cat([known, fed_back], dim=-1)
    if rnn_type == "lstm":
        h, c = torch.lstm_cell(x, (hidden[0], cell[0]), *rnn.layer_weights(0))
        torch.testing.assert_close(new_cell[0], c)
    else:
        h = torch.gru_cell(x, hidden[0], *rnn.layer_weights(0))
    torch.testing.assert_close(new_hidden[0], h)


# ---------------------------------------------------------------------------------------------
# the attention values' gradient, formed once per loop (DeferredValueGrads)


def _no_deferral(self, values):
    yield values


@pytest.mark.parametrize(
    ("style", "score", "options"),
    [
        ("luong", "general", {}),
        ("luong", "concat", {"rnn_type": "lstm", "dec_layers": 2}),
        ("bahdanau", "dot", {}),
        ("bahdanau", "location", {"rnn_type": "lstm"}),
        # keys are the values themselves: the score's gradient reaches them too
        ("luong", "dot", {"bidirectional": False, "enc_hidden": 7}),
        ("luong", "general", {"attention_type": "local_p", "window": 1}),
    ],
)
def test_deferred_value_gradients_equal_the_step_by_step_ones(style, score, options, monkeypatch):
    """Every parameter's gradient is the same when each step's ∂L/∂values is added in turn
    (autograd's own way, forced here) and when one product forms it after the loop."""
    src, src_lengths, tgt_in, tgt_out = tiny_batch()

    def gradients() -> dict[str, torch.Tensor]:
        model = make_model(style=style, score=score, **options)
        loss_of(model(src, src_lengths, tgt_in).logits, tgt_out).backward()
        return {name: p.grad for name, p in model.named_parameters() if p.grad is not None}

    deferred = gradients()
    with monkeypatch.context() as patch:
        patch.setattr(Attention, "deferred_value_grads", contextlib.contextmanager(_no_deferral))
        step_by_step = gradients()
    assert deferred.keys() == step_by_step.keys()
    for name, grad in deferred.items():
        torch.testing.assert_close(grad, step_by_step[name], rtol=1e-5, atol=1e-8, msg=name)
    encoder = [name for name in deferred if name.startswith("encoder.")]
    assert encoder and all(deferred[name].abs().sum() > 0 for name in encoder)
