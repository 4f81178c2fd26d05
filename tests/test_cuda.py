"""The CUDA paths: the trainer's step under fp32, bf16 and fp16, and a model's outputs and
searches on the GPU against the CPU's.  Skipped where no GPU is present (CI has none)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from conftest import TINY_MODEL, build_model, build_trainer
from test_search import pad, teacher_forced

from nmt.core.special_ids import EOS_ID
from nmt.inference.search import SearchSettings, decode_ids

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

FIT_ONE_BATCH = [
    *TINY_MODEL,
    "optim.scheduler=none",
    "optim.lr=1e-2",
    "optim.warmup_steps=0",  # train_step takes the schedule's lr: 1e-2 from step 1
    "trainer.label_smoothing=0",
    "trainer.max_steps=40",
]


def first_batch(data, max_tokens: int = 512):
    return next(iter(data.batcher("train", max_tokens, 1, 0, shuffle=False).epoch(0)))


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_trainer_step_on_cuda_fits_one_batch(tiny_prepared, tmp_path, precision):
    cfg = tiny_prepared.corpus.cfg(
        *FIT_ONE_BATCH, "trainer.device=cuda", f"trainer.precision={precision}"
    )
    trainer = build_trainer(cfg, tmp_path, data=tiny_prepared.data)
    assert next(trainer.model.parameters()).device.type == "cuda"
    assert trainer.training_step.scaler.is_enabled() == (precision == "fp16")
    batch = first_batch(tiny_prepared.data)
    losses = [trainer.train_step([batch]).loss_per_token for _ in range(40)]
    assert all(math.isfinite(loss) for loss in losses), losses
    assert losses[-1] < 0.7 * losses[0], losses  # fp32 on the CPU: 6.66 → 3.71


def test_cuda_matches_cpu_in_teacher_forcing_and_search(tiny_prepared):
    cfg = tiny_prepared.corpus.cfg(*TINY_MODEL, "search=beam")
    data = tiny_prepared.data
    torch.manual_seed(0)
    cpu_model = build_model(cfg.model, len(data.src_vocab), len(data.tgt_vocab)).eval()
    cuda_model = copy.deepcopy(cpu_model).cuda()
    batch = first_batch(data)
    with torch.no_grad():
        cpu_logits = cpu_model(batch.src, batch.src_lengths, batch.tgt_in).logits
        cuda_batch = batch.to(torch.device("cuda"))
        cuda_logits = cuda_model(cuda_batch.src, cuda_batch.src_lengths, cuda_batch.tgt_in).logits
    torch.testing.assert_close(cuda_logits.cpu(), cpu_logits, atol=5e-3, rtol=5e-3)

    # Beam search on the GPU: each hypothesis's log_prob is what the CPU model gives its tokens
    # (exact up to float error), and most searches pick the same hypothesis; an untrained model
    # has near-ties that the two devices can break differently.
    encoded = data.src_vocab.encode(data.splits["valid"].src_text[:20])
    settings = SearchSettings.from_config(cfg.search)
    on_cpu = decode_ids(cpu_model, encoded, settings, "cpu")
    on_cuda = [nbest[0] for nbest in decode_ids(cuda_model, encoded, settings, "cuda")]
    src, src_lengths = pad([ids + [EOS_ID] for ids in encoded])
    forced = teacher_forced(cpu_model, src, src_lengths, list(range(len(encoded))), on_cuda)
    for hyp, cpu_scores in zip(on_cuda, forced, strict=True):
        assert hyp.log_prob == pytest.approx(float(cpu_scores.log_probs.sum()), rel=1e-4)
    same = sum(a[0].tokens == b.tokens for a, b in zip(on_cpu, on_cuda, strict=True))
    assert same >= 15, f"{same} of 20 beam-5 hypotheses agree between CPU and CUDA"
