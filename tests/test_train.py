"""Training end to end on the tiny corpus: what a run leaves behind, resume, limits, failures.

Runs go through ``nmt.train``'s real entry point in this process (``run_main``), or through
:class:`nmt.training.trainer.Trainer` with a cut-down train split where only the loop is under test.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import shutil
from pathlib import Path

import pytest
import torch
from conftest import TINY_MODEL, build_trainer, quote, run_main
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from nmt.core.errors import NMTError
from nmt.models import checkpoint
from nmt.training import step as training_step
from nmt.training import trainer
from nmt.training.keeper import rank_checkpoints
from nmt.training.trainer import Trainer

TINY_CONCAT = [
    *TINY_MODEL,
    "model/attention=concat",
    "model.attention.hidden_size=16",
    # the schedule these tests' learning-rate assertions expect (the default recipe warms up)
    "optim.lr=5e-4",
    "optim.scheduler=plateau",
    "optim.warmup_steps=0",
]
CHEAP_VALIDATION = ["trainer.val_max_sentences=2", "trainer.num_attention_plots=0"]
DROPOUT = ["model.encoder.dropout=0.3", "model.decoder.dropout=0.3"]


def train_args(tiny_prepared, run_dir: Path, *overrides: str) -> list[str]:
    """Command-line arguments of ``nmt.train`` on the prepared tiny corpus, writing to ``run_dir``."""
    return [
        *tiny_prepared.corpus.overrides(tiny_prepared.data.out_dir),
        *TINY_CONCAT,
        f"hydra.run.dir={quote(run_dir)}",
        *overrides,
    ]


def train_main(tiny_prepared, run_dir: Path, *overrides: str):
    result = run_main("nmt.train", *train_args(tiny_prepared, run_dir, *overrides))
    return result


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_parameters(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6), name


# ------------------------------------------------------------------------------ a short run


@pytest.fixture(scope="module")
def short_run(tiny_prepared, tmp_path_factory) -> Path:
    """4 steps, validating every 2 on the whole valid split, with one attention heat map."""
    run_dir = tmp_path_factory.mktemp("short_run")
    result = train_main(
        tiny_prepared,
        run_dir,
        "trainer.max_steps=4",
        "trainer.val_every_steps=2",
        "trainer.log_every_steps=1",
        "trainer.num_attention_plots=1",
    )
    assert result.returncode == 0, result.stderr
    return run_dir


def test_short_run_leaves_checkpoints_and_tensorboard_events(short_run):
    ckpt_dir = short_run / "checkpoints"
    names = sorted(p.name for p in ckpt_dir.iterdir())
    assert names == ["best.pt", "last.pt", "step0000002.pt", "step0000004.pt"]
    assert not list(short_run.rglob("*.tmp"))
    assert "stopped at step 4: trainer.max_steps=4 reached" in (short_run / "train.log").read_text()

    events = EventAccumulator(
        str(short_run / "tensorboard"),
        size_guidance={"scalars": 0, "images": 0, "tensors": 0, "histograms": 0},
    )
    events.Reload()
    tags = events.Tags()
    for name in ("loss", "perplexity", "lr", "grad_norm", "tokens_per_s", "tokens_per_step"):
        assert [e.step for e in events.Scalars(f"train/{name}")] == [1, 2, 3, 4], name
    for name in ("loss", "perplexity", "bleu", "chrf"):
        assert [e.step for e in events.Scalars(f"valid/{name}")] == [2, 4], name
    assert "valid/samples/text_summary" in tags["tensors"]
    assert "attention/valid_0" in tags["images"]
    assert "attention/valid_1" not in tags["images"]  # trainer.num_attention_plots=1
    # the hyper-parameters beside the final metrics (add_hparams writes into the same folder)
    hparams = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(hparams["_hparams_/session_start_info"])
    assert start.session_start_info.hparams["model.decoder.style"].string_value == "luong"
    assert [e.value for e in events.Scalars("hparam/bleu")] == [
        events.Scalars("valid/bleu")[-1].value
    ]
    loss = events.Scalars("train/loss")[0].value
    assert events.Scalars("train/perplexity")[0].value == pytest.approx(math.exp(loss), rel=1e-5)
    assert events.Scalars("train/lr")[0].value == pytest.approx(5e-4)


def test_checkpoint_loads_safely_and_holds_the_run(short_run, tiny_prepared):
    ckpt = load(short_run / "checkpoints" / "last.pt")  # weights_only: no pickled code runs
    assert set(ckpt) >= {"model", "optimizer", "schedule", "rng", "progress", "config", "vocab"}
    assert ckpt["progress"]["step"] == 4
    assert ckpt["config"]["model"]["decoder"]["hidden_size"] == 16
    assert ckpt["config"]["trainer"]["max_steps"] == 4
    assert set(ckpt["rng"]) >= {"python", "torch"}
    data = tiny_prepared.data
    assert ckpt["vocab"]["src_model"] == data.src_vocab.model_bytes()
    assert ckpt["vocab"]["tgt_model"] == data.tgt_vocab.model_bytes()
    model, src_vocab, tgt_vocab, _ = checkpoint.load_for_inference(
        short_run / "checkpoints/best.pt"
    )
    assert not model.training
    assert len(tgt_vocab) == len(data.tgt_vocab)
    best = load(short_run / "checkpoints" / "best.pt")
    ranked = best["progress"]["best_checkpoints"]
    assert f"step{best['progress']['step']:07d}.pt" == ranked[0][1]


def test_validation_and_evaluate_give_the_same_scores(short_run, tiny_prepared, tmp_path):
    last = json.loads((short_run / "validations.jsonl").read_text().splitlines()[-1])
    assert last["step"] == 4

    # the hypotheses validation wrote, scored by the evaluate command line
    hyps = short_run / "valid_hypotheses.txt"
    refs = tiny_prepared.data.out_dir / "valid.ko"
    report = tmp_path / "hyp.json"
    result = run_main(
        "nmt.evaluate", f"hyp={quote(hyps)}", f"ref={quote(refs)}", f"json={quote(report)}"
    )
    assert result.returncode == 0, result.stderr
    scores = json.loads(report.read_text())["systems"][0]["scores"]
    assert scores == last["scores"]

    # decoding the valid split again from the checkpoint of that validation, with the markup
    # translated as text, as validation does (nmt-evaluate protects it by default)
    report = tmp_path / "ckpt.json"
    ckpt = short_run / "checkpoints" / "last.pt"
    args = [f"ckpt={quote(ckpt)}", "split=valid", "search=greedy", f"json={quote(report)}"]
    args.append("markup=false")
    result = run_main("nmt.evaluate", *args)
    assert result.returncode == 0, result.stderr
    system = json.loads(report.read_text())["systems"][0]
    assert system["scores"] == last["scores"]
    assert system["degeneracy"]["max_len_rate"] == last["diagnostics"]["max_len_rate"]


def test_evaluate_decodes_the_test_split_of_a_checkpoint(short_run, tmp_path):
    out = tmp_path / "test.hyp"
    ckpt = short_run / "checkpoints" / "best.pt"
    args = [f"ckpt={quote(ckpt)}", "split=test", "search=greedy", f"out={quote(out)}"]
    result = run_main("nmt.evaluate", *args)
    assert result.returncode == 0, result.stderr
    assert "bleu_ko-mecab" in result.stdout
    assert len(out.read_text(encoding="utf-8").splitlines()) == 50  # one per test pair


# ------------------------------------------------------------------------------ resume


@pytest.fixture(scope="module")
def half_run(tiny_prepared, tmp_path_factory) -> Path:
    """2 of 4 steps with dropout; tests copy the folder before resuming it."""
    run_dir = tmp_path_factory.mktemp("half_run")
    args = [*DROPOUT, *CHEAP_VALIDATION, "trainer.max_steps=2", "trainer.val_every_steps=2"]
    result = train_main(tiny_prepared, run_dir, *args)
    assert result.returncode == 0, result.stderr
    return run_dir


def test_resume_continues_exactly_as_a_straight_run(half_run, tiny_prepared, tmp_path, monkeypatch):
    common = [*DROPOUT, *CHEAP_VALIDATION, "trainer.max_steps=4", "trainer.val_every_steps=2"]
    straight = tmp_path / "straight"
    assert train_main(tiny_prepared, straight, *common).returncode == 0

    resumed = tmp_path / "resumed"
    shutil.copytree(half_run, resumed)
    result = train_main(tiny_prepared, resumed, *common, "trainer.resume=true")
    assert result.returncode == 0, result.stderr
    assert "resumed from" in (resumed / "train.log").read_text()

    expected = load(straight / "checkpoints" / "last.pt")
    got = load(resumed / "checkpoints" / "last.pt")
    assert got["progress"]["step"] == expected["progress"]["step"] == 4
    assert got["progress"]["batches_in_epoch"] == expected["progress"]["batches_in_epoch"]
    assert_same_parameters(got["model"], expected["model"])

    # the comparison can fail: without the RNG states the dropout masks differ
    no_rng = tmp_path / "no_rng"
    shutil.copytree(half_run, no_rng)
    monkeypatch.setattr(trainer, "set_rng_state", lambda state: None)
    assert train_main(tiny_prepared, no_rng, *common, "trainer.resume=true").returncode == 0
    model = load(no_rng / "checkpoints" / "last.pt")["model"]
    assert not all(torch.allclose(model[k], expected["model"][k], atol=1e-6) for k in model)


def test_resume_takes_training_settings_from_the_command_line(half_run, tiny_prepared, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(half_run, run_dir)
    result = train_main(
        tiny_prepared,
        run_dir,
        *DROPOUT,
        *CHEAP_VALIDATION,
        "trainer.max_steps=3",
        f"trainer.resume={quote(run_dir / 'checkpoints' / 'last.pt')}",
        "optim.lr=0.002",
        "model.decoder.hidden_size=32",
    )
    assert result.returncode == 0, result.stderr
    log = (run_dir / "train.log").read_text()
    assert "optim.lr differs (checkpoint 0.0005, given 0.002): using the command line value" in log
    assert (
        "model.decoder.hidden_size differs (checkpoint 16, given 32): using the checkpoint value"
        in log
    )
    ckpt = load(run_dir / "checkpoints" / "last.pt")
    assert ckpt["progress"]["step"] == 3
    assert ckpt["config"]["model"]["decoder"]["hidden_size"] == 16
    recurrent = [
        v for k, v in ckpt["model"].items() if k.startswith("decoder") and "weight_hh" in k
    ]
    assert recurrent and all(w.shape[-1] == 16 for w in recurrent)  # (gates × hidden, hidden)
    assert ckpt["config"]["optim"]["lr"] == 0.002
    assert [g["lr"] for g in ckpt["optimizer"]["param_groups"]] == [0.002]


def test_resume_from_a_missing_checkpoint_is_one_line(tiny_prepared, tmp_path):
    missing = tmp_path / "nowhere" / "last.pt"
    result = train_main(
        tiny_prepared, tmp_path / "run", "trainer.max_steps=1", f"trainer.resume={quote(missing)}"
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: trainer.resume: no checkpoint at {missing}"

    result = train_main(
        tiny_prepared, tmp_path / "fresh", "trainer.max_steps=1", "trainer.resume=true"
    )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "hydra.run.dir=" in result.stderr


# ------------------------------------------------------------------------------ non-finite losses


def nan_for_first(calls: int, monkeypatch) -> None:
    """Make the first ``calls`` training losses NaN."""
    real = training_step.sequence_loss
    count = {"n": 0}

    def loss(*args, **kwargs):
        count["n"] += 1
        value = real(*args, **kwargs)
        return value * math.nan if count["n"] <= calls else value

    monkeypatch.setattr(training_step, "sequence_loss", loss)


def test_nonfinite_losses_are_skipped_with_a_warning(tiny_prepared, tmp_path, monkeypatch):
    nan_for_first(2, monkeypatch)
    args = [*CHEAP_VALIDATION, "trainer.max_steps=2", "trainer.max_nonfinite_steps=3"]
    result = train_main(tiny_prepared, tmp_path, *args)
    assert result.returncode == 0, result.stderr
    log = (tmp_path / "train.log").read_text()
    assert log.count("non-finite loss or gradient (loss nan); step skipped") == 2
    ckpt = load(tmp_path / "checkpoints" / "last.pt")
    assert ckpt["progress"]["step"] == 2
    assert all(torch.isfinite(p).all() for p in ckpt["model"].values())


def test_nonfinite_losses_in_a_row_stop_the_run(tiny_prepared, tmp_path, monkeypatch):
    nan_for_first(10**6, monkeypatch)
    args = [*CHEAP_VALIDATION, "trainer.max_steps=5", "trainer.max_nonfinite_steps=3"]
    result = train_main(tiny_prepared, tmp_path, *args)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (  # the line after the progress bar
        "error: the loss or gradient was non-finite for 3 steps in a row "
        "(trainer.max_nonfinite_steps); lower optim.lr or set optim.clip_grad_norm"
    )
    assert not (tmp_path / "checkpoints").exists()


# ------------------------------------------------------------------------------ limits


@pytest.fixture
def small_trainer(tiny_prepared, small_data, tmp_path):
    """A Trainer over the first 40 training pairs (5 batches per epoch), validating 2 sentences."""

    def make(*overrides: str, run_dir: Path = tmp_path) -> Trainer:
        cfg = tiny_prepared.corpus.cfg(
            *TINY_CONCAT, *CHEAP_VALIDATION, *overrides, out_dir=small_data.out_dir
        )
        return build_trainer(cfg, run_dir, small_data)

    return make


@pytest.mark.parametrize(
    ("limit", "steps"),
    [("trainer.max_steps=3", 3), ("trainer.max_epochs=2", None), ("trainer.max_minutes=2.5", 3)],
)
def test_each_limit_stops_the_run(small_trainer, limit, steps, caplog, monkeypatch):
    # a clock that advances one minute per step
    monkeypatch.setattr(Trainer, "elapsed_minutes", lambda self: float(self.progress.step))
    t = small_trainer(limit, "trainer.val_every_steps=1000")
    expected = steps if steps is not None else 2 * t.batcher.num_batches()
    with caplog.at_level(logging.INFO, logger="nmt"):
        t.fit()
    assert t.progress.step == expected
    assert f"stopped at step {expected}: {limit} reached" in caplog.text
    assert t.last_validated_step == expected  # the final state is validated and saved
    assert load(t.run_dir / "checkpoints" / "last.pt")["progress"]["step"] == expected
    if limit.startswith("trainer.max_epochs"):
        assert (t.progress.epoch, t.progress.batches_in_epoch) == (2, 0)


@pytest.mark.parametrize("stop", [2, 3], ids=["at-epoch-end", "inside-epoch"])
def test_resume_continues_with_the_next_batches(small_trainer, tmp_path, monkeypatch, stop):
    """5 batches per epoch, 2 per step: epochs of 2 steps (the fifth batch is left over)."""
    seen: list[list[list[int]]] = []
    real_step = Trainer.train_step

    def recording_step(self, batches):
        seen.append([b.indices for b in batches])
        return real_step(self, batches)

    monkeypatch.setattr(Trainer, "train_step", recording_step)
    common = ("trainer.accum_steps=2", "trainer.val_every_steps=1000")
    straight = small_trainer(*common, "trainer.max_epochs=2", run_dir=tmp_path / "straight")
    assert straight.batcher.num_batches() == 5
    straight.fit()
    expected, seen[:] = seen[:], []

    small_trainer(*common, f"trainer.max_steps={stop}", run_dir=tmp_path / "split").fit()
    last = tmp_path / "split" / "checkpoints" / "last.pt"
    resumed = small_trainer(*common, "trainer.max_epochs=2", f"trainer.resume={quote(last)}")
    resumed.fit()
    assert len(expected) == 4
    assert seen == expected
    assert resumed.progress.step == 4


def test_early_stopping_after_patience_validations(small_trainer, caplog):
    # lr 0: the valid loss never improves after the first validation
    t = small_trainer(
        "optim.lr=0",
        "optim.min_lr=0",
        "trainer.early_stopping_metric=loss",
        "trainer.early_stopping_patience=2",
        "trainer.val_every_steps=1",
        "trainer.max_steps=50",
    )
    with caplog.at_level(logging.INFO, logger="nmt"):
        t.fit()
    assert t.progress.step == 3
    assert "early stopping: valid loss did not improve for 2 validations" in caplog.text


def test_a_new_early_stopping_metric_on_resume_starts_afresh(small_trainer, tmp_path):
    small_trainer("trainer.max_steps=2", "trainer.val_every_steps=1", run_dir=tmp_path / "a").fit()
    last = tmp_path / "a" / "checkpoints" / "last.pt"
    assert load(last)["progress"]["best_score"] == 0.0  # BLEU of an untrained model
    t = small_trainer(
        f"trainer.resume={quote(last)}",
        "optim.lr=0",
        "optim.min_lr=0",
        "trainer.early_stopping_metric=loss",
        "trainer.early_stopping_patience=2",
        "trainer.val_every_steps=1",
        "trainer.max_steps=50",
        run_dir=tmp_path / "a",
    )
    t.fit()
    # step 3 sets the first loss to beat (BLEU 0.0 is not compared with a loss); 4 and 5 do not
    assert t.progress.step == 5
    assert [n for _, n in t.progress.best_checkpoints] == [
        "step0000003.pt",
        "step0000004.pt",
        "step0000005.pt",
    ]


def test_keep_best_checkpoints_on_disk(small_trainer):
    t = small_trainer(
        "trainer.early_stopping_metric=loss",
        "trainer.keep_best=2",
        "trainer.val_every_steps=1",
        "trainer.max_steps=4",
        "optim.lr=0.01",
    )
    t.fit()
    best = t.progress.best_checkpoints
    assert len(best) == 2 and best[0][0] <= best[1][0]
    ckpt_dir = t.run_dir / "checkpoints"
    assert {p.name for p in ckpt_dir.iterdir()} == {"last.pt", "best.pt"} | {n for _, n in best}
    assert load(ckpt_dir / "best.pt")["progress"]["step"] == int(best[0][1][4:11])


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_rank_checkpoints_keeps_the_best_k(higher_is_better):
    best: list = []
    dropped_all = []
    for step, score in enumerate([3.0, 5.0, 4.0, 5.0, 1.0], start=1):
        best, dropped = rank_checkpoints(best, score, f"s{step}", 2, higher_is_better)
        dropped_all += dropped
    if higher_is_better:  # 5.0 twice: the older one ranks first
        assert best == [(5.0, "s2"), (5.0, "s4")]
        assert dropped_all == ["s1", "s3", "s5"]
    else:
        assert best == [(1.0, "s5"), (3.0, "s1")]
        assert dropped_all == ["s2", "s4", "s3"]


def test_checkpoints_are_written_atomically(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    checkpoint.save_checkpoint(path, {"step": 1})

    def disk_full(payload, file):
        file.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(NMTError) as err:
        checkpoint.save_checkpoint(path, {"step": 2})
    assert str(err.value) == f"{path}: cannot write: No space left on device"
    assert load(path) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_a_bad_value_stops_the_run_before_its_folder_exists(tiny_prepared, tmp_path):
    run_dir = tmp_path / "run"
    result = train_main(tiny_prepared, run_dir, "trainer.max_steps=1", "trainer.accum_steps=0")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: trainer.accum_steps: expected an integer >= 1; got 0"
    assert not run_dir.exists()  # no .hydra/, no train.log: the schema runs before Hydra's job


def test_an_error_during_the_run_is_written_to_train_log_too(tiny_prepared, tmp_path):
    missing = tmp_path / "no_such.pt"
    result = train_main(
        tiny_prepared, tmp_path, "trainer.max_steps=1", f"trainer.resume={quote(missing)}"
    )
    assert result.returncode == 2
    message = f"error: trainer.resume: no checkpoint at {missing}"
    assert result.stderr.strip() == message
    assert message in (tmp_path / "train.log").read_text(encoding="utf-8")


def test_a_run_limited_by_minutes_only_has_a_bar_with_a_total(tiny_prepared, tmp_path):
    result = train_main(
        tiny_prepared,
        tmp_path,
        "trainer.max_minutes=0.05",
        *CHEAP_VALIDATION,
        "trainer.val_every_steps=1000",
    )
    assert result.returncode == 0, result.stderr
    bar = result.stderr.replace("\r", "\n").strip().splitlines()
    assert any("/0.05 min [" in line and "<" in line for line in bar), result.stderr[-500:]


# ------------------------------------------------------------------------------ local attention


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.attention.type=local"], "error: model.attention.type: expected one of global, "
         "local_m, local_p; got 'local'"),
        (["model.attention.type=local_p", "model.attention.window=0"],
         "error: model.attention.window: expected an integer >= 1 or null; got 0"),
        # local_p's p_t = S·sigmoid(…) uses each sentence's length; location needs its maximum
        (["model/attention=location", "model.attention.type=local_p",
          "~model.attention.max_src_len"], "error: model.attention.max_src_len: missing"),
    ],
)  # fmt: skip
def test_bad_local_attention_settings_are_one_line(tiny_prepared, tmp_path, overrides, message):
    args = [
        *tiny_prepared.corpus.overrides(tiny_prepared.data.out_dir),
        *TINY_MODEL,
        f"hydra.run.dir={quote(tmp_path)}",
        "trainer.max_steps=1",
    ]
    result = run_main("nmt.train", *args, *overrides)
    assert result.returncode == 2
    assert result.stderr.strip() == message
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "checkpoints").exists()


def test_local_p_trains_validates_and_decodes(tiny_prepared, tmp_path):
    """A local_p model through the whole loop: training steps, a validation with search and the
    attention statistics, a checkpoint that loads back as local_p."""
    args = [*CHEAP_VALIDATION, "trainer.max_steps=2", "trainer.val_every_steps=2"]
    local = ["model.attention.type=local_p", "model.attention.window=3"]
    result = train_main(tiny_prepared, tmp_path, *args, *local)
    assert result.returncode == 0, result.stderr
    [record] = [json.loads(line) for line in (tmp_path / "validations.jsonl").open()]
    assert record["step"] == 2 and "attn_entropy" in record["diagnostics"]
    ckpt = load(tmp_path / "checkpoints" / "last.pt")
    assert ckpt["config"]["model"]["attention"]["type"] == "local_p"
    assert "decoder.attention.local.position_hidden.weight" in ckpt["model"]  # W_p


def test_param_init_draws_a_fresh_run_from_the_uniform_and_null_keeps_pytorch_defaults(
    tiny_prepared, tmp_path
):
    data = tiny_prepared.data

    def built(name: str, *overrides: str) -> torch.Tensor:
        cfg = tiny_prepared.corpus.cfg(
            *TINY_CONCAT, "trainer.max_steps=1", *overrides, out_dir=data.out_dir
        )
        model = build_trainer(cfg, tmp_path / name, data).model
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    default = built("default", "trainer.param_init=null")
    uniform = built("uniform", "trainer.param_init=0.05")
    assert uniform.abs().max() <= 0.05
    assert uniform.std().item() == pytest.approx(0.1 / 12**0.5, rel=0.1)  # U(−0.05, 0.05)
    assert default.abs().max() > 0.05  # PyTorch's defaults (N(0, 1) source embeddings)
