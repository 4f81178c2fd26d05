"""Multi-head attention over any registered score function (``model.attention.heads``): heads=1
is today's attention exactly; H heads against a reference written here; masks, local windows,
FLOPs, errors. Search and export run on it in tests/test_search.py and tests/test_export.py.
Every comparison is in fp32."""

from __future__ import annotations

import pytest
import torch
from export_grid import tiny_model_config, tiny_parity

from nmt.core.errors import NMTError
from nmt.core.settings import load_settings
from nmt.inference.onnx_export import TOLERANCE
from nmt.inference.search import beam_search
from nmt.models import build_model
from nmt.models.attention import (
    SCORES,
    Attention,
    MultiHeadScoreAttention,
    build_attention,
    masked_softmax,
)
from nmt.models.flops import LengthStats, flops_per_target_token
from nmt.models.seq2seq import ModelSettings

BATCH, TGT_LEN, SRC_LEN = 3, 2, 6
LENGTHS = torch.tensor([6, 2, 4])
OPTIONS = {"hidden_size": 8, "max_src_len": 10}  # concat's A (A/4 per head), location's rows


def inputs(query_size: int = 8, value_size: int = 12):
    generator = torch.Generator().manual_seed(1)
    query = torch.randn(BATCH, TGT_LEN, query_size, generator=generator)
    values = torch.randn(BATCH, SRC_LEN, value_size, generator=generator)
    src_mask = torch.arange(SRC_LEN)[None, :] < LENGTHS[:, None]
    return query, values, src_mask


@pytest.mark.parametrize("score", SCORES)
def test_h_heads_equal_a_reference_written_here(score):
    """c = W_o [Σ_j α_1j v_1j ; … ], α_h = softmax(score_h(W_q^h q, keys of W_v^h h)), with each
    head's own score module called directly."""
    torch.manual_seed(0)
    attention = build_attention(score, 8, 12, heads=4, **OPTIONS)
    assert isinstance(attention, MultiHeadScoreAttention)
    query, values, src_mask = inputs()
    out = attention(query, attention.project_keys(values), values, src_mask)
    contexts, weights = [], []
    q_all, v_all = attention.query_proj(query), attention.value_proj(values)
    for h, head in enumerate(attention.head_scores):
        q, v = q_all[..., 2 * h : 2 * h + 2], v_all[..., 3 * h : 3 * h + 3]
        alpha = masked_softmax(head(q, head.project_keys(v)), src_mask)
        weights.append(alpha)
        contexts.append(alpha @ v)
    expected = attention.out_proj(torch.cat(contexts, dim=-1))
    assert (out.context - expected).abs().max() <= 1e-6
    assert (out.attn_weights - torch.stack(weights).mean(0)).abs().max() <= 1e-6
    assert torch.allclose(out.attn_weights.sum(-1), torch.ones(BATCH, TGT_LEN))
    assert out.attn_weights[1, :, 2:].abs().max() == 0.0  # padding


@pytest.mark.parametrize("attention_type", ["local_m", "local_p"])
def test_local_windows_apply_to_every_head(attention_type):
    torch.manual_seed(0)
    attention = build_attention("general", 8, 12, attention_type, window=1, heads=2)
    query, values, src_mask = inputs()
    positions = torch.zeros(BATCH, TGT_LEN, dtype=torch.long) + torch.arange(TGT_LEN)
    out = attention(query, attention.project_keys(values), values, src_mask, positions)
    if attention_type == "local_m":  # window [t − 1, t + 1]: nothing beyond position 2
        assert out.attn_weights[:, :, 3:].abs().max() == 0.0
    assert torch.isfinite(out.context).all()


def model_cfg(heads: int | None) -> dict:
    cfg = tiny_model_config("gru", "general", "luong", True)
    if heads is not None:
        cfg["attention"]["heads"] = heads
    return cfg


def build(cfg: dict) -> torch.nn.Module:
    torch.manual_seed(3)
    return build_model(load_settings(ModelSettings, cfg, "model"), 30, 40).eval()


def test_heads_1_is_todays_attention_exactly():
    """A config without ``heads`` (saved before it) and ``heads: 1``: the same module, the same
    parameters, logits within 1e-6 and the same beam output."""
    before, one = build(model_cfg(None)), build(model_cfg(1))
    assert type(one.decoder.attention) is Attention
    assert before.state_dict().keys() == one.state_dict().keys()
    src = torch.randint(4, 30, (3, 7), generator=torch.Generator().manual_seed(2))
    lengths = torch.tensor([7, 5, 3])
    tgt = torch.randint(4, 40, (3, 5), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        delta = (before(src, lengths, tgt).logits - one(src, lengths, tgt).logits).abs().max()
    assert delta <= 1e-6
    a = beam_search(before, src, lengths, 3, 1.0, 1.5, 3, n_best=2).hypotheses
    b = beam_search(one, src, lengths, 3, 1.0, 1.5, 3, n_best=2).hypotheses
    assert [[h.tokens for h in n] for n in a] == [[h.tokens for h in n] for n in b]


def test_a_multi_head_model_trains_and_steps_like_its_teacher_forced_pass():
    model = build(model_cfg(4)).train()
    src = torch.randint(4, 30, (3, 7), generator=torch.Generator().manual_seed(2))
    lengths = torch.tensor([7, 5, 3])
    tgt = torch.randint(4, 40, (3, 6), generator=torch.Generator().manual_seed(4))
    loss = torch.nn.functional.cross_entropy(
        model(src, lengths, tgt[:, :-1]).logits.transpose(1, 2), tgt[:, 1:]
    )
    loss.backward()
    assert model.decoder.attention.value_proj.weight.grad.abs().sum() > 0
    assert model.encoder.embed.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        full = model(src, lengths, tgt).logits
        memory = model.encode(src, lengths)
        state = model.init_state(memory)
        for t in range(tgt.size(1)):  # input feeding: one step at a time, as search runs it
            out = model.step(tgt[:, t], state, memory)
            state = out.state
            assert (out.logits - full[:, t]).abs().max() <= 1e-5


def test_flops_of_h_heads():
    cfg = load_settings(ModelSettings, model_cfg(4), "model")
    one = load_settings(ModelSettings, model_cfg(1), "model")
    lengths = LengthStats(sentences=10, src_tokens=200, tgt_tokens=250, attended=200 * 25)
    pieces = flops_per_target_token(cfg, 40, lengths).pieces
    single = flops_per_target_token(one, 40, lengths).pieces
    q, v, s = 12, 16, 20  # decoder hidden, encoder output, attended source length
    # general per head: keys 2·(V/H)·(Q/H), scores 2·(Q/H)·S; plus W_v, W_q, W_o
    assert pieces["attention_keys"] == pytest.approx((2 * v * v + 4 * 2 * 4 * 3) * 200 / 250)
    assert pieces["attention"] == pytest.approx(2 * q * q + 4 * 2 * 3 * s + 2 * v * v + 2 * s * v)
    assert single["attention"] == pytest.approx(2 * q * s + 2 * s * v)


def test_additive_heads_split_the_hidden_width():
    """concat's hidden_size A is a width: 4 heads of A/4 each, so their additive layers together
    are as wide as one head's, and so are their FLOPs (Q = 8, V = 12, A = 8, S = 20)."""
    concat = SCORES.lookup("concat")
    attention = build_attention("concat", 8, 12, heads=4, hidden_size=8)
    assert [tuple(head.v.weight.shape) for head in attention.head_scores] == [(1, 2)] * 4
    assert [tuple(head.key_proj.weight.shape) for head in attention.head_scores] == [(2, 3)] * 4
    flops = MultiHeadScoreAttention.flops(concat, 8, 12, 20.0, 4, hidden_size=8)
    assert flops.keys == 2 * 12 * 12 + 4 * (2 * 3 * 2)  # W_v, then each head's W_k: V/H → A/H
    assert flops.scores == 2 * 8 * 8 + 4 * (2 * 2 * 2 + 2 * 2 * 20) + 2 * 12 * 12
    with pytest.raises(
        NMTError, match="model.attention.heads: 3 does not divide the hidden_size 8"
    ):
        build_attention("concat", 12, 12, heads=3, hidden_size=8)


def test_heads_that_do_not_divide_the_sizes_are_one_line():
    with pytest.raises(
        NMTError, match="model.attention.heads: 5 does not divide the query size 12"
    ):
        build(model_cfg(5))
    with pytest.raises(NMTError, match="model.attention.heads: expected an integer >= 1"):
        build(model_cfg(0))


@pytest.mark.parametrize("score", ["dot", "general", "scaled_dot", "concat"])
def test_a_multi_head_model_exports_within_tolerance(score, tmp_path):
    cfg = tiny_model_config("gru", score, "luong", True)
    cfg["attention"]["heads"] = 4
    parity = tiny_parity(cfg, tmp_path)
    assert parity["log_prob"] <= TOLERANCE
