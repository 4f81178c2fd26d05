"""The training loop: batches → loss → optimiser step, with validation, checkpoints and logging.

Read :meth:`Trainer.fit` top to bottom: it runs groups of token-budget batches until a limit
(steps, epochs, minutes) or early stopping ends the run, validating every
``trainer.val_every_steps`` and once more at the end. Everything a resumed run needs to continue
exactly — weights, optimiser, schedule, RNG states, the position inside the epoch — is in each
checkpoint, and a checkpoint is written right after every validation, and ``last.pt`` also every
``trainer.save_every_minutes`` (or ``save_every_steps``) between validations. A signal in
``trainer.preempt_signals`` (SIGTERM, SIGUSR1) ends the run after the current step with
``last.pt`` written and exit status 75 (:mod:`nmt.training.preemption`, docs/faults.md).

:func:`build_trainer` builds a run's parts from the config (DDP, the resumed config, data, model,
training step, validator) and hands them to :class:`Trainer`. One optimiser step is
:class:`nmt.training.step.TrainingStep` (the benchmark times the same object); which checkpoints
stay on disk is :class:`nmt.training.keeper.CheckpointKeeper`.

Under ``torchrun`` (``trainer.distributed=true``) every rank runs the same loop on its share of
each epoch's batches; collectives keep the ranks in step (see :mod:`nmt.training.distributed`), and only
rank 0 validates and writes files.
"""

from __future__ import annotations

import copy
import functools
import itertools
import logging
import math
import random
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from nmt.core.errors import NMTError
from nmt.core.io import check_writable, remove_stale_temporaries
from nmt.core.run_dir import AVERAGED, BEST, LAST, checkpoint_dir, checkpoint_path
from nmt.core.runtime import (
    Precision,
    cpu_summary,
    keep_freed_memory,
    pick_device,
    resolve_precision,
)
from nmt.core.settings import load_settings, settings_dict
from nmt.data.batching import Batch
from nmt.data.pipeline import PreparedData, describe_prepared, prepare
from nmt.models import Seq2Seq, build_model
from nmt.models.card import FORMAT_VERSION, card_of, code_version, command_line, utc_now
from nmt.models.checkpoint import (
    TRAINING_KEYS,
    load_checkpoint,
    load_model_state,
    vocab_payload,
    vocabs_from,
)
from nmt.training import distributed as dist
from nmt.training.keeper import CheckpointKeeper, KeepPolicy
from nmt.training.optim import load_optimizer_state
from nmt.training.preemption import (
    PREEMPTED_EXIT_STATUS,
    PhaseInterrupted,
    Preempted,
    SignalFlag,
    exit_preempted,
)
from nmt.training.settings import TrainConfig
from nmt.training.step import StepResult, TrainingStep
from nmt.training.validation import Validator

log = logging.getLogger("nmt")

# Settings that define the model and its vocabulary: on resume these come from the checkpoint.
ARCHITECTURE_KEYS = ("model", "data.vocab", "data.name")


@dataclass
class Progress:
    """Where the run is; saved in every checkpoint."""

    step: int = 0  # optimiser steps taken
    epoch: int = 0
    batches_in_epoch: int = 0  # batches of `epoch` consumed, counted over all ranks
    best_score: float | None = None
    validations_without_gain: int = 0
    best_checkpoints: list[tuple[float, str]] = field(
        default_factory=list
    )  # (score, file), best first
    recent_checkpoints: list[str] = field(default_factory=list)  # trainer.keep_last, oldest first
    minutes: float = 0.0  # wall-clock of the run so far (validation included), across resumes
    target_tokens: int = (
        0  # target tokens trained on, all ranks (0 in checkpoints before 2026-12-07)
    )


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
    """``trainer.resume``: null/false → fresh run; true → this run dir's last.pt; ``auto`` → that
    when it exists, else a fresh run (a requeued job's command line); else a path."""
    if resume in (None, False):
        return None
    if resume == "auto":
        last = checkpoint_path(run_dir, LAST)
        return last if last.is_file() else None
    path = checkpoint_path(run_dir, LAST) if resume is True else Path(str(resume))
    if not path.is_file():
        hint = (
            " (Hydra makes a new timestamped run dir for every command: pass "
            "hydra.run.dir=<the run's folder>, or trainer.resume=PATH)"
            if resume is True
            else ""
        )
        raise NMTError(f"trainer.resume: no checkpoint at {path}{hint}")
    return path


def merge_resumed_config(
    config: TrainConfig, saved: dict, report: Callable[[str], None] = log.info
) -> TrainConfig:
    """Architecture from the checkpoint's stored config (``saved``, a plain dict), training
    settings from the command line; log the differences."""
    given = settings_dict(config)
    merged = copy.deepcopy(given)
    for key in ARCHITECTURE_KEYS:  # a key the checkpoint lacks becomes null: the check names it
        *parents, name = key.split(".")
        source, target = saved, merged
        for part in parents:
            source, target = source.get(part) or {}, target[part]
        target[name] = copy.deepcopy(source.get(name))
    for key, old, new in config_differences(saved, given):
        source = "checkpoint" if key.startswith(ARCHITECTURE_KEYS) else "command line"
        report(
            f"resume: {key} differs (checkpoint {old!r}, given {new!r}): using the {source} value"
        )
    # the checkpoint's part is a stored config: typed here, once, as it is read
    return load_settings(TrainConfig, merged)


def config_differences(a: dict, b: dict, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """``(key, a's value, b's value)`` of every dotted key whose values differ."""
    diffs = []
    for key in sorted(set(a) | set(b)):
        old, new = a.get(key), b.get(key)
        name = f"{prefix}{key}"
        if isinstance(old, dict) and isinstance(new, dict):
            diffs.extend(config_differences(old, new, name + "."))
        elif old != new:
            diffs.append((name, old, new))
    return diffs


@dataclass
class TrainWindow:
    """Loss, tokens and steps since the last log line (this rank's share)."""

    loss: float = 0.0
    tokens: int = 0
    steps: int = 0
    start: float = field(default_factory=time.perf_counter)

    def add(self, loss: float, tokens: int) -> None:
        self.loss += loss
        self.tokens += tokens
        self.steps += 1

    def exclude(self, seconds: float) -> None:
        """Leave ``seconds`` (a validation) out of the throughput."""
        self.start += seconds


class Trainer:
    """Holds the pieces of one run; :meth:`fit` is the loop. :func:`build_trainer` builds them
    from a config."""

    def __init__(
        self,
        cfg: TrainConfig,
        ctx: dist.DistContext,
        run_dir: Path,
        data: PreparedData,
        model: Seq2Seq,
        training_step: TrainingStep,
        keeper: CheckpointKeeper,
        validator: Validator | None,
    ):
        """``model`` is the unwrapped model (validation, checkpoints); ``training_step`` runs its
        DDP-wrapped form under torchrun; ``validator`` is rank 0's (None on the others)."""
        self.cfg, self.ctx, self.run_dir, self.data = cfg, ctx, run_dir, data
        self.model, self.training_step, self.keeper = model, training_step, keeper
        self.validator = validator
        self.ckpt_dir = keeper.ckpt_dir
        self.device = training_step.device
        self.preempt_signals = cfg.trainer.signals
        b = cfg.data.batching
        self.batcher = data.batcher("train", b.max_tokens, b.bucket_width, b.seed, shuffle=True)
        self.progress = Progress()
        self.checkpoint_path: Path | None = None  # the checkpoint resumed from
        self.last_validated_step: int | None = None
        self.saved_step: int | None = None  # the step of the last.pt this process wrote
        self.metrics: dict[str, float] = {}
        self.restored_validation: dict[str, Any] | None = None  # the resumed checkpoint's card's
        self.nonfinite_streak = 0

    @property
    def precision(self) -> Precision:
        return self.training_step.precision

    def info(self, message: str) -> None:
        if self.ctx.is_main:
            log.info(message)

    def describe(self) -> None:
        """Log the precision, the model's size and the effective batch (rank 0)."""
        t, b = self.cfg.trainer, self.cfg.data.batching
        self.info(f"precision: {self.precision.name} ({self.precision.reason})")
        self.info(
            f"model: {self.model.num_parameters():,} parameters; device {self.device}; "
            f"{self.batcher.num_batches(world_size=self.ctx.world_size):,} batches per epoch per rank"
        )
        self.info(
            f"effective batch ≤ {b.max_tokens * t.accum_steps * self.ctx.world_size:,} tokens per "
            f"optimiser step (trainer.accum_steps={t.accum_steps} × {self.ctx.world_size} ranks × "
            f"data.batching.max_tokens={b.max_tokens:,}); measured: train/tokens_per_step"
        )

    def check_disk_space(self) -> None:
        """Fail before training when the disk cannot hold one more checkpoint (weights, Adam's two
        moments per weight, the SentencePiece models; it is written beside the old one, then
        renamed)."""
        weights = sum(p.numel() * p.element_size() for p in self.model.parameters())
        vocab = len(self.data.src_vocab.model_bytes()) + len(self.data.tgt_vocab.model_bytes())
        need = weights * (3 if self.cfg.optim.name in ("adam", "adamw") else 2) + vocab
        folder = self.ckpt_dir if self.ckpt_dir.is_dir() else self.run_dir
        free = shutil.disk_usage(folder).free
        if free < need:
            raise NMTError(
                f"run folder {folder}: {free / 2**20:.1f} MiB free, a checkpoint of this model "
                f"needs about {need / 2**20:.1f} MiB: No space left on device"
            )

    # ---------------------------------------------------------------- checkpoints
    def restore(self, saved: dict, path: Path) -> None:
        """Continue from checkpoint ``path`` (``saved``, loaded): weights, optimiser, schedule,
        progress and RNG states."""
        self.checkpoint_path = path
        # the subwords, not the model files' bytes, which record the folder they were trained in
        src_vocab, tgt_vocab = vocabs_from(saved)
        if not (
            src_vocab.same_subwords(self.data.src_vocab)
            and tgt_vocab.same_subwords(self.data.tgt_vocab)
        ):
            raise NMTError(
                f"{self.checkpoint_path}: its SentencePiece models differ from those in "
                f"data.out_dir={self.cfg.data.out_dir}; resume with the data the run was trained on"
            )
        load_model_state(self.model, saved["model"], self.checkpoint_path)
        self.restore_optimizer(saved)
        self.restore_progress(saved)
        self.restore_rng(saved)
        self.restored_validation = card_of(saved).get("validation")
        self.info(
            f"resumed from {self.checkpoint_path} at step {self.progress.step} (epoch {self.progress.epoch})"
        )

    def restore_optimizer(self, saved: dict) -> None:
        """Optimiser moments and loss scale; a different ``optim.name`` starts afresh."""
        saved_optim, step = saved["config"]["optim"]["name"], self.training_step
        if saved_optim == self.cfg.optim.name:
            load_optimizer_state(step.optimizer, saved["optimizer"])
        else:
            self.info(f"resume: optim.name {saved_optim} → {self.cfg.optim.name}: fresh state")
        if saved["scaler"]:  # empty when saved without fp16 loss scaling
            step.scaler.load_state_dict(saved["scaler"])

    def restore_progress(self, saved: dict) -> None:
        """Progress and schedule; scores of another ``early_stopping_metric`` are not compared."""
        progress, schedule = dict(saved["progress"]), dict(saved["schedule"])
        progress["best_checkpoints"] = [tuple(x) for x in progress["best_checkpoints"]]
        old, new = (
            saved["config"]["trainer"]["early_stopping_metric"],
            self.cfg.trainer.early_stopping_metric,
        )
        if old != new:
            self.info(
                f"resume: trainer.early_stopping_metric {old} → {new}: early stopping, the plateau "
                "schedule and the best checkpoints start afresh (existing stepNNNNNNN.pt files stay)"
            )
            progress.update(best_score=None, validations_without_gain=0, best_checkpoints=[])
            schedule.update(best=None, bad_validations=0)
        self.training_step.schedule.load_state_dict(schedule)
        self.progress = Progress(**progress)
        # older checkpoints were only written right after a validation
        self.last_validated_step = saved.get("last_validated_step", self.progress.step)

    def restore_rng(self, saved: dict) -> None:
        """Each rank's RNG states; reseeded when the number of ranks changed."""
        rng = saved["rng"]
        if saved["world_size"] == self.ctx.world_size:
            set_rng_state(rng[self.ctx.rank] if isinstance(rng, list) else rng)
        else:
            self.info(
                f"resume: {saved['world_size']} ranks saved, {self.ctx.world_size} now: RNG reseeded"
            )
            seed_everything(self.cfg.seed + self.progress.step + self.ctx.rank)

    def checkpoint_payload(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "model": self.model.state_dict(),
            **self.training_step.state_dict(),  # optimizer, schedule, scaler
            "progress": asdict(self.progress),
            "last_validated_step": self.last_validated_step,
            "rng": self.ctx.gather_rng(rng_state()),
            "world_size": self.ctx.world_size,
            "config": settings_dict(self.cfg),
            "vocab": vocab_payload(self.data.src_vocab, self.data.tgt_vocab),
            "card": self.model_card(),
        }

    def model_card(self) -> dict[str, Any]:
        """What this checkpoint says about itself (:mod:`nmt.models.card`): the code, command and
        data of the run, its progress and runtime now, the last validation and the best score."""
        p = self.progress
        validation = self.restored_validation  # until this process validates
        if self.metrics:
            signatures = self.validator.signatures if self.validator else {}
            validation = {
                "step": self.last_validated_step,
                **self.metrics,
                "signatures": signatures,
            }
        return {
            **self.run_card,
            "created": utc_now(),
            "training": {
                "steps": p.step,
                "target_tokens": p.target_tokens,
                "minutes": round(p.minutes, 2),
                "ranks": self.ctx.world_size,
                **self.runtime_summary(),
            },
            "validation": validation,
            "best": {"metric": self.cfg.trainer.early_stopping_metric, "score": p.best_score},
        }

    @functools.cached_property
    def run_card(self) -> dict[str, Any]:
        """The card's part that is fixed for the run: code, command line, data."""
        return {
            "code": code_version(),
            "command": command_line(),
            "data": describe_prepared(self.data, self.cfg.data),
        }

    def runtime_summary(self) -> dict[str, Any]:
        """What the weights were trained with, for the card and ``/v1/model``: the precision and
        its reason, the device and the CPU."""
        return {
            "precision": self.precision.name,
            "precision_reason": self.precision.reason,
            "device": str(self.device),
            "cpu": cpu_summary(),
        }

    def save(self, score: float) -> None:
        """Write the checkpoints of a validation with ``score``: last.pt, and the step checkpoint
        and best.pt as :class:`~nmt.training.keeper.CheckpointKeeper` decides."""
        p = self.progress
        p.minutes = self.elapsed_minutes()
        plan = self.keeper.plan(p.best_checkpoints, p.recent_checkpoints, p.step, score)
        p.best_checkpoints, p.recent_checkpoints = plan.best, plan.recent
        payload = self.checkpoint_payload()  # every rank joins the RNG gather
        self.saved_step, self.saved_time = p.step, time.perf_counter()
        if self.ctx.is_main:
            self.keeper.write(plan, payload)

    def save_last(self) -> float:
        """Write last.pt alone — between validations, or on preemption. Returns the seconds."""
        start = time.perf_counter()
        self.progress.minutes = self.elapsed_minutes()
        payload = self.checkpoint_payload()  # every rank joins the RNG gather
        if self.ctx.is_main:
            self.keeper.write_last(payload)
        self.saved_step, self.saved_time = self.progress.step, time.perf_counter()
        return self.saved_time - start

    def save_due(self) -> bool:
        """Whether ``trainer.save_every_steps`` or ``save_every_minutes`` (rank 0's clock) has
        passed since last.pt was last written, or since the run (re)started."""
        t = self.cfg.trainer
        since = self.saved_step if self.saved_step is not None else self.steps_at_start
        if self.progress.step == since:
            return False
        if t.save_every_steps is not None and self.progress.step - since >= t.save_every_steps:
            return True
        minutes = (time.perf_counter() - self.saved_time) / 60
        return (
            self.ctx.is_main
            and t.save_every_minutes is not None
            and minutes >= t.save_every_minutes
        )

    def preempt(self) -> None:
        """On a preemption signal (on any rank): write last.pt unless this step's is written,
        wait for every rank, log how to continue, raise :class:`Preempted`."""
        if self.saved_step != self.progress.step:
            self.save_last()
        self.ctx.barrier()  # no rank exits (and makes torchrun stop the others) before the write
        if self.validator:
            self.validator.writer.flush()
        name = self.signals.received or "a signal to another rank"
        self.info(
            f"preempted by {name} at step {self.progress.step}: wrote {self.ckpt_dir / 'last.pt'}; "
            f"continue with trainer.resume=true hydra.run.dir={self.run_dir} "
            f"(exit status {PREEMPTED_EXIT_STATUS})"
        )
        raise Preempted(name, self.progress.step)

    def average_last_checkpoints(self) -> None:
        """Write averaged.pt, the mean of the newest ``trainer.average_last`` step checkpoints on
        disk (:mod:`nmt.training.averaging`), and log its valid scores next to best.pt's (rank 0)."""
        k, ckpt_dir = self.cfg.trainer.average_last, self.ckpt_dir
        paths = self.keeper.average()
        if not paths:
            self.info(f"trainer.average_last={k}: no step checkpoints in {ckpt_dir}")
            return
        fewer = f", only {len(paths)} on disk" if len(paths) < k else ""
        lines = []
        for name in (AVERAGED, BEST):  # best.pt is missing in a run resumed elsewhere
            if (ckpt_dir / name).is_file():
                m = self.score_checkpoint(ckpt_dir / name)
                lines.append(
                    f"{name}: valid BLEU {m['bleu']:.2f}, chrF {m['chrf']:.2f}, loss {m['loss']:.3f}"
                )
        self.info(
            f"averaged {paths[0].name} … {paths[-1].name} (trainer.average_last={k}{fewer}); "
            + "; ".join(lines)
        )

    def score_checkpoint(self, path: Path) -> dict[str, float]:
        """Validation metrics of the weights in ``path`` (written nowhere but the return value);
        a preemption signal stops it between batches (:class:`PhaseInterrupted`)."""
        model = build_model(self.cfg.model, len(self.data.src_vocab), len(self.data.tgt_vocab))
        load_model_state(model, load_checkpoint(path)["model"], path)
        return self.validator.score(model.to(self.device), self.signals.check).metrics

    @property
    def higher_is_better(self) -> bool:
        return self.keeper.policy.higher_is_better

    # ---------------------------------------------------------------- one step
    def train_step(self, batches: list[Batch]) -> StepResult:
        """The next optimiser step on ``batches`` (:class:`~nmt.training.step.TrainingStep`);
        under DDP all ranks skip a non-finite step together."""
        return self.training_step(batches, self.progress.step + 1)

    def skip_nonfinite(self, loss: float) -> None:
        """Count a skipped step; stop the run after ``trainer.max_nonfinite_steps`` in a row."""
        self.nonfinite_streak += 1
        limit = self.cfg.trainer.max_nonfinite_steps
        if self.ctx.is_main:
            log.warning(
                "step %d: non-finite loss or gradient (loss %s); step skipped (%d in a row, %d allowed)",
                self.progress.step + 1,
                loss,
                self.nonfinite_streak,
                limit,
            )
        if self.nonfinite_streak >= limit:
            raise NMTError(
                f"the loss or gradient was non-finite for {self.nonfinite_streak} steps in a row "
                "(trainer.max_nonfinite_steps); lower optim.lr or set optim.clip_grad_norm"
            )

    # ---------------------------------------------------------------- the loop
    def batch_groups(self) -> Iterator[list[Batch]]:
        """Endless groups of ``trainer.accum_steps`` batches of this rank's share, epoch after epoch.

        ``progress`` counts a group as consumed when it is handed out, and moves to the next epoch
        with the epoch's last group, so a checkpoint written after the step resumes right after
        it. The count is over all ranks: a run resumed with another number of ranks rounds it up
        to a whole number of batches per rank (skipping at most ``world_size - 1`` batches).
        """
        accum, rank, world = self.cfg.trainer.accum_steps, self.ctx.rank, self.ctx.world_size
        while True:
            p = self.progress
            done = -(-p.batches_in_epoch // world)  # this rank's batches already consumed
            groups = (self.batcher.num_batches(p.epoch, world) - done) // accum
            if groups <= 0 and done == 0:
                raise NMTError(
                    f"the train split gives {self.batcher.num_batches(p.epoch, world)} batches per "
                    f"rank, fewer than trainer.accum_steps={accum}: lower accum_steps or "
                    "data.batching.max_tokens"
                )
            batches = itertools.islice(self.batcher.epoch(p.epoch, rank, world), done, None)
            for g in range(groups):
                group = [next(batches) for _ in range(accum)]
                if g == groups - 1:
                    p.epoch, p.batches_in_epoch = p.epoch + 1, 0
                else:
                    p.batches_in_epoch = (done + (g + 1) * accum) * world
                yield group
            if groups <= 0:  # resumed with fewer batches left than one group
                p.epoch, p.batches_in_epoch = p.epoch + 1, 0

    def elapsed_minutes(self) -> float:
        """Wall-clock of the run so far (validation included), across resumes."""
        return self.minutes_at_start + (time.perf_counter() - self.fit_start) / 60

    def stop_reason(self) -> str | None:
        """Why training stops now (the first limit reached, or early stopping); None to go on.

        The same answer on every rank: the minutes are rank 0's.
        """
        t, p = self.cfg.trainer, self.progress
        if t.max_steps is not None and p.step >= t.max_steps:
            return f"trainer.max_steps={t.max_steps} reached"
        if t.max_epochs is not None and p.epoch >= t.max_epochs:
            return f"trainer.max_epochs={t.max_epochs} reached"
        if (
            t.max_minutes is not None
            and self.ctx.broadcast(self.elapsed_minutes()) >= t.max_minutes
        ):
            return f"trainer.max_minutes={t.max_minutes} reached"
        patience = t.early_stopping_patience
        if patience is not None and p.validations_without_gain >= patience:
            return (
                f"early stopping: valid {t.early_stopping_metric} did not improve for {patience} "
                "validations (trainer.early_stopping_patience)"
            )
        return None

    def fit(self) -> dict[str, float]:
        """Train until :meth:`stop_reason`; return the last validation's metrics.

        A preemption signal stops the run within one training step or one batch of a long phase
        (validation, averaging): :meth:`preempt` writes last.pt and raises :class:`Preempted`.
        """
        self.fit_start, self.minutes_at_start = time.perf_counter(), self.progress.minutes
        self.steps_at_start, self.saved_time = self.progress.step, self.fit_start
        with SignalFlag(self.preempt_signals) as self.signals:  # a signal sets a flag
            try:
                # log lines go through tqdm.write, so they never overwrite the bar or it them
                with logging_redirect_tqdm(), self.progress_bar() as bar:
                    reason = self.run_steps(bar)
                self.finish_run(reason)
            except PhaseInterrupted:
                self.preempt()
        return self.metrics

    def finish_run(self, reason: str | None) -> None:
        """After the last step: the validation of that step if it has none yet (a fresh run
        stopped before step 1, or one whose last validation a signal dropped), the averaged
        checkpoint, the hyper-parameters in TensorBoard."""
        if self.last_validated_step != self.progress.step:
            self.validate_and_save()
        self.info(f"stopped at step {self.progress.step}: {reason}")
        if self.validator and self.cfg.trainer.average_last:
            self.average_last_checkpoints()
        if self.validator:
            self.validator.finish(self.metrics)

    def progress_bar(self) -> tqdm:
        """A bar over steps; over minutes (with a total and an ETA) when only
        ``trainer.max_minutes`` limits the run."""
        t = self.cfg.trainer
        common = {"disable": not self.ctx.is_main, "desc": "train", "dynamic_ncols": True}
        if t.max_steps is None and t.max_minutes is not None:
            self.bar_in_minutes = True
            return tqdm(
                total=float(t.max_minutes),
                initial=self.progress.minutes,
                unit="min",
                bar_format="{l_bar}{bar}| {n:.1f}/{total:g} min [{elapsed}<{remaining}{postfix}]",
                **common,
            )
        self.bar_in_minutes = False
        return tqdm(total=t.max_steps, initial=self.progress.step, unit="step", **common)

    def advance_bar(self, bar: tqdm) -> None:
        if self.bar_in_minutes:
            bar.update(min(self.elapsed_minutes(), bar.total) - bar.n)
        else:
            bar.update(1)

    def run_steps(self, bar: tqdm) -> str | None:
        """Optimiser steps, logging and validating on schedule, until a stop reason; return it."""
        t = self.cfg.trainer
        window = TrainWindow()
        groups = self.batch_groups()
        reason = self.stop_reason()
        if reason is None and self.validation_dropped():
            self.info(
                f"resume: the validation at step {self.progress.step} was dropped; running it"
            )
            window.exclude(self.validate_and_save())
            reason = self.stop_reason()
        while reason is None:
            result = self.train_step(next(groups))
            if result.skipped:
                self.skip_nonfinite(result.loss)
                continue
            self.nonfinite_streak = 0
            self.progress.step += 1
            self.progress.target_tokens += result.all_tokens
            self.advance_bar(bar)
            window.add(result.loss, result.tokens)
            if self.progress.step % t.log_every_steps == 0:
                self.log_train(window, result.lr, result.grad_norm, bar)
                window = TrainWindow()
            reason = self.stop_reason()
            if reason or self.progress.step % t.val_every_steps == 0:
                window.exclude(self.validate_and_save())
                reason = self.stop_reason()
            preempted, due = self.ctx.any_rank(self.signals.received is not None, self.save_due())
            if preempted and reason is None:
                self.preempt()
            if due and reason is None:
                window.exclude(self.save_last())
        return reason

    def log_train(self, window: TrainWindow, lr: float, grad_norm: float, bar: tqdm) -> None:
        """Loss per target token, throughput and effective batch over the window, all ranks summed."""
        elapsed = time.perf_counter() - window.start
        tokens = self.ctx.all_reduce_sum(float(window.tokens))
        loss = self.ctx.all_reduce_sum(window.loss) / max(tokens, 1)
        tokens_per_s = tokens / max(elapsed, 1e-9)
        bar.set_postfix(
            step=self.progress.step,
            loss=f"{loss:.3f}",
            tok_s=f"{tokens_per_s:,.0f}",
            lr=f"{lr:.2e}",
        )
        if self.validator:
            scalars = {
                "loss": loss,
                "perplexity": math.exp(min(loss, 50.0)),
                "lr": lr,
                "grad_norm": grad_norm,
                "tokens_per_s": tokens_per_s,
                "tokens_per_step": tokens / window.steps,  # the effective batch, in target tokens
            }
            self.validator.log_train(self.progress.step, scalars)

    def validation_dropped(self) -> bool:
        """Whether this step is a validation step whose validation a signal interrupted (the
        run was preempted during it and resumed from the last.pt written then)."""
        step = self.progress.step
        every = self.cfg.trainer.val_every_steps
        return step > 0 and step % every == 0 and self.last_validated_step != step

    def validate_and_save(self) -> float:
        """Validate on rank 0 (the other ranks wait for its metrics), update the schedule and
        early stopping, write the checkpoints. Returns the seconds it took.

        A preemption signal to rank 0 during the validation drops it between two batches:
        :class:`PhaseInterrupted` on every rank, nothing written (``last_validated_step`` keeps
        the previous step, so the resumed run validates this step first)."""
        start = time.perf_counter()
        metrics: dict[str, float] | None = {}
        if self.validator:
            try:
                metrics = self.validator.validate(
                    self.model, self.progress.step, self.signals.check
                )
            except PhaseInterrupted:
                metrics = None  # tells the other ranks
        metrics = self.ctx.broadcast(metrics)
        if metrics is None:
            self.info(f"validation at step {self.progress.step} dropped: it runs again on resume")
            raise PhaseInterrupted(self.signals.received or "a signal to rank 0")
        self.metrics = metrics
        score = self.metrics[self.cfg.trainer.early_stopping_metric]
        if self.training_step.schedule.after_validation(score, self.higher_is_better):
            self.info(f"plateau: learning rate × {self.cfg.optim.plateau_factor}")
        self.update_early_stopping(score)
        self.last_validated_step = self.progress.step  # saved in the checkpoint
        self.save(score)
        return time.perf_counter() - start

    def update_early_stopping(self, score: float) -> None:
        p = self.progress
        better = p.best_score is None or (
            score > p.best_score if self.higher_is_better else score < p.best_score
        )
        if better:
            p.best_score, p.validations_without_gain = score, 0
        else:
            p.validations_without_gain += 1


# -------------------------------------------------------------------- building a run


def build_trainer(cfg: TrainConfig, run_dir: Path, data: PreparedData | None = None) -> Trainer:
    """The :class:`Trainer` of ``cfg``: set up DDP, merge the resumed checkpoint's config, check
    the settings and the run folder, prepare (or take) the data, build the model, the training
    step (optimiser, schedule, precision) and the validator (TensorBoard writer), then restore
    the checkpoint's state. Seeded with ``seed`` before the data and the weights, so every rank
    starts from the same weights."""
    ctx = dist.setup(cfg.trainer.distributed, cfg.trainer.dist_timeout_minutes)
    run_dir = Path(ctx.broadcast(str(run_dir)))  # rank 0's run dir on every rank
    report = log.info if ctx.is_main else _silent
    checkpoint_path = resolve_resume(cfg.trainer.resume, run_dir)
    saved = load_checkpoint(checkpoint_path, keys=TRAINING_KEYS) if checkpoint_path else None
    cfg = merge_resumed_config(cfg, saved["config"], report) if saved else cfg
    t = cfg.trainer
    ckpt_dir = checkpoint_dir(run_dir)
    if ctx.is_main:
        check_run_folder(run_dir, ckpt_dir, report)
    if t.num_threads:
        torch.set_num_threads(t.num_threads)
    device = ctx.device if ctx.enabled else pick_device(t.device, "trainer.device")
    if t.keep_freed_memory:
        report(f"memory: {keep_freed_memory(device)}")
    seed_everything(cfg.seed)  # the same initial weights on every rank
    if data is None:
        with ctx.main_first():  # rank 0 prepares, then the others read what it wrote
            data = prepare(cfg.data, seed=cfg.seed, log=report)
    vocab_sizes = len(data.src_vocab), len(data.tgt_vocab)
    model = build_model(cfg.model, *vocab_sizes, param_init=t.param_init)  # resume replaces it
    model = model.to(device)
    precision = resolve_precision(t.precision, device)  # auto → fp32
    training_step = TrainingStep.from_settings(
        t, cfg.optim, ctx.wrap(model), device, precision, ctx
    )
    keeper = CheckpointKeeper(ckpt_dir, KeepPolicy.from_settings(t))
    purge_step = saved["progress"]["step"] + 1 if saved else None
    validator = Validator(cfg, data, run_dir, purge_step) if ctx.is_main else None
    trainer = Trainer(cfg, ctx, run_dir, data, model, training_step, keeper, validator)
    if saved:
        trainer.restore(saved, checkpoint_path)
    elif ctx.world_size > 1:
        seed_everything(cfg.seed + ctx.rank)  # each rank its own dropout masks
    if ctx.is_main:
        trainer.check_disk_space()
    trainer.describe()
    return trainer


def _silent(message: str) -> None:
    """The log of ranks other than 0."""


def check_run_folder(run_dir: Path, ckpt_dir: Path, report: Callable[[str], None]) -> None:
    """Fail before any work when checkpoints cannot be written; clear the temporary files a
    killed run left (rank 0)."""
    folder = ckpt_dir if ckpt_dir.is_dir() else run_dir
    check_writable(folder, "run folder")
    stale = remove_stale_temporaries(ckpt_dir)
    if stale:
        report(f"removed {len(stale)} unfinished checkpoint file(s) of an interrupted run")


def train(cfg: TrainConfig, run_dir: Path) -> dict[str, float]:
    """Train a model as ``cfg`` says, writing checkpoints, logs and TensorBoard events to ``run_dir``.

    Ctrl-C stops with exit status 130 and says how to continue from the last checkpoint; a
    preemption signal with :data:`~nmt.training.preemption.PREEMPTED_EXIT_STATUS` (75) after writing it.
    """
    signals = cfg.trainer.signals
    try:
        with SignalFlag(signals, immediate=True):  # before the loop there is nothing to save
            trainer = build_trainer(cfg, run_dir)
    except Preempted as stop:
        log.info(f"{stop}: nothing to save (exit status {PREEMPTED_EXIT_STATUS})")
        exit_preempted(signals)
    try:
        metrics = trainer.fit()
        # rank 0 may still be writing (averaged.pt, TensorBoard) when the others finish: a rank
        # that left the process group then makes gloo abort the job mid-write
        trainer.ctx.barrier()
        return metrics
    except KeyboardInterrupt:
        trainer.info(
            f"interrupted at step {trainer.progress.step}; continue from the last checkpoint "
            f"with trainer.resume=true hydra.run.dir={trainer.run_dir}"
        )
        raise SystemExit(130) from None
    except Preempted:
        exit_preempted(signals)
    finally:
        trainer.ctx.cleanup()
