"""One optimiser step, the same for the trainer (:mod:`nmt.training.trainer`) and the benchmark's
training timing (:mod:`nmt.training.speed`).

A step takes ``trainer.accum_steps`` batches. With ℓ_b the summed, label-smoothed cross-entropy
of batch b (:func:`nmt.models.loss.sequence_loss`) and N the target tokens of the whole step on all
ranks, each batch back-propagates

    ℓ_b · world_size / N

so that, after DDP averages the gradients over the ranks, the gradient is that of the step's
loss per target token, ∇ (Σ_ranks Σ_b ℓ_b) / N, whatever the split into batches and ranks.
Under DDP the gradient all-reduce runs once, on the last batch (``no_sync`` before it).

Then, when the step's loss is finite on every rank: unscale (fp16 loss scaling), clip the
gradient norm to ``optim.clip_grad_norm`` and take the optimiser step at the learning rate the
schedule gives the step. A non-finite loss (any rank) or gradient norm skips the update — all
ranks together — and the result says so (``skipped``); under fp16 loss scaling an overflowing
gradient is the scaler's to handle (it skips the update and lowers the scale).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from nmt.core.errors import NMTError
from nmt.core.runtime import Precision, autocast_context
from nmt.data.batching import Batch
from nmt.models.loss import sequence_loss
from nmt.training.distributed import DistContext
from nmt.training.optim import LRSchedule, OptimSettings, build_optimizer
from nmt.training.settings import TrainerSettings

# Called with "data", "forward", "backward" (once per batch) and "optimizer" (once per step) as
# each phase ends: the benchmark's per-phase clock.
PhaseMark = Callable[[str], None]


def no_mark(phase: str) -> None:
    """The default :data:`PhaseMark`: time nothing."""


@dataclass(frozen=True)
class StepSettings:
    """What a step reads from the config (``trainer.*``, ``optim.clip_grad_norm``)."""

    accum_steps: int = 1  # batches per optimiser step
    label_smoothing: float = 0.1
    teacher_forcing: float = 1.0  # probability of feeding the reference token
    clip_grad_norm: float | None = None  # null or 0: no clipping (the norm is still measured)

    def __post_init__(self) -> None:
        if (
            isinstance(self.accum_steps, bool)
            or not isinstance(self.accum_steps, int)
            or self.accum_steps < 1
        ):
            raise NMTError(
                f"trainer.accum_steps: expected an integer >= 1; got {self.accum_steps!r}"
            )

    @classmethod
    def from_settings(cls, trainer: TrainerSettings, optim: OptimSettings) -> StepSettings:
        t = trainer
        return cls(t.accum_steps, t.label_smoothing, t.teacher_forcing, optim.clip_grad_norm)


@dataclass(frozen=True)
class StepResult:
    """What one step did, on this rank."""

    loss: float  # summed over this rank's target tokens of the step (not normalised)
    tokens: int  # this rank's target tokens of the step
    lr: float  # the learning rate the step was taken (or skipped) at
    grad_norm: float | None  # before clipping; None when skipped
    skipped: bool  # the loss or the gradient was not finite: no update
    all_tokens: int = 0  # the step's target tokens on all ranks (the model card's count)

    @property
    def loss_per_token(self) -> float:
        return self.loss / max(self.tokens, 1)


class TrainingStep:
    """Forward, backward over the accumulated batches, clip, optimiser step: :meth:`__call__`.

    ``model`` is the module to run, DDP-wrapped under ``torchrun`` (``ctx.wrap``); its
    parameters are the ones the optimiser updates.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        schedule: LRSchedule,
        precision: Precision,
        device: torch.device,
        settings: StepSettings,
        ctx: DistContext | None = None,
    ):
        self.model = model
        self.optimizer = optimizer
        self.schedule = schedule
        self.precision = precision
        self.device = device
        self.settings = settings
        self.ctx = ctx or DistContext()
        self.autocast = autocast_context(precision, device)
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=precision.name == "fp16" and device.type == "cuda"
        )

    @classmethod
    def from_settings(
        cls,
        trainer: TrainerSettings,
        optim: OptimSettings,
        model: torch.nn.Module,
        device: torch.device,
        precision: Precision,
        ctx: DistContext | None = None,
    ) -> TrainingStep:
        """The optimiser and schedule of ``optim`` over ``model``'s parameters."""
        optimizer = build_optimizer(optim, model.parameters())
        schedule = LRSchedule(optim, optimizer)
        settings = StepSettings.from_settings(trainer, optim)
        return cls(model, optimizer, schedule, precision, device, settings, ctx)

    def __call__(
        self, batches: Sequence[Batch], step: int, mark: PhaseMark = no_mark
    ) -> StepResult:
        """Optimiser step number ``step`` (1-based, for the schedule) on ``batches``."""
        if len(batches) != self.settings.accum_steps:
            raise ValueError(
                f"a step takes trainer.accum_steps={self.settings.accum_steps} batches; "
                f"got {len(batches)}"
            )
        lr = self.schedule.set_step(step)
        loss, tokens, all_tokens = self.accumulate(batches, mark)
        grad_norm = self.update(loss)
        mark("optimizer")
        return StepResult(loss, tokens, lr, grad_norm, grad_norm is None, all_tokens)

    def accumulate(self, batches: Sequence[Batch], mark: PhaseMark) -> tuple[float, int, int]:
        """Forward and backward of every batch; returns this rank's summed loss and tokens, and
        the step's tokens on all ranks."""
        s, ctx = self.settings, self.ctx
        global_tokens = ctx.all_reduce_sum(float(sum(b.num_tgt_tokens for b in batches)))
        total_loss, total_tokens = 0.0, 0
        for i, batch in enumerate(batches):
            batch = batch.to(self.device)
            mark("data")
            last = i == len(batches) - 1
            # the gradient all-reduce: only in the last batch's backward (DDP decides in forward)
            with ctx.no_sync(self.model) if not last else nullcontext(), self.autocast:
                out = self.model(batch.src, batch.src_lengths, batch.tgt_in, s.teacher_forcing)
                loss = sequence_loss(
                    out.logits, batch.tgt_out, s.label_smoothing, reuse_logits=True
                )
                del out  # the loss keeps what its backward needs; the logits go now
            mark("forward")
            # normalised by the step's tokens on all ranks; DDP averages over the ranks
            self.scaler.scale(loss * ctx.world_size / global_tokens).backward()
            mark("backward")
            total_loss += loss.item()
            total_tokens += batch.num_tgt_tokens
        return total_loss, total_tokens, int(global_tokens)

    def update(self, loss: float) -> float | None:
        """Clip and step when the loss is finite on every rank and the gradient norm is finite;
        return the norm (before clipping), or None when the update was skipped."""
        grad_norm = None
        if self.ctx.all_reduce_min(float(math.isfinite(loss))) > 0:
            self.scaler.unscale_(self.optimizer)
            clip = self.settings.clip_grad_norm or float("inf")
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip))
            # fp16 loss scaling handles overflowing gradients itself (it skips the update)
            if not math.isfinite(grad_norm) and not self.scaler.is_enabled():
                grad_norm = None
        if grad_norm is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm

    # ---------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Optimiser, schedule and loss-scaler states, under a checkpoint's keys."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
        }
