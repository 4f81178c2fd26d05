"""The model card in every checkpoint, the format version and its migration, ``nmt-info``, and
``nmt-evaluate`` recording its scores in the card."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY_MODEL, build_trainer, prepare, quote, run_main

from nmt.core.errors import NMTError
from nmt.core.paths import VERSION
from nmt.data.pipeline import file_sha256
from nmt.inference.translator import Translator
from nmt.models import card
from nmt.models.checkpoint import load_checkpoint, save_checkpoint

# A checkpoint as nmt wrote it before the card (format 1: 2026-12-07, commit be35723), kept to
# test the migration: a tiny model after 2 steps, its validation, runtime and training state.
FORMAT1 = Path(__file__).parent / "fixtures" / "checkpoint_format1.pt"


def test_a_trained_checkpoint_carries_its_card(tiny_checkpoint, tiny_prepared):
    checkpoint = load_checkpoint(tiny_checkpoint)
    assert checkpoint["format_version"] == card.FORMAT_VERSION == 2
    c = checkpoint["card"]
    assert c["code"]["package"] == "nmt-enko" and c["code"]["version"] == VERSION
    assert re.fullmatch(r"[0-9a-f]{40}", c["code"]["commit"])  # the tests run in a clone
    assert c["code"]["torch"] == str(torch.__version__)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", c["created"])
    data, out_dir = tiny_prepared.data, tiny_prepared.data.out_dir
    assert c["data"]["pairs"] == {split: len(part) for split, part in data.splits.items()}
    assert c["data"]["sha256"]["train"] == file_sha256(Path(out_dir) / "train.pt")
    assert c["data"]["train_pairs_read"] >= c["data"]["pairs"]["train"]
    training = c["training"]
    assert training["steps"] == 2 and training["ranks"] == 1
    # two steps of at most data.batching.max_tokens target tokens each
    assert 0 < training["target_tokens"] <= 2 * tiny_prepared.cfg.data.batching.max_tokens
    assert training["precision"] == "fp32" and training["device"] == "cpu"
    assert training["cpu"]["model"] and training["minutes"] >= 0
    validation = c["validation"]
    assert validation["step"] == 2 and {"loss", "bleu", "chrf"} <= set(validation)
    assert "tok:ko-mecab" in validation["signatures"]["bleu"]
    assert validation["signatures"]["chrf"].startswith("nrefs:1|")
    assert c["best"] == {"metric": "bleu", "score": checkpoint["progress"]["best_score"]}


def test_the_card_counts_every_target_token_trained_on(tiny_prepared, tmp_path):
    cfg = tiny_prepared.corpus.cfg(
        *TINY_MODEL, "trainer.max_steps=3", out_dir=tiny_prepared.data.out_dir
    )
    trainer = build_trainer(cfg, tmp_path, tiny_prepared.data)
    seen = []
    step = trainer.train_step
    trainer.train_step = lambda batches: (
        seen.append(sum(b.num_tgt_tokens for b in batches)) or step(batches)
    )
    trainer.fit()
    assert trainer.model_card()["training"]["target_tokens"] == sum(seen) > 0


def test_a_format1_checkpoint_is_migrated_when_loaded():
    raw = torch.load(FORMAT1, weights_only=True)
    assert "format_version" not in raw and "card" not in raw  # what the fixture holds
    checkpoint = load_checkpoint(FORMAT1)
    assert checkpoint["format_version"] == 2
    assert not {"validation", "runtime", "averaged_from"} & set(checkpoint)
    c = checkpoint["card"]
    assert c["migrated_from_format"] == 1
    assert c["validation"] == raw["validation"]
    assert c["training"]["steps"] == raw["progress"]["step"] == 2
    assert c["training"]["precision"] == raw["runtime"]["precision"]
    assert c["code"]["torch"] == raw["runtime"]["torch"]
    # and it translates as before: the weights, config and vocabularies did not move
    translator = Translator.from_checkpoint(FORMAT1, device="cpu", beam_size=2)
    assert translator.info.card["migrated_from_format"] == 1
    assert translator.translate(["Open the file."])[0].tokens


def test_a_format1_checkpoint_resumes_and_is_written_again_in_format2(corpora_dir, tmp_path):
    """The fixture's run (150 training pairs, 160 + 600 subwords, a TINY_MODEL) continued from its
    step 2 to step 3: the card is written, with the validation the format-1 file had."""
    from conftest import TinyCorpus, _head

    corpus = TinyCorpus(tmp_path / "corpus")
    corpus.root.mkdir()
    for split, lines in (("train", 150), ("valid", 50), ("test", 50)):
        _head(corpora_dir / "enko" / f"{split}.tsv", corpus.root / f"{split}.tsv", lines)
    vocab = ("data.vocab.src_size=160", "data.vocab.tgt_size=600")
    cfg = corpus.cfg(*TINY_MODEL, *vocab, "trainer.max_steps=3", f"trainer.resume={quote(FORMAT1)}")
    data = prepare(cfg.data, seed=cfg.seed, log=lambda _: None)
    trainer = build_trainer(cfg, tmp_path / "run", data)
    trainer.fit()
    assert trainer.checkpoint_path == FORMAT1 and trainer.progress.step == 3  # resumed at 2
    last = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    raw = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert raw["format_version"] == 2 and raw["card"]["training"]["steps"] == 3
    assert last["card"]["training"]["target_tokens"] > 0  # the one step trained here
    assert last["card"]["validation"]["step"] == 3  # validated at the end


def test_a_checkpoint_of_a_newer_format_is_refused_in_one_line(tmp_path):
    path = tmp_path / "future.pt"
    save_checkpoint(path, {**torch.load(FORMAT1, weights_only=True), "format_version": 99})
    with pytest.raises(NMTError) as err:
        load_checkpoint(path)
    assert str(err.value) == (
        f"{path}: checkpoint format 99, written by a newer nmt; this one ({VERSION}) reads "
        "formats 1–2: upgrade nmt-enko to load it"
    )


def test_the_card_text_has_a_heading_per_section():
    text = card.card_text(
        {"code": {"version": "0.1.0", "commit": None}, "created": "2026-12-07T00:00:00Z",
         "training": {"steps": 12000, "minutes": 29.95, "cpu": {"bf16_flags": ["amx_bf16"]}}},
        "best.pt",
    )  # fmt: skip
    assert text.splitlines() == [
        "model card of best.pt",
        "code:",
        "  version: 0.1.0",
        "  commit: —",
        "created: 2026-12-07T00:00:00Z",
        "training:",
        "  steps: 12,000",
        "  minutes: 29.95",
        "  cpu:",
        "    bf16_flags: amx_bf16",
    ]


# ---------------------------------------------------------------------------- nmt-info


def test_nmt_info_prints_the_card_readable_and_as_json(tiny_checkpoint):
    result = run_main("nmt.info", f"ckpt={quote(tiny_checkpoint)}")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert re.fullmatch(
        rf"{re.escape(str(tiny_checkpoint))}: checkpoint, format 2, \d+\.\d MiB", lines[0]
    )
    assert "code:" in lines and "  version: " + VERSION in lines and "  steps: 2" in lines
    assert any(line.startswith("    bleu: nrefs:1|") for line in lines)  # the signatures

    as_json = run_main("nmt.info", f"ckpt={quote(tiny_checkpoint)}", "json=true")
    described = json.loads(as_json.stdout)
    assert described["format_version"] == 2 and described["slim"] is False
    assert described["bytes"] == tiny_checkpoint.stat().st_size
    assert described["card"]["training"]["steps"] == 2
    assert described["config"]["model"]["attention"]["score"] == "concat"


def test_nmt_info_on_a_slim_and_a_format1_checkpoint(tiny_checkpoint, tmp_path):
    slim = tmp_path / "ship.pt"
    made = run_main(
        "nmt.average", f"ckpts=[{quote(tiny_checkpoint)}]", f"out={quote(slim)}", "slim=true"
    )
    assert made.returncode == 0, made.stderr
    result = run_main("nmt.info", f"ckpt={quote(slim)}", "config=true")
    assert result.returncode == 0, result.stderr
    assert ": checkpoint, format 2, slim (no training state), " in result.stdout.splitlines()[0]
    assert f"averaged_from: {tiny_checkpoint}" in result.stdout
    assert "\nconfig:\n" in result.stdout and "  early_stopping_metric: bleu" in result.stdout

    old = run_main("nmt.info", f"ckpt={quote(FORMAT1)}")
    assert old.returncode == 0, old.stderr
    assert old.stdout.startswith(f"{FORMAT1}: checkpoint, format 1, read as format 2, ")
    assert "migrated_from_format: 1" in old.stdout


def test_a_reader_that_leaves_early_ends_the_command_quietly(tiny_checkpoint):
    """``nmt-info … | head -1``: the pipe is closed before the command writes; no traceback."""
    process = subprocess.Popen(
        [sys.executable, "-m", "nmt.info", f"ckpt={tiny_checkpoint}", "config=true"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    process.stdout.close()  # before the interpreter has even started
    _, stderr = process.communicate(timeout=120)
    assert (process.returncode, stderr) == (141, "")


def test_nmt_info_on_a_missing_file_is_one_line(tmp_path):
    result = run_main("nmt.info", f"ckpt={quote(tmp_path / 'nope.pt')}")
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: checkpoint not found: {tmp_path / 'nope.pt'}"


# ---------------------------------------------------------------------------- nmt-evaluate


def test_evaluate_records_a_splits_scores_in_the_card(tiny_checkpoint, tmp_path):
    ckpt = tmp_path / "best.pt"
    shutil.copy(tiny_checkpoint, ckpt)
    result = run_main("nmt.evaluate", f"ckpt={quote(ckpt)}", "split=test", "progress=false")
    assert result.returncode == 0, result.stderr
    assert f"recorded in {ckpt}'s model card as tests.'test greedy'" in result.stdout
    assert "; markup protected" in result.stdout  # nmt-evaluate's default
    entry = load_checkpoint(ckpt)["card"]["tests"]["test greedy"]
    assert entry["lines"] == 50 and entry["search"]["name"] == "greedy"
    assert "tok:ko-mecab" in entry["signatures"]["bleu"] and entry["precision"] == "fp32"
    bleu = re.search(r"bleu_ko-mecab\s+(\d+\.\d\d)", result.stdout).group(1)
    assert f"{entry['bleu']:.2f}" == bleu  # the printed figure

    before = ckpt.read_bytes()
    quiet = run_main(
        "nmt.evaluate", f"ckpt={quote(ckpt)}", "split=test", "progress=false", "record=false"
    )
    assert "not recorded in the model card (record=false)" in quiet.stdout
    assert ckpt.read_bytes() == before


def test_a_better_score_replaces_a_worse_one_of_the_same_setting():
    checkpoint = {"card": {"tests": {"test beam5": {"bleu": 30.0}}}}
    worse = card.with_test_scores(checkpoint, "test beam5", {"bleu": 20.0})
    assert worse["card"]["tests"]["test beam5"]["bleu"] == 30.0
    better = card.with_test_scores(checkpoint, "test beam5", {"bleu": 31.0})
    assert better["card"]["tests"]["test beam5"]["bleu"] == 31.0
    other = card.with_test_scores(checkpoint, "test greedy", {"bleu": 1.0})
    assert set(other["card"]["tests"]) == {"test beam5", "test greedy"}
