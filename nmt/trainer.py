"""The training loop: batches → loss → optimiser step, with validation, checkpoints and logging.

Read :func:`train` top to bottom: it builds the pieces, restores a checkpoint when resuming,
then runs epochs of token-budget batches until a limit (steps, epochs, minutes) or early
stopping ends the run. Everything a resumed run needs to continue exactly — weights,
optimiser, schedule, RNG states, the position inside the epoch — is in each checkpoint.
"""

from __future__ import annotations

import logging
import math
import random
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from nmt import distributed as dist
from nmt.checkpoint import load_checkpoint, save_checkpoint, vocab_payload
from nmt.data.batching import Batch
from nmt.data.pipeline import PreparedData, prepare
from nmt.errors import NMTError
from nmt.loss import sequence_loss
from nmt.models import build_model
from nmt.optim import LRSchedule, build_optimizer
from nmt.validation import Validator

log = logging.getLogger("nmt")

# Settings that define the model and its vocabulary: on resume these come from the checkpoint.
ARCHITECTURE_KEYS = ("model", "data.vocab", "data.name")


@dataclass
class Progress:
    """Where the run is; saved in every checkpoint."""

    step: int = 0  # optimiser steps taken
    epoch: int = 0
    batches_in_epoch: int = 0  # batches of `epoch` already consumed
    best_score: float | None = None
    validations_without_gain: int = 0
    best_checkpoints: list[tuple[float, str]] = field(default_factory=list)
    minutes: float = 0.0  # training wall-clock so far, across resumes


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise NMTError("trainer.device=cuda, but no CUDA device is available; use auto or cpu")
    if name not in ("cpu", "cuda"):
        raise NMTError(f"trainer.device: expected auto, cpu or cuda; got {name!r}")
    return torch.device(name)


def autocast_context(precision: str, device: torch.device):
    if precision == "fp32":
        return nullcontext()
    if precision not in ("bf16", "fp16"):
        raise NMTError(f"trainer.precision: expected fp32, bf16 or fp16; got {precision!r}")
    if device.type != "cuda":
        raise NMTError(f"trainer.precision={precision} needs CUDA; use fp32 on {device.type}")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def resolve_resume(resume: Any, run_dir: Path) -> Path | None:
    """``trainer.resume``: null/false → fresh run; true → this run dir's last.pt; else a path."""
    if resume in (None, False):
        return None
    path = run_dir / "checkpoints" / "last.pt" if resume is True else Path(str(resume))
    if not path.is_file():
        hint = (
            " (pass hydra.run.dir=<the run's folder>, or trainer.resume=PATH)"
            if resume is True
            else ""
        )
        raise NMTError(f"trainer.resume: no checkpoint at {path}{hint}")
    return path


def merge_resumed_config(cfg: DictConfig, saved: dict) -> DictConfig:
    """Architecture from the checkpoint, training settings from the command line; log the differences."""
    saved_cfg = OmegaConf.create(saved)
    merged = cfg.copy()
    for key in ARCHITECTURE_KEYS:
        OmegaConf.update(merged, key, OmegaConf.select(saved_cfg, key), merge=False)
    for key, old, new in config_differences(saved_cfg, cfg):
        source = "checkpoint" if key.startswith(ARCHITECTURE_KEYS) else "command line"
        log.info(
            "resume: %s differs (checkpoint %r, given %r): using the %s value",
            key,
            old,
            new,
            source,
        )
    return merged


def config_differences(
    a: DictConfig, b: DictConfig, prefix: str = ""
) -> list[tuple[str, Any, Any]]:
    diffs = []
    a_dict = OmegaConf.to_container(a, resolve=True) if isinstance(a, DictConfig) else a
    b_dict = OmegaConf.to_container(b, resolve=True) if isinstance(b, DictConfig) else b
    for key in sorted(set(a_dict) | set(b_dict)):
        old, new = a_dict.get(key), b_dict.get(key)
        name = f"{prefix}{key}"
        if isinstance(old, dict) and isinstance(new, dict):
            diffs.extend(config_differences(old, new, name + "."))
        elif old != new:
            diffs.append((name, old, new))
    return diffs


@dataclass
class TrainWindow:
    """Loss and tokens since the last log line."""

    loss: float = 0.0
    tokens: int = 0
    start: float = field(default_factory=time.perf_counter)

    def add(self, loss: float, tokens: int) -> None:
        self.loss += loss
        self.tokens += tokens


class Trainer:
    """Holds the pieces of one run; :meth:`fit` is the loop."""

    def __init__(self, cfg: DictConfig, run_dir: Path, data: PreparedData | None = None):
        self.run_dir = run_dir
        self.ctx = dist.setup(cfg.trainer.distributed)
        self.checkpoint_path = resolve_resume(cfg.trainer.resume, run_dir)
        saved = load_checkpoint(self.checkpoint_path) if self.checkpoint_path else None
        self.cfg = merge_resumed_config(cfg, saved["config"]) if saved else cfg
        t = self.cfg.trainer
        if t.num_threads:
            torch.set_num_threads(t.num_threads)
        self.device = pick_device(t.device) if not self.ctx.enabled else self.ctx.device
        seed_everything(self.cfg.seed)
        self.data = data or prepare(self.cfg.data, seed=self.cfg.seed, log=self.info)
        b = self.cfg.data.batching
        self.batcher = self.data.batcher(
            "train", b.max_tokens, b.bucket_width, b.seed, shuffle=True
        )
        self.model = build_model(self.cfg.model, len(self.data.src_vocab), len(self.data.tgt_vocab))
        self.model.to(self.device)
        self.train_model = self.ctx.wrap(self.model)
        self.optimizer = build_optimizer(self.cfg.optim, self.model.parameters())
        self.schedule = LRSchedule(self.cfg.optim, self.optimizer)
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=t.precision == "fp16" and self.device.type == "cuda"
        )
        self.autocast = autocast_context(t.precision, self.device)
        self.progress = Progress()
        self.last_validated_step = -1
        if saved:
            self.restore(saved)
        self.validator = Validator(self.cfg, self.data, run_dir) if self.ctx.is_main else None
        self.info(
            f"model: {self.model.num_parameters():,} parameters; device {self.device}; "
            f"{self.batcher.num_batches(world_size=self.ctx.world_size):,} batches per epoch per rank; "
            f"effective batch ≤ {b.max_tokens * t.accum_steps * self.ctx.world_size:,} tokens per step"
        )

    def info(self, message: str) -> None:
        if self.ctx.is_main:
            log.info(message)

    # ---------------------------------------------------------------- checkpoints
    def restore(self, saved: dict) -> None:
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        for group in self.optimizer.param_groups:  # a new optim.lr on the command line wins
            group["initial_lr"] = self.cfg.optim.lr
        self.schedule.load_state_dict(saved["schedule"])
        self.scaler.load_state_dict(saved["scaler"])
        progress = saved["progress"]
        progress["best_checkpoints"] = [tuple(x) for x in progress["best_checkpoints"]]
        self.progress = Progress(**progress)
        rng = saved["rng"]
        if saved.get("world_size", 1) == self.ctx.world_size:
            set_rng_state(rng[self.ctx.rank] if isinstance(rng, list) else rng)
        else:
            self.info(
                f"resume: {saved.get('world_size', 1)} ranks saved, {self.ctx.world_size} now: RNG reseeded"
            )
            seed_everything(self.cfg.seed + self.progress.step)
        self.info(
            f"resumed from {self.checkpoint_path} at step {self.progress.step} (epoch {self.progress.epoch})"
        )

    def checkpoint_payload(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "progress": asdict(self.progress),
            "rng": self.ctx.gather_rng(rng_state()),
            "world_size": self.ctx.world_size,
            "config": OmegaConf.to_container(self.cfg, resolve=True),
            "vocab": vocab_payload(self.data.src_vocab, self.data.tgt_vocab),
        }

    def save(self, score: float | None) -> None:
        """Write last.pt; with a validation score, also keep the best ``trainer.keep_best``."""
        payload = self.checkpoint_payload()  # every rank joins the RNG gather
        if not self.ctx.is_main:
            return
        ckpt_dir = self.run_dir / "checkpoints"
        save_checkpoint(ckpt_dir / "last.pt", payload)
        if score is None:
            return
        best = self.progress.best_checkpoints
        name = f"step{self.progress.step:07d}.pt"
        sign = -1.0 if self.higher_is_better else 1.0
        best.append((sign * score, name))
        best.sort()
        for _, stale in best[self.cfg.trainer.keep_best :]:
            (ckpt_dir / stale).unlink(missing_ok=True)
        del best[self.cfg.trainer.keep_best :]
        if any(n == name for _, n in best):
            payload["progress"] = asdict(self.progress)
            save_checkpoint(ckpt_dir / name, payload)
            save_checkpoint(ckpt_dir / "best.pt", payload) if best[0][1] == name else None

    @property
    def higher_is_better(self) -> bool:
        return self.cfg.trainer.early_stopping_metric != "loss"

    # ---------------------------------------------------------------- one step
    def train_step(self, batches: list[Batch]) -> tuple[float, int, float | None]:
        """Forward and backward over ``batches`` (gradient accumulation), then one optimiser step.

        Returns (summed loss, target tokens, gradient norm or None when the step was skipped).
        """
        total_loss, total_tokens = 0.0, 0
        tokens = sum(b.num_tgt_tokens for b in batches)
        global_tokens = self.ctx.all_reduce_sum(float(tokens))
        for i, batch in enumerate(batches):
            batch = batch.to(self.device)
            sync = self.ctx.no_sync(self.train_model) if i < len(batches) - 1 else nullcontext()
            with sync, self.autocast:
                out = self.train_model(
                    batch.src, batch.src_lengths, batch.tgt_in, self.cfg.trainer.teacher_forcing
                )
                loss = sequence_loss(out.logits, batch.tgt_out, self.cfg.trainer.label_smoothing)
            # Normalise by the tokens of the whole step on all ranks; DDP averages over ranks.
            self.scaler.scale(loss * self.ctx.world_size / global_tokens).backward()
            total_loss += loss.item()
            total_tokens += batch.num_tgt_tokens
        finite = self.ctx.all_reduce_min(float(math.isfinite(total_loss))) > 0
        if not finite:
            self.optimizer.zero_grad(set_to_none=True)
            return total_loss, total_tokens, None
        self.scaler.unscale_(self.optimizer)
        clip = self.cfg.optim.clip_grad_norm
        grad_norm = torch.nn.utils.clip_grad_norm_(
            self.model.parameters(), clip if clip else float("inf")
        )
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return total_loss, total_tokens, float(grad_norm)

    # ---------------------------------------------------------------- the loop
    def limits_reached(self, start_time: float) -> str | None:
        t, p = self.cfg.trainer, self.progress
        if t.max_steps is not None and p.step >= t.max_steps:
            return f"trainer.max_steps={t.max_steps} reached"
        if t.max_epochs is not None and p.epoch >= t.max_epochs:
            return f"trainer.max_epochs={t.max_epochs} reached"
        minutes = p.minutes + (time.perf_counter() - start_time) / 60
        if t.max_minutes is not None and self.ctx.broadcast_float(minutes) >= t.max_minutes:
            return f"trainer.max_minutes={t.max_minutes} reached"
        return None

    def batches(self):
        """Yield lists of ``accum_steps`` batches until ``trainer.max_epochs``, resuming inside
        an epoch where the checkpoint left off."""
        accum, max_epochs = self.cfg.trainer.accum_steps, self.cfg.trainer.max_epochs
        while max_epochs is None or self.progress.epoch < max_epochs:
            group: list[Batch] = []
            epoch_batches = self.batcher.epoch(
                self.progress.epoch, self.ctx.rank, self.ctx.world_size
            )
            for index, batch in enumerate(epoch_batches):
                if index < self.progress.batches_in_epoch:
                    continue
                group.append(batch)
                if len(group) == accum:
                    self.progress.batches_in_epoch = index + 1
                    yield group
                    group = []
            self.progress.epoch += 1
            self.progress.batches_in_epoch = 0

    def fit(self) -> dict[str, float]:
        t = self.cfg.trainer
        if t.max_steps is None and t.max_epochs is None and t.max_minutes is None:
            raise NMTError("trainer: set at least one of max_steps, max_epochs, max_minutes")
        start = time.perf_counter()
        bar = tqdm(
            total=t.max_steps,
            initial=self.progress.step,
            disable=not self.ctx.is_main,
            desc="train",
            unit="step",
            dynamic_ncols=True,
        )
        window = TrainWindow()
        nonfinite_streak = 0
        metrics: dict[str, float] = {}
        batch_iter = self.batches()
        stop_reason = self.limits_reached(start)
        while stop_reason is None:
            group = next(batch_iter, None)
            if group is None:
                stop_reason = f"trainer.max_epochs={t.max_epochs} reached"
                break
            lr = self.schedule.set_step(self.progress.step + 1)
            loss, tokens, grad_norm = self.train_step(group)
            if grad_norm is None:
                nonfinite_streak += 1
                log.warning(
                    "step %d: non-finite loss (%s); step skipped", self.progress.step + 1, loss
                )
                if nonfinite_streak >= t.max_nonfinite_steps:
                    raise NMTError(
                        f"the loss was non-finite for {nonfinite_streak} steps in a row "
                        "(trainer.max_nonfinite_steps); lower optim.lr or set optim.clip_grad_norm"
                    )
                continue
            nonfinite_streak = 0
            self.progress.step += 1
            bar.update(1)
            window.add(loss, tokens)
            if self.progress.step % t.log_every_steps == 0:
                self.log_train(window, lr, grad_norm, bar)
                window = TrainWindow()
            stop_reason = self.limits_reached(start)
            if self.progress.step % t.val_every_steps == 0 or stop_reason:
                start = self.add_minutes(start)
                metrics = self.validate_and_save()
                if self.early_stop():
                    stop_reason = f"valid {t.early_stopping_metric} did not improve for {t.early_stopping_patience} validations"
        bar.close()
        if self.last_validated_step != self.progress.step:
            self.add_minutes(start)
            metrics = self.validate_and_save()
        self.info(f"stopped at step {self.progress.step}: {stop_reason}")
        if self.validator:
            self.validator.finish(metrics)
        self.ctx.cleanup()
        return metrics

    def add_minutes(self, since: float) -> float:
        """Add the wall-clock since ``since`` to the run's training minutes; return now."""
        now = time.perf_counter()
        self.progress.minutes += (now - since) / 60
        return now

    def log_train(self, window: TrainWindow, lr: float, grad_norm: float, bar: tqdm) -> None:
        elapsed = time.perf_counter() - window.start
        tokens = self.ctx.all_reduce_sum(float(window.tokens))
        loss = self.ctx.all_reduce_sum(window.loss) / max(tokens, 1)
        tokens_per_s = tokens / max(elapsed, 1e-9)
        bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tokens_per_s:,.0f}", lr=f"{lr:.2e}")
        if self.validator:
            self.validator.log_train(self.progress.step, loss, lr, grad_norm, tokens_per_s)

    def validate_and_save(self) -> dict[str, float]:
        self.last_validated_step = self.progress.step
        metrics = self.validator.validate(self.model, self.progress.step) if self.validator else {}
        metrics = self.ctx.broadcast_dict(metrics)
        score = metrics[self.cfg.trainer.early_stopping_metric]
        self.schedule.after_validation(score, self.higher_is_better)
        self.update_early_stopping(score)
        self.save(score)
        return metrics

    def update_early_stopping(self, score: float) -> None:
        p = self.progress
        better = p.best_score is None or (
            score > p.best_score if self.higher_is_better else score < p.best_score
        )
        if better:
            p.best_score, p.validations_without_gain = score, 0
        else:
            p.validations_without_gain += 1

    def early_stop(self) -> bool:
        patience = self.cfg.trainer.early_stopping_patience
        return patience is not None and self.progress.validations_without_gain >= patience


def train(cfg: DictConfig, run_dir: Path) -> dict[str, float]:
    """Train a model as ``cfg`` says, writing checkpoints, logs and TensorBoard events to ``run_dir``."""
    return Trainer(cfg, run_dir).fit()
