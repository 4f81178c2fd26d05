"""``python -m nmt.prepare data=enko``: build SentencePiece models and encoded splits.

Prints the cleaning report (pairs dropped per reason) and the padding ratio of the training
batches under ``data.batching``. Running it again reuses the prepared files.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

import nmt.config.resolvers  # noqa: F401  (the resolvers configs/ uses)
from nmt.config.schema import check_command
from nmt.core.errors import exit_on_user_error
from nmt.core.paths import CONFIG_DIR
from nmt.data.batching import BatchingSettings
from nmt.data.pipeline import PreparedData, prepare


def report_batching(data: PreparedData, b: BatchingSettings) -> None:
    batcher = data.batcher("train", b.max_tokens, b.bucket_width, b.seed, shuffle=True)
    print(
        f"train batches: {batcher.num_batches():,} of ≤{b.max_tokens} tokens; "
        f"padding ratio {batcher.padding_ratio():.1%}"
    )
    print(f"vocabularies: {len(data.src_vocab):,} source, {len(data.tgt_vocab):,} target subwords")


@hydra.main(config_path=str(CONFIG_DIR), config_name="prepare", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    config = check_command("prepare", cfg)
    data = prepare(config.data, seed=config.seed)
    report_batching(data, config.data.batching)


if __name__ == "__main__":
    main()
