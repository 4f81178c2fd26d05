"""The learning-rate schedule: warm-up shapes, inverse-square-root decay, the plateau rule."""

import math
from pathlib import Path

import pytest
import torch
from conftest import as_settings
from omegaconf import OmegaConf

from nmt.training.optim import LRSchedule, OptimSettings, build_optimizer

ADAM = OmegaConf.load(Path(__file__).parents[1] / "configs/optim/adam.yaml")


def schedule(**overrides) -> LRSchedule:
    optim = as_settings(OptimSettings, OmegaConf.merge(ADAM, overrides), "optim")
    params = [torch.nn.Parameter(torch.zeros(2))]
    return LRSchedule(optim, build_optimizer(optim, params))


def test_linear_warmup_ramps_then_decays_by_the_inverse_square_root():
    lrs = schedule(lr=2e-3, scheduler="inverse_sqrt", warmup_steps=400)
    assert lrs.lr(1) == pytest.approx(2e-3 / 400)
    assert lrs.lr(200) == pytest.approx(1e-3)
    assert lrs.lr(400) == pytest.approx(2e-3)
    assert lrs.lr(1600) == pytest.approx(2e-3 * math.sqrt(400 / 1600))


def test_constant_warmup_holds_the_peak_from_step_one_then_decays_the_same():
    """OpenNMT-py's rsqrt: lr · 1/√max(step, warmup) normalised to peak lr."""
    constant = schedule(
        lr=2e-3, scheduler="inverse_sqrt", warmup_steps=400, warmup_shape="constant"
    )
    linear = schedule(lr=2e-3, scheduler="inverse_sqrt", warmup_steps=400)
    assert [constant.lr(s) for s in (1, 200, 400)] == pytest.approx([2e-3] * 3)
    for step in (401, 1000, 5117):
        assert constant.lr(step) == pytest.approx(linear.lr(step))
        assert constant.lr(step) == pytest.approx(0.04 / math.sqrt(step))  # OpenNMT-py's formula


def test_set_step_writes_the_rate_into_the_optimiser():
    lrs = schedule(lr=1e-3, scheduler="none", warmup_steps=10)
    assert lrs.set_step(5) == pytest.approx(5e-4)
    assert lrs.optimizer.param_groups[0]["lr"] == pytest.approx(5e-4)


def test_plateau_lowers_the_rate_after_patience_validations_without_gain():
    lrs = schedule(lr=1e-3, scheduler="plateau", plateau_patience=2, plateau_factor=0.5)
    assert not lrs.after_validation(10.0, higher_is_better=True)
    assert not lrs.after_validation(9.0, higher_is_better=True)
    assert lrs.after_validation(9.5, higher_is_better=True)
    assert lrs.lr(100) == pytest.approx(5e-4)
