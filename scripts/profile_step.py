"""Profile the benchmark's training step with torch.profiler: which operators the time goes to.

python scripts/profile_step.py [training overrides, e.g. +experiment=joeynmt_ref trainer.precision=bf16]
    [benchmark.warmup_steps=N] [benchmark.steps_per_window=N (steps profiled)]
    [--rows N] [--memory]

The step is nmt-benchmark's (nmt.training.speed.StepRunner), the trainer's own
nmt.training.step.TrainingStep (forward, loss, backward over trainer.accum_steps batches,
clipping, optimiser), on the training split's batches in the trainer's order. Prints the operators by self CPU time; with ``--memory`` also by the
memory they allocate (torch.profiler's ``profile_memory``: what a precision's peak memory is
made of).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

import hydra  # noqa: E402
import torch  # noqa: E402
from omegaconf import DictConfig  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

import nmt.config.resolvers  # noqa: E402, F401  (the resolvers configs/ uses)
from nmt.config.schema import BenchmarkConfig, check_command  # noqa: E402
from nmt.core.errors import exit_on_user_error  # noqa: E402
from nmt.core.paths import REPO_ROOT  # noqa: E402
from nmt.core.runtime import pick_device, resolve_precision  # noqa: E402
from nmt.data.pipeline import prepare  # noqa: E402
from nmt.models import build_model  # noqa: E402
from nmt.models.flops import LengthStats  # noqa: E402
from nmt.training.speed import StepRunner, endless_batches  # noqa: E402


def take_option(name: str, default: str | None = None, flag: bool = False) -> str | None:
    """Remove ``--name [value]`` from sys.argv (Hydra gets the rest); return its value."""
    if f"--{name}" not in sys.argv:
        return default
    i = sys.argv.index(f"--{name}")
    value = "true" if flag else sys.argv[i + 1]
    del sys.argv[i : i + (1 if flag else 2)]
    return value


ROWS = int(take_option("rows", "25"))
MEMORY = take_option("memory", flag=True) == "true"


@hydra.main(config_path=str(REPO_ROOT / "configs"), config_name="benchmark", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    config: BenchmarkConfig = check_command("benchmark", cfg)
    bench, b = config.benchmark, config.data.batching
    if bench.threads:
        torch.set_num_threads(bench.threads)
    device = pick_device(config.trainer.device)
    precision = resolve_precision(config.trainer.precision, device)
    data = prepare(config.data, seed=config.seed, log=print)
    torch.manual_seed(config.seed)
    model = build_model(config.model, len(data.src_vocab), len(data.tgt_vocab)).to(device).train()
    batches = endless_batches(
        data.batcher("train", b.max_tokens, b.bucket_width, b.seed, shuffle=True)
    )
    runner = StepRunner(config, model, device, precision)
    runner.window(batches, bench.warmup_steps, LengthStats())
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities, profile_memory=MEMORY) as prof:
        window = runner.window(batches, bench.steps_per_window, LengthStats())
    print(
        f"precision {precision.name} ({precision.reason}); {window.steps} steps, "
        f"{window.tgt_tokens / window.seconds:,.0f} target tokens/s under the profiler"
    )
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=ROWS))
    if MEMORY:
        print(prof.key_averages().table(sort_by="self_cpu_memory_usage", row_limit=ROWS))


if __name__ == "__main__":
    main()
