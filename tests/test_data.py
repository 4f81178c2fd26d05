"""The data pipeline: reading, cleaning, caching, SentencePiece, batching and recipes.

Bad input must give one clear line naming file:line or the config key, a nonzero exit status and
no half-written output; the command-line tests run ``python -m nmt.prepare`` as a user would.
"""

from __future__ import annotations

import copy
import gzip
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import as_settings, prepare, quote, run_main, run_module
from omegaconf import OmegaConf

from nmt.core.errors import NMTError
from nmt.core.special_ids import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from nmt.data import pipeline
from nmt.data.batching import TokenBatcher
from nmt.data.corpus import (
    CleanReport,
    clean_text,
    length_filter,
    normalize,
    read_aligned,
    read_lines,
    read_tsv,
)
from nmt.data.pipeline import DataSettings, fingerprint
from nmt.data.recipes import RECIPES, run_recipe
from nmt.data.vocab import SHORT_LIST, Vocab

HAN_DECOMPOSED = "\u1112\u1161\u11ab"  # ᄒ + ᅡ + ᆫ, the jamo of 한 (U+D55C)


def write_tsv(path: Path, pairs: list[tuple[str, str]]) -> Path:
    path.write_text("".join(f"{src}\t{tgt}\n" for src, tgt in pairs), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- readers


def test_read_tsv_ignores_extra_columns_and_line_breaks(tmp_path):
    path = tmp_path / "c.tsv"
    path.write_bytes("Hello.\t안녕.\tCC-BY 2.0 (France) #1 #2\r\nBye.\t잘 가.\n".encode())
    assert read_tsv(path) == [("Hello.", "안녕."), ("Bye.", "잘 가.")]


def test_gzip_is_read_transparently(tmp_path):
    pairs = [("One.", "하나."), ("Two.", "둘.")]
    with gzip.open(tmp_path / "c.tsv.gz", "wt", encoding="utf-8") as f:
        f.write("".join(f"{s}\t{t}\n" for s, t in pairs))
    assert read_tsv(tmp_path / "c.tsv.gz") == pairs

    for lang, side in (("en", 0), ("ko", 1)):
        with gzip.open(tmp_path / f"c.{lang}.gz", "wt", encoding="utf-8") as f:
            f.write("".join(p[side] + "\n" for p in pairs))
    assert read_aligned(tmp_path / "c.en.gz", tmp_path / "c.ko.gz") == pairs


def test_read_lines_numbers_lines_from_one(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("first\nsecond\n", encoding="utf-8")
    assert list(read_lines(path)) == [(1, "first"), (2, "second")]


def test_missing_file_is_named(tmp_path):
    path = tmp_path / "nowhere.tsv"
    with pytest.raises(NMTError, match=f"^{re.escape(str(path))}: file not found$"):
        read_tsv(path)


def test_empty_file_is_named(tmp_path):
    path = tmp_path / "empty.tsv"
    path.write_bytes(b"")
    with pytest.raises(NMTError, match=f"^{re.escape(str(path))}: file is empty"):
        read_tsv(path)


def test_line_without_tab_is_named_by_file_and_line(tmp_path):
    path = tmp_path / "c.tsv"
    path.write_text("a\tb\nc\td\nno tab here\ne\tf\n", encoding="utf-8")
    with pytest.raises(
        NMTError, match=f"^{re.escape(str(path))}:3: expected 'english<TAB>korean', found no tab$"
    ):
        read_tsv(path)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_invalid_utf8_is_named_by_file_line_and_column(tmp_path, suffix):
    data = "a\t가\n".encode() + b"bad \xff byte\t\xea\xb0\x80\n"
    path = tmp_path / f"c.tsv{suffix}"
    path.write_bytes(gzip.compress(data) if suffix else data)
    with pytest.raises(
        NMTError, match=f"^{re.escape(str(path))}:2: invalid UTF-8 \\(byte 0xff at column 5\\)$"
    ):
        read_tsv(path)


def test_aligned_files_with_different_line_counts_name_both_files(tmp_path):
    (tmp_path / "c.en").write_text("a\nb\nc\n", encoding="utf-8")
    (tmp_path / "c.ko").write_text("가\n나\n다\n라\n", encoding="utf-8")
    with pytest.raises(NMTError) as err:
        read_aligned(tmp_path / "c.en", tmp_path / "c.ko")
    assert str(err.value) == (
        f"{tmp_path / 'c.ko'}:4: no matching line in {tmp_path / 'c.en'} "
        f"({tmp_path / 'c.en'} has 3 lines, {tmp_path / 'c.ko'} has 4)"
    )


# ------------------------------------------------------------------------- cleaning


def test_normalize_composes_hangul_and_folds_whitespace():
    assert normalize(f" {HAN_DECOMPOSED}국어\t\u00a0 text\u3000 \n") == "한국어 text"
    assert normalize(HAN_DECOMPOSED) == "\ud55c"


def test_clean_text_counts_each_reason():
    pairs = [
        ("a", "가"),
        ("  a ", "가"),  # duplicate once whitespace is folded
        ("a", "\u1100\u1161"),  # duplicate once NFC composes ᄀ + ᅡ into 가
        ("", "나"),  # empty side
        ("b", " \t "),  # empty side once whitespace is folded
        ("c", "다"),
        ("c", "다"),  # exact duplicate
    ]
    report = CleanReport()
    assert clean_text(pairs, dedup=True, report=report) == [("a", "가"), ("c", "다")]
    assert (report.total, report.kept) == (7, 2)
    assert report.dropped == {"empty side": 2, "duplicate": 3}

    report = CleanReport()
    assert len(clean_text(pairs, dedup=False, report=report)) == 5
    assert report.dropped == {"empty side": 2}


def test_length_filter_counts_each_reason():
    def ids(n):
        return [7] * n

    src = [ids(5), ids(11), ids(3), ids(1), ids(10), ids(0)]
    tgt = [ids(5), ids(2), ids(10), ids(3), ids(4), ids(1)]
    report = CleanReport(total=6)
    keep = length_filter(src, tgt, max_len=10, max_ratio=3.0, report=report)
    # 11 > max_len; 10/3 > 3; exactly 3/1 and exactly max_len are kept; an empty side counts as 1
    assert keep == [0, 3, 4, 5]
    assert report.dropped == {"too long": 1, "length ratio": 1}
    assert report.kept == 4


def fabricated_pairs(n: int = 30) -> list[tuple[str, str]]:
    """Distinct pairs of k one-letter words and k one-syllable words (3 ≤ k ≤ 8).

    Every word is one or two subwords whatever SentencePiece learns (``▁a`` or ``▁`` + ``a``),
    so both sides have k..2k subwords: a ratio of at most 2 and at most 16 subwords.
    """
    letters, syllables = "abcdefgh", "가나다라마바사아"
    pairs = []
    for i in range(n):
        rng = random.Random(i)
        picks = [rng.randrange(8) for _ in range(3 + i % 6)]
        pairs.append((" ".join(letters[j] for j in picks), " ".join(syllables[j] for j in picks)))
    assert len(set(pairs)) == n
    return pairs


@pytest.fixture(scope="module")
def dirty_prepared(tmp_path_factory, compose_config):
    """A fabricated corpus with a known number of pairs to drop for each reason."""
    root = tmp_path_factory.mktemp("dirty")
    clean = fabricated_pairs()
    dirty = [
        ("a b c", f"{HAN_DECOMPOSED} 나 다"),  # kept, as NFC 한
        ("a  b\u00a0c ", "한 나  다"),  # duplicate once normalised
        clean[0],  # exact duplicate
        ("a b", "   "),  # empty side
        ("", "가 나"),  # empty side
        (" ".join("a" * 40), " ".join("가" * 40)),  # too long: ≥ 40 subwords > max_len
        ("a", " ".join("가" * 8)),  # length ratio: ≥ 8 / 2 subwords > 3
    ]
    eval_pairs = [
        ("a b", ""),
        ("", "가"),
        (" ".join("a" * 40), "가"),
        ("a  b", f"{HAN_DECOMPOSED}  나"),
        ("a", "가"),
        ("a", "가"),
    ]
    write_tsv(root / "train.tsv", clean + dirty)
    write_tsv(root / "eval.tsv", eval_pairs)
    cfg = compose_config(
        "data=tsv",
        f"data.train={quote(root / 'train.tsv')}",
        f"data.valid={quote(root / 'eval.tsv')}",
        f"data.test={quote(root / 'eval.tsv')}",
        f"data.out_dir={quote(root / 'prepared')}",
        "data.vocab.src_size=20",  # the most this one-letter-word text allows is 21
        "data.vocab.tgt_size=20",
        "data.clean.max_len=30",
        "data.clean.max_ratio=3.0",
    )
    log: list[str] = []
    data = prepare(cfg.data, seed=cfg.seed, log=log.append)
    return data, log, len(clean) + len(dirty), eval_pairs


def test_training_split_drops_known_counts(dirty_prepared):
    data, log, total, _ = dirty_prepared
    report = json.loads((data.out_dir / "clean_report.json").read_text())
    expected = {"empty side": 2, "duplicate": 2, "too long": 1, "length ratio": 1}
    assert report == {**expected, "total": total, "kept": total - 6}
    assert len(data.splits["train"]) == total - 6
    assert "train:   dropped       2  duplicate" in log


def test_training_text_is_nfc_with_folded_whitespace(dirty_prepared):
    data, *_ = dirty_prepared
    train = data.splits["train"]
    assert ("a b c", "한 나 다") in zip(train.src_text, train.tgt_text, strict=True)
    written = (data.out_dir / "train.ko").read_text(encoding="utf-8")
    assert not any("\u1100" <= ch <= "\u11ff" for ch in written)  # no conjoining jamo left
    assert all(line == " ".join(line.split()) for line in train.src_text + train.tgt_text)


def test_valid_and_test_are_normalised_but_never_filtered(dirty_prepared):
    data, log, _, eval_pairs = dirty_prepared
    for name in ("valid", "test"):
        split = data.splits[name]
        assert len(split) == len(split.src_ids) == len(split.tgt_ids) == len(eval_pairs)
        assert split.src_text == [normalize(s) for s, _ in eval_pairs]
        assert split.tgt_text == [normalize(t) for _, t in eval_pairs]
        assert split.tgt_text[3] == "한 나"
        assert f"warning: {name} has 2 pairs with an empty side; they are kept and scored" in log


# --------------------------------------------------------------------------- caching


def test_fingerprint_follows_inputs_and_settings_but_not_batching(tiny_tsv_corpus, tmp_path):
    """Settings and file contents count; out_dir, batching, the corpus' location and mtime do not."""
    c = tiny_tsv_corpus
    cfg = c.cfg()
    key = fingerprint(as_settings(DataSettings, cfg.data))

    def changed(key_path: str, value) -> str:
        other = copy.deepcopy(cfg)
        OmegaConf.update(other, key_path, value)
        return fingerprint(as_settings(DataSettings, other.data))

    assert changed("data.out_dir", str(tmp_path / "elsewhere")) == key
    assert changed("data.batching.max_tokens", 123) == key
    assert changed("data.clean.max_len", 50) != key
    assert changed("data.vocab.model_type", "bpe") != key
    assert changed("data.mask_markup", True) != key
    stat = c.valid.stat()
    os.utime(c.valid, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert fingerprint(as_settings(DataSettings, cfg.data)) == key  # touched, same bytes
    moved = tmp_path / "mirror"
    shutil.copytree(c.valid.parent, moved)
    assert changed("data.valid", str(moved / c.valid.name)) == key  # the same file, copied
    with open(c.valid, "a", encoding="utf-8") as f:
        f.write("one more\t한 줄 더\n")
    assert fingerprint(as_settings(DataSettings, cfg.data)) != key


def test_mask_markup_masks_what_the_model_learns_from_not_the_references(tiny_tsv_corpus, tmp_path):
    from nmt.data.markup import find_spans, mask_pair

    cfg = tiny_tsv_corpus.cfg("data.mask_markup=true", out_dir=tmp_path / "masked")
    data = prepare(as_settings(DataSettings, cfg.data), seed=1, log=lambda _: None)
    raw_train = read_tsv(tiny_tsv_corpus.train)
    assert any(find_spans(s) for s, _ in raw_train)  # the guard: the slice has markup
    train = data.splits["train"]  # masked, as trained on (after cleaning)
    masked_train = {mask_pair(normalize(s), normalize(t)) for s, t in raw_train}
    assert set(zip(train.src_text, train.tgt_text, strict=True)) <= masked_train
    assert any("ZZ1" in s for s in train.src_text) and any("ZZ1" in t for t in train.tgt_text)
    valid = data.splits["valid"]
    assert valid.src_text == [normalize(s) for s, _ in read_tsv(tiny_tsv_corpus.valid)]  # raw
    masked = [mask_pair(s, t) for s, t in zip(valid.src_text, valid.tgt_text, strict=True)]
    assert [ids[:-1] for ids in valid.src_ids] == data.src_vocab.encode([s for s, _ in masked])


class Interrupted(Exception):
    """Stands in for a crash or Ctrl-C in the middle of a build."""


def test_cache_reuses_rebuilds_on_change_and_after_interruption(
    tiny_prepared, tmp_path, monkeypatch
):
    out_dir = tmp_path / "prepared"
    shutil.copytree(tiny_prepared.data.out_dir, out_dir)
    corpus = tiny_prepared.corpus

    log: list[str] = []
    data = prepare(corpus.cfg(out_dir=out_dir).data, log=log.append)
    assert any(line.startswith("reusing prepared data") for line in log)
    assert data.splits["train"].src_ids == tiny_prepared.data.splits["train"].src_ids

    # A changed setting rebuilds; this build dies right after writing the new vocabularies.
    changed = corpus.cfg("data.vocab.tgt_size=900", out_dir=out_dir).data

    def crash(*args, **kwargs):
        raise Interrupted

    monkeypatch.setattr(pipeline, "_encode", crash)
    with pytest.raises(Interrupted):
        prepare(changed, log=log.append)
    assert len(Vocab(out_dir / "spm.ko.model")) == 900  # the vocabulary step had finished
    assert not (out_dir / "manifest.json").exists()
    assert not list(out_dir.glob("*.tmp"))
    monkeypatch.undo()

    log.clear()
    data = prepare(changed, log=log.append)
    assert not any("reusing" in line for line in log)
    assert any(line.startswith("prepared ") for line in log)
    assert len(data.tgt_vocab) == 900
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert manifest["data"]["vocab"]["tgt_size"] == 900

    log.clear()
    prepare(changed, log=log.append)
    assert any(line.startswith("reusing prepared data") for line in log)


def test_an_out_dir_that_cannot_be_created_is_named(tiny_tsv_corpus, tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    with pytest.raises(NMTError, match=r"data.out_dir: cannot create folder .*a_file: File exists"):
        prepare(tiny_tsv_corpus.cfg(out_dir=a_file).data)


def test_concurrent_runs_build_an_out_dir_once(tiny_tsv_corpus, tmp_path, repo_root):
    """Two processes preparing the same out_dir at once: one builds, the other waits and reuses."""
    out_dir = tmp_path / "shared_out"
    env = dict(os.environ, PYTHONPATH=str(repo_root))
    cmd = [sys.executable, "-m", "nmt.prepare", *tiny_tsv_corpus.overrides(out_dir)]
    runs = [
        subprocess.Popen(cmd, cwd=repo_root, env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=300)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    built = [out for out in outputs if "\nprepared " in "\n" + out]
    reused = [out for out in outputs if "reusing prepared data" in out]
    assert (len(built), len(reused)) == (1, 1), outputs
    assert (out_dir / "manifest.json").is_file()


# ----------------------------------------------------------------------- SentencePiece


def assert_special_ids(vocab: Vocab) -> None:
    sp = vocab.sp
    assert (sp.pad_id(), sp.unk_id(), sp.bos_id(), sp.eos_id()) == (PAD_ID, UNK_ID, BOS_ID, EOS_ID)
    assert (PAD_ID, UNK_ID, BOS_ID, EOS_ID) == (0, 1, 2, 3)
    assert vocab.pieces([0, 1, 2, 3]) == ["<pad>", "<unk>", "<s>", "</s>"]


def test_prepared_vocabularies_have_the_fixed_special_ids(tiny_prepared):
    data = tiny_prepared.data
    assert (len(data.src_vocab), len(data.tgt_vocab)) == (500, 800)
    assert data.src_vocab.path != data.tgt_vocab.path
    for vocab in (data.src_vocab, data.tgt_vocab):
        assert_special_ids(vocab)


def test_prepared_ids_end_in_eos_and_targets_start_with_bos(tiny_prepared):
    for split in tiny_prepared.data.splits.values():
        assert len(split.src_ids) == len(split.tgt_ids) == len(split.src_text)
        for src, tgt in zip(split.src_ids, split.tgt_ids, strict=True):
            assert src[-1] == EOS_ID and BOS_ID not in src and EOS_ID not in src[:-1]
            assert tgt[0] == BOS_ID and tgt[-1] == EOS_ID and BOS_ID not in tgt[1:-1]
            assert PAD_ID not in src and PAD_ID not in tgt and EOS_ID not in tgt[:-1]


def test_source_vocabulary_round_trips_training_text(tiny_prepared):
    data = tiny_prepared.data
    text = data.splits["train"].src_text[:50]  # English: character coverage 1.0, no <unk>
    assert data.src_vocab.decode(data.src_vocab.encode(text)) == text


def test_short_and_long_lists_encode_alike(tiny_prepared):
    """Up to SHORT_LIST lines are encoded (decoded) one by one, longer lists by sentencepiece's
    threads."""
    vocab, text = tiny_prepared.data.src_vocab, tiny_prepared.data.splits["train"].src_text
    long = text[: SHORT_LIST + 1]
    assert len(long) == SHORT_LIST + 1
    ids = vocab.encode(long)
    assert ids[:3] == vocab.encode(long[:3])
    assert vocab.decode(ids)[:3] == vocab.decode(ids[:3]) == long[:3]


def test_joint_bpe_vocabulary_is_one_shared_model(tiny_tsv_corpus, tmp_path):
    model_pb2 = pytest.importorskip("sentencepiece.sentencepiece_model_pb2")
    cfg = tiny_tsv_corpus.cfg(
        "data.vocab.joint=true",
        "data.vocab.model_type=bpe",
        "data.vocab.src_size=1000",
        out_dir=tmp_path / "joint",
    )
    data = prepare(cfg.data, seed=cfg.seed, log=lambda line: None)
    assert sorted(p.name for p in data.out_dir.glob("spm*.model")) == ["spm.model"]
    assert data.src_vocab.path == data.tgt_vocab.path == data.out_dir / "spm.model"
    assert len(data.src_vocab) == 1000
    assert_special_ids(data.src_vocab)

    proto = model_pb2.ModelProto()
    proto.ParseFromString(data.src_vocab.model_bytes())
    assert proto.trainer_spec.model_type == model_pb2.TrainerSpec.BPE

    mixed = ["print() 함수"]
    assert data.src_vocab.encode(mixed) == data.tgt_vocab.encode(mixed)
    assert UNK_ID not in data.src_vocab.encode(mixed)[0]  # both scripts are in the one model


# --------------------------------------------------------------------------- batching

MAX_TOKENS = 300


@pytest.fixture(scope="module")
def corpus_ids(tiny_prepared):
    """The tiny training split, plus one source longer than the whole token budget."""
    train = tiny_prepared.data.splits["train"]
    src = [*train.src_ids, [5] * (MAX_TOKENS + 50) + [EOS_ID]]
    tgt = [*train.tgt_ids, [BOS_ID, 5, 6, EOS_ID]]
    return src, tgt


def batcher(corpus_ids, seed=0, **kwargs):
    return TokenBatcher(*corpus_ids, max_tokens=MAX_TOKENS, bucket_width=1, seed=seed, **kwargs)


def epoch_indices(b: TokenBatcher, epoch: int, rank: int = 0, world_size: int = 1):
    return [batch.indices for batch in b.epoch(epoch, rank, world_size)]


def test_padded_batches_fit_the_token_budget(corpus_ids):
    over_long = len(corpus_ids[0]) - 1
    batches = list(batcher(corpus_ids).epoch(0))
    assert len(batches) > 10
    for batch in batches:
        rows = len(batch.indices)
        if batch.indices == [over_long]:
            continue  # a sentence longer than the budget travels alone
        assert rows * batch.src.shape[1] <= MAX_TOKENS
        assert rows * (batch.tgt_out.shape[1] + 1) <= MAX_TOKENS  # <s> y… </s> before the shift
    assert [over_long] in [b.indices for b in batches]


def test_every_sentence_appears_once_per_epoch(corpus_ids):
    b = batcher(corpus_ids)
    for epoch in (0, 1):
        seen = sorted(i for indices in epoch_indices(b, epoch) for i in indices)
        assert seen == list(range(len(corpus_ids[0])))


def test_order_depends_on_seed_and_epoch_only(corpus_ids):
    first = epoch_indices(batcher(corpus_ids, seed=3), 0)
    assert epoch_indices(batcher(corpus_ids, seed=3), 0) == first
    assert epoch_indices(batcher(corpus_ids, seed=3), 1) != first
    assert epoch_indices(batcher(corpus_ids, seed=4), 0) != first


def test_ranks_get_disjoint_equal_shares(corpus_ids):
    b = batcher(corpus_ids)
    for epoch in (0, 1):
        shares = [epoch_indices(b, epoch, rank, world_size=2) for rank in (0, 1)]
        assert len(shares[0]) == len(shares[1]) == b.num_batches(epoch, world_size=2)
        flat = [{i for indices in share for i in indices} for share in shares]
        assert not flat[0] & flat[1]
        every = [tuple(i) for i in epoch_indices(b, epoch)]
        taken = [tuple(i) for share in shares for i in share]
        assert set(taken) <= set(every) and len(every) - len(taken) < 2


def padding_ratio_of(batches) -> float:
    real = padded = 0
    for batch in batches:
        real += batch.num_src_tokens + batch.num_tgt_tokens
        padded += batch.src.numel() + batch.tgt_out.numel()
    return 1 - real / padded


def unsorted_padding_ratio(src, tgt, max_tokens: int, seed: int) -> float:
    """Shuffle, then fill batches under the same budget without sorting by length."""
    order = list(range(len(src)))
    random.Random(seed).shuffle(order)
    real = padded = 0
    batch: list[int] = []
    for i in [*order, None]:
        longest = max((max(len(src[j]), len(tgt[j])) for j in batch), default=0)
        if batch and (
            i is None or (len(batch) + 1) * max(longest, len(src[i]), len(tgt[i])) > max_tokens
        ):
            src_lens = [len(src[j]) for j in batch]
            tgt_lens = [len(tgt[j]) - 1 for j in batch]
            real += sum(src_lens) + sum(tgt_lens)
            padded += len(batch) * (max(src_lens) + max(tgt_lens))
            batch = []
        if i is not None:
            batch.append(i)
    return 1 - real / padded


def test_bucketing_pads_less_than_an_unsorted_shuffle(corpus_ids):
    b = batcher(corpus_ids)
    bucketed = b.padding_ratio(0)
    assert padding_ratio_of(b.epoch(0)) == pytest.approx(bucketed)
    unsorted = unsorted_padding_ratio(*corpus_ids, MAX_TOKENS, seed=0)
    assert bucketed < unsorted / 2, (bucketed, unsorted)


def test_batch_tensors_follow_the_conventions(corpus_ids):
    src_ids, tgt_ids = corpus_ids
    for batch in batcher(corpus_ids).epoch(0):
        positions = torch.arange(batch.src.shape[1])
        assert torch.equal(batch.src != PAD_ID, positions < batch.src_lengths[:, None])
        assert (batch.tgt_in[:, 0] == BOS_ID).all()
        assert not (batch.tgt_in == EOS_ID).any()
        assert batch.tgt_in.shape == batch.tgt_out.shape
        for row, i in enumerate(batch.indices):
            src, tgt = src_ids[i], tgt_ids[i]
            assert batch.src[row, : len(src)].tolist() == src
            assert batch.tgt_in[row, : len(tgt) - 1].tolist() == tgt[:-1]
            assert batch.tgt_out[row, : len(tgt) - 1].tolist() == tgt[1:]  # ends with </s>
            assert (batch.src[row, len(src) :] == PAD_ID).all()
            assert (batch.tgt_in[row, len(tgt) - 1 :] == PAD_ID).all()
            assert (batch.tgt_out[row, len(tgt) - 1 :] == PAD_ID).all()


# ---------------------------------------------------------------------------- recipes


def test_kep_news_builds_offline_from_the_mirror(
    compose_config, corpora_dir, repo_root, tmp_path, monkeypatch
):
    monkeypatch.chdir(repo_root)  # data.mirror is relative to where the command runs
    mirror = os.path.relpath(corpora_dir / "raw", repo_root)  # ../shared/corpora/raw
    cfg = compose_config(
        "data=kep_news",
        f"data.mirror={quote(mirror)}",
        "data.splits=[dev,test]",
        f"data.out_dir={quote(tmp_path / 'kep')}",
        "data.vocab.src_size=1000",
        "data.vocab.tgt_size=1000",
    )
    log: list[str] = []
    data = prepare(cfg.data, seed=cfg.seed, log=log.append)
    assert "note: no 'train' split fetched: training on 'dev'" in log
    with tarfile.open(corpora_dir / "raw" / "korean-english-park.dev.tar.gz") as tar:
        dev_en = tar.extractfile("korean-english-park.dev.en").read().decode().splitlines()
    assert data.splits["valid"].src_text == [normalize(line) for line in dev_en]
    assert len(data.splits["test"]) == 2000
    assert 0.8 * len(dev_en) < len(data.splits["train"]) <= len(dev_en)
    assert not (tmp_path / "kep" / "downloads").exists()  # read in place, never copied


def test_tatoeba_builds_offline_from_the_mirror(corpora_dir, compose_config, tmp_path):
    cfg = compose_config(
        "data=tatoeba",
        f"data.mirror={quote(corpora_dir / 'raw')}",
        f"data.out_dir={quote(tmp_path / 'tatoeba')}",
        "data.vocab.src_size=500",
        "data.vocab.tgt_size=1000",
    )
    data = prepare(cfg.data, seed=cfg.seed, log=lambda line: None)
    with zipfile.ZipFile(corpora_dir / "raw" / "kor-eng.zip") as zf:
        lines = zf.read("kor.txt").decode().splitlines()
    report = json.loads((data.out_dir / "clean_report.json").read_text())
    valid, test = data.splits["valid"], data.splits["test"]
    assert report["total"] + len(valid) + len(test) == len(lines)
    assert len(valid) > 0 and len(test) > 0
    train_en = set(data.splits["train"].src_text)
    assert not train_en & set(valid.src_text) and not train_en & set(test.src_text)


def test_missing_mirror_file_names_the_url_and_the_path(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    with pytest.raises(NMTError) as err:
        run_recipe("kep_news", ["dev", "test"], tmp_path / "out", str(mirror))
    message = str(err.value)
    assert message.startswith("data.mirror: ")
    assert str(mirror / "korean-english-park.dev.tar.gz") in message
    assert RECIPES["kep_news"].archives["dev"].url in message


@pytest.mark.parametrize("where", ["mirror", "download cache"])
def test_checksum_mismatch_is_an_error(corpora_dir, tmp_path, where):
    name = "korean-english-park.dev.tar.gz"
    folder = tmp_path / "mirror" if where == "mirror" else tmp_path / "out" / "downloads"
    folder.mkdir(parents=True)
    data = bytearray((corpora_dir / "raw" / name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / name).write_bytes(bytes(data))
    mirror = str(folder) if where == "mirror" else None
    with pytest.raises(NMTError, match="sha256 .* does not match the published") as err:
        run_recipe("kep_news", ["dev"], tmp_path / "out", mirror)
    assert str(folder / name) in str(err.value)


def test_unknown_recipe_split_lists_the_published_ones(tmp_path):
    with pytest.raises(
        NMTError, match=r"^data.splits: kep_news publishes train, dev, test; got x$"
    ):
        run_recipe("kep_news", ["x"], tmp_path, str(tmp_path))
    with pytest.raises(NMTError, match=r"^data.recipe: expected one of kep_news, tatoeba"):
        run_recipe("wmt", None, tmp_path, str(tmp_path))


# ------------------------------------------------------- bad input on the command line
# Each case returns the command-line arguments that feed it to nmt.prepare and what its one error
# line must name. The cases run through the entry point in-process (Hydra's parsing, the config
# tree and the error handling as ``python -m nmt.prepare`` runs them); one also runs in a fresh
# interpreter, which costs seconds of importing torch on a shared CPU.


def splits(train: Path, valid: Path, test: Path) -> list[str]:
    return [f"data.train={quote(train)}", f"data.valid={quote(valid)}", f"data.test={quote(test)}"]


def good_tsv(root: Path) -> Path:
    return write_tsv(root / "good.tsv", fabricated_pairs())


def aligned_line_counts(root: Path) -> tuple[list[str], list[str]]:
    for prefix, en, ko in (("uneven", "a\nb\nc\n", "가\n나\n다\n라\n"), ("even", "a\n", "가\n")):
        (root / f"{prefix}.en").write_text(en, encoding="utf-8")
        (root / f"{prefix}.ko").write_text(ko, encoding="utf-8")
    uneven, even = root / "uneven", root / "even"
    args = ["data=aligned", *splits(uneven, even, even)]
    return args, [f"{uneven}.ko:4: no matching line in {uneven}.en"]


def tsv_no_tab(root: Path) -> tuple[list[str], list[str]]:
    bad = root / "no_tab.tsv"
    bad.write_text("a\t가\nb\t나\nno tab\n", encoding="utf-8")
    return ["data=tsv", *splits(good_tsv(root), bad, good_tsv(root))], [f"{bad}:3: ", "no tab"]


def invalid_utf8(root: Path) -> tuple[list[str], list[str]]:
    bad = root / "bad_utf8.tsv"
    bad.write_bytes("a\t가\n".encode() + b"b\t\xed\xa0\x80\n")  # a UTF-16 surrogate
    return ["data=tsv", *splits(bad, good_tsv(root), good_tsv(root))], [f"{bad}:2: invalid UTF-8"]


def empty_file(root: Path) -> tuple[list[str], list[str]]:
    empty = root / "empty.tsv"
    empty.write_bytes(b"")
    return ["data=tsv", *splits(good_tsv(root), good_tsv(root), empty)], [f"{empty}: file is empty"]


def missing_file(root: Path) -> tuple[list[str], list[str]]:
    missing = root / "missing.tsv"
    args = ["data=tsv", *splits(missing, good_tsv(root), good_tsv(root))]
    return args, [f"data.train: file not found: {missing}"]


def vocab_too_large(root: Path) -> tuple[list[str], list[str]]:
    small = write_tsv(root / "small.tsv", [("a b c", "가 나 다"), ("b c d", "나 다 라")])
    args = ["data=tsv", *splits(small, good_tsv(root), good_tsv(root)), "data.vocab.src_size=5000"]
    return args, [
        "data.vocab.src_size=5000 is larger than the training text allows: expected at most"
    ]


BAD_INPUTS = {
    "aligned-line-counts": aligned_line_counts,
    "tsv-no-tab": tsv_no_tab,
    "invalid-utf8": invalid_utf8,
    "empty-file": empty_file,
    "missing-file": missing_file,
    "vocab-too-large": vocab_too_large,
}


def assert_one_line_error(result, out_dir: Path, names: list[str]) -> None:
    """Exit status 2, no traceback, the last line names the problem, nothing half-written."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ")
    for name in names:
        assert name in last
    if out_dir.exists():
        leftovers = [
            p.relative_to(out_dir)
            for p in out_dir.rglob("*")
            if p.name == "manifest.json" or p.suffix in (".tmp", ".part") or p.is_dir()
        ]
        assert leftovers == []  # no manifest (the mark of finished work), no temporary file


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_gives_one_line_and_exit_2(tmp_path, case):
    args, names = BAD_INPUTS[case](tmp_path)
    out_dir = tmp_path / "out"
    result = run_main("nmt.prepare", *args, f"data.out_dir={quote(out_dir)}")
    assert_one_line_error(result, out_dir, names)


def test_bad_input_through_python_dash_m(tmp_path):
    args, names = invalid_utf8(tmp_path)
    out_dir = tmp_path / "out"
    result = run_module("nmt.prepare", *args, f"data.out_dir={quote(out_dir)}")
    assert_one_line_error(result, out_dir, names)


def test_unknown_data_group_value_lists_the_options(tmp_path):
    result = run_main("nmt.prepare", "data=foo", f"data.out_dir={quote(tmp_path / 'out')}")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "Could not find 'data/foo'" in result.stderr
    options = result.stderr.split("Available options in 'data':")[1].split()
    assert {"aligned", "enko", "kep_news", "tatoeba", "tsv"} <= set(options[:5])
    assert not (tmp_path / "out").exists()
