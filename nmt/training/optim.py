"""Optimisers and the learning-rate schedule, built from ``cfg.optim``."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from nmt.core.errors import NMTError
from nmt.core.settings import setting

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("none", "plateau", "inverse_sqrt")
WARMUP_SHAPES = ("linear", "constant")


@dataclass(frozen=True, kw_only=True)
class OptimSettings:
    name: str = setting(choices=OPTIMIZERS)
    lr: float = setting(ge=0)  # 0 freezes the weights (the early-stopping tests use it)
    betas: list[float] = setting(ge=0, lt=1, length=2, expected="two numbers in [0, 1)")
    momentum: float = setting(ge=0)
    weight_decay: float = setting(ge=0)
    clip_grad_norm: float | None = setting(ge=0)
    scheduler: str = setting(choices=SCHEDULERS)
    warmup_steps: int = setting(ge=0)
    warmup_shape: str = setting(choices=WARMUP_SHAPES)
    plateau_factor: float = setting(gt=0, le=1)
    plateau_patience: int = setting(ge=1)
    min_lr: float = setting(ge=0)


def build_optimizer(cfg: OptimSettings, params) -> torch.optim.Optimizer:
    if cfg.name == "adam":
        return torch.optim.Adam(
            params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay
        )
    if cfg.name == "adamw":
        return torch.optim.AdamW(
            params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay
        )
    if cfg.name == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    raise NMTError(f"optim.name: expected one of {', '.join(OPTIMIZERS)}; got {cfg.name!r}")


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Restore the optimiser's moments and step counts from a checkpoint, but keep the
    hyper-parameters it was built with (lr, betas, momentum, weight decay from ``cfg.optim``)."""
    configured = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, settings in zip(optimizer.param_groups, configured, strict=True):
        group.update(settings)


class LRSchedule:
    """lr(step) = optim.lr · warmup(step) · decay(step) · plateau_factor.

    * warmup: over the first ``warmup_steps`` steps, ``linear`` rises from lr/warmup_steps to lr;
      ``constant`` holds lr from step 1 (OpenNMT-py's ``rsqrt``, T5's schedule: no ramp, the
      warm-up steps only say when the decay starts).
    * decay: ``inverse_sqrt`` multiplies by √(warmup_steps / step) after warm-up; otherwise 1.
    * plateau_factor: ``plateau`` multiplies it by ``plateau_factor`` whenever the validation
      metric has not improved for ``plateau_patience`` validations, down to ``min_lr``.
    """

    def __init__(self, cfg: OptimSettings, optimizer: torch.optim.Optimizer):
        self.cfg = cfg  # lr, warmup, scheduler, plateau
        self.optimizer = optimizer
        self.plateau_factor = 1.0
        self.best: float | None = None
        self.bad_validations = 0

    def lr(self, step: int) -> float:
        warmup = self.cfg.warmup_steps
        ramps = warmup > 0 and self.cfg.warmup_shape == "linear"
        factor = min(1.0, step / warmup) if ramps else 1.0
        if self.cfg.scheduler == "inverse_sqrt" and warmup > 0 and step > warmup:
            factor = math.sqrt(warmup / step)
        return max(self.cfg.lr * factor * self.plateau_factor, self.cfg.min_lr)

    def set_step(self, step: int) -> float:
        """Set the learning rate for optimiser step ``step`` (1-based); return it."""
        lr = self.lr(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def after_validation(self, score: float, higher_is_better: bool) -> bool:
        """Record a validation score; return True when the plateau rule lowered the lr."""
        if self.cfg.scheduler != "plateau":
            return False
        improved = self.best is None or (
            score > self.best if higher_is_better else score < self.best
        )
        if improved:
            self.best, self.bad_validations = score, 0
            return False
        self.bad_validations += 1
        if self.bad_validations < self.cfg.plateau_patience:
            return False
        self.bad_validations = 0
        self.plateau_factor *= self.cfg.plateau_factor
        return True

    def state_dict(self) -> dict:
        return {
            "plateau_factor": self.plateau_factor,
            "best": self.best,
            "bad_validations": self.bad_validations,
        }

    def load_state_dict(self, state: dict) -> None:
        self.plateau_factor = state["plateau_factor"]
        self.best = state["best"]
        self.bad_validations = state["bad_validations"]
