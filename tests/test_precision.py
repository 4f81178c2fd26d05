"""Mixed precision on the CPU: choosing it (``auto`` is fp32 on every CPU kind; the CPU's flags
only say whether an explicit bf16 is native), training and decoding under bf16 autocast.  bf16
autocast runs on every x86 CPU (emulated, slower, without AMX or AVX512-BF16), so none of these
tests needs special hardware; the CPU-dependent ones run under each simulated CPU kind
(``cpu_kind``, ``NMT_CPU_FLAGS``) and, in CI, once more as a whole under each kind."""

from __future__ import annotations

import copy
import logging
import math

import pytest
import torch
from conftest import TINY_MODEL, best, build_model, build_trainer
from test_search import (  # noqa: F401 (vocabs is a fixture)
    LINES,
    SETUPS,
    SRC_VOCAB,
    TGT_VOCAB,
    model_cfg,
    pad,
    search_cfg,
    toy_pairs,
    train_briefly,
    vocabs,
)

from nmt.core.errors import NMTError
from nmt.core.runtime import (
    CPU_FLAGS_ENV,
    CPU_KINDS,
    autocast_context,
    cpu_flags,
    cpu_summary,
    parse_cpu_flags,
    real_cpu_flags,
    resolve_precision,
)
from nmt.inference.search import SearchSettings, beam_search, decode_ids, greedy_search
from nmt.models.loss import sequence_loss

pytestmark = pytest.mark.cpu_dependent

CPU = torch.device("cpu")
# /proc/cpuinfo excerpts: an AMD EPYC without AVX-512, a Sapphire Rapids, a Zen 4
ZEN3 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse sse2 avx avx2 fma f16c\n"
SAPPHIRE_RAPIDS = "flags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n"
ZEN4 = "flags\t\t: fpu avx2 avx512f avx512bw avx512_bf16 avx512_vnni\n"


# --------------------------------------------------------------------------------------------
# Choosing the precision


def test_cpu_flags_are_read_from_the_flags_line():
    assert parse_cpu_flags(ZEN3) == {"fpu", "sse", "sse2", "avx", "avx2", "fma", "f16c"}
    assert "amx_bf16" in parse_cpu_flags(SAPPHIRE_RAPIDS)
    assert parse_cpu_flags("processor : 0\n") == frozenset()


@pytest.mark.parametrize("cpuinfo", [ZEN3, SAPPHIRE_RAPIDS, ZEN4], ids=["zen3", "spr", "zen4"])
@pytest.mark.parametrize("key", ["trainer.precision", "search.precision"])
def test_auto_is_fp32_on_every_cpu(cpuinfo, key):
    precision = resolve_precision("auto", CPU, key, flags=parse_cpu_flags(cpuinfo))
    assert precision.name == "fp32"
    assert precision.reason.startswith(f"{key}=auto: fp32 on every device")
    assert resolve_precision("auto", torch.device("cuda"), key).name == "fp32"


def test_explicit_precisions_are_kept_and_bf16_says_whether_it_is_native():
    flags = parse_cpu_flags(ZEN3)
    assert resolve_precision("fp32", CPU, flags=flags).name == "fp32"
    bf16 = resolve_precision("bf16", CPU, flags=flags)
    assert bf16.name == "bf16" and "emulated" in bf16.reason
    assert resolve_precision("bf16", CPU, flags=parse_cpu_flags(ZEN4)).reason == (
        "trainer.precision=bf16 (native: the CPU has avx512_bf16)"
    )
    spr = resolve_precision("bf16", CPU, "search.precision", parse_cpu_flags(SAPPHIRE_RAPIDS))
    assert spr.reason == "search.precision=bf16 (native: the CPU has amx_bf16, avx512_bf16)"


def test_nmt_cpu_flags_stands_in_for_the_cpu(monkeypatch):
    monkeypatch.delenv(CPU_FLAGS_ENV, raising=False)
    assert cpu_flags() == real_cpu_flags() and cpu_summary()["simulated"] is None
    monkeypatch.setenv(CPU_FLAGS_ENV, "avx512_bf16")
    assert cpu_flags() == CPU_KINDS["avx512_bf16"]
    assert cpu_summary()["bf16_flags"] == ["avx512_bf16"]
    assert cpu_summary()["simulated"] == "avx512_bf16"
    monkeypatch.setenv(CPU_FLAGS_ENV, "avx2, fma amx_bf16")  # a list, commas or spaces
    assert cpu_flags() == {"avx2", "fma", "amx_bf16"}
    assert "native" in resolve_precision("bf16", CPU).reason
    monkeypatch.setenv(CPU_FLAGS_ENV, "avx2")
    assert "emulated" in resolve_precision("bf16", CPU).reason


def test_each_simulated_kind_is_what_the_runs_see(cpu_kind):
    """The fixture itself: the kind's flags reach the project, bf16 is native exactly where the
    kind has bf16 units, and auto stays fp32."""
    assert cpu_flags() == CPU_KINDS[cpu_kind]
    native = "native" in resolve_precision("bf16", CPU).reason
    assert native == (cpu_kind != "avx2")
    assert resolve_precision("auto", CPU).name == "fp32"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("fp16", "search.precision=fp16 needs CUDA; use bf16 or fp32 on cpu"),
        ("half", "search.precision: expected one of auto, fp32, bf16, fp16; got 'half'"),
    ],
)
def test_bad_precisions_name_the_key(value, message):
    with pytest.raises(NMTError) as err:
        resolve_precision(value, CPU, "search.precision")
    assert str(err.value) == message


def test_autocast_context_is_cpu_bf16_autocast():
    linear = torch.nn.Linear(4, 4)
    with autocast_context("bf16", CPU):
        assert linear(torch.randn(2, 4)).dtype == torch.bfloat16
    with autocast_context("fp32", CPU):
        assert linear(torch.randn(2, 4)).dtype == torch.float32


# --------------------------------------------------------------------------------------------
# Training under bf16


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("setup", SETUPS, ids=["-".join(map(str, s)) for s in SETUPS])
def test_bf16_loss_and_gradients_are_close_to_fp32(setup, layers):
    """One batch through every decoder style and RNN type (LSTM included: oneDNN's bf16 LSTM
    does not build on CPUs without AVX-512, so the recurrences run in fp32), 1 and 2 layers."""
    torch.manual_seed(0)
    cfg = model_cfg(*setup)
    cfg.encoder.num_layers = cfg.decoder.num_layers = layers
    model = build_model(cfg, SRC_VOCAB, TGT_VOCAB)
    pairs = toy_pairs(16, torch.Generator().manual_seed(3))
    src, src_lengths = pad([s for s, _ in pairs])
    tgt, _ = pad([[1] + t + [2] for _, t in pairs])  # <s> … </s>

    def loss_and_grads(precision: str) -> tuple[float, torch.Tensor]:
        model.zero_grad()
        with autocast_context(precision, CPU):
            logits = model(src, src_lengths, tgt[:, :-1]).logits
            loss = sequence_loss(logits, tgt[:, 1:], 0.1)
        assert loss.dtype == torch.float32  # the loss is computed in fp32
        loss.backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        return loss.item(), grads

    loss32, grads32 = loss_and_grads("fp32")
    loss16, grads16 = loss_and_grads("bf16")
    assert math.isfinite(loss16) and torch.isfinite(grads16).all()
    assert loss16 == pytest.approx(loss32, rel=1e-2)
    cosine = torch.nn.functional.cosine_similarity(grads16, grads32, dim=0)
    assert cosine > 0.99, cosine


def test_trainer_steps_under_bf16_on_the_cpu_and_logs_why(tiny_prepared, tmp_path, caplog):
    cfg = tiny_prepared.corpus.cfg(
        *TINY_MODEL,
        "optim.scheduler=none",
        "optim.lr=1e-2",
        "optim.warmup_steps=0",  # train_step takes the schedule's lr: 1e-2 from step 1
        "trainer.max_steps=20",
        "trainer.precision=bf16",
    )
    with caplog.at_level(logging.INFO, logger="nmt"):
        trainer = build_trainer(cfg, tmp_path, data=tiny_prepared.data)
    assert trainer.precision.name == "bf16"
    assert any(r.getMessage().startswith("precision: bf16 (") for r in caplog.records)
    batch = next(iter(tiny_prepared.data.batcher("train", 512, 1, 0, shuffle=False).epoch(0)))
    fp32_model = copy.deepcopy(trainer.model)
    with torch.no_grad():
        out = fp32_model(batch.src, batch.src_lengths, batch.tgt_in)
        loss32 = sequence_loss(out.logits, batch.tgt_out, cfg.trainer.label_smoothing).item()
    losses = [trainer.train_step([batch]).loss_per_token for _ in range(15)]
    assert all(math.isfinite(loss) for loss in losses), losses
    # dropout makes the first step's loss a sample around the fp32 value
    assert losses[0] == pytest.approx(loss32 / batch.num_tgt_tokens, rel=0.05)
    assert losses[-1] < 0.8 * losses[0], losses


def test_auto_precision_is_logged_with_its_reason(tiny_prepared, tmp_path, caplog, cpu_kind):
    cfg = tiny_prepared.corpus.cfg(*TINY_MODEL, "trainer.max_steps=1")
    assert cfg.trainer.precision == "auto"  # the default
    with caplog.at_level(logging.INFO, logger="nmt"):
        trainer = build_trainer(cfg, tmp_path, data=tiny_prepared.data)
    expected = resolve_precision("auto", CPU)
    assert trainer.precision == expected and expected.name == "fp32"  # on every CPU kind
    assert f"precision: {expected.name} ({expected.reason})" in caplog.messages
    runtime = trainer.checkpoint_payload()["card"]["training"]  # what the checkpoint records
    assert runtime["precision"] == "fp32" and runtime["precision_reason"] == expected.reason
    assert runtime["cpu"]["simulated"] == cpu_kind and runtime["device"] == "cpu"


# --------------------------------------------------------------------------------------------
# Decoding under bf16


@pytest.fixture(scope="module", params=SETUPS, ids=["-".join(map(str, s)) for s in SETUPS])
def trained(request):
    torch.manual_seed(1234)
    net = build_model(model_cfg(*request.param), SRC_VOCAB, TGT_VOCAB)
    train_briefly(net)
    return net


@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_bf16_search_mostly_agrees_with_fp32(trained, search):
    src, src_lengths = pad([s for s, _ in toy_pairs(32, torch.Generator().manual_seed(7))])

    def run():
        if search == "greedy":
            return best(greedy_search(trained, src, src_lengths, 1.5, 3))
        return best(beam_search(trained, src, src_lengths, 3, 1.0, 1.5, 3))

    fp32 = run()
    with autocast_context("bf16", CPU):
        bf16 = run()
    same = [a.tokens == b.tokens for a, b in zip(fp32, bf16, strict=True)]
    assert sum(same) >= 28, sum(same)  # measured: 31-32 of 32 for every setup
    for a, b, equal in zip(fp32, bf16, same, strict=True):
        assert math.isfinite(b.log_prob) and b.attn_weights.dtype == torch.float32
        if equal:
            assert b.log_prob == pytest.approx(a.log_prob, abs=0.05)  # measured ≤ 0.027


def test_decoding_applies_search_precision(trained, vocabs):  # noqa: F811
    seen: list[torch.dtype] = []
    hook = trained.output_proj.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    try:
        for precision, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
            seen.clear()
            cfg = search_cfg("beam")
            cfg.precision = precision
            settings = SearchSettings.from_config(cfg)
            nbest = decode_ids(trained, vocabs[0].encode(LINES), settings)
            assert set(seen) == {dtype}
            assert all(hyps and math.isfinite(hyps[0].log_prob) for hyps in nbest)
    finally:
        hook.remove()


def test_evaluate_reports_the_precision_it_decoded_in(tiny_checkpoint, tmp_path, cpu_kind):
    """``nmt-evaluate``'s table and JSON say what produced the text: fp32 by default on every
    CPU kind, bf16 when asked (native or emulated as the kind says)."""
    import json

    from conftest import quote, run_main

    for precision in ("auto", "bf16"):
        report = tmp_path / f"{precision}.json"
        result = run_main(
            "nmt.evaluate",
            f"ckpt={quote(tiny_checkpoint)}",
            "split=test",
            f"search.precision={precision}",
            f"json={quote(report)}",
        )
        assert result.returncode == 0, result.stderr
        decoding = json.loads(report.read_text())["systems"][0]["decoding"]
        expected = "fp32" if precision == "auto" else "bf16"
        assert decoding["precision"] == expected
        assert f"decoded in {expected} ({decoding['precision_reason']})" in result.stdout
        assert decoding["cpu"]["simulated"] == cpu_kind
        if precision == "bf16":
            assert ("emulated" in decoding["precision_reason"]) == (cpu_kind == "avx2")
