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

import hydra
from omegaconf import DictConfig, OmegaConf

import nmt.config.resolvers  # noqa: F401  (the resolvers configs/ uses)
from nmt.config.schema import BenchmarkConfig, check_command
from nmt.core.errors import exit_on_user_error
from nmt.core.io import write_json
from nmt.core.paths import CONFIG_DIR
from nmt.training.speed import format_report, run_benchmark


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
    report = run_benchmark(
        config, config.benchmark, model_config=model_config, overrides=hydra_overrides()
    )
    print(format_report(report))
    write_json(config.benchmark.output, report)
    print(f"wrote {config.benchmark.output}")


if __name__ == "__main__":
    main()
