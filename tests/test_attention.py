"""The five score functions, the shared masked softmax and the context vector."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from nmt.core.errors import NMTError
from nmt.models.attention import (
    SCORES,
    ConcatScore,
    attend,
    build_attention,
    masked_softmax,
)

BATCH, TGT_LEN, SRC_LEN = 3, 2, 6
LENGTHS = torch.tensor([6, 2, 4])  # unsorted, one sentence fills the batch


def make_attention(score: str, query_size: int = 5, value_size: int = 8):
    torch.manual_seed(0)
    return build_attention(score, query_size, value_size, hidden_size=7, max_src_len=10)


def make_inputs(query_size: int = 5, value_size: int = 8):
    query = torch.randn(BATCH, TGT_LEN, query_size)
    values = torch.randn(BATCH, SRC_LEN, value_size)
    src_mask = torch.arange(SRC_LEN)[None, :] < LENGTHS[:, None]  # (batch, src_len)
    return query, values, src_mask


@pytest.mark.parametrize("value_size", [5, 8], ids=["same-size", "bidirectional-size"])
@pytest.mark.parametrize("score", SCORES)
def test_weights_sum_to_one_on_real_positions_and_are_zero_on_padding(score, value_size):
    attention = make_attention(score, value_size=value_size)
    query, values, src_mask = make_inputs(value_size=value_size)
    context, weights = attention(query, attention.project_keys(values), values, src_mask)

    assert context.shape == (BATCH, TGT_LEN, value_size)
    assert weights.shape == (BATCH, TGT_LEN, SRC_LEN)
    pad = ~src_mask.unsqueeze(1).expand_as(weights)
    assert torch.all(weights[pad] == 0.0)
    assert torch.all(weights[~pad] > 0.0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(BATCH, TGT_LEN))


@pytest.mark.parametrize("score", SCORES)
def test_values_at_padded_positions_change_nothing(score):
    attention = make_attention(score)
    query, values, src_mask = make_inputs()
    context, weights = attention(query, attention.project_keys(values), values, src_mask)

    noisy = values.clone()
    noisy[~src_mask] = 1e3 * torch.randn(int((~src_mask).sum()), values.size(-1))
    context2, weights2 = attention(query, attention.project_keys(noisy), noisy, src_mask)

    assert not torch.equal(noisy, values)
    torch.testing.assert_close(context2, context)
    torch.testing.assert_close(weights2, weights)


def test_context_is_the_weighted_sum_of_values_worked_example():
    # Four source words, then one padded position holding junk that must not leak in.
    weights = torch.tensor([0.1, 0.055, 0.8, 0.045])
    values = torch.tensor(
        [[1.0, 0, 0, 1], [1, 0, 0, 2], [1, 1, 2, 0], [1, 1, 0, 0], [100, -100, 100, 100]]
    ).unsqueeze(0)  # (batch=1, src_len=5, 4)
    src_mask = torch.tensor([[True, True, True, True, False]])
    # scores = log(weights): the shared softmax must return the weights unchanged
    scores = torch.cat([weights.log(), torch.tensor([3.0])]).view(1, 1, 5)

    context, attn_weights = attend(scores, values, src_mask)

    # partial products: (0.1 0 0 0.1) + (0.055 0 0 0.11) + (0.8 0.8 1.6 0) + (0.045 0.045 0 0)
    expected = torch.tensor([[[1.0, 0.845, 1.6, 0.21]]])
    torch.testing.assert_close(context, expected)
    torch.testing.assert_close(attn_weights[0, 0, :4], weights)
    assert attn_weights[0, 0, 4].item() == 0.0


def test_masked_softmax_is_fp32_safe_for_half_precision_scores():
    scores = torch.tensor([[[60000.0, 60000.0, -60000.0]]], dtype=torch.float16)
    weights = masked_softmax(scores, torch.tensor([[True, True, False]]))
    assert weights.dtype == torch.float16
    assert weights.tolist() == [[[0.5, 0.5, 0.0]]]


def test_scaled_dot_is_dot_divided_by_sqrt_d():
    d = 6
    dot, scaled = make_attention("dot", d, d), make_attention("scaled_dot", d, d)
    query, values, _ = make_inputs(d, d)
    dot_scores = dot.score(query, dot.project_keys(values))
    scaled_scores = scaled.score(query, scaled.project_keys(values))
    torch.testing.assert_close(scaled_scores, dot_scores / math.sqrt(d))
    # and dot really is qᵀh
    torch.testing.assert_close(dot_scores[1, 0, 2], query[1, 0] @ values[1, 2])


def test_general_with_identity_matrix_equals_dot():
    d = 6
    dot, general = make_attention("dot", d, d), make_attention("general", d, d)
    query, values, src_mask = make_inputs(d, d)
    with torch.no_grad():
        general.score.key_proj.weight.copy_(torch.eye(d))
    general_out = general(query, general.project_keys(values), values, src_mask)
    dot_out = dot(query, dot.project_keys(values), values, src_mask)
    torch.testing.assert_close(
        general.score(query, general.project_keys(values)),
        dot.score(query, dot.project_keys(values)),
    )
    torch.testing.assert_close(general_out.context, dot_out.context)


def test_general_scores_are_q_W_h():
    general = make_attention("general", 5, 8)
    query, values, _ = make_inputs(5, 8)
    W = general.score.key_proj.weight  # (query_size, value_size)
    scores = general.score(query, general.project_keys(values))
    torch.testing.assert_close(scores[2, 1, 3], query[2, 1] @ W @ values[2, 3])


def test_dot_projects_keys_only_when_sizes_differ():
    same = make_attention("dot", 8, 8)
    assert sum(p.numel() for p in same.parameters()) == 0
    values = torch.randn(BATCH, SRC_LEN, 8)
    assert same.project_keys(values) is values

    differ = make_attention("dot", 5, 8)  # bidirectional keys 2*hidden vs decoder hidden
    keys = differ.project_keys(values)
    assert keys.shape == (BATCH, SRC_LEN, 5)
    torch.testing.assert_close(keys, values @ differ.score.key_proj.weight.T)


def test_concat_is_v_tanh_W_of_query_and_key_concatenated():
    attention = make_attention("concat", 5, 8)
    score: ConcatScore = attention.score
    query, values, src_mask = make_inputs(5, 8)
    scores = score(query, attention.project_keys(values))
    # the textbook form, one (query, value) pair at a time: vᵀ tanh(W [q; h] + b) ...
    W = torch.cat([score.query_proj.weight, score.key_proj.weight], dim=1)  # (7, 5 + 8)
    b, v = score.key_proj.bias, score.v.weight[0]
    textbook = torch.empty_like(scores)
    for i, t, j in itertools.product(*map(range, scores.shape)):
        textbook[i, t, j] = v @ torch.tanh(W @ torch.cat([query[i, t], values[i, j]]) + b)
    # ... plus Σv, the same at every source position (2 vᵀ σ(2x) = vᵀ tanh(x) + Σv) ...
    torch.testing.assert_close(scores, textbook + v.sum())
    # ... which the softmax removes: the textbook's weights
    weights = attention(query, attention.project_keys(values), values, src_mask).attn_weights
    torch.testing.assert_close(weights, masked_softmax(textbook, src_mask))


def _concat_scores_and_grads(monkeypatch, chunk_elements: int, dtype=torch.float32):
    """The concat scores of a longer target and their gradients w.r.t. query, values and every
    parameter, with the hidden layer chunked above ``chunk_elements`` cells."""
    import nmt.models.attention as attention_module

    monkeypatch.setattr(attention_module, "ADDITIVE_CHUNK_ELEMENTS", chunk_elements)
    attention = make_attention("concat", 5, 8).to(dtype)
    torch.manual_seed(1)
    query = torch.randn(BATCH, 11, 5, dtype=dtype, requires_grad=True)
    values = torch.randn(BATCH, SRC_LEN, 8, dtype=dtype, requires_grad=True)
    scores = attention.score(query, attention.project_keys(values))
    (scores * torch.randn_like(scores)).sum().backward()
    grads = [query.grad, values.grad, *(p.grad for p in attention.parameters())]
    return scores.detach(), grads


def test_chunked_concat_scores_equal_the_whole_hidden_layer(monkeypatch):
    """fp32: the hidden layer made 2 target positions at a time (forward, and again in the
    backward pass) gives the scores and every gradient of the one-piece computation."""
    whole, whole_grads = _concat_scores_and_grads(monkeypatch, 1 << 30)
    chunked, chunked_grads = _concat_scores_and_grads(monkeypatch, 2 * BATCH * SRC_LEN * 7)
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-6)
    for got, expected in zip(chunked_grads, whole_grads, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_chunked_concat_gradients_pass_gradcheck(monkeypatch):
    """fp64: the hand-written backward pass against finite differences, 3 target chunks."""
    import nmt.models.attention as attention_module

    monkeypatch.setattr(attention_module, "ADDITIVE_CHUNK_ELEMENTS", 2 * 2 * 3 * 4)
    torch.manual_seed(0)
    q = torch.randn(2, 5, 4, dtype=torch.float64, requires_grad=True)
    keys = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    v = torch.randn(1, 4, dtype=torch.float64, requires_grad=True)
    assert len(attention_module._target_chunks(q, keys)) == 3
    assert torch.autograd.gradcheck(attention_module._ChunkedAdditiveScores.apply, (q, keys, v))


def test_chunked_concat_keeps_no_hidden_layer_for_the_backward_pass(monkeypatch):
    """What autograd saves for the backward pass: the (batch, tgt, src, hidden) layer in one
    piece, and only the query, keys and v (a few (batch, len, hidden) tensors) when chunked."""

    def saved_elements(chunk_elements: int) -> int:
        sizes = []
        with torch.autograd.graph.saved_tensors_hooks(
            lambda t: sizes.append(t.numel()) or t, lambda t: t
        ):
            _concat_scores_and_grads(monkeypatch, chunk_elements)
        return max(sizes)

    hidden_layer = BATCH * 11 * SRC_LEN * 7
    assert saved_elements(1 << 30) == hidden_layer
    assert saved_elements(2 * BATCH * SRC_LEN * 7) < hidden_layer / 4


def test_chunked_concat_under_bf16_autocast_equals_the_whole_layer_in_bf16(monkeypatch):
    """bf16 autocast, as training with ``precision=bf16`` runs it: the chunked scores and
    gradients within bf16 rounding of the one-piece computation under the same autocast."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        whole, whole_grads = _concat_scores_and_grads(monkeypatch, 1 << 30)
        chunked, chunked_grads = _concat_scores_and_grads(monkeypatch, 2 * BATCH * SRC_LEN * 7)
    assert chunked.dtype == whole.dtype == torch.bfloat16
    torch.testing.assert_close(chunked, whole, rtol=0, atol=0)
    for got, expected in zip(chunked_grads, whole_grads, strict=True):
        assert got.dtype == expected.dtype == torch.float32
        torch.testing.assert_close(got, expected, rtol=0.02, atol=0.02)


def test_location_ignores_key_contents():
    attention = make_attention("location")
    query, values, src_mask = make_inputs()
    out1 = attention(query, attention.project_keys(values), values, src_mask)
    other = torch.randn_like(values)
    out2 = attention(query, attention.project_keys(other), other, src_mask)
    torch.testing.assert_close(out1.attn_weights, out2.attn_weights)


def test_location_beyond_max_src_len_scores_zero():
    max_len, src_len = 3, 5
    attention = build_attention("location", 4, 4, max_src_len=max_len)
    query = torch.randn(2, 1, 4)
    values = torch.randn(2, src_len, 4)
    src_mask = torch.tensor([[True] * 5, [True] * 4 + [False]])
    scores = attention.score(query, attention.project_keys(values))
    assert scores.shape == (2, 1, src_len)
    torch.testing.assert_close(scores[:, :, :max_len], attention.score.position_proj(query))
    assert torch.all(scores[:, :, max_len:] == 0.0)

    _, weights = attention(query, attention.project_keys(values), values, src_mask)
    # every position past the maximum gets the same weight exp(0) / Z; padding still 0
    z = scores[0, 0].exp().sum()
    torch.testing.assert_close(weights[0, 0, 3:], (1 / z).expand(2))
    assert weights[1, 0, 4].item() == 0.0
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 1))


@pytest.mark.parametrize("score", SCORES)
def test_many_queries_at_once_equal_one_query_at_a_time(score):
    attention = make_attention(score)
    query, values, src_mask = make_inputs()
    keys = attention.project_keys(values)
    together = attention(query, keys, values, src_mask)
    for t in range(TGT_LEN):
        alone = attention(query[:, t : t + 1], keys, values, src_mask)
        torch.testing.assert_close(alone.context, together.context[:, t : t + 1])
        torch.testing.assert_close(alone.attn_weights, together.attn_weights[:, t : t + 1])


def test_unknown_score_lists_the_valid_ones():
    with pytest.raises(NMTError, match=r"model\.attention\.score: expected one of dot, general, "):
        build_attention("foo", 4, 4)
    with pytest.raises(NMTError, match="got 'foo'"):
        build_attention("foo", 4, 4)


# --------------------------------------------------------------------------------------------
# local attention (Luong et al. 2015, §3.2)


def make_local(score: str, attention_type: str, window: int, query_size: int = 5):
    torch.manual_seed(0)
    return build_attention(
        score,
        query_size,
        8,
        hidden_size=7,
        max_src_len=10,
        attention_type=attention_type,
        window=window,
    )


def positions_of(tgt_len: int, start: int = 0) -> torch.Tensor:
    return (start + torch.arange(tgt_len)).expand(BATCH, tgt_len)  # (batch, tgt_len)


LONG_TGT = 9  # longer than every source: local_m's centre is clipped to S - 1


@pytest.mark.parametrize("attention_type", ["local_m", "local_p"])
@pytest.mark.parametrize("score", SCORES)
def test_local_weights_are_zero_outside_the_window_and_on_padding(score, attention_type):
    window = 1
    attention = make_local(score, attention_type, window)
    query = torch.randn(BATCH, LONG_TGT, 5)
    _, values, src_mask = make_inputs()
    positions = positions_of(LONG_TGT)
    context, weights = attention(query, attention.project_keys(values), values, src_mask, positions)
    assert context.shape == (BATCH, LONG_TGT, 8)
    assert weights.shape == (BATCH, LONG_TGT, SRC_LEN)

    centres = attention.local.centres(query, src_mask, positions)  # (batch, tgt_len)
    src_len = LENGTHS.float()[:, None]
    if attention_type == "local_m":
        torch.testing.assert_close(centres, torch.minimum(positions.float(), src_len - 1))
    else:
        assert torch.all((centres > 0) & (centres < src_len))
    distance = torch.arange(SRC_LEN).float() - centres.unsqueeze(-1)  # (batch, tgt_len, src_len)
    inside = (distance.abs() <= window) & src_mask.unsqueeze(1)
    assert torch.all(weights[~inside] == 0.0)  # exactly 0: outside the window and padding
    assert torch.all(weights[inside] > 0.0)
    assert inside.any(-1).all()  # the window is never empty
    sums = weights.sum(-1)
    if attention_type == "local_m":
        torch.testing.assert_close(sums, torch.ones(BATCH, LONG_TGT))
    else:  # the Gaussian is ≤ 1 and not renormalised
        assert torch.all((sums > 0) & (sums <= 1 + 1e-6))


@pytest.mark.parametrize("score", SCORES)
def test_local_m_with_a_window_covering_the_source_equals_global(score):
    local = make_local(score, "local_m", window=SRC_LEN)  # D ≥ every source length
    global_ = make_attention(score)  # the same seed: the same score parameters
    global_.load_state_dict(local.state_dict())
    query, values, src_mask = make_inputs()
    keys = local.project_keys(values)
    out_local = local(query, keys, values, src_mask, positions_of(TGT_LEN, start=3))
    out_global = global_(query, keys, values, src_mask)
    assert torch.equal(out_local.attn_weights, out_global.attn_weights)
    assert torch.equal(out_local.context, out_global.context)


def test_local_p_is_the_windowed_softmax_times_the_gaussian_worked_by_hand():
    window = 2
    attention = make_local("dot", "local_p", window, query_size=8)
    query, values, src_mask = make_inputs(8, 8)
    _, weights = attention(query, values, values, src_mask)
    local = attention.local
    for i, t in [(0, 0), (1, 1), (2, 0)]:
        length = int(LENGTHS[i])
        q = query[i, t]
        hidden = torch.tanh(local.position_hidden.weight @ q)  # W_p h_t
        p = length * torch.sigmoid(local.position_out.weight[0] @ hidden)  # eq. 10
        s = torch.arange(SRC_LEN).float()
        in_window = ((s - p).abs() <= window) & (s < length)
        scores = values[i] @ q  # dot: qᵀ h_s
        align = (
            torch.where(in_window, scores.exp(), torch.zeros(())) / scores.exp()[in_window].sum()
        )
        expected = align * torch.exp(-((s - p) ** 2) / (2 * (window / 2) ** 2))  # eq. 11
        torch.testing.assert_close(weights[i, t], expected)


def test_gradient_reaches_w_p_and_v_p():
    attention = make_local("general", "local_p", window=2)
    query, values, src_mask = make_inputs()
    context, _ = attention(query, attention.project_keys(values), values, src_mask)
    (context * torch.randn_like(context)).sum().backward()
    for param in (attention.local.position_hidden.weight, attention.local.position_out.weight):
        assert param.grad is not None
        assert torch.isfinite(param.grad).all()
        assert param.grad.abs().sum() > 0
    names = {name for name, _ in attention.named_parameters()}
    assert names == {"score.key_proj.weight", "local.position_hidden.weight",
                     "local.position_out.weight"}  # fmt: skip


@pytest.mark.parametrize("attention_type", ["local_m", "local_p"])
@pytest.mark.parametrize("score", ["concat", "location"])
def test_local_many_queries_at_once_equal_one_query_at_a_time(score, attention_type):
    attention = make_local(score, attention_type, window=1)
    query = torch.randn(BATCH, LONG_TGT, 5)
    _, values, src_mask = make_inputs()
    keys = attention.project_keys(values)
    positions = positions_of(LONG_TGT)
    together = attention(query, keys, values, src_mask, positions)
    for t in range(LONG_TGT):
        alone = attention(query[:, t : t + 1], keys, values, src_mask, positions[:, t : t + 1])
        torch.testing.assert_close(alone.context, together.context[:, t : t + 1])
        torch.testing.assert_close(alone.attn_weights, together.attn_weights[:, t : t + 1])


def test_local_m_without_target_positions_is_a_programming_error():
    attention = make_local("dot", "local_m", window=2, query_size=8)
    query, values, src_mask = make_inputs(8, 8)
    with pytest.raises(ValueError, match="target positions"):
        attention(query, values, values, src_mask)


@pytest.mark.parametrize(
    "attention_type, window, message",
    [
        ("local", 3, "model.attention.type: expected one of global, local_m, local_p; got 'local'"),
        ("local_p", 0, "model.attention.window: expected a positive integer, the half-width D "
         "of the local window; got 0"),
        ("local_m", -2, "model.attention.window: expected a positive integer"),
        ("local_m", True, "model.attention.window: expected a positive integer"),
        ("local_p", None, "model.attention.window: required by type 'local_p'"),
    ],
)  # fmt: skip
def test_bad_local_settings_are_one_line_errors(attention_type, window, message):
    with pytest.raises(NMTError) as err:
        build_attention("dot", 4, 4, attention_type=attention_type, window=window)
    assert message in str(err.value)
    assert "\n" not in str(err.value)
