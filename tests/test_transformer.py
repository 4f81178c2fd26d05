"""The Transformer encoder and decoder (nmt/models/transformer.py): incremental decoding with the
cache against full recomputation, the causal mask, mixed pairs, FLOPs, configs, ONNX export.

Search-level properties (beam against a plain reference, batch independence, n-best scored by
teacher forcing, greedy = argmax of the teacher-forced logits) run on the Transformer and on both
mixed pairs in tests/test_search.py (its SETUPS). Every comparison here is in fp32.
"""

from __future__ import annotations

import pytest
import torch
from export_grid import tiny_parity

from nmt.core.errors import NMTError
from nmt.core.settings import load_settings, settings_dict
from nmt.core.special_ids import BOS_ID, PAD_ID
from nmt.inference.onnx_export import TOLERANCE
from nmt.models import build_model
from nmt.models import transformer as transformer_module
from nmt.models.flops import LengthStats, flops_per_target_token
from nmt.models.seq2seq import ModelSettings

SRC_VOCAB, TGT_VOCAB = 30, 40
SIZES = {"embed_dim": 16, "hidden_size": 16, "num_layers": 2, "heads": 4, "ff_size": 32}


def config(encoder: str = "transformer", decoder: str = "transformer", **overrides) -> dict:
    """A tiny model: Transformer or biGRU encoder × Transformer or Luong GRU decoder."""
    if encoder == "transformer":
        enc = {"type": "transformer", **SIZES, "dropout": 0.1}
    else:
        enc = {"rnn_type": "gru", "embed_dim": 8, "hidden_size": 8, "num_layers": 1,
               "bidirectional": True, "dropout": 0.1}  # fmt: skip
    if decoder == "transformer":
        dec = {"style": "transformer", **SIZES, "dropout": 0.1}
    else:
        dec = {"style": "luong", "rnn_type": "gru", "embed_dim": 8, "hidden_size": 12,
               "num_layers": 1, "dropout": 0.1, "input_feeding": True, "bridge": True}  # fmt: skip
    cfg = {"encoder": enc, "attention": {"score": "general"}, "decoder": dec,
           "tie_embeddings": True}  # fmt: skip
    for group, values in overrides.items():
        cfg[group] = {**cfg[group], **values}
    return cfg


def tiny(cfg: dict, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(load_settings(ModelSettings, cfg, "model"), SRC_VOCAB, TGT_VOCAB).eval()


def source_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Three sources of lengths 7, 4 and 1, padded."""
    generator = torch.Generator().manual_seed(5)
    src = torch.randint(4, SRC_VOCAB, (3, 7), generator=generator)
    lengths = torch.tensor([7, 4, 1])
    src = src.masked_fill(torch.arange(7) >= lengths[:, None], PAD_ID)
    return src, lengths


@torch.no_grad()
def test_incremental_decoding_equals_full_recomputation_under_beam_reordering():
    """20 steps on 3 sentences × 4 beams: after each step the rows are reordered by random
    parents (repeats allowed), as beam search does, and get random next tokens. The cached
    step's logits equal a teacher-forced pass over each row's whole prefix within 1e-5."""
    model = tiny(config())
    src, lengths = source_batch()
    beams = 4
    repeat = torch.arange(3).repeat_interleave(beams)  # (12,)
    memory = model.encode(src, lengths).index_select(repeat)
    state = model.init_state(memory)
    prefixes = torch.full((12, 1), BOS_ID)  # each row's tokens so far
    generator = torch.Generator().manual_seed(11)
    worst = 0.0
    for _ in range(20):
        out = model.step(prefixes[:, -1], state, memory)
        full = model(src[repeat], lengths[repeat], prefixes).logits[:, -1]  # (12, V)
        worst = max(worst, (out.logits - full).abs().max().item())
        # beam reordering: each row continues a random hypothesis of its own sentence
        parents = repeat * beams + torch.randint(0, beams, (12,), generator=generator)
        state = out.state.index_select(parents)
        tokens = torch.randint(4, TGT_VOCAB, (12, 1), generator=generator)
        prefixes = torch.cat([prefixes[parents], tokens], dim=1)
    assert state.cache.shape == (12, 20, 2 * 2 * 16)  # 20 steps × L·2·d
    assert worst <= 1e-5


def future_leaks(model: torch.nn.Module) -> float:
    """The largest change of the logits at positions 0..4 when only the targets at 5.. change."""
    src, lengths = source_batch()
    generator = torch.Generator().manual_seed(2)
    tgt = torch.randint(4, TGT_VOCAB, (3, 9), generator=generator)
    changed = tgt.clone()
    changed[:, 5:] = torch.randint(4, TGT_VOCAB, (3, 4), generator=generator)
    with torch.no_grad():
        a = model(src, lengths, tgt).logits[:, :5]
        b = model(src, lengths, changed).logits[:, :5]
    return (a - b).abs().max().item()


def test_no_future_position_leaks_through_the_causal_mask(monkeypatch):
    model = tiny(config())
    assert future_leaks(model) == 0.0
    # the same check on a decoder whose mask lets every position see every other one fails
    monkeypatch.setattr(
        transformer_module,
        "causal_mask",
        lambda past, steps, device: torch.ones(1, steps, past + steps, dtype=torch.bool),
    )
    assert future_leaks(model) > 1e-3


def test_padding_in_the_source_is_never_attended():
    """The same sentence alone and padded beside a longer one: the same encoder states and
    logits (the padded positions' states are zero)."""
    model = tiny(config())
    src, lengths = source_batch()
    tgt = torch.randint(4, TGT_VOCAB, (1, 5), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        batched = model(src, lengths, tgt.expand(3, -1)).logits[1]
        alone = model(src[1:2, :4], lengths[1:2], tgt).logits[0]
        states = model.encoder(src, lengths).states
    assert (batched - alone).abs().max().item() <= 1e-5
    assert states[1, 4:].abs().max().item() == 0.0


@pytest.mark.parametrize(("encoder", "decoder"), [("transformer", "transformer"),
                         ("transformer", "luong"), ("gru", "transformer")])  # fmt: skip
def test_every_pair_trains_and_its_gradient_reaches_the_source_embeddings(encoder, decoder):
    model = tiny(config(encoder, decoder)).train()
    src, lengths = source_batch()
    tgt = torch.randint(4, TGT_VOCAB, (3, 6), generator=torch.Generator().manual_seed(3))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        logits = model(src, lengths, tgt[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), tgt[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        if not losses:
            grad = model.encoder.embed.weight.grad
            assert grad is not None and grad[src[0, 0]].abs().sum() > 0
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.25 * losses[0]  # it learns the three pairs by heart


def test_attention_maps_per_layer_and_head_are_distributions():
    model = tiny(config())
    src, lengths = source_batch()
    tgt = torch.randint(4, TGT_VOCAB, (3, 5), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        memory = model.encode(src, lengths)
        maps = model.decoder.attention_maps(model.tgt_embed(tgt), memory)
        reported = model(src, lengths, tgt).attn_weights
    assert len(maps) == 2
    for layer in maps:
        assert layer.self_weights.shape == (3, 4, 5, 5)
        assert layer.cross_weights.shape == (3, 4, 5, 7)
        assert torch.allclose(layer.cross_weights.sum(-1), torch.ones(3, 4, 5))
        assert layer.self_weights.triu(1).abs().max() == 0.0  # nothing above the diagonal
        assert layer.cross_weights[2, :, :, 1:].abs().max() == 0.0  # one real source token
    assert torch.allclose(reported, maps[-1].cross_weights.mean(1))


def test_flops_come_from_the_registered_classes():
    m = load_settings(ModelSettings, config(), "model")
    lengths = LengthStats(sentences=10, src_tokens=200, tgt_tokens=250, attended=200 * 25)
    pieces = flops_per_target_token(m, TGT_VOCAB, lengths).pieces
    d, ff, layers = 16, 32, 2
    src_len = 20  # source tokens per sentence
    encoder_per_src = layers * (4 * d * d + 4 * d * d + 4 * d * src_len + 4 * d * ff)
    assert pieces["encoder_transformer"] == pytest.approx(encoder_per_src * 200 / 250)
    assert pieces["attention_keys"] == pytest.approx(layers * 4 * d * d * 200 / 250)
    assert pieces["decoder_self_attention"] == pytest.approx(layers * (8 * d * d + 4 * d * 13))
    assert pieces["attention"] == pytest.approx(layers * 4 * d * 20)
    assert pieces["combine"] == pytest.approx(layers * (4 * d * d + 4 * d * ff))
    assert pieces["bridge"] == 0


@pytest.mark.parametrize(
    ("group", "change", "message"),
    [
        ("decoder", {"embed_dim": 8}, "model.decoder.embed_dim: expected 16"),
        ("encoder", {"heads": 3}, "heads: 3 does not divide the model size 16"),
        ("decoder", {"heads": 0}, "model.decoder.heads: expected an integer >= 1"),
        ("encoder", {"ff_size": None}, "model.encoder.ff_size: expected"),
        ("decoder", {"input_feeding": True}, "model.decoder.input_feeding: expected false"),
    ],
)
def test_bad_transformer_settings_are_one_line(group, change, message):
    cfg = config()
    cfg[group] = {**cfg[group], **change}
    with pytest.raises(NMTError, match=message):
        tiny(cfg)


def test_a_missing_transformer_key_is_named():
    cfg = config()
    del cfg["encoder"]["ff_size"]
    with pytest.raises(NMTError, match="model.encoder.ff_size: missing"):
        tiny(cfg)


def test_a_config_without_encoder_type_is_the_recurrent_encoder_and_round_trips():
    cfg = config("gru", "luong")
    assert "type" not in cfg["encoder"]
    settings = load_settings(ModelSettings, cfg, "model")
    assert settings.encoder.type == "rnn"
    again = settings_dict(load_settings(ModelSettings, config(), "model"))
    assert again["encoder"]["heads"] == 4 and again["encoder"]["type"] == "transformer"


def test_param_init_leaves_layer_norms_at_gain_one():
    from nmt.models import init_uniform_

    model = tiny(config())
    init_uniform_(model, 0.1)
    norm = model.decoder.final_norm
    assert torch.equal(norm.weight, torch.ones(16)) and torch.equal(norm.bias, torch.zeros(16))
    assert model.decoder.layers[0].ff[0].weight.abs().max() <= 0.1


@pytest.mark.parametrize(("encoder", "decoder"), [("transformer", "transformer"),
                         ("transformer", "luong"), ("gru", "transformer")])  # fmt: skip
def test_export_matches_eager_within_tolerance(encoder, decoder, tmp_path):
    """The export's own parity check (fp32 eager, batches of other sizes and lengths than the
    traced one, 6 steps with beam reordering; the Transformer's cache grows from 0 steps)."""
    parity = tiny_parity(config(encoder, decoder), tmp_path)
    assert parity["log_prob"] <= TOLERANCE
    assert parity["eager_precision"] == "fp32"


@torch.no_grad()
def test_cached_decoding_under_bf16_autocast_follows_the_full_pass():
    """bf16 (emulated where the CPU has no bf16 units): the cache is kept in the autocast dtype
    and the softmax in fp32; cached steps and the teacher-forced pass agree to bf16 rounding."""
    model = tiny(config())
    src, lengths = source_batch()
    tgt = torch.randint(4, TGT_VOCAB, (3, 8), generator=torch.Generator().manual_seed(9))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        full = model(src, lengths, tgt).logits.float()
        memory = model.encode(src, lengths)
        state = model.init_state(memory)
        for t in range(tgt.size(1)):
            out = model.step(tgt[:, t], state, memory)
            state = out.state
            assert (out.logits.float() - full[:, t]).abs().max() <= 0.1
    assert torch.isfinite(full).all()


# --------------------------------------------------------------------------------------------
# A trained checkpoint through the commands: translate, export, the exported folder


@pytest.fixture(scope="module")
def transformer_ckpt(tiny_prepared, tmp_path_factory):
    from conftest import train_tiny_checkpoint

    run_dir = tmp_path_factory.mktemp("transformer_run")
    return train_tiny_checkpoint(
        tiny_prepared,
        run_dir,
        "model/encoder=transformer",
        "model/decoder=transformer",
        "model.encoder.heads=2",
        "model.encoder.ff_size=32",
        "model.encoder.num_layers=1",
        "model.decoder.heads=2",
        "model.decoder.ff_size=32",
        "model.decoder.num_layers=2",
    )


def test_a_transformer_checkpoint_exports_and_its_folder_translates_the_same(
    transformer_ckpt, tmp_path
):
    from conftest import quote, run_main

    from nmt.inference.translator import Translator

    out = tmp_path / "exported"
    result = run_main("nmt.export", f"ckpt={quote(transformer_ckpt)}", f"out={quote(out)}")
    assert result.returncode == 0, result.stderr
    lines = ["Open the file.", "The station is closed on Sundays.", "Hello"]
    search = {"beam_size": 3, "n_best": 2, "precision": "fp32"}
    eager = Translator.from_checkpoint(transformer_ckpt, "cpu", **search)
    exported = Translator.from_checkpoint(out, "cpu", **search)
    assert exported.backend == "onnx"
    for a, b in zip(eager.translate(lines), exported.translate(lines), strict=True):
        assert [h.text for h in a.nbest] == [h.text for h in b.nbest]
        assert a.score == pytest.approx(b.score, abs=1e-4)
    assert eager.info.config["model"]["decoder"]["style"] == "transformer"
