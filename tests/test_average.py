"""Checkpoint averaging (nmt/average.py: nmt-average, scripts/average_checkpoints.py) and the
trainer's ``keep_last`` / ``keep_every_validation`` / ``average_last``."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from conftest import TINY_MODEL, build_trainer, quote, run_main

from nmt.core.errors import NMTError
from nmt.core.run_dir import newest_step_checkpoints
from nmt.core.settings import load_settings
from nmt.models import checkpoint
from nmt.training.averaging import average_checkpoints
from nmt.training.keeper import keep_newest
from nmt.training.settings import TrainerSettings
from nmt.training.trainer import Trainer

TINY_RUN = [
    *TINY_MODEL,
    "trainer.val_max_sentences=2",
    "trainer.num_attention_plots=0",
]


def fabricated(step: int, weight: torch.Tensor, **extra_model: torch.Tensor) -> dict:
    """A checkpoint-shaped payload: a tied matrix under two names, an integer buffer."""
    model = {
        "embed.weight": weight,
        "out.weight": weight,
        "count": torch.tensor([step]),
        **extra_model,
    }
    return {
        "model": model,
        "optimizer": {"state": {}, "param_groups": []},
        "progress": {"step": step, "minutes": step / 10},
        "config": {"step_was": step},
        "vocab": {"src_model": b"src", "tgt_model": b"tgt"},
    }


def write(path: Path, payload: dict) -> Path:
    checkpoint.save_checkpoint(path, payload)
    return path


def test_the_average_is_the_exact_mean_of_the_weights(tmp_path):
    torch.manual_seed(0)
    a, b, c = (torch.randn(4, 3) for _ in range(3))
    paths = [
        write(tmp_path / f"step{i}.pt", fabricated(i, w, bias=torch.full((2,), float(i))))
        for i, w in enumerate((a, b, c), start=1)
    ]
    out = average_checkpoints(paths)
    expected = ((a.double() + b.double() + c.double()) / 3).float()
    assert torch.equal(out["model"]["embed.weight"], expected)
    assert torch.equal(out["model"]["bias"], torch.full((2,), 2.0))
    assert out["model"]["embed.weight"].dtype == torch.float32
    # a tied matrix stays one tensor; integer buffers, config and progress are the last one's
    assert out["model"]["out.weight"] is out["model"]["embed.weight"]
    assert torch.equal(out["model"]["count"], torch.tensor([3]))
    assert out["progress"] == {"step": 3, "minutes": 0.3} and out["config"] == {"step_was": 3}
    assert out["card"]["averaged_from"] == [str(p) for p in paths]


def test_two_checkpoints_average_to_their_midpoint(tmp_path):
    a = write(tmp_path / "a.pt", fabricated(1, torch.tensor([1.0, 2.0, -3.5])))
    b = write(tmp_path / "b.pt", fabricated(2, torch.tensor([3.0, 0.5, 1.0])))
    out = average_checkpoints([a, b])
    assert out["model"]["embed.weight"].tolist() == [2.0, 1.25, -1.25]


def test_different_shapes_name_the_file_and_key(tmp_path):
    a = write(tmp_path / "a.pt", fabricated(1, torch.zeros(4, 3)))
    b = write(tmp_path / "b.pt", fabricated(2, torch.zeros(4, 3), bias=torch.zeros(2)))
    c = write(tmp_path / "c.pt", fabricated(3, torch.zeros(5, 3)))
    with pytest.raises(
        NMTError, match=r"c\.pt: model key 'embed\.weight' is torch.float32 \(5, 3\)"
    ):
        average_checkpoints([a, c])
    with pytest.raises(NMTError, match=r"b\.pt: model has 'bias', which .*a\.pt lacks"):
        average_checkpoints([a, b])
    with pytest.raises(NMTError, match=r"a\.pt: model lacks 'bias'"):
        average_checkpoints([b, a])


def test_different_vocabularies_are_refused(tmp_path):
    a = write(tmp_path / "a.pt", fabricated(1, torch.zeros(2)))
    other = fabricated(2, torch.zeros(2))
    other["vocab"]["tgt_model"] = b"another"
    b = write(tmp_path / "b.pt", other)
    with pytest.raises(NMTError, match=r"b\.pt: vocab tgt_model differs"):
        average_checkpoints([a, b])


def test_last_k_picks_the_newest_step_checkpoints(tmp_path):
    ckpt_dir = tmp_path / "checkpoints"
    for step in (4, 12, 8, 100):
        write(ckpt_dir / f"step{step:07d}.pt", fabricated(step, torch.full((2,), float(step))))
    for other in ("best.pt", "last.pt", "averaged.pt", "step0000200.pt.tmp"):
        write(ckpt_dir / other, fabricated(999, torch.zeros(2)))
    assert [p.name for p in newest_step_checkpoints(ckpt_dir, 3)] == [
        "step0000008.pt",
        "step0000012.pt",
        "step0000100.pt",
    ]
    result = run_main("nmt.average", f"run_dir={quote(tmp_path)}", "last=2")
    assert result.returncode == 0, result.stderr
    out = checkpoint.load_checkpoint(ckpt_dir / "averaged.pt")
    assert out["card"]["averaged_from"] == [
        str(ckpt_dir / "step0000012.pt"),
        str(ckpt_dir / "step0000100.pt"),
    ]
    assert out["model"]["embed.weight"].tolist() == [56.0, 56.0]
    assert "wrote" in result.stdout

    result = run_main("nmt.average", f"run_dir={quote(tmp_path)}", "last=5")
    assert result.returncode == 2
    assert "4 step checkpoints (stepNNNNNNN.pt), last=5 asked" in result.stderr


def test_ckpts_and_out(tmp_path):
    a = write(tmp_path / "a.pt", fabricated(1, torch.zeros(2)))
    b = write(tmp_path / "b.pt", fabricated(2, torch.ones(2)))
    result = run_main(
        "nmt.average", f"ckpts=[{quote(a)},{quote(b)}]", f"out={quote(tmp_path / 'out' / 'avg.pt')}"
    )
    assert result.returncode == 0, result.stderr
    assert checkpoint.load_checkpoint(tmp_path / "out" / "avg.pt")["model"][
        "embed.weight"
    ].tolist() == [0.5, 0.5]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give either ckpts=[A.pt,B.pt,...] out=PATH, or run_dir=RUN last=K (got neither)"),
        (["ckpts=[a.pt]", "run_dir=.", "last=1"], "(got both)"),
        (["ckpts=[a.pt]"], "ckpts: needs out=PATH"),
        (["ckpts=[a.pt]", "out=x.pt", "last=2"], "last: goes with run_dir=RUN"),
        (["ckpts=[]", "out=x.pt"], "ckpts: expected a file name or a non-empty list [a,b], got []"),
        (["run_dir=."], "run_dir: needs last=K (K >= 1)"),
        (["run_dir=.", "last=0"], "last: expected an integer >= 1 or null; got 0"),
        (["run_dir=.", "last=five"], "last: expected an integer >= 1 or null; got 'five'"),
        (["run_dir=no/such/run", "last=2"], "run_dir: no/such/run/checkpoints: no such directory"),
    ],
)
def test_bad_keys_are_one_line_naming_the_key(args, message):
    result = run_main("nmt.average", *args)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("recent", "keep", "expected", "dropped"),
    [([], 0, [], ["s3"]), (["s1", "s2"], 2, ["s2", "s3"], ["s1"]), (["s1"], 3, ["s1", "s3"], [])],
)
def test_keep_newest(recent, keep, expected, dropped):
    assert keep_newest(recent, "s3", keep) == (expected, dropped)


def test_average_last_needs_its_checkpoints_on_disk(tiny_prepared):
    cfg = tiny_prepared.corpus.cfg(
        "trainer.max_steps=1", "trainer.average_last=3", "trainer.keep_last=2"
    )
    with pytest.raises(
        NMTError, match="trainer.keep_last >= 3 .now 2. or trainer.keep_every_validation"
    ):
        load_settings(TrainerSettings, cfg.trainer, "trainer")
    cfg = tiny_prepared.corpus.cfg("trainer.max_steps=1", "trainer.keep_last=-1")
    with pytest.raises(NMTError, match="trainer.keep_last: expected an integer >= 0"):
        load_settings(TrainerSettings, cfg.trainer, "trainer")


def trainer(tiny_prepared, run_dir: Path, *overrides: str) -> Trainer:
    data = tiny_prepared.data
    cfg = tiny_prepared.corpus.cfg(*TINY_RUN, *overrides, out_dir=data.out_dir)
    return build_trainer(cfg, run_dir, data)


def test_keep_last_and_average_last(tiny_prepared, tmp_path, caplog):
    t = trainer(
        tiny_prepared,
        tmp_path,
        "trainer.max_steps=5",
        "trainer.val_every_steps=1",
        "trainer.keep_best=1",
        "trainer.keep_last=2",
        "trainer.average_last=2",
    )
    with caplog.at_level(logging.INFO, logger="nmt"):
        t.fit()
    ckpt_dir = tmp_path / "checkpoints"
    best = t.progress.best_checkpoints[0][1]
    newest = ["step0000004.pt", "step0000005.pt"]
    assert t.progress.recent_checkpoints == newest
    names = {p.name for p in ckpt_dir.iterdir()}
    assert names == {"last.pt", "best.pt", "averaged.pt", best, *newest}
    averaged = checkpoint.load_checkpoint(ckpt_dir / "averaged.pt")
    assert averaged["card"]["averaged_from"] == [str(ckpt_dir / n) for n in newest]
    assert averaged["progress"]["step"] == 5
    model, _, _, cfg = checkpoint.load_for_inference(ckpt_dir / "averaged.pt")
    assert not model.training and cfg["trainer"]["average_last"] == 2
    parts = [checkpoint.load_checkpoint(ckpt_dir / n)["model"] for n in newest]
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, (parts[0][key] + parts[1][key]) / 2)
    logged = "averaged step0000004.pt … step0000005.pt (trainer.average_last=2); averaged.pt: valid"
    assert logged in caplog.text
    assert "; best.pt: valid BLEU" in caplog.text


def test_keep_every_validation(tiny_prepared, tmp_path):
    t = trainer(
        tiny_prepared,
        tmp_path,
        "trainer.max_steps=3",
        "trainer.val_every_steps=1",
        "trainer.keep_best=1",
        "trainer.keep_every_validation=true",
    )
    t.fit()
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["best.pt", "last.pt", "step0000001.pt", "step0000002.pt", "step0000003.pt"]


def test_a_slim_checkpoint_translates_as_the_full_one_and_is_refused_as_resume(
    tiny_prepared, tiny_checkpoint, tmp_path
):
    """``slim=true``: the weights, config, vocabularies and what the checkpoint says about itself,
    no training state; the same translations and scores (both decoded in fp32, the default
    search.precision=auto on every CPU kind, so the comparison is exact); ``trainer.resume``
    refuses it with one line."""
    from nmt import Translator

    slim = tmp_path / "ship.pt"
    result = run_main(
        "nmt.average", f"ckpts=[{quote(tiny_checkpoint)}]", f"out={quote(slim)}", "slim=true"
    )
    assert result.returncode == 0, result.stderr
    assert f"wrote {slim}: slim (no optimiser, schedule or RNG state)" in result.stdout
    full, shipped = checkpoint.load_checkpoint(tiny_checkpoint), checkpoint.load_checkpoint(slim)
    assert shipped["slim"] is True
    assert not set(shipped) & {"optimizer", "schedule", "scaler", "rng", "world_size"}
    assert shipped["progress"] == {
        k: full["progress"][k] for k in ("step", "minutes", "best_score")
    }
    described = {k: v for k, v in shipped["card"].items() if k not in ("created", "averaged_from")}
    assert described == {k: v for k, v in full["card"].items() if k != "created"}
    assert shipped["card"]["averaged_from"] == [str(tiny_checkpoint)]
    assert shipped["config"] == full["config"]
    assert shipped["format_version"] == full["format_version"] == 2
    assert slim.stat().st_size < tiny_checkpoint.stat().st_size

    sentences = tiny_prepared.data.splits["test"].src_text[:6]
    expected = Translator.from_checkpoint(tiny_checkpoint, device="cpu").translate(sentences)
    got = Translator.from_checkpoint(slim, device="cpu").translate(sentences)
    assert [(t.text, t.score) for t in got] == [(t.text, t.score) for t in expected]
    assert Translator.from_checkpoint(slim, device="cpu").info.step == full["progress"]["step"]

    with pytest.raises(NMTError, match="a slim checkpoint .* cannot be resumed"):
        checkpoint.load_checkpoint(slim, keys=checkpoint.TRAINING_KEYS)
    resumed = run_main(
        "nmt.train",
        *tiny_prepared.corpus.overrides(tiny_prepared.data.out_dir),
        *TINY_RUN,
        "trainer.max_steps=3",
        f"trainer.resume={quote(slim)}",
        f"hydra.run.dir={quote(tmp_path / 'run')}",
    )
    assert resumed.returncode == 2
    assert resumed.stderr.count("\n") == 1 and "Traceback" not in resumed.stderr
    assert "a slim checkpoint" in resumed.stderr and "checkpoints/last.pt" in resumed.stderr
