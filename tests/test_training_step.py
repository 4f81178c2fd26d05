"""nmt/training/step.py: the one optimiser step the trainer and the benchmark run.

The trainer's loop and ``nmt-benchmark`` give the same losses on the same batches; the step
normalises by the tokens of the whole step, skips non-finite losses and gradients, clips, and
takes the learning rate of its step number.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from conftest import TINY_MODEL, as_settings, build_model, build_trainer, train_config

from nmt.config.schema import check_command
from nmt.core.errors import NMTError
from nmt.core.runtime import Precision
from nmt.models.loss import sequence_loss
from nmt.training import step as training_step
from nmt.training.distributed import DistContext
from nmt.training.keeper import CheckpointKeeper, KeepPolicy
from nmt.training.optim import OptimSettings
from nmt.training.settings import TrainerSettings
from nmt.training.speed import run_benchmark
from nmt.training.step import StepSettings, TrainingStep
from nmt.training.trainer import Trainer
from nmt.training.validation import Validator

CPU = torch.device("cpu")
FP32 = Precision("fp32", "test")
STEPS, ACCUM = 3, 2
SAME_RUN = [
    *TINY_MODEL,
    "model/attention=concat",
    "model.attention.hidden_size=16",
    "model.encoder.dropout=0.3",  # the same dropout masks too: the same RNG stream
    "model.decoder.dropout=0.3",
    "optim.warmup_steps=0",
    "optim.clip_grad_norm=1.0",
    f"trainer.accum_steps={ACCUM}",
]
QUICK_BENCHMARK = [
    "benchmark.warmup_steps=0",
    "benchmark.windows=1",
    f"benchmark.steps_per_window={STEPS}",
    "benchmark.decode_sentences=0",
    "benchmark.gemm_sizes=[16]",
    "benchmark.gemm_repeats=1",
    "benchmark.threads=1",
]


def test_the_benchmark_and_the_trainer_give_the_same_losses(tiny_prepared, tmp_path, monkeypatch):
    """Same seed, same initial weights, same batches in the same order: 3 steps of 2 batches."""
    data = tiny_prepared.data
    results = []
    real_step = Trainer.train_step

    def recording_step(self, batches):
        results.append(real_step(self, batches))
        return results[-1]

    monkeypatch.setattr(Trainer, "train_step", recording_step)
    cfg = tiny_prepared.corpus.cfg(
        *SAME_RUN,
        f"trainer.max_steps={STEPS}",
        "trainer.val_max_sentences=1",
        "trainer.num_attention_plots=0",
        out_dir=data.out_dir,
    )
    build_trainer(cfg, tmp_path / "run", data).fit()
    trainer_losses = [r.loss_per_token for r in results]

    bench_cfg = tiny_prepared.corpus.cfg(
        *SAME_RUN,
        *QUICK_BENCHMARK,
        f"benchmark.output={tmp_path / 'bench.json'}",
        out_dir=data.out_dir,
        config_name="benchmark",
    )
    bench_config = check_command("benchmark", bench_cfg)
    train = run_benchmark(bench_config, bench_config.benchmark, data, progress=lambda m: None)[
        "train"
    ]
    assert train["accum_steps"] == ACCUM and train["skipped_steps"] == 0
    assert train["tgt_tokens_per_step"] == sum(r.tokens for r in results) / STEPS

    difference = max(abs(a - b) for a, b in zip(trainer_losses, train["step_losses"], strict=True))
    print(f"trainer {trainer_losses}\nbenchmark {train['step_losses']}\nmax |Δ| {difference:.3g}")
    assert len(trainer_losses) == STEPS
    assert difference <= 1e-6
    assert trainer_losses[0] != trainer_losses[1]  # different batches: a real comparison


# ------------------------------------------------------------------------------ unit tests


def tiny_step(tiny_prepared, *overrides: str, optim: str = "sgd") -> tuple[TrainingStep, list]:
    """A TrainingStep over a dropout-free tiny model (plain SGD, lr 1: Δθ = −∇) and two
    batches of the training split."""
    cfg = tiny_prepared.corpus.cfg(
        *TINY_MODEL,
        "model.encoder.dropout=0",
        "model.decoder.dropout=0",
        f"optim.name={optim}",
        "optim.lr=1.0",
        "optim.momentum=0",
        "optim.warmup_steps=0",
        "optim.scheduler=none",
        "trainer.label_smoothing=0.1",
        *overrides,
    )
    data = tiny_prepared.data
    torch.manual_seed(0)
    model = build_model(cfg.model, len(data.src_vocab), len(data.tgt_vocab))
    batches = list(data.batcher("train", 256, 1, 0, shuffle=False).epoch(0))[:2]
    trainer = as_settings(TrainerSettings, cfg.trainer, "trainer")
    optim = as_settings(OptimSettings, cfg.optim, "optim")
    return TrainingStep.from_settings(trainer, optim, model, CPU, FP32), batches


def weights(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_accumulated_batches_are_normalised_by_the_tokens_of_the_whole_step(tiny_prepared):
    step, batches = tiny_step(tiny_prepared, "trainer.accum_steps=2", "optim.clip_grad_norm=null")
    reference = copy.deepcopy(step.model)
    before = weights(step.model)
    result = step(batches, step=1)

    # by hand: ∇ (ℓ_1 + ℓ_2) / (n_1 + n_2)
    losses = [
        sequence_loss(reference(b.src, b.src_lengths, b.tgt_in).logits, b.tgt_out, 0.1)
        for b in batches
    ]
    tokens = sum(b.num_tgt_tokens for b in batches)
    (sum(losses) / tokens).backward()
    grad = torch.cat([p.grad.flatten() for p in reference.parameters()])

    assert not result.skipped and result.tokens == tokens and result.lr == 1.0
    assert result.loss == pytest.approx(float(sum(losses).detach()), rel=1e-6)
    assert result.grad_norm == pytest.approx(float(grad.norm()), rel=1e-5)
    torch.testing.assert_close(before - weights(step.model), grad, rtol=1e-4, atol=1e-6)
    assert all(p.grad is None for p in step.model.parameters())  # zeroed for the next step


def test_clipping_bounds_the_update_and_reports_the_norm_before(tiny_prepared):
    step, batches = tiny_step(tiny_prepared, "optim.clip_grad_norm=0.01")
    before = weights(step.model)
    result = step(batches[:1], step=1)
    assert result.grad_norm > 0.01
    assert float((before - weights(step.model)).norm()) == pytest.approx(0.01, rel=1e-3)


def test_a_nonfinite_loss_skips_the_update(tiny_prepared, monkeypatch):
    step, batches = tiny_step(tiny_prepared)
    real = training_step.sequence_loss
    monkeypatch.setattr(
        training_step, "sequence_loss", lambda *args, **kw: real(*args, **kw) * math.nan
    )
    before = weights(step.model)
    result = step(batches[:1], step=1)
    assert result.skipped and result.grad_norm is None and math.isnan(result.loss)
    assert torch.equal(weights(step.model), before)
    assert all(p.grad is None for p in step.model.parameters())


def test_a_nonfinite_gradient_with_a_finite_loss_skips_the_update(tiny_prepared):
    step, batches = tiny_step(tiny_prepared, optim="adam")
    first = next(step.model.parameters())
    first.register_hook(lambda grad: torch.full_like(grad, math.inf))
    before = weights(step.model)
    result = step(batches[:1], step=1)
    assert math.isfinite(result.loss)
    assert result.skipped and result.grad_norm is None
    assert torch.equal(weights(step.model), before)
    assert step.optimizer.state == {}  # Adam took no step


def test_the_step_number_sets_the_learning_rate(tiny_prepared):
    step, batches = tiny_step(tiny_prepared, "optim.warmup_steps=4")
    assert step(batches[:1], step=1).lr == pytest.approx(0.25)
    assert step(batches[:1], step=3).lr == pytest.approx(0.75)


def test_a_step_takes_accum_steps_batches(tiny_prepared):
    step, batches = tiny_step(tiny_prepared, "trainer.accum_steps=2")
    with pytest.raises(ValueError, match="a step takes trainer.accum_steps=2 batches; got 1"):
        step(batches[:1], step=1)
    with pytest.raises(NMTError, match="trainer.accum_steps: expected an integer >= 1; got 0"):
        StepSettings(accum_steps=0)


def test_a_trainer_runs_on_parts_built_by_hand(tiny_prepared, small_data, tmp_path):
    """The Trainer takes built parts: here a keeper keeping one step checkpoint, although the
    config says trainer.keep_best=3."""
    cfg = tiny_prepared.corpus.cfg(
        *TINY_MODEL,
        "trainer.max_steps=3",
        "trainer.val_every_steps=1",
        "trainer.val_max_sentences=1",
        "trainer.num_attention_plots=0",
        out_dir=small_data.out_dir,
    )
    assert cfg.trainer.keep_best == 3
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, len(small_data.src_vocab), len(small_data.tgt_vocab))
    config = train_config(cfg)
    step = TrainingStep.from_settings(config.trainer, config.optim, model, CPU, FP32)
    keeper = CheckpointKeeper(tmp_path / "checkpoints", KeepPolicy(keep_best=1))
    validator = Validator(config, small_data, tmp_path)
    trainer = Trainer(config, DistContext(), tmp_path, small_data, model, step, keeper, validator)
    metrics = trainer.fit()
    assert trainer.progress.step == 3 and set(metrics) >= {"loss", "bleu", "chrf"}
    assert len(trainer.progress.best_checkpoints) == 1
    names = {p.name for p in (tmp_path / "checkpoints").iterdir()}
    assert names == {"last.pt", "best.pt", trainer.progress.best_checkpoints[0][1]}
