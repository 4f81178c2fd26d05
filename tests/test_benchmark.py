"""scripts/benchmark.py: the FLOP formula (by hand, and against torch's FLOP counter), the
config, and one tiny end-to-end run whose JSON report must hold every field."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from conftest import TINY_SIZES, as_settings, build_model, flops_per_target_token, quote, run_main
from omegaconf import OmegaConf
from torch.utils.flop_counter import FlopCounterMode

from nmt.core.errors import NMTError
from nmt.core.runtime import resolve_precision
from nmt.data.batching import collate
from nmt.models.checkpoint import save_checkpoint, vocab_payload
from nmt.models.encoder import rnn_flops
from nmt.models.flops import LengthStats
from nmt.training.speed import CPU_FEATURES, BenchmarkSettings, check_benchmark_settings, gemm_peak

TINY_MODEL = TINY_SIZES  # the benchmark sets its own threads, batches and search
QUICK = [
    "benchmark.warmup_steps=1",
    "benchmark.windows=2",
    "benchmark.steps_per_window=1",
    "benchmark.decode_sentences=5",
    "benchmark.gemm_sizes=[64]",
    "benchmark.gemm_repeats=1",
    "benchmark.threads=1",
    "data.batching.max_tokens=512",
]


# ------------------------------------------------------------------------------ the formula


def test_rnn_flops_counts_both_matrices_of_every_gate():
    assert rnn_flops("gru", input_size=4, hidden_size=3) == 2 * 3 * 3 * (4 + 3)  # 126
    assert rnn_flops("lstm", input_size=4, hidden_size=3) == 2 * 4 * 3 * (4 + 3)  # 168


def test_flops_per_target_token_known_answer():
    """Worked by hand: biGRU 2×3 (E_s 4) → V = 6; concat A = 5; Luong GRU H = 6, E_t = 4, input
    feeding, bridge; 10 target words; two sentences (S, T) = (6, 4) and (4, 4)."""
    model = {
        "encoder": {
            "rnn_type": "gru",
            "embed_dim": 4,
            "hidden_size": 3,
            "num_layers": 1,
            "bidirectional": True,
            "dropout": 0.0,
        },
        "attention": {"score": "concat", "hidden_size": 5},
        "decoder": {
            "style": "luong",
            "rnn_type": "gru",
            "embed_dim": 4,
            "hidden_size": 6,
            "num_layers": 1,
            "dropout": 0.0,
            "input_feeding": True,
            "bridge": True,
        },
        "tie_embeddings": False,
    }
    lengths = LengthStats(sentences=2, src_tokens=10, tgt_tokens=8, attended=6 * 4 + 4 * 4)
    assert (lengths.src_per_tgt, lengths.attn_src_len, lengths.sentences_per_tgt) == (1.25, 5, 0.25)
    count = flops_per_target_token(model, tgt_vocab_size=10, lengths=lengths)
    assert count.pieces == {
        "encoder_rnn": 2 * (2 * 3 * 3 * (4 + 3)) * 1.25,  # 252 per source token → 315
        "attention_keys": 2 * 6 * 5 * 1.25,  # W_k: 60 per source token → 75
        "bridge": 2 * 6 * 6 * 0.25,  # 72 per sentence → 18
        "decoder_rnn": 2 * 3 * 6 * ((4 + 6) + 6),  # input [E y; h̃]: 576
        "attention": 2 * 6 * 5 + 2 * 5 * 5 + 2 * 5 * 6,  # W_q q, vᵀ over S = 5, context: 170
        "combine": 2 * (6 + 6) * 6,  # W_c: 144
        "output_proj": 2 * 6 * 10,  # 120
    }
    assert count.forward == 1418
    assert count.train == 3 * 1418


def tiny_batch(batch: int = 3, src_len: int = 7, tgt_len: int = 5):
    """Sentences of equal lengths (no padding), so that every FLOP the model runs is real."""
    src = [[4 + (i + j) % 40 for j in range(src_len - 1)] + [3] for i in range(batch)]
    tgt = [[2] + [4 + (i * j) % 60 for j in range(tgt_len - 1)] + [3] for i in range(batch)]
    return collate(src, tgt, list(range(batch)))


# torch's FLOP counter sees the matmuls of nn.GRU, of the cells and of the linear layers, but not
# those of nn.LSTM over a whole sequence (a fused CPU kernel): here an LSTM only steps as a cell.
COUNTED_CASES = {
    "concat-luong-feeding": [
        "model/attention=concat",
        "model.attention.hidden_size=8",
        "model.decoder.input_feeding=true",
    ],
    "dot-bahdanau": ["model/attention=dot", "model/decoder=bahdanau"],
    "general-lstm-decoder": [
        "model/attention=general",
        "model.decoder.rnn_type=lstm",
        "model.decoder.input_feeding=true",
    ],
    "scaled_dot-2-layers-no-feeding": [
        "model/attention=scaled_dot",
        "model.decoder.input_feeding=false",
        "model.encoder.num_layers=2",
        "model.decoder.num_layers=2",
    ],
    "location-tied-unidirectional": [
        "model/attention=location",
        "model.attention.max_src_len=12",
        "model.tie_embeddings=true",
        "model.decoder.hidden_size=24",
        "model.encoder.bidirectional=false",
    ],
    "local_p-general-bahdanau": [  # + W_p and v_p per target token
        "model/attention=general",
        "model.attention.type=local_p",
        "model.attention.window=2",
        "model/decoder=bahdanau",
    ],
    "local_m-dot-no-feeding": [  # the window is a mask: no matmul of its own
        "model/attention=dot",
        "model.attention.type=local_m",
        "model.attention.window=2",
        "model.decoder.input_feeding=false",
    ],
}


@pytest.mark.parametrize("overrides", COUNTED_CASES.values(), ids=COUNTED_CASES.keys())
def test_forward_flops_equal_torch_flop_counter(compose_config, overrides):
    cfg = compose_config(*TINY_MODEL, *overrides)
    torch.manual_seed(0)
    model = build_model(cfg.model, 50, 70).eval()
    batch = tiny_batch()
    lengths = LengthStats()
    lengths.add(batch)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(batch.src, batch.src_lengths, batch.tgt_in)
    measured = counter.get_total_flops() / lengths.tgt_tokens
    assert flops_per_target_token(cfg.model, 70, lengths).forward == pytest.approx(measured)


def test_length_stats_count_real_tokens_only():
    batch = collate([[5, 6, 3], [5, 3]], [[2, 7, 8, 9, 3], [2, 7, 3]], [0, 1])
    lengths = LengthStats()
    lengths.add(batch)
    # targets predict 4 and 2 tokens (y… </s>); sources have 3 and 2 tokens
    assert lengths == LengthStats(sentences=2, src_tokens=5, tgt_tokens=6, attended=3 * 4 + 2 * 2)


def test_gemm_peak_reports_the_best_size():
    peak = gemm_peak(torch.device("cpu"), [16, 32], repeats=1, min_seconds=0.001)
    assert peak["n"] in (16, 32) and peak["gflops"] > 0 and peak["dtype"] == "float32"
    peak = gemm_peak(torch.device("cpu"), [16], 1, min_seconds=0.001, dtype=torch.bfloat16)
    assert peak["n"] == 16 and peak["gflops"] > 0 and peak["dtype"] == "bfloat16"


# ------------------------------------------------------------------------------ the config


def test_benchmark_config_composes_with_an_experiment(compose_config):
    cfg = compose_config("+experiment=joeynmt_ref", config_name="benchmark")
    assert cfg.data.out_dir == "data/enko_unigram8k"  # from the experiment
    assert cfg.optim.lr == 5.0e-4
    assert cfg.benchmark.beam_size == 5
    assert cfg.benchmark.threads is None  # follows trainer.num_threads
    cfg = compose_config("trainer.num_threads=2", config_name="benchmark")
    assert cfg.benchmark.threads == 2


def test_reference_model_flops_are_about_23_mflop(compose_config):
    """reference-figures.md: ≈ 23 MFLOP per target token forward + backward, over half of it in
    the 8k output projection. Lengths: source/target ≈ 1.05 and a target token attends over ≈ 44
    source tokens, as in enko's 4,096-token batches."""
    cfg = compose_config("+experiment=joeynmt_ref", config_name="benchmark")
    lengths = LengthStats(sentences=100, src_tokens=105_000, tgt_tokens=100_000, attended=4_400_000)
    count = flops_per_target_token(cfg.model, 8000, lengths)
    assert 22e6 < count.train < 24e6
    assert count.pieces["output_proj"] > count.forward / 2


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("benchmark.windows=0", "benchmark.windows: expected an integer >= 1; got 0"),
        ("benchmark.decode_sentences=-1", "expected an integer >= 0 or null; got -1"),
        (
            "benchmark.gemm_sizes=[]",
            "benchmark.gemm_sizes: expected a non-empty list of integers >= 1",
        ),
        ("benchmark.ckpt=/no/such.pt", "benchmark.ckpt: no checkpoint at /no/such.pt"),
    ],
)
def test_bad_settings_are_named(compose_config, override, message):
    cfg = compose_config(override, config_name="benchmark")
    with pytest.raises(NMTError, match=re.escape(message)):
        check_benchmark_settings(as_settings(BenchmarkSettings, cfg.benchmark, "benchmark"))


def test_bad_settings_stop_the_command_before_any_work():
    result = run_main("nmt.benchmark", "benchmark.output=/no/such/folder/b.json")
    assert result.returncode == 2
    assert "folder /no/such/folder does not exist" in result.stderr
    assert "Traceback" not in result.stderr


# ------------------------------------------------------------------------------ a tiny run


def test_tiny_run_writes_every_field(tiny_prepared, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "bench.json"
    result = run_main(
        "nmt.benchmark",
        *tiny_prepared.corpus.overrides(tiny_prepared.data.out_dir),
        *TINY_MODEL,
        "model/attention=concat",
        "model.attention.hidden_size=16",
        *QUICK,
        f"benchmark.output={quote(out)}",
    )
    assert result.returncode == 0, result.stderr
    assert "train target tokens/s" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.json"]  # nothing else written
    report = json.loads(out.read_text())

    train = report["train"]
    assert train["timed_steps"] == 2
    assert len(train["window_tgt_tokens_per_s"]) == 2
    assert 0 < train["tgt_tokens_per_s"] < train["src_tgt_tokens_per_s"]
    assert set(train["ms_per_step"]) == {"data", "forward", "backward", "optimizer", "other"}
    assert all(train["ms_per_step"][k] > 0 for k in ("data", "forward", "backward", "optimizer"))
    assert math.isclose(sum(train["time_share"].values()), 1.0)

    assert report["memory"]["peak_rss_mib"] > 0
    assert report["memory"]["cuda_max_allocated_mib"] is None

    flops = report["flops"]
    assert flops["train_per_tgt_token"] == pytest.approx(3 * flops["forward_per_tgt_token"])
    assert flops["forward_per_tgt_token"] == pytest.approx(sum(flops["forward_pieces"].values()))
    assert flops["achieved_gflops"] == pytest.approx(
        flops["train_per_tgt_token"] * train["tgt_tokens_per_s"] / 1e9
    )
    assert flops["gemm_peak"]["gflops"] > 0 and flops["gemm_peak"]["n"] == 64
    peaks = flops["gemm_peaks"]
    assert peaks["fp32"] == flops["gemm_peak"] and peaks["bf16"]["dtype"] == "bfloat16"
    assert peaks["bf16"]["gflops"] > 0
    assert report["config"]["precision"] == resolve_precision("auto", torch.device("cpu")).name
    own = peaks[report["config"]["precision"]]["gflops"]
    assert flops["share_of_peak"] == pytest.approx(flops["achieved_gflops"] / own)
    assert flops["share_of_fp32_peak"] == pytest.approx(
        flops["achieved_gflops"] / peaks["fp32"]["gflops"]
    )
    assert set(report["device"]["cpu_features"]) <= set(CPU_FEATURES)
    assert "GEMM peak bf16" in result.stdout and "CPU features" in result.stdout

    for name, beam_size in (("greedy", 1), ("beam", 5)):
        decode = report["decode"][name]
        assert decode["sentences"] == 5
        assert decode["beam_size"] == beam_size
        assert decode["sentences_per_s"] > 0 and decode["tokens_per_s"] > 0
        assert decode["tokens_per_s"] == pytest.approx(
            decode["sentences_per_s"] * decode["mean_output_len"]
        )
    assert report["device"]["type"] == "cpu" and report["device"]["threads"] == 1
    assert report["model"]["parameters"] > 0


def test_decoding_can_be_skipped(tiny_prepared, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "bench.json"
    result = run_main(
        "nmt.benchmark",
        *tiny_prepared.corpus.overrides(tiny_prepared.data.out_dir),
        *TINY_MODEL,
        "model/attention=concat",
        "model.attention.hidden_size=16",
        *QUICK,
        "benchmark.windows=1",
        "benchmark.warmup_steps=0",
        "benchmark.decode_sentences=0",
        f"benchmark.output={quote(out)}",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(Path(out).read_text())["decode"] is None


def untrained_checkpoint(path, cfg, data):
    """A checkpoint of ``cfg``'s model with its initial weights, at ``path``."""
    model = build_model(cfg.model, len(data.src_vocab), len(data.tgt_vocab))
    payload = {
        "model": model.state_dict(),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "vocab": vocab_payload(data.src_vocab, data.tgt_vocab),
    }
    save_checkpoint(path, payload)
    return path


def test_decoding_with_a_checkpoint(tiny_prepared, tmp_path, monkeypatch, compose_config):
    data = tiny_prepared.data
    cfg = compose_config(
        *tiny_prepared.corpus.overrides(data.out_dir), *TINY_MODEL, "model/attention=dot"
    )
    ckpt = untrained_checkpoint(tmp_path / "trained.pt", cfg, data)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "bench.json"
    result = run_main(
        "nmt.benchmark",
        *tiny_prepared.corpus.overrides(data.out_dir),
        *TINY_MODEL,
        "model/attention=concat",
        "model.attention.hidden_size=16",
        *QUICK,
        "benchmark.windows=1",
        "benchmark.warmup_steps=0",
        "benchmark.decode_sentences=3",
        f"benchmark.ckpt={quote(ckpt)}",
        f"benchmark.output={quote(out)}",
    )
    assert result.returncode == 0, result.stderr
    decode = json.loads(out.read_text())["decode"]
    assert decode["model"] == str(ckpt)
    assert decode["greedy"]["sentences"] == decode["beam"]["sentences"] == 3
    assert decode["exported"] == {}


def test_decoding_an_exported_folder_too(tiny_prepared, tmp_path, monkeypatch):
    from nmt.inference.onnx_export import export_checkpoint

    data = tiny_prepared.data
    cfg = tiny_prepared.corpus.cfg(*TINY_MODEL, out_dir=data.out_dir)
    ckpt = untrained_checkpoint(tmp_path / "trained.pt", cfg, data)
    export_checkpoint(ckpt, tmp_path / "onnx")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "bench.json"
    args = (*QUICK, "benchmark.windows=1", "benchmark.warmup_steps=0")
    result = run_main(
        "nmt.benchmark",
        *tiny_prepared.corpus.overrides(data.out_dir),
        *TINY_MODEL,
        *args,
        "benchmark.decode_sentences=3",
        f"benchmark.ckpt={quote(ckpt)}",
        f"benchmark.exported=[{quote(tmp_path / 'onnx')}]",
        f"benchmark.output={quote(out)}",
    )
    assert result.returncode == 0, result.stderr
    exported = json.loads(out.read_text())["decode"]["exported"][str(tmp_path / "onnx")]
    assert exported["greedy"]["sentences"] == exported["beam"]["sentences"] == 3
    assert "onnxruntime beam" in result.stdout
    bad = run_main(
        "nmt.benchmark",
        *args,
        f"benchmark.exported=[{quote(tmp_path)}]",
        f"benchmark.output={quote(out)}",
    )
    assert bad.returncode == 2
    assert "benchmark.exported: no nmt-export folder at" in bad.stderr
