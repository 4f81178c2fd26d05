"""The trainer's settings (the ``trainer`` group) and a training run's whole config.

``TrainConfig`` is what ``nmt-train`` composes: the data, model, optimiser, trainer and search
groups, each typed by the module that owns it.
"""

from __future__ import annotations

import functools
import signal
from dataclasses import dataclass

from nmt.core.errors import NMTError
from nmt.core.runtime import DEVICES, PRECISIONS
from nmt.core.settings import setting
from nmt.data.pipeline import DataSettings
from nmt.inference.search import SearchSettings
from nmt.models.seq2seq import ModelSettings
from nmt.training.optim import OptimSettings
from nmt.training.preemption import parse_signals

STOPPING_METRICS = ("bleu", "chrf", "loss")  # what validation returns and early stopping can watch


@dataclass(frozen=True, kw_only=True)
class TrainerSettings:
    device: str = setting(choices=DEVICES, expected="auto, cpu or cuda")
    precision: str = setting(choices=PRECISIONS)
    max_steps: int | None = setting(ge=1)
    max_epochs: int | None = setting(ge=1)
    max_minutes: float | None = setting(gt=0)
    accum_steps: int = setting(ge=1)
    label_smoothing: float = setting(ge=0, le=1)  # F.cross_entropy's range
    param_init: float | None = setting(gt=0)
    teacher_forcing: float = setting(ge=0, le=1)
    val_every_steps: int = setting(ge=1)
    val_max_sentences: int | None = setting(ge=1)
    log_every_steps: int = setting(ge=1)
    early_stopping_metric: str = setting(choices=STOPPING_METRICS)
    early_stopping_patience: int | None = setting(ge=1)
    keep_best: int = setting(ge=1)
    keep_last: int = setting(ge=0)
    keep_every_validation: bool = setting()
    average_last: int = setting(ge=0)
    resume: bool | str | None = setting(expected="null, true, auto or a checkpoint path")
    save_every_minutes: float | None = setting(gt=0)
    save_every_steps: int | None = setting(ge=1)
    preempt_signals: list[str] | None = setting()
    max_nonfinite_steps: int = setting(ge=1)
    num_samples: int = setting(ge=0)
    num_attention_plots: int = setting(ge=0)
    distributed: bool = setting()
    dist_timeout_minutes: float = setting(gt=0)
    num_threads: int | None = setting(ge=1)
    keep_freed_memory: bool = setting()

    @functools.cached_property
    def signals(self) -> list[signal.Signals]:
        """``preempt_signals`` parsed, once: what the trainer's signal handlers catch."""
        return parse_signals(self.preempt_signals)

    def __post_init__(self) -> None:
        _ = self.signals  # a bad signal name is an error when the settings are built
        if self.average_last > self.keep_last and not self.keep_every_validation:
            k = self.average_last
            raise NMTError(
                f"trainer.average_last={k} averages the newest {k} step checkpoints: set "
                f"trainer.keep_last >= {k} (now {self.keep_last}) or "
                "trainer.keep_every_validation=true to keep them on disk"
            )


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    seed: int = setting()
    data: DataSettings = setting()
    model: ModelSettings = setting()
    optim: OptimSettings = setting()
    trainer: TrainerSettings = setting()
    search: SearchSettings = setting()

    def __post_init__(self) -> None:
        t = self.trainer  # the benchmark runs the same groups without a limit
        if type(self) is TrainConfig and (t.max_steps, t.max_epochs, t.max_minutes) == (None,) * 3:
            raise NMTError("trainer: set at least one of max_steps, max_epochs, max_minutes")
