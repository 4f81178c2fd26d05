"""``python -m nmt.train [group=option ...] [key=value ...]``: train a model.

Prepares the data first when ``data.out_dir`` holds none. Checkpoints, ``train.log``,
``validations.jsonl`` and TensorBoard events go to the Hydra run dir (``hydra.run.dir=…``).
"""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from nmt.data.pipeline import REPO_ROOT
from nmt.errors import exit_on_user_error
from nmt.trainer import train


@hydra.main(config_path=str(REPO_ROOT / "configs"), config_name="train", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg, Path(HydraConfig.get().runtime.output_dir))
    return metrics.get("bleu")  # the value a Hydra sweeper optimises


if __name__ == "__main__":
    main()
