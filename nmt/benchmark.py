"""Speed, memory and FLOPs of any training configuration: ``nmt-benchmark [overrides]``.

The config is ``configs/benchmark.yaml``: the training config plus a ``benchmark`` section, so
every training override works (``+experiment=joeynmt_ref``, ``model/attention=dot``, …). It
measures, on the device the trainer would pick (``trainer.device``), with
:mod:`nmt.training.speed`:

* **Training throughput**: the trainer's step (:class:`nmt.training.step.TrainingStep`) on the
  training split's batches in the trainer's order: ``warmup_steps`` untimed steps, then
  ``windows`` timed windows of ``steps_per_window`` steps; the median over windows of target
  tokens/s and of source + target tokens/s, and each step's time by phase (data, forward,
  backward, optimiser, other).
* **Peak memory** of the training phase: the peak resident set size; on CUDA also
  ``torch.cuda.max_memory_allocated``.
* **Decoding speed**: the first ``decode_sentences`` sentences of the test split, greedy and beam
  (``beam_size``, ``search.length_penalty``), in sentences/s and predicted tokens/s, with the
  model the benchmark trained for its timed steps (atypical output lengths) or, with ``ckpt``, a
  trained checkpoint; and with each ``exported`` ONNX folder.
* **FLOPs**: :func:`nmt.models.flops.flops_per_target_token`, the model's matrix multiplies per
  target token from the config's sizes and the lengths of the batches measured, the achieved
  GFLOP/s (training FLOPs per target token × target tokens/s) and the GEMM peaks of fp32 and
  bf16 measured in the same run (:func:`nmt.training.speed.gemm_peaks`): ``share_of_peak`` is
  the share of the peak of the precision trained in (``trainer.precision``, ``auto`` resolved),
  ``share_of_fp32_peak`` that of fp32's. The CPU flags that decide those peaks (AVX2, AVX-512,
  AVX512-BF16, AMX) are listed under ``device.cpu_features``.

The report is printed as a table and written as JSON to ``benchmark.output`` (atomically).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

import nmt.config.resolvers  # noqa: F401  (the resolvers configs/ uses)
from nmt.config.schema import BenchmarkConfig, BenchmarkSettings, check_command
from nmt.core.errors import NMTError, exit_on_user_error
from nmt.core.io import write_json
from nmt.core.paths import CONFIG_DIR
from nmt.core.runtime import keep_freed_memory, pick_device, resolve_precision
from nmt.core.settings import load_settings, settings_dict
from nmt.data.pipeline import PreparedData, prepare
from nmt.models import build_model
from nmt.models.flops import flops_per_target_token
from nmt.training.speed import (
    decoding_report,
    device_report,
    format_report,
    gemm_peaks,
    memory_report,
    reset_peak_memory,
    time_training,
)

log = logging.getLogger("nmt")


def check_benchmark_cfg(bench: BenchmarkSettings | Any) -> BenchmarkSettings:
    """Reject files the benchmark cannot use. ``bench`` is typed, or a composed ``benchmark``
    group, checked first (the types and ranges are the schema's: :class:`BenchmarkSettings`)."""
    if not isinstance(bench, BenchmarkSettings):
        bench = load_settings(BenchmarkSettings, bench, "benchmark")
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
    config: BenchmarkConfig,
    data: PreparedData | None = None,
    progress: Callable[[str], None] = log.info,
    *,
    model_config: Mapping[str, Any] | None = None,
    overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """Measure everything the module docstring lists; return the report (a JSON-ready dict).

    ``model_config`` is the ``model`` group as composed, for the report (default: the typed
    settings as a mapping); ``overrides`` the command line's overrides."""
    bench = check_benchmark_cfg(config.benchmark)
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


def hydra_overrides() -> list[str]:
    """The command line's overrides, when run through Hydra."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return list(HydraConfig.get().overrides.task)
    return []


@hydra.main(config_path=str(CONFIG_DIR), config_name="benchmark", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    config: BenchmarkConfig = check_command("benchmark", cfg)
    # the model group as composed, its keys in the YAML's order, for the report's config
    model_config = OmegaConf.to_container(cfg.model, resolve=True)
    report = run_benchmark(config, model_config=model_config, overrides=hydra_overrides())
    print(format_report(report))
    write_json(config.benchmark.output, report)
    print(f"wrote {config.benchmark.output}")


if __name__ == "__main__":
    main()
