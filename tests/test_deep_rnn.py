"""Deep recurrent models: per-gate layer-normalised GRU/LSTM cells against a reference written
here, layer norm between layers, residual stacks, in the encoder and both decoder styles; a step
equals the teacher-forced pass; ONNX export. Every comparison is in fp32."""

from __future__ import annotations

import pytest
import torch
from export_grid import tiny_model_config, tiny_parity

from nmt.core.errors import NMTError
from nmt.core.settings import load_settings
from nmt.inference.onnx_export import TOLERANCE
from nmt.models import build_model
from nmt.models.cells import LayerNormRNN
from nmt.models.seq2seq import ModelSettings


def ln(x: torch.Tensor, gain: torch.Tensor, bias: torch.Tensor | None, eps: float = 1e-5):
    """(x − mean) / √(var + eps) · gain + bias over the last axis, written out."""
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    out = (x - mean) / torch.sqrt(var + eps) * gain
    return out if bias is None else out + bias


def per_gate(x, gates: int, gain, bias):
    """LN of each gate's slice of x (batch, gates·H), with that gate's gain and bias."""
    parts = x.chunk(gates, dim=-1)
    gains = gain.chunk(gates)
    biases = [None] * gates if bias is None else bias.chunk(gates)
    return torch.cat([ln(p, g, b) for p, g, b in zip(parts, gains, biases, strict=True)], -1)


def reference_step(cell: LayerNormRNN, x, h, c):
    """One step of Ba et al.'s per-gate layer-normalised GRU or LSTM, from the cell's weights."""
    gates = 4 if cell.is_lstm else 3
    gi = per_gate(x @ cell.weight_ih.weight.T, gates, cell.norm_ih.weight, cell.norm_ih.bias)
    gh = per_gate(h @ cell.weight_hh.weight.T, gates, cell.norm_hh.weight, None)
    if cell.is_lstm:
        i, f, g, o = (gi + gh).chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        norm = cell.norm_cell
        return torch.sigmoid(o) * torch.tanh(ln(c, norm.weight, norm.bias)), c
    (i_r, i_z, i_n), (h_r, h_z, h_n) = gi.chunk(3, -1), gh.chunk(3, -1)
    r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return (1 - z) * n + z * h, None


@pytest.mark.parametrize("rnn_type", ["gru", "lstm"])
def test_layer_normed_cell_equals_the_reference_step_by_step(rnn_type):
    torch.manual_seed(0)
    cell = LayerNormRNN(rnn_type, 5, 4)
    with torch.no_grad():  # gains and biases away from 1 and 0, so that they are checked too
        for norm in (cell.norm_ih, cell.norm_hh, cell.norm_cell):
            if norm is not None:
                norm.weight.normal_(1.0, 0.3)
                if norm.bias is not None:
                    norm.bias.normal_(0.0, 0.3)
    inputs = torch.randn(2, 6, 5)
    outputs, final = cell(inputs)
    h = torch.zeros(2, 4)
    c = torch.zeros(2, 4) if rnn_type == "lstm" else None
    for t in range(6):
        h, c = reference_step(cell, inputs[:, t], h, c)
        assert (outputs[:, t] - h).abs().max() <= 1e-6
    last = final[0] if rnn_type == "lstm" else final
    assert (last[0] - h).abs().max() <= 1e-6


def deep_config(rnn_type: str, style: str, feeding: bool, layer_norm: str, residual: int | None):
    cfg = tiny_model_config(rnn_type, "general", style, feeding)
    for side in ("encoder", "decoder"):
        cfg[side].update(num_layers=3, layer_norm=layer_norm, residual_from=residual)
    cfg["decoder"]["hidden_size"] = 16  # = the encoder's output: every layer the same width
    return cfg


def build(cfg: dict) -> torch.nn.Module:
    torch.manual_seed(1)
    return build_model(load_settings(ModelSettings, cfg, "model"), 30, 40)


CASES = [
    ("gru", "luong", True, "cell", 2),
    ("lstm", "luong", False, "cell", None),
    ("gru", "luong", False, "between", 3),
    ("lstm", "bahdanau", False, "between", 2),
    ("gru", "bahdanau", False, "none", 2),
    # RNMT+'s decoder: the bottom layer queries, the context feeds every layer above
    ("gru", "rnmt", False, "none", 2),
    ("lstm", "rnmt", False, "cell", 3),
    ("gru", "rnmt", False, "between", None),
]


def batch():
    generator = torch.Generator().manual_seed(5)
    src = torch.randint(4, 30, (3, 7), generator=generator)
    lengths = torch.tensor([7, 4, 2])
    src = src.masked_fill(torch.arange(7) >= lengths[:, None], 0)
    tgt = torch.randint(4, 40, (3, 6), generator=generator)
    return src, lengths, tgt


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
def test_a_step_equals_the_teacher_forced_pass(case):
    """The decoder's one-step path (search) and its sequence path (training) are the same
    function of the same weights, with layer norm and residual connections."""
    model = build(deep_config(*case)).eval()
    src, lengths, tgt = batch()
    with torch.no_grad():
        full = model(src, lengths, tgt).logits
        memory = model.encode(src, lengths)
        state = model.init_state(memory)
        for t in range(tgt.size(1)):
            out = model.step(tgt[:, t], state, memory)
            state = out.state
            assert (out.logits - full[:, t]).abs().max() <= 1e-5


@pytest.mark.parametrize("case", CASES[:3], ids=lambda c: "-".join(map(str, c)))
def test_the_gradient_reaches_the_bottom_layers(case):
    model = build(deep_config(*case)).train()
    src, lengths, tgt = batch()
    logits = model(src, lengths, tgt[:, :-1]).logits
    torch.nn.functional.cross_entropy(logits.transpose(1, 2), tgt[:, 1:]).backward()
    bottom_encoder = next(model.encoder.forward_rnns[0].parameters())
    bottom_decoder = next(model.decoder.rnn.stack[0].parameters())
    for param in (bottom_encoder, bottom_decoder, model.encoder.embed.weight):
        assert param.grad is not None and torch.isfinite(param.grad).all()
        assert param.grad.abs().sum() > 0


def test_encoder_padding_stays_zero_with_layer_norm_and_residuals():
    model = build(deep_config("gru", "luong", True, "cell", 2)).eval()
    src, lengths, _ = batch()
    with torch.no_grad():
        states = model.encoder(src, lengths).states
        alone = model.encoder(src[2:, :2], lengths[2:]).states
    assert states[2, 2:].abs().max() == 0.0
    assert (states[2, :2] - alone[0]).abs().max() <= 1e-6


def test_configs_without_the_keys_are_todays_models():
    cfg = tiny_model_config("gru", "general", "luong", True)
    settings = load_settings(ModelSettings, cfg, "model")
    assert settings.encoder.layer_norm == "none" and settings.decoder.residual_from is None
    model = build(cfg)
    assert model.decoder.rnn.fused and hasattr(model.decoder.rnn, "layers")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"residual_from": 1}, "model.decoder.residual_from: expected an integer >= 2"),
        ({"layer_norm": "batch"}, "model.decoder.layer_norm: expected one of none, between, cell"),
    ],
)
def test_bad_values_are_one_line(change, message):
    cfg = deep_config("gru", "luong", True, "cell", 2)
    cfg["decoder"].update(change)
    with pytest.raises(NMTError, match=message):
        build(cfg)


@pytest.mark.parametrize(
    "case", [CASES[0], CASES[2], CASES[6]], ids=["decoder-cell-residual", "between", "rnmt-cell"]
)
def test_a_deep_model_exports_within_tolerance(case, tmp_path):
    cfg = deep_config(*case)
    cfg["encoder"]["layer_norm"] = "between"  # the decoder keeps its case's layer norm
    parity = tiny_parity(cfg, tmp_path)
    assert parity["log_prob"] <= TOLERANCE


def test_an_encoder_with_layer_normed_cells_is_refused_by_export_in_one_line(tmp_path):
    with pytest.raises(NMTError, match="model.encoder.layer_norm=cell: an encoder with"):
        tiny_parity(deep_config(*CASES[0]), tmp_path)


def test_word_dropout_replaces_real_tokens_only_and_only_in_training():
    from nmt.models.seq2seq import drop_words

    torch.manual_seed(0)
    ids = torch.tensor([[2, 5, 6, 7, 8, 3, 0, 0]] * 200)  # <s> four words </s> <pad> <pad>
    dropped = drop_words(ids, 0.5)
    assert torch.equal(dropped[:, [0, 5, 6, 7]], ids[:, [0, 5, 6, 7]])  # the specials stay
    changed = dropped[:, 1:5] != ids[:, 1:5]
    assert (dropped[:, 1:5][changed] == 1).all()  # <unk>
    assert 0.4 < changed.float().mean().item() < 0.6
    assert torch.equal(drop_words(ids, 0.0), ids)

    cfg = tiny_model_config("gru", "general", "luong", True)
    cfg["encoder"]["word_dropout"] = 0.3
    cfg["decoder"]["word_dropout"] = 0.2
    model = build(cfg)
    assert model.word_dropout == (0.3, 0.2)
    src, lengths, tgt = batch()
    model.eval()
    with torch.no_grad():  # evaluation: no word dropout, the same logits twice
        assert torch.equal(model(src, lengths, tgt).logits, model(src, lengths, tgt).logits)
