"""sequence_loss: the value and gradient of F.cross_entropy, through a fused backward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_MODEL, build_trainer

from nmt.core.errors import NMTError
from nmt.core.special_ids import PAD_ID
from nmt.models.loss import SmoothedCrossEntropy, sequence_loss


def logits_and_targets(batch: int = 4, steps: int = 7, vocab: int = 50, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(batch, steps, vocab, generator=g)).requires_grad_()
    tgt_out = torch.randint(PAD_ID + 1, vocab, (batch, steps), generator=g)
    tgt_out[0, 4:] = PAD_ID  # a shorter sentence
    tgt_out[2, 1:] = PAD_ID
    return logits, tgt_out


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_value_and_gradient_equal_cross_entropy(smoothing):
    logits, tgt_out = logits_and_targets()
    ours = sequence_loss(logits, tgt_out, smoothing)
    (grad_ours,) = torch.autograd.grad(3.0 * ours, logits)  # a grad_output other than 1
    reference = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)),
        tgt_out.reshape(-1),
        ignore_index=PAD_ID,
        reduction="sum",
        label_smoothing=smoothing,
    )
    (grad_reference,) = torch.autograd.grad(3.0 * reference, logits)
    torch.testing.assert_close(ours, reference)
    torch.testing.assert_close(grad_ours, grad_reference)
    assert grad_ours[0, 4:].abs().max() == 0  # <pad> targets get no gradient


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_reusing_the_logits_storage_gives_the_same_value_and_gradient(smoothing):
    """reuse_logits=True (the training step): exp(z - m) and then the gradient are written over
    the logits' own storage; the numbers are the same, and a second backward is refused (by
    autograd's version check of the saved tensor) instead of giving a wrong gradient."""
    logits, tgt_out = logits_and_targets()
    expected = sequence_loss(logits, tgt_out, smoothing)
    (expected_grad,) = torch.autograd.grad(2.0 * expected, logits)
    hidden = logits.detach().clone().requires_grad_()
    produced = hidden * 1.0  # a non-leaf, as the output projection's logits are
    storage = produced.data_ptr()
    loss = sequence_loss(produced, tgt_out, smoothing, reuse_logits=True)
    assert not torch.equal(produced, logits)  # overwritten: the caller must not read it again
    loss_copy = loss * 2.0
    loss_copy.backward(retain_graph=True)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(hidden.grad, expected_grad)
    assert produced.data_ptr() == storage
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss_copy.backward()


def test_gradient_passes_gradcheck_in_float64():
    logits, tgt_out = logits_and_targets(batch=3, steps=5, vocab=6)
    logits = logits.detach().double().reshape(-1, 6).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda z: SmoothedCrossEntropy.apply(z, tgt_out.reshape(-1), 0.2), (logits,)
    )


def test_half_precision_logits_are_scored_in_fp32():
    logits, tgt_out = logits_and_targets()
    loss = sequence_loss(logits.detach().bfloat16().requires_grad_(), tgt_out, 0.1)
    assert loss.dtype == torch.float32
    expected = sequence_loss(logits.detach().bfloat16().float(), tgt_out, 0.1)
    torch.testing.assert_close(loss, expected)


def test_all_padding_gives_zero_loss_and_gradient():
    logits, _ = logits_and_targets()
    tgt_out = torch.full(logits.shape[:2], PAD_ID)
    loss = sequence_loss(logits, tgt_out, 0.1)
    loss.backward()
    assert loss.item() == 0.0
    assert logits.grad.abs().max() == 0


@pytest.mark.parametrize("smoothing", [-0.1, 1.5, "0.1"])
def test_smoothing_outside_0_1_is_refused_before_the_run_writes_anything(
    tiny_prepared, tmp_path, smoothing
):
    """The range is checked once, when the config is typed (TrainerSettings)."""
    cfg = tiny_prepared.corpus.cfg(*TINY_MODEL, "trainer.max_steps=1")
    cfg.trainer.label_smoothing = smoothing
    with pytest.raises(NMTError, match=r"trainer.label_smoothing: expected a number in \[0, 1\]"):
        build_trainer(cfg, tmp_path / "run", data=tiny_prepared.data)
    assert not (tmp_path / "run").exists()
