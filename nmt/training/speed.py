"""What ``nmt-benchmark`` measures: training throughput, peak memory, GEMM peaks, decoding speed.

* **Training throughput**: the trainer's step, :class:`nmt.training.step.TrainingStep` (forward,
  :func:`nmt.models.loss.sequence_loss`, backward over ``trainer.accum_steps`` batches, clipping,
  optimiser), on the training split's batches in the trainer's order (:func:`time_training`):
  untimed warm-up steps, then timed windows; the throughput is the median over windows. Each
  step's time is split into data (building the batch and moving it to the device), forward,
  backward and optimiser (:class:`StepRunner`, marked by the step itself); "other" is what the
  window's wall clock holds beyond those. :class:`Clock` waits for the device's queued work
  (CUDA), so that the phases are not blurred.
* **Peak memory** of the training phase (:func:`reset_peak_memory`, :func:`memory_report`): on
  CPU the peak resident set size (Linux: ``VmHWM`` from ``/proc/self/status``, reset through
  ``/proc/self/clear_refs``; elsewhere ``resource.getrusage`` ``ru_maxrss``, the whole process's
  peak); on CUDA also ``torch.cuda.max_memory_allocated``.
* **GEMM peaks** (:func:`gemm_peaks`): the best ``torch.mm`` rate in fp32 and in bf16 on this
  device, the yardstick for the achieved FLOP rate (:mod:`nmt.models.flops`).
* **Decoding speed** (:func:`decoding_report`): :class:`nmt.inference.translator.Translator`,
  greedy and beam, in sentences/s and predicted tokens/s (``</s>`` included), and on exported
  ONNX folders.

:func:`format_report` prints the whole report (the command assembles it) as one table.
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
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from nmt.core.errors import NMTError
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
from nmt.core.settings import setting, settings_dict
from nmt.data.batching import Batch, TokenBatcher
from nmt.data.pipeline import PreparedData, prepare
from nmt.inference.search import SearchSettings
from nmt.inference.translator import Translator
from nmt.models.flops import LengthStats, flops_per_target_token
from nmt.models.seq2seq import build_model
from nmt.training.settings import TrainConfig
from nmt.training.step import StepResult, TrainingStep

log = logging.getLogger("nmt")


# --------------------------------------------------------------------------------------------
# The benchmark: its settings (the ``benchmark`` group of configs/benchmark.yaml) and the run
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class BenchmarkSettings:
    warmup_steps: int = setting(ge=0)
    windows: int = setting(ge=1)
    steps_per_window: int = setting(ge=1)
    decode_sentences: int | None = setting(ge=0)
    beam_size: int = setting(ge=1)
    threads: int | None = setting(ge=1)
    gemm_sizes: list[int] = setting(ge=1, nonempty=True)
    gemm_repeats: int = setting(ge=1)
    ckpt: str | None = setting()
    exported: list[str] = setting()
    output: str = setting(nonempty=True, expected="a file path")


def check_benchmark_settings(bench: BenchmarkSettings) -> BenchmarkSettings:
    """Reject files the benchmark cannot use (the types and ranges were checked when the
    settings were built)."""
    if bench.ckpt and not Path(bench.ckpt).is_file():
        raise NMTError(f"benchmark.ckpt: no checkpoint at {bench.ckpt}")
    for folder in bench.exported:
        if not (Path(folder) / "manifest.json").is_file():
            raise NMTError(f"benchmark.exported: no nmt-export folder at {folder}")
    folder = Path(bench.output).parent
    if not folder.is_dir():
        raise NMTError(f"benchmark.output={bench.output}: folder {folder} does not exist")
    return bench


def run_benchmark(
    config: TrainConfig,
    bench: BenchmarkSettings,
    data: PreparedData | None = None,
    progress: Callable[[str], None] = log.info,
    *,
    model_config: Mapping[str, Any] | None = None,
    overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """Measure a training config as ``bench`` says: training throughput, peak memory, FLOPs
    against the GEMM peaks, decoding speed; return the report (a JSON-ready dict).

    ``model_config`` is the ``model`` group as composed, for the report (default: the typed
    settings as a mapping); ``overrides`` the command line's overrides."""
    check_benchmark_settings(bench)
    if bench.threads:
        torch.set_num_threads(bench.threads)
    device = pick_device(config.trainer.device)
    precision = resolve_precision(config.trainer.precision, device)
    progress(f"precision: {precision.name} ({precision.reason})")
    memory_mode = "unchanged (trainer.keep_freed_memory=false)"
    if config.trainer.keep_freed_memory:
        memory_mode = keep_freed_memory(device)
    progress(f"memory: {memory_mode}")
    data = data or prepare(config.data, seed=config.seed, log=progress)
    torch.manual_seed(config.seed)
    vocab_sizes = len(data.src_vocab), len(data.tgt_vocab)
    model = build_model(config.model, *vocab_sizes, param_init=config.trainer.param_init)
    model = model.to(device)

    progress(
        f"training: {bench.warmup_steps} warm-up steps, then {bench.windows} windows of "
        f"{bench.steps_per_window} steps on {device}"
    )
    rss_reset = reset_peak_memory(device)
    train, lengths = time_training(
        config,
        model,
        data,
        device,
        precision,
        warmup_steps=bench.warmup_steps,
        windows=bench.windows,
        steps_per_window=bench.steps_per_window,
    )
    memory = memory_report(device, rss_reset)
    flops = flops_per_target_token(config.model, len(data.tgt_vocab), lengths)
    progress(f"GEMM peaks: torch.mm fp32 and bf16, n in {list(bench.gemm_sizes)}")
    peaks = gemm_peaks(device, list(bench.gemm_sizes), bench.gemm_repeats)
    own_peak = peaks.get(precision.name, peaks["fp32"])["gflops"]  # fp16 runs: fp32's
    achieved = flops.train * train["tgt_tokens_per_s"] / 1e9
    return {
        "config": {
            "overrides": list(overrides),
            "model": dict(model_config) if model_config else settings_dict(config.model),
            "data": config.data.name,
            "max_tokens": config.data.batching.max_tokens,
            "precision": precision.name,
            "precision_reason": precision.reason,
            "memory": memory_mode,
            "optim": config.optim.name,
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
        "decode": decoding_report(
            model,
            data,
            device,
            search=config.search,
            sentences=bench.decode_sentences,
            beam_size=bench.beam_size,
            ckpt=bench.ckpt,
            exported=bench.exported,
        ),
    }


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
    """One timed run of consecutive steps: its wall clock, steps, tokens and phase times."""

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
        self,
        config: TrainConfig,
        model: torch.nn.Module,
        device: torch.device,
        precision: Precision,
    ):
        self.training_step = TrainingStep.from_settings(
            config.trainer, config.optim, model, device, precision
        )
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
        """``steps`` optimiser steps timed as one window; ``lengths`` counts their batches."""
        self.phases = PhaseTimes()
        src_tokens = tgt_tokens = 0
        start = self.clock.now()
        for _ in range(steps):
            for batch in self.step(batches, lengths):
                src_tokens += batch.num_src_tokens
                tgt_tokens += batch.num_tgt_tokens
        return Window(self.clock.now() - start, steps, src_tokens, tgt_tokens, self.phases)


def time_training(
    config: TrainConfig,
    model: torch.nn.Module,
    data: PreparedData,
    device: torch.device,
    precision: Precision,
    *,
    warmup_steps: int,
    windows: int,
    steps_per_window: int,
) -> tuple[dict[str, Any], LengthStats]:
    """Run ``warmup_steps`` untimed steps, then time ``windows`` windows of ``steps_per_window``
    steps of ``config``'s training (its batching, optimiser and trainer settings) on ``data``'s
    training split; returns the report's ``train`` section and the lengths of the timed batches.
    The section also lists each timed step's loss per target token (``step_losses``) and how
    many steps were skipped as non-finite."""
    b = config.data.batching
    batcher = data.batcher("train", b.max_tokens, b.bucket_width, b.seed, shuffle=True)
    batches = endless_batches(batcher)
    model.train()
    runner = StepRunner(config, model, device, precision)
    runner.window(batches, warmup_steps, LengthStats())
    lengths = LengthStats()
    timed_windows = [runner.window(batches, steps_per_window, lengths) for _ in range(windows)]
    timed = runner.results[warmup_steps:]
    report = training_report(timed_windows, lengths)
    report["accum_steps"] = runner.training_step.settings.accum_steps
    report["step_losses"] = [r.loss_per_token for r in timed]
    report["skipped_steps"] = sum(r.skipped for r in timed)
    return report, lengths


def training_report(windows: Sequence[Window], lengths: LengthStats) -> dict[str, Any]:
    """The ``train`` section from the timed windows: target and source + target tokens/s (the
    median over windows), milliseconds per step by phase ("other": the wall clock beyond the
    phases), and the batches' mean sizes and lengths."""
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
    """The report's ``memory`` section: the peak RSS and, on CUDA, the allocator's peak (MiB)."""
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


def search_settings(search: SearchSettings, beam_size: int) -> dict[str, SearchSettings]:
    """The greedy and the beam search settings: ``search`` with name and beam size replaced
    (one hypothesis each; the beam keeps ``search.length_penalty``)."""
    return {
        "greedy": search.replace(name="greedy", beam_size=1, n_best=1),
        "beam": search.replace(name="beam", beam_size=beam_size, n_best=1),
    }


def decoding_report(
    model: torch.nn.Module,
    data: PreparedData,
    device: torch.device,
    *,
    search: SearchSettings,
    sentences: int | None,
    beam_size: int,
    ckpt: str | None,
    exported: Sequence[str],
) -> dict[str, Any] | None:
    """The report's ``decode`` section: greedy and beam (``beam_size``) decoding of the first
    ``sentences`` test sentences (None: all; 0: no decoding, None returned) with ``model``, or
    with the checkpoint ``ckpt``, then with each ``nmt-export`` folder in ``exported``."""
    if sentences == 0:
        return None
    lines = data.splits["test"].src_text[:sentences]
    if not lines:
        raise NMTError("the test split is empty: nothing to decode (benchmark.decode_sentences=0)")
    searches = search_settings(search, beam_size)
    if ckpt:
        translator = Translator.from_checkpoint(ckpt, device)
        source = str(ckpt)
    else:
        translator = Translator(model, data.src_vocab, data.tgt_vocab, searches["beam"], device)
        source = "the benchmark's model, trained for the timed steps only"
    report: dict[str, Any] = {"model": source}
    for name, settings in searches.items():
        log.info("decoding %d test sentences (%s)", len(lines), name)
        report[name] = time_decoding(translator.with_settings(**asdict(settings)), lines, device)
    # nmt-export folders: the same sentences, settings and threads on onnxruntime (CPU)
    report["exported"] = {}
    for folder in exported:
        onnx_translator = Translator.from_checkpoint(folder, "cpu", backend="onnx")
        cpu = torch.device("cpu")
        report["exported"][str(folder)] = {
            name: time_decoding(onnx_translator.with_settings(**asdict(settings)), lines, cpu)
            for name, settings in searches.items()
        }
    return report


# --------------------------------------------------------------------------------------------
# The device and the printed report
# --------------------------------------------------------------------------------------------

# The CPU flags that decide what the fp32 and bf16 peaks can be
CPU_FEATURES = ("avx2", "fma", "avx512f", "avx512_vnni", *BF16_CPU_FLAGS, "amx_tile")


def device_report(device: torch.device) -> dict[str, Any]:
    """The report's ``device`` section: the device, the CPU's features, threads, versions."""
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


def cpu_features_line(dev: dict[str, Any]) -> str:
    """The device section's CPU features (and a simulated ``NMT_CPU_FLAGS``) as one line."""
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
