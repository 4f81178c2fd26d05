"""Validation during training, and everything the run writes to TensorBoard.

At each validation the model is scored on the valid split the same way ``scripts/evaluate.py``
scores a system: decode with the configured search, detokenise, and call
:func:`nmt.evaluation.metrics.score_corpus`. The scores, their sacrebleu signatures and the degeneracy and
attention diagnostics go to TensorBoard and to ``validations.jsonl`` in the run dir.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.tensorboard import SummaryWriter

from nmt.core.errors import os_error_behind
from nmt.core.io import append_line, write_error, write_text_atomic
from nmt.core.run_dir import TENSORBOARD, VALIDATIONS
from nmt.core.settings import settings_dict
from nmt.data.batching import BatchingSettings, TokenBatcher
from nmt.data.pipeline import PreparedData
from nmt.evaluation.metrics import Headline, degeneracy, score_corpus
from nmt.inference.search import SearchSettings
from nmt.inference.translator import Translation, Translator
from nmt.models.attention_stats import attention_statistics
from nmt.models.loss import sequence_loss
from nmt.training.settings import TrainConfig

# called between the batches of a validation; raises to stop it (a preemption signal)
Interrupt = Callable[[], None]

log = logging.getLogger("nmt")


@dataclass
class ValidationResult:
    """What :meth:`Validator.score` measures on the valid sentences."""

    metrics: dict[str, float]  # loss, perplexity, bleu (ko-mecab), chrf
    scores: dict[str, dict[str, Any]]  # nmt.evaluation.metrics.score_corpus, with signatures
    diagnostics: dict[str, float]  # degeneracy and attention statistics
    best: list[Translation]  # the best translation of each sentence
    hypotheses: list[str]  # detokenised


@dataclass(frozen=True)
class ValidationSettings:
    """What validation reads: three keys of the ``trainer`` group, ``data.batching`` (for the
    valid loss) and the ``search`` group, typed and checked by the schema."""

    max_sentences: int | None  # trainer.val_max_sentences; None: the whole valid split
    num_samples: int  # trainer.num_samples: sample translations logged
    num_attention_plots: int  # trainer.num_attention_plots: heat maps logged
    batching: BatchingSettings  # data.batching
    search: SearchSettings  # the search validation decodes with

    @classmethod
    def from_settings(cls, config: TrainConfig) -> ValidationSettings:
        t = config.trainer
        return cls(
            max_sentences=t.val_max_sentences,
            num_samples=t.num_samples,
            num_attention_plots=t.num_attention_plots,
            batching=config.data.batching,
            search=config.search,
        )


class EventsWriter:
    """TensorBoard's ``SummaryWriter`` whose failures to write — a full disk — are one
    :class:`~nmt.core.errors.NMTError` line naming the events folder, like every other writer's.

    ``SummaryWriter`` writes from a background thread and raises that thread's error at a later
    call in the main thread; the thread's own traceback is kept off the console
    (:func:`_quiet_event_writer_threads`), so the user sees the one line."""

    def __init__(self, folder: Path, purge_step: int | None = None):
        _quiet_event_writer_threads()
        self.folder = folder
        self.writer = self._guard(SummaryWriter)(str(folder), purge_step=purge_step)

    def __getattr__(self, name: str) -> Any:
        return self._guard(getattr(self.writer, name))

    def _guard(self, method: Callable) -> Callable:
        @functools.wraps(method)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return method(*args, **kwargs)
            except Exception as err:
                cause = os_error_behind(err)
                if cause is None:
                    raise
                raise write_error(self.folder, cause) from None

        return guarded


@functools.cache
def _quiet_event_writer_threads() -> None:
    """Keep the traceback of TensorBoard's writer thread (``_AsyncWriterThread``) off stderr when
    it fails on an OSError: the writer raises the same error again in the main thread, where
    :class:`EventsWriter` makes it one line. Installed once per process."""
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if type(args.thread).__name__ == "_AsyncWriterThread" and isinstance(
            args.exc_value, OSError
        ):
            return
        previous(args)

    threading.excepthook = hook


class Validator:
    """Scores the model on the valid split and writes TensorBoard events (rank 0 only)."""

    def __init__(
        self, config: TrainConfig, data: PreparedData, run_dir: Path, purge_step: int | None = None
    ):
        """``purge_step``: on resume, the first step not in the checkpoint; TensorBoard drops the
        events an interrupted run wrote from that step on. ``config`` itself is kept only for the
        run's hyper-parameters in TensorBoard (:meth:`finish`)."""
        self.config = config
        self.validation = ValidationSettings.from_settings(config)
        self.data = data
        self.run_dir = run_dir
        valid = data.splits["valid"]
        n = self.validation.max_sentences or len(valid)
        self.src_lines, self.ref_lines = valid.src_text[:n], valid.tgt_text[:n]
        b = self.validation.batching
        self.loss_batcher = TokenBatcher(
            valid.src_ids[:n], valid.tgt_ids[:n], b.max_tokens, b.bucket_width, 0, shuffle=False
        )
        self.writer = EventsWriter(run_dir / TENSORBOARD, purge_step)
        self.history_path = run_dir / VALIDATIONS
        self.settings = self.validation.search
        # a model trained on masked markup sees masked markup in validation too
        self.mask_markup = config.data.mask_markup
        self.signatures: dict[str, str] = {}  # sacrebleu's, of the last validation's BLEU and chrF

    # ------------------------------------------------------------------ training scalars
    def log_train(self, step: int, scalars: dict[str, float]) -> None:
        """``train/<name>`` for each of ``scalars`` (loss, perplexity, lr, grad_norm, ...)."""
        for name, value in scalars.items():
            self.writer.add_scalar(f"train/{name}", value, step)

    # ------------------------------------------------------------------ validation
    @torch.inference_mode()
    def valid_loss(self, model: torch.nn.Module, interrupt: Interrupt | None = None) -> float:
        """Per-token cross-entropy (no label smoothing) on the valid split, teacher forced.
        ``interrupt()`` is called after each batch; it may raise to stop (a preemption signal)."""
        device = next(model.parameters()).device
        total, tokens = 0.0, 0
        for batch in self.loss_batcher.epoch(0):
            batch = batch.to(device)
            out = model(batch.src, batch.src_lengths, batch.tgt_in)
            total += float(sequence_loss(out.logits, batch.tgt_out, 0.0))
            tokens += batch.num_tgt_tokens
            if interrupt is not None:
                interrupt()
        return total / max(tokens, 1)

    def score(self, model: torch.nn.Module, interrupt: Interrupt | None = None) -> ValidationResult:
        """Loss, scores and diagnostics of ``model`` on the valid sentences; writes nothing.
        ``interrupt()`` is called after each loss batch and each decoding batch and may raise
        (:meth:`nmt.training.preemption.SignalFlag.check`): a preempted run does not wait for the rest."""
        was_training = model.training
        model.eval()
        try:
            loss = self.valid_loss(model, interrupt)
            translator = Translator(
                model, self.data.src_vocab, self.data.tgt_vocab, self.settings
            ).with_markup(self.mask_markup)
            # a second bar, while it runs
            best = translator.translate(self.src_lines, progress=True, interrupt=interrupt)
        finally:
            model.train(was_training)
        hypotheses = [t.text for t in best]
        scores = score_corpus(hypotheses, self.ref_lines)
        diagnostics = degeneracy(hypotheses, self.ref_lines, [t.hit_max_len for t in best])
        diagnostics.update(attention_statistics([t.attention for t in best]))
        headline = Headline.of(scores)
        metrics = {
            "loss": loss,
            "perplexity": math.exp(min(loss, 50.0)),
            "bleu": headline.bleu,
            "chrf": headline.chrf,
        }
        return ValidationResult(metrics, scores, diagnostics, best, hypotheses)

    def validate(
        self, model: torch.nn.Module, step: int, interrupt: Interrupt | None = None
    ) -> dict[str, float]:
        """:meth:`score`, written to TensorBoard, ``validations.jsonl``, ``valid_hypotheses.txt``
        and the log; returns the metrics. Interrupted (``interrupt`` raising), it writes nothing."""
        result = self.score(model, interrupt)
        metrics, scores, diagnostics = result.metrics, result.scores, result.diagnostics
        hypotheses = result.hypotheses
        self.write_events(step, metrics, scores, diagnostics, result.best, hypotheses)
        self.signatures = {
            "bleu": Headline.of(scores).bleu_signature,
            "chrf": scores["chrf"]["signature"],
        }
        record = {"step": step, **metrics, "scores": scores, "diagnostics": diagnostics}
        append_line(self.history_path, json.dumps(record, ensure_ascii=False))
        write_text_atomic(
            self.run_dir / "valid_hypotheses.txt", "".join(h + "\n" for h in hypotheses)
        )
        log.info(
            "validation at step %d: loss %.3f, ppl %.1f, BLEU %.2f (%s), chrF %.2f, repetition %.1f%%",
            step,
            metrics["loss"],
            metrics["perplexity"],
            metrics["bleu"],
            Headline.of(scores).bleu_signature,
            metrics["chrf"],
            100 * diagnostics["repetition_rate"],
        )
        return metrics

    def write_events(self, step, metrics, scores, diagnostics, best, hypotheses) -> None:
        w = self.writer
        for name, value in metrics.items():
            w.add_scalar(f"valid/{name}", value, step)
        for name, entry in scores.items():
            w.add_scalar(f"valid_scores/{name}", entry["score"], step)
        for name, value in diagnostics.items():
            w.add_scalar(f"valid_diagnostics/{name}", value, step)
        samples = []
        for i in range(min(self.validation.num_samples, len(hypotheses))):
            samples.append(
                f"**source:** {self.src_lines[i]}  \n**reference:** {self.ref_lines[i]}  \n**hypothesis:** {hypotheses[i]}"
            )
        if samples:
            w.add_text("valid/samples", "\n\n---\n\n".join(samples), step)
        self.write_attention_images(step, best)
        w.flush()

    def write_attention_images(self, step: int, best) -> None:
        count = min(self.validation.num_attention_plots, len(best))
        if count == 0:
            return
        from nmt.evaluation.plotting import (
            attention_figure,  # matplotlib only when there is a plot to draw
        )

        for i in range(count):
            t = best[i]
            if t.attention.numel() == 0:
                continue
            src_labels, tgt_labels = t.attention_labels()
            title = f"valid sentence {i}, step {step}"
            figure = attention_figure(t.attention, src_labels, tgt_labels, title=title)
            self.writer.add_figure(f"attention/valid_{i}", figure, step, close=True)

    def finish(self, metrics: dict[str, float]) -> None:
        """Record the run's hyper-parameters beside its final metrics (TensorBoard's HPARAMS tab)."""
        flat = flatten(settings_dict(self.config))
        hparams = {
            k: v if isinstance(v, int | float | str | bool) else str(v)
            for k, v in flat.items()
            if not k.startswith(("hydra", "data.root"))
        }
        self.writer.add_hparams(
            hparams, {f"hparam/{k}": v for k, v in metrics.items()}, run_name="."
        )
        self.writer.close()


def flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
