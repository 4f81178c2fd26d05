"""``python -m nmt.train [group=option ...] [key=value ...]``: train a model.

Prepares the data first when ``data.out_dir`` holds none. Checkpoints, ``train.log``,
``validations.jsonl`` and TensorBoard events go to the Hydra run dir (``hydra.run.dir=…``).
Under ``torchrun … -m nmt.train trainer.distributed=true`` only rank 0 has a run dir: the other
ranks start with :func:`worker_overrides`, so Hydra writes nothing for them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

import nmt.config.resolvers  # noqa: F401  (the resolvers configs/ uses)
from nmt.config.schema import check_command
from nmt.core.errors import exit_on_user_error
from nmt.core.paths import CONFIG_DIR
from nmt.training.trainer import train


@hydra.main(config_path=str(CONFIG_DIR), config_name="train", version_base="1.3")
@exit_on_user_error
def hydra_main(cfg: DictConfig) -> float | None:
    config = check_command("train", cfg)  # typed once; the library below reads only this
    metrics = train(config, Path(HydraConfig.get().runtime.output_dir))
    return metrics.get("bleu")  # the value a Hydra sweeper optimises


def worker_overrides() -> list[str]:
    """Hydra overrides for torchrun's ranks other than 0: no run dir of their own (the timestamp
    could differ from rank 0's), no ``.hydra/`` and no ``train.log``; they log to the console."""
    if os.environ.get("RANK", "0") == "0":
        return []
    return ["hydra.run.dir=.", "hydra.output_subdir=null", "hydra/job_logging=stdout"]


def main() -> float | None:
    sys.argv += worker_overrides()
    return hydra_main()  # the config and the run folder are checked first (nmt/config/hook.py)


if __name__ == "__main__":
    main()
