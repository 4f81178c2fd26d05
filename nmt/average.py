"""``nmt-average``: the element-wise mean of the weights of checkpoints.

    nmt-average run_dir=RUN last=5               # → RUN/checkpoints/averaged.pt
    nmt-average ckpts=[a.pt,b.pt] out=avg.pt     # or python -m nmt.average …
    nmt-average ckpts=[best.pt] out=ship.pt slim=true   # one checkpoint, slim for shipping

What is averaged and why: :mod:`nmt.training.averaging`.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

import nmt.config.resolvers  # noqa: F401  (the resolvers configs/ uses)
from nmt.config.schema import AverageConfig, check_command
from nmt.core.errors import NMTError, exit_on_user_error, str_list
from nmt.core.paths import CONFIG_DIR
from nmt.core.run_dir import AVERAGED, checkpoint_dir, newest_step_checkpoints
from nmt.models.checkpoint import save_checkpoint, slim_checkpoint
from nmt.training.averaging import average_checkpoints


def inputs_of(cfg: AverageConfig) -> tuple[list[Path], Path]:
    """The checkpoints to average and where the mean goes: ``ckpts`` and ``out``, or the ``last``
    newest step checkpoints of ``run_dir`` (by default into its ``checkpoints/averaged.pt``)."""
    if (cfg.ckpts is None) == (cfg.run_dir is None):
        raise NMTError(
            "give either ckpts=[A.pt,B.pt,...] out=PATH, or run_dir=RUN last=K "
            f"(got {'both' if cfg.ckpts is not None else 'neither'})"
        )
    last = cfg.last
    if cfg.ckpts is not None:
        if last is not None:
            raise NMTError("last: goes with run_dir=RUN, not with ckpts=[...]")
        if cfg.out is None:
            raise NMTError("ckpts: needs out=PATH, where to write the average")
        return [Path(p) for p in str_list(cfg.ckpts, "ckpts")], Path(cfg.out)
    if last is None:
        raise NMTError("run_dir: needs last=K (K >= 1), how many step checkpoints to average")
    ckpt_dir = checkpoint_dir(cfg.run_dir)
    if not ckpt_dir.is_dir():
        raise NMTError(f"run_dir: {ckpt_dir}: no such directory; give a training run's folder")
    paths = newest_step_checkpoints(ckpt_dir, last)
    if len(paths) < last:
        raise NMTError(
            f"{ckpt_dir}: {len(paths)} step checkpoints (stepNNNNNNN.pt), last={last} "
            "asked; train with trainer.keep_last=K or trainer.keep_every_validation=true"
        )
    return paths, Path(cfg.out) if cfg.out is not None else ckpt_dir / AVERAGED


@hydra.main(config_path=str(CONFIG_DIR), config_name="average", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    config = check_command("average", cfg)
    paths, output = inputs_of(config)
    payload = average_checkpoints(paths)
    if config.slim:
        payload = slim_checkpoint(payload)
    save_checkpoint(output, payload)
    what = "slim (no optimiser, schedule or RNG state), " if config.slim else ""
    source = f"the mean of {len(paths)} checkpoints" if len(paths) > 1 else "from one checkpoint"
    print(f"wrote {output}: {what}{source} ({', '.join(map(str, paths))})")


if __name__ == "__main__":
    main()
