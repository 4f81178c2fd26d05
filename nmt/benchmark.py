"""Speed, memory and FLOPs of any training configuration: ``nmt-benchmark [overrides]``.

The config is ``configs/benchmark.yaml``: the training config plus a ``benchmark`` section, so
every training override works (``+experiment=joeynmt_ref``, ``model/attention=dot``, …). It
measures, on the device the trainer would pick (``trainer.device``):

* **Training throughput**: the trainer's step, :class:`nmt.training.step.TrainingStep` (forward,
  :func:`nmt.models.loss.sequence_loss`, backward over ``trainer.accum_steps`` batches, clipping,
  optimiser), on the training split's batches of epoch 0, in the trainer's order.
  ``warmup_steps`` untimed steps, then ``windows`` timed windows of ``steps_per_window`` steps;
  the throughput is the median over windows of target tokens/s and of source + target tokens/s.
  Each step's time is split into data (building the batch and moving it to the device), forward,
  backward and optimiser; "other" is what the window's wall clock holds beyond those.
* **Peak memory** of the training phase: on CPU the peak resident set size (Linux: ``VmHWM``
  from ``/proc/self/status``, reset before warm-up through ``/proc/self/clear_refs``; elsewhere
  ``resource.getrusage`` ``ru_maxrss``, the whole process's peak); on CUDA also
  ``torch.cuda.max_memory_allocated``.
* **Decoding speed**: :class:`nmt.inference.translator.Translator` on the first ``decode_sentences``
  sentences of the test split, greedy and beam (``beam_size``, ``search.length_penalty``),
  in sentences/s and predicted tokens/s (``</s>`` included), with the model the benchmark
  trained for its timed steps (atypical output lengths) or, with ``ckpt``, a trained checkpoint.
* **FLOPs**: :func:`flops_per_target_token`, the model's matrix multiplies per target token from
  the config's sizes and the lengths of the batches measured, the achieved GFLOP/s (training
  FLOPs per target token × target tokens/s) and the GEMM peaks of fp32 and bf16 measured in the
  same run (:func:`gemm_peaks`), so the two can be compared on one machine: ``share_of_peak`` is
  the share of the peak of the precision trained in (``trainer.precision``, ``auto`` resolved),
  ``share_of_fp32_peak`` that of fp32's. The CPU flags that decide those peaks (AVX2, AVX-512,
  AVX512-BF16, AMX) are listed under ``device.cpu_features``.

The report is printed as a table and written as JSON to ``benchmark.output`` (atomically).
"""

from __future__ import annotations

import logging
import math
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

import nmt.config.resolvers  # noqa: F401  (the resolvers configs/ uses)
from nmt.config.schema import BenchmarkConfig, BenchmarkSettings
from nmt.core.errors import NMTError, exit_on_user_error
from nmt.core.io import write_json
from nmt.core.paths import CONFIG_DIR
from nmt.core.runtime import (
    BF16_CPU_FLAGS,
    CPU_FLAGS_ENV,
    Precision,
    bf16_cpu_flags,
    cpu_flags,
    cpu_model,
    keep_freed_memory,
    pick_device,
    real_cpu_flags,
    resolve_precision,
)
from nmt.core.settings import load_settings
from nmt.data.batching import Batch, TokenBatcher
from nmt.data.pipeline import PreparedData, prepare
from nmt.data.vocab import PAD_ID
from nmt.inference.search import SearchSettings
from nmt.inference.translator import Translator
from nmt.models import build_model
from nmt.models.attention import SCORES, ScoreFlops
from nmt.models.decoder import DECODER_STYLES, DecoderSizes
from nmt.models.encoder import rnn_flops
from nmt.training.step import StepResult, TrainingStep

log = logging.getLogger("nmt")

# Backward ≈ 2 × forward: each weight matmul y = W x needs one matmul for the gradient of x and
# one for the gradient of W.
TRAIN_FLOPS_FACTOR = 3


# --------------------------------------------------------------------------------------------
# FLOPs
# --------------------------------------------------------------------------------------------


@dataclass
class LengthStats:
    """Real (unpadded) lengths of the batches measured, summed over their sentences."""

    sentences: int = 0
    src_tokens: int = 0  # Σ S_i, source subwords with </s>
    tgt_tokens: int = 0  # Σ T_i, predicted target tokens (tgt_out without padding)
    attended: int = 0  # Σ S_i · T_i, source positions attended over all target tokens

    def add(self, batch: Batch) -> None:
        src = batch.src_lengths.cpu()  # (batch,)
        tgt = (batch.tgt_out != PAD_ID).sum(1).cpu()  # (batch,)
        self.sentences += src.numel()
        self.src_tokens += int(src.sum())
        self.tgt_tokens += int(tgt.sum())
        self.attended += int((src * tgt).sum())

    @property
    def src_per_tgt(self) -> float:
        return self.src_tokens / self.tgt_tokens

    @property
    def attn_src_len(self) -> float:
        """Mean source length a target token attends over (weighted by target length)."""
        return self.attended / self.tgt_tokens

    @property
    def sentences_per_tgt(self) -> float:
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


def flops_per_target_token(model_cfg: Any, tgt_vocab_size: int, lengths: LengthStats) -> FlopCount:
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
    cfg = (
        OmegaConf.to_container(model_cfg, resolve=True)
        if OmegaConf.is_config(model_cfg)
        else model_cfg
    )
    enc, att, dec = cfg["encoder"], cfg["attention"], cfg["decoder"]
    values = (2 if enc["bidirectional"] else 1) * enc["hidden_size"]  # V
    hidden, embed = dec["hidden_size"], dec["embed_dim"]  # H, E_t
    if cfg["tie_embeddings"] and hidden != embed:
        output_proj = 2 * hidden * embed + 2 * embed * tgt_vocab_size
    else:
        output_proj = 2 * hidden * tgt_vocab_size
    score = SCORES.lookup(att["score"])
    attention = score.flops(hidden, values, lengths.attn_src_len, **score.options(att))
    style = DECODER_STYLES.lookup(dec["style"])
    sizes = DecoderSizes(
        dec["rnn_type"],
        embed,
        hidden,
        dec["num_layers"],
        dec["dropout"],
        values,
        values,
        dec["bridge"],
    )
    decoder = style.flops(sizes, **style.options(dec))
    return FlopCount(
        {
            "encoder_rnn": encoder_rnn_flops(enc) * lengths.src_per_tgt,
            "attention_keys": attention.keys * lengths.src_per_tgt,
            "bridge": (2 * values * dec["num_layers"] * hidden if dec["bridge"] else 0)
            * lengths.sentences_per_tgt,
            "decoder_rnn": float(decoder.rnn),
            "attention": attention_flops(att, attention, values, hidden, lengths.attn_src_len),
            "combine": float(decoder.combine),
            "output_proj": float(output_proj),
        }
    )


def encoder_rnn_flops(enc: dict) -> int:
    """Per source token: Σ_layers D · rnn(in, H_e), in = E_s (first layer) or D·H_e."""
    directions = 2 if enc["bidirectional"] else 1
    return sum(
        directions
        * rnn_flops(
            enc["rnn_type"],
            enc["embed_dim"] if layer == 0 else directions * enc["hidden_size"],
            enc["hidden_size"],
        )
        for layer in range(enc["num_layers"])
    )


def attention_flops(
    att: dict, score: ScoreFlops, values: int, hidden: int, src_len: float
) -> float:
    """Per target token: the score's FLOPs over ``src_len`` positions, then the context 2·S·V."""
    # local_p: p_t = S·sigmoid(v_pᵀ tanh(W_p q)); the type is absent in older configs (global)
    centre = 2 * hidden * hidden + 2 * hidden if att.get("type") == "local_p" else 0
    return score.scores + 2 * src_len * values + centre


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------


class Clock:
    """``now()`` after waiting for the device's queued work (CUDA), so phases are not blurred."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()


def gemm_peak(
    device: torch.device,
    sizes: Sequence[int],
    repeats: int,
    min_seconds: float = 0.05,
    dtype: torch.dtype = torch.float32,
) -> dict[str, Any]:
    """Best ``torch.mm`` rate in ``dtype`` over square sizes ``n`` (2·n³ FLOPs each), in GFLOP/s.

    Each measurement runs enough products back to back to last ``min_seconds``; the best of
    ``repeats`` measurements per size counts.
    """
    clock = Clock(device)
    best, best_n = 0.0, None
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        out = torch.empty(n, n, device=device, dtype=dtype)
        start = clock.now()
        torch.mm(a, b, out=out)  # warm-up; also sizes the batch of products below
        calls = max(1, min(1000, math.ceil(min_seconds / max(clock.now() - start, 1e-9))))
        for _ in range(repeats):
            start = clock.now()
            for _ in range(calls):
                torch.mm(a, b, out=out)
            rate = 2 * n**3 * calls / (clock.now() - start) / 1e9
            if rate > best:
                best, best_n = rate, n
    return {"gflops": best, "n": best_n, "sizes": list(sizes), "dtype": str(dtype).split(".")[-1]}


def gemm_peaks(device: torch.device, sizes: Sequence[int], repeats: int) -> dict[str, Any]:
    """:func:`gemm_peak` in fp32 and in bf16, each precision's own peak, by precision name.

    On a CPU without bf16 matrix instructions bf16 products are emulated at about 1 GFLOP/s,
    where the three default sizes would take two minutes: its peak is then measured once, at
    the smallest size. (This CPU's real flags decide that, not ``NMT_CPU_FLAGS``: a simulated
    kind changes what the project chooses, not how fast this CPU multiplies.)"""
    emulated = device.type == "cpu" and not bf16_cpu_flags(real_cpu_flags())
    bf16_sizes, bf16_repeats = ([min(sizes)], 1) if emulated else (sizes, repeats)
    return {
        "fp32": gemm_peak(device, sizes, repeats),
        "bf16": gemm_peak(device, bf16_sizes, bf16_repeats, dtype=torch.bfloat16),
    }


@dataclass
class PhaseTimes:
    """Seconds spent in each phase of the training step, summed over steps."""

    data: float = 0.0
    forward: float = 0.0
    backward: float = 0.0
    optimizer: float = 0.0

    def total(self) -> float:
        return self.data + self.forward + self.backward + self.optimizer


@dataclass
class Window:
    seconds: float
    steps: int
    src_tokens: int
    tgt_tokens: int
    phases: PhaseTimes = field(default_factory=PhaseTimes)


def endless_batches(batcher: TokenBatcher) -> Iterator[Batch]:
    """The training batches in the trainer's order: epoch 0, then 1, 2, …"""
    epoch = 0
    while True:
        empty = True
        for batch in batcher.epoch(epoch):
            empty = False
            yield batch
        if empty:
            raise NMTError("the train split gives no batches")
        epoch += 1


class StepRunner:
    """The trainer's optimiser step (:class:`nmt.training.step.TrainingStep`: the config's
    ``trainer.accum_steps`` batches, normalisation, non-finite skipping, clipping, optimiser),
    with each phase timed. ``results`` holds every step's :class:`StepResult`."""

    def __init__(
        self, cfg: DictConfig, model: torch.nn.Module, device: torch.device, precision: Precision
    ):
        self.training_step = TrainingStep.from_config(cfg, model, device, precision)
        self.clock = Clock(device)
        self.step_number = 0  # optimiser steps taken (skipped ones not counted, as in training)
        self.results: list[StepResult] = []
        self.phases = PhaseTimes()
        self.last_mark = 0.0

    def mark(self, phase: str) -> None:
        """Add the time since the last mark to ``phase`` (a :data:`nmt.training.step.PhaseMark`)."""
        now = self.clock.now()
        setattr(self.phases, phase, getattr(self.phases, phase) + now - self.last_mark)
        self.last_mark = now

    def step(self, batches: Iterator[Batch], lengths: LengthStats) -> list[Batch]:
        """One optimiser step on the next ``accum_steps`` batches; returns them."""
        self.last_mark = self.clock.now()
        group = [next(batches) for _ in range(self.training_step.settings.accum_steps)]
        self.mark("data")
        result = self.training_step(group, self.step_number + 1, self.mark)
        self.step_number += not result.skipped
        self.results.append(result)
        for batch in group:
            lengths.add(batch)
        return group

    def window(self, batches: Iterator[Batch], steps: int, lengths: LengthStats) -> Window:
        self.phases = PhaseTimes()
        src_tokens = tgt_tokens = 0
        start = self.clock.now()
        for _ in range(steps):
            for batch in self.step(batches, lengths):
                src_tokens += batch.num_src_tokens
                tgt_tokens += batch.num_tgt_tokens
        return Window(self.clock.now() - start, steps, src_tokens, tgt_tokens, self.phases)


def time_training(
    cfg: DictConfig,
    model: torch.nn.Module,
    data: PreparedData,
    device: torch.device,
    precision: Precision,
) -> tuple[dict[str, Any], LengthStats]:
    """Warm up, then time ``windows`` windows; returns the report's ``train`` section and the
    lengths of the timed batches. The section also lists each timed step's loss per target
    token (``step_losses``) and how many steps were skipped as non-finite."""
    bench, b = cfg.benchmark, cfg.data.batching
    batcher = data.batcher("train", b.max_tokens, b.bucket_width, b.seed, shuffle=True)
    batches = endless_batches(batcher)
    model.train()
    runner = StepRunner(cfg, model, device, precision)
    runner.window(batches, bench.warmup_steps, LengthStats())
    lengths = LengthStats()
    windows = [
        runner.window(batches, bench.steps_per_window, lengths) for _ in range(bench.windows)
    ]
    timed = runner.results[bench.warmup_steps :]
    report = training_report(windows, lengths)
    report["accum_steps"] = runner.training_step.settings.accum_steps
    report["step_losses"] = [r.loss_per_token for r in timed]
    report["skipped_steps"] = sum(r.skipped for r in timed)
    return report, lengths


def training_report(windows: Sequence[Window], lengths: LengthStats) -> dict[str, Any]:
    seconds = sum(w.seconds for w in windows)
    steps = sum(w.steps for w in windows)
    phases = PhaseTimes()
    for w in windows:
        for name in ("data", "forward", "backward", "optimizer"):
            setattr(phases, name, getattr(phases, name) + getattr(w.phases, name))
    ms_per_step = {name: 1000 * value / steps for name, value in asdict(phases).items()}
    ms_per_step["other"] = 1000 * (seconds - phases.total()) / steps
    return {
        "tgt_tokens_per_s": statistics.median(w.tgt_tokens / w.seconds for w in windows),
        "src_tgt_tokens_per_s": statistics.median(
            (w.src_tokens + w.tgt_tokens) / w.seconds for w in windows
        ),
        "window_tgt_tokens_per_s": [w.tgt_tokens / w.seconds for w in windows],
        "steps_per_s": steps / seconds,
        "ms_per_step": ms_per_step,
        "time_share": {name: value * steps / 1000 / seconds for name, value in ms_per_step.items()},
        "timed_steps": steps,
        "timed_seconds": seconds,
        "sentences_per_step": lengths.sentences / steps,
        "tgt_tokens_per_step": lengths.tgt_tokens / steps,
        "mean_src_len": lengths.src_tokens / lengths.sentences,
        "mean_tgt_len": lengths.tgt_tokens / lengths.sentences,
    }


# --------------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------------

PROC_STATUS = Path("/proc/self/status")


def reset_peak_memory(device: torch.device) -> bool:
    """Start a new peak: CUDA's allocator statistics and, on Linux, the peak RSS (VmHWM).

    Returns whether the RSS peak could be reset.
    """
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        Path("/proc/self/clear_refs").write_text("5")  # 5: reset the peak RSS
        return True
    except OSError:
        return False


def peak_rss_mib(since_reset: bool) -> tuple[float, str]:
    """The peak resident set size and where the figure comes from."""
    if since_reset:
        for line in PROC_STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024, "VmHWM since the training phase began"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kib = peak / 1024 if sys.platform == "darwin" else peak  # bytes on macOS, KiB elsewhere
    return kib / 1024, "ru_maxrss, the process's peak (data preparation included)"


def memory_report(device: torch.device, since_reset: bool) -> dict[str, Any]:
    rss, source = peak_rss_mib(since_reset)
    cuda = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {"peak_rss_mib": rss, "rss_source": source, "cuda_max_allocated_mib": cuda}


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


def time_decoding(
    translator: Translator, lines: Sequence[str], device: torch.device
) -> dict[str, Any]:
    """Translate ``lines`` once (after a short untimed warm-up) and report its speed."""
    clock = Clock(device)
    translator.translate(lines[:2])  # warm-up
    start = clock.now()
    best = translator.translate(lines)
    seconds = clock.now() - start
    tokens = sum(t.num_predicted for t in best)
    return {
        "precision": translator.precision.name,
        "precision_reason": translator.precision.reason,
        "beam_size": translator.settings.beam_size,
        "length_penalty": translator.settings.length_penalty,
        "sentences": len(lines),
        "seconds": seconds,
        "sentences_per_s": len(lines) / seconds,
        "tokens_per_s": tokens / seconds,
        "mean_output_len": tokens / len(lines),
        "max_len_rate": sum(t.hit_max_len for t in best) / len(lines),
    }


def search_settings(cfg: DictConfig) -> dict[str, SearchSettings]:
    """The greedy and the beam search settings: the config's ``search`` with name and beam size
    replaced (one hypothesis each; the beam keeps ``search.length_penalty``)."""
    base = SearchSettings.from_config(cfg.search)
    return {
        "greedy": base.replace(name="greedy", beam_size=1, n_best=1),
        "beam": base.replace(name="beam", beam_size=cfg.benchmark.beam_size, n_best=1),
    }


def decoding_report(
    cfg: DictConfig, model: torch.nn.Module, data: PreparedData, device: torch.device
) -> dict[str, Any] | None:
    n = cfg.benchmark.decode_sentences
    if n == 0:
        return None
    lines = data.splits["test"].src_text[:n]
    if not lines:
        raise NMTError("the test split is empty: nothing to decode (benchmark.decode_sentences=0)")
    settings = search_settings(cfg)
    if cfg.benchmark.ckpt:
        translator = Translator.from_checkpoint(cfg.benchmark.ckpt, device)
        source = str(cfg.benchmark.ckpt)
    else:
        translator = Translator(model, data.src_vocab, data.tgt_vocab, settings["beam"], device)
        source = "the benchmark's model, trained for the timed steps only"
    report: dict[str, Any] = {"model": source}
    for name, search in settings.items():
        log.info("decoding %d test sentences (%s)", len(lines), name)
        report[name] = time_decoding(translator.with_settings(**asdict(search)), lines, device)
    # nmt-export folders: the same sentences, settings and threads on onnxruntime (CPU)
    report["exported"] = {}
    for folder in cfg.benchmark.exported or []:
        exported = Translator.from_checkpoint(folder, "cpu", backend="onnx")
        cpu = torch.device("cpu")
        report["exported"][str(folder)] = {
            name: time_decoding(exported.with_settings(**asdict(search)), lines, cpu)
            for name, search in settings.items()
        }
    return report


# --------------------------------------------------------------------------------------------
# The whole benchmark
# --------------------------------------------------------------------------------------------


def check_benchmark_cfg(bench: DictConfig) -> None:
    """Reject files the benchmark cannot use (the types and ranges are the schema's:
    :class:`nmt.config.schema.BenchmarkSettings`)."""
    load_settings(BenchmarkSettings, bench, "benchmark")
    if bench.ckpt and not Path(bench.ckpt).is_file():
        raise NMTError(f"benchmark.ckpt: no checkpoint at {bench.ckpt}")
    for folder in bench.get("exported") or []:
        if not (Path(folder) / "manifest.json").is_file():
            raise NMTError(f"benchmark.exported: no nmt-export folder at {folder}")
    if not bench.output:
        raise NMTError("benchmark.output: expected a file path")
    folder = Path(bench.output).parent
    if not folder.is_dir():
        raise NMTError(f"benchmark.output={bench.output}: folder {folder} does not exist")


# The CPU flags that decide what the fp32 and bf16 peaks can be
CPU_FEATURES = ("avx2", "fma", "avx512f", "avx512_vnni", *BF16_CPU_FLAGS, "amx_tile")


def device_report(device: torch.device) -> dict[str, Any]:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
    return {
        "type": device.type,
        "name": name,
        "cpu_features": [flag for flag in CPU_FEATURES if flag in cpu_flags()],
        "cpu_flags_simulated": os.environ.get(CPU_FLAGS_ENV),  # NMT_CPU_FLAGS, when set
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def run_benchmark(
    cfg: DictConfig,
    data: PreparedData | None = None,
    progress: Callable[[str], None] = log.info,
) -> dict[str, Any]:
    """Measure everything the module docstring lists; return the report (a JSON-ready dict)."""
    bench = cfg.benchmark
    load_settings(BenchmarkConfig, cfg)
    check_benchmark_cfg(bench)
    if bench.threads:
        torch.set_num_threads(bench.threads)
    device = pick_device(cfg.trainer.device)
    precision = resolve_precision(cfg.trainer.precision, device)
    progress(f"precision: {precision.name} ({precision.reason})")
    memory_mode = "unchanged (trainer.keep_freed_memory=false)"
    if cfg.trainer.keep_freed_memory:
        memory_mode = keep_freed_memory(device)
    progress(f"memory: {memory_mode}")
    data = data or prepare(cfg.data, seed=cfg.seed, log=progress)
    torch.manual_seed(cfg.seed)
    vocab_sizes = len(data.src_vocab), len(data.tgt_vocab)
    model = build_model(cfg.model, *vocab_sizes, param_init=cfg.trainer.param_init).to(device)

    progress(
        f"training: {bench.warmup_steps} warm-up steps, then {bench.windows} windows of "
        f"{bench.steps_per_window} steps on {device}"
    )
    rss_reset = reset_peak_memory(device)
    train, lengths = time_training(cfg, model, data, device, precision)
    memory = memory_report(device, rss_reset)
    flops = flops_per_target_token(cfg.model, len(data.tgt_vocab), lengths)
    progress(f"GEMM peaks: torch.mm fp32 and bf16, n in {list(bench.gemm_sizes)}")
    peaks = gemm_peaks(device, list(bench.gemm_sizes), bench.gemm_repeats)
    own_peak = peaks.get(precision.name, peaks["fp32"])["gflops"]  # fp16 runs: fp32's
    achieved = flops.train * train["tgt_tokens_per_s"] / 1e9
    return {
        "config": {
            "overrides": overrides(),
            "model": OmegaConf.to_container(cfg.model, resolve=True),
            "data": cfg.data.name,
            "max_tokens": cfg.data.batching.max_tokens,
            "precision": precision.name,
            "precision_reason": precision.reason,
            "memory": memory_mode,
            "optim": cfg.optim.name,
        },
        "device": device_report(device),
        "model": {
            "parameters": model.num_parameters(),
            "src_vocab": len(data.src_vocab),
            "tgt_vocab": len(data.tgt_vocab),
        },
        "train": train,
        "memory": memory,
        "flops": {
            "forward_per_tgt_token": flops.forward,
            "train_per_tgt_token": flops.train,
            "forward_pieces": flops.pieces,
            "attn_src_len": lengths.attn_src_len,
            "src_per_tgt": lengths.src_per_tgt,
            "achieved_gflops": achieved,
            "gemm_peak": peaks["fp32"],
            "gemm_peaks": peaks,
            # the share of the peak of the precision trained in, and of the fp32 peak
            "share_of_peak": achieved / own_peak if own_peak else None,
            "share_of_fp32_peak": (
                achieved / peaks["fp32"]["gflops"] if peaks["fp32"]["gflops"] else None
            ),
        },
        "decode": decoding_report(cfg, model, data, device),
    }


def overrides() -> list[str]:
    """The command line's overrides, when run through Hydra."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return list(HydraConfig.get().overrides.task)
    return []


def cpu_features_line(dev: dict[str, Any]) -> str:
    features = ", ".join(dev["cpu_features"]) or "none of " + ", ".join(CPU_FEATURES)
    simulated = dev.get("cpu_flags_simulated")
    return f"{features} (simulated: {CPU_FLAGS_ENV}={simulated})" if simulated else features


def format_report(report: dict[str, Any]) -> str:
    """The printed form of the report: one aligned table."""
    dev, train, mem, flops = report["device"], report["train"], report["memory"], report["flops"]
    ms = train["ms_per_step"]
    rows = [
        (
            "device",
            f"{dev['type']} ({dev['name']}), {dev['threads']} threads, torch {dev['torch']}",
        ),
        ("CPU features", cpu_features_line(dev)),
        ("precision", f"{report['config']['precision']} ({report['config']['precision_reason']})"),
        ("memory", report["config"]["memory"]),
        ("parameters", f"{report['model']['parameters']:,}"),
        ("train target tokens/s", f"{train['tgt_tokens_per_s']:,.0f} (median of windows)"),
        ("train src+tgt tokens/s", f"{train['src_tgt_tokens_per_s']:,.0f}"),
        (
            "ms per step",
            f"{sum(ms.values()):.1f} = data {ms['data']:.1f} + forward {ms['forward']:.1f} + "
            f"backward {ms['backward']:.1f} + optimizer {ms['optimizer']:.1f} + other {ms['other']:.1f}",
        ),
        (
            "batch",
            f"{train['sentences_per_step']:.1f} sentences, {train['tgt_tokens_per_step']:,.0f} "
            f"target tokens; mean lengths src {train['mean_src_len']:.1f}, tgt {train['mean_tgt_len']:.1f}",
        ),
        ("peak RSS", f"{mem['peak_rss_mib']:,.0f} MiB ({mem['rss_source']})"),
    ]
    if mem["cuda_max_allocated_mib"] is not None:
        rows.append(("CUDA max allocated", f"{mem['cuda_max_allocated_mib']:,.0f} MiB"))
    pieces = ", ".join(f"{k} {v / 1e6:.3g}" for k, v in flops["forward_pieces"].items())
    peaks = flops["gemm_peaks"]
    rows += [
        (
            "FLOPs per target token",
            f"{flops['train_per_tgt_token'] / 1e6:.3g} M (fwd+bwd = 3 × fwd)",
        ),
        ("  forward pieces (M)", pieces),
        ("achieved", f"{flops['achieved_gflops']:.2f} GFLOP/s"),
        *(
            (f"GEMM peak {name}", f"{p['gflops']:.1f} GFLOP/s ({p['dtype']} torch.mm, n={p['n']})")
            for name, p in peaks.items()
        ),
        (
            "share of peak",
            f"{100 * (flops['share_of_peak'] or 0):.1f}% of the {report['config']['precision']} "
            f"peak ({100 * (flops['share_of_fp32_peak'] or 0):.1f}% of fp32's)",
        ),
    ]
    decode = report["decode"]
    if decode is not None:
        for name in ("greedy", "beam"):
            d = decode[name]
            rows.append(
                (
                    f"decode {name} (beam {d['beam_size']}, {d['precision']})",
                    f"{d['sentences_per_s']:.2f} sentences/s, {d['tokens_per_s']:,.0f} tokens/s "
                    f"({d['sentences']} sentences, mean length {d['mean_output_len']:.1f}, "
                    f"{100 * d['max_len_rate']:.0f}% at the length limit)",
                )
            )
        rows.append(("decoded with", decode["model"]))
        for folder, runs in decode.get("exported", {}).items():
            for name, d in runs.items():
                rows.append(
                    (
                        f"  onnxruntime {name}",
                        f"{d['sentences_per_s']:.2f} sentences/s, {d['tokens_per_s']:,.0f} "
                        f"tokens/s ({folder})",
                    )
                )
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


@hydra.main(config_path=str(CONFIG_DIR), config_name="benchmark", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    report = run_benchmark(cfg)
    print(format_report(report))
    write_json(cfg.benchmark.output, report)
    print(f"wrote {cfg.benchmark.output}")


if __name__ == "__main__":
    main()
