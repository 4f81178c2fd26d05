"""From corpus files to encoded splits under ``data.out_dir``, cached between runs.

``prepare(data)`` reads the corpus (TSV, aligned files or a recipe), cleans the training
split, trains SentencePiece on it, encodes every split and writes:

    <out_dir>/spm.en.model, spm.ko.model   (or spm.model when data.vocab.joint=true)
    <out_dir>/{train,valid,test}.pt        source/target ids, flat int32 + offsets
    <out_dir>/{train,valid,test}.{en,ko}   the normalised text (valid/test: the references)
    <out_dir>/manifest.json                what was built from what; written last

Every file is written to a temporary name and renamed into place, and the manifest goes last, so
an interrupted run leaves no file that a later run would mistake for finished work. A later run
whose inputs and settings match the manifest reuses the files and says so. Runs that prepare the
same ``out_dir`` at the same time (two sweep jobs, say) take turns on ``<out_dir>/.lock``: the
first builds, the others then find its manifest and reuse the files.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from nmt.core.errors import NMTError
from nmt.core.io import remove_stale_temporaries, write_atomic, write_text_atomic
from nmt.core.paths import REPO_ROOT
from nmt.core.settings import load_settings, setting
from nmt.core.special_ids import BOS_ID, EOS_ID
from nmt.data.batching import BatchingSettings, TokenBatcher
from nmt.data.corpus import (
    CleanReport,
    CleanSettings,
    Pair,
    clean_text,
    length_filter,
    normalize,
    read_aligned,
    read_tsv,
)
from nmt.data.markup import mask_pair
from nmt.data.recipes import run_recipe
from nmt.data.vocab import Vocab, VocabSettings, train_sentencepiece

SPLITS = ("train", "valid", "test")
FORMAT_VERSION = 1


@dataclass(frozen=True, kw_only=True)
class DataSettings:
    name: str = setting(nonempty=True)
    format: str = setting(choices=("tsv", "aligned", "recipe"))
    recipe: str | None = setting()
    root: str | None = setting()
    mirror: str | None = setting()
    splits: list[str] | None = setting()
    train: str | None = setting()
    valid: str | None = setting()
    test: str | None = setting()
    out_dir: str = setting(nonempty=True)
    src_lang: str = setting(nonempty=True)
    tgt_lang: str = setting(nonempty=True)
    vocab: VocabSettings = setting()
    clean: CleanSettings = setting()
    batching: BatchingSettings = setting()
    # mask inline markup in the pairs the model learns from (nmt.data.markup.mask_pair)
    mask_markup: bool = setting(default=False)


@dataclass
class Split:
    """One encoded split: ids per sentence and the normalised text they came from."""

    src_ids: list[list[int]]  # subwords + </s>
    tgt_ids: list[list[int]]  # <s> + subwords + </s>
    src_text: list[str]
    tgt_text: list[str]

    def __len__(self) -> int:
        return len(self.src_ids)


@dataclass
class PreparedData:
    out_dir: Path
    src_vocab: Vocab
    tgt_vocab: Vocab
    splits: dict[str, Split]

    def batcher(
        self, split: str, max_tokens: int, bucket_width: int, seed: int, shuffle: bool
    ) -> TokenBatcher:
        data = self.splits[split]
        return TokenBatcher(data.src_ids, data.tgt_ids, max_tokens, bucket_width, seed, shuffle)


def describe_prepared(data: PreparedData, settings: DataSettings) -> dict[str, Any]:
    """What a model card records about its data: the corpus, the prepared folder and its
    fingerprint, the pairs of each split as trained and scored (train after cleaning), the
    SHA-256 of each prepared split (its ids, ``{split}.pt``) and the cleaning's counts."""
    out_dir = Path(data.out_dir)
    report_path = out_dir / "clean_report.json"
    report = json.loads(report_path.read_text(encoding="utf-8")) if report_path.is_file() else {}
    return {
        "name": settings.name,
        "prepared": str(out_dir),
        "fingerprint": _manifest_fingerprint(out_dir / "manifest.json"),
        "pairs": {split: len(part) for split, part in data.splits.items()},
        "sha256": {
            split: file_sha256(out_dir / f"{split}.pt")
            for split in data.splits
            if (out_dir / f"{split}.pt").is_file()
        },
        "train_pairs_read": report.get("total"),
    }


def corpus_root(data: DataSettings) -> Path:
    """``data.root``, else $NMT_CORPORA (already folded into data.root by the config), else
    ``../shared/corpora`` beside a source checkout; an installed package has no default."""
    if data.root:
        return Path(data.root)
    if REPO_ROOT is not None and (REPO_ROOT.parent / "shared" / "corpora").is_dir():
        return REPO_ROOT.parent / "shared" / "corpora"
    raise NMTError(
        f"data={data.name}: no corpus folder; set NMT_CORPORA=/path/to/corpora "
        "or data.root=DIR, or get data with a recipe (data=tatoeba, data=kep_news) or your own "
        "files (data=tsv data.train=… data.valid=… data.test=…)"
    )


def _resolve(data: DataSettings, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else corpus_root(data) / path


def _input_files(data: DataSettings) -> dict[str, list[Path]]:
    """The files each split is read from (TSV: one; aligned: PREFIX.src and PREFIX.tgt)."""
    files = {}
    for split in SPLITS:
        value = getattr(data, split)
        if not value:
            raise NMTError(f"data.{split}: missing; give a file path (data.{split}=PATH)")
        path = _resolve(data, str(value))
        if data.format == "aligned":
            files[split] = [
                Path(f"{path}.{data.src_lang}"),
                Path(f"{path}.{data.tgt_lang}"),
            ]
        else:
            files[split] = [path]
        for file in files[split]:
            if not file.is_file():
                raise NMTError(f"data.{split}: file not found: {file}")
    return files


def read_corpus(data: DataSettings, log: Callable[[str], None]) -> dict[str, list[Pair]]:
    """Raw pairs per split, according to ``data.format``."""
    fmt = data.format
    if fmt == "recipe":
        pairs, notes = run_recipe(data.recipe, data.splits, Path(data.out_dir), data.mirror)
        for note in notes:
            log(f"note: {note}")
        return pairs
    if fmt not in ("tsv", "aligned"):
        raise NMTError(f"data.format: expected one of tsv, aligned, recipe; got {fmt!r}")
    files = _input_files(data)
    reader = read_tsv if fmt == "tsv" else read_aligned
    return {split: reader(*paths) for split, paths in files.items()}


def fingerprint(data: DataSettings) -> str:
    """A hash of everything the prepared files depend on: the settings and the input files' bytes.

    Files count by name and content, not by path or modification time, so a corpus that is copied,
    mounted elsewhere or touched still matches the files prepared from it (hashing enko's 18 MB
    training file takes about 0.2 s).
    """
    settings = asdict(data)
    for key in ("out_dir", "batching", "root"):
        settings.pop(key, None)
    if not data.mask_markup:  # data prepared before the option existed keeps its fingerprint
        settings.pop("mask_markup")
    inputs = []
    if data.format == "recipe":
        inputs = [data.mirror]
    else:
        for split in SPLITS:  # where the files lie does not count; their bytes below do
            settings.pop(split, None)
        for split, paths in _input_files(data).items():
            for p in paths:
                inputs.append([split, p.name, file_sha256(p)])
    blob = json.dumps({"v": FORMAT_VERSION, "settings": settings, "inputs": inputs}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes (hex), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _pack_ids(seqs: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.int64)
    flat = torch.tensor([i for s in seqs for i in s], dtype=torch.int32)
    return {
        "flat": flat,
        "offsets": torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)]),
    }


def _unpack_ids(packed: dict[str, torch.Tensor]) -> list[list[int]]:
    flat = packed["flat"].tolist()
    offsets = packed["offsets"].tolist()
    return [flat[a:b] for a, b in zip(offsets[:-1], offsets[1:], strict=True)]


def _vocab_paths(out_dir: Path, data: DataSettings) -> tuple[Path, Path]:
    if data.vocab.joint:
        return out_dir / "spm.model", out_dir / "spm.model"
    return out_dir / f"spm.{data.src_lang}.model", out_dir / f"spm.{data.tgt_lang}.model"


def _train_vocabs(
    train: list[Pair], out_dir: Path, data: DataSettings, seed: int
) -> tuple[Vocab, Vocab]:
    v = data.vocab
    src_path, tgt_path = _vocab_paths(out_dir, data)
    common = dict(model_type=v.model_type, input_sentence_size=v.input_sentence_size, seed=seed)
    if v.joint:
        text = [s for s, _ in train] + [t for _, t in train]
        train_sentencepiece(
            text,
            src_path.with_suffix(""),
            v.src_size,
            size_key="data.vocab.src_size",
            character_coverage=v.tgt_character_coverage,
            **common,
        )
    else:
        train_sentencepiece(
            (s for s, _ in train),
            src_path.with_suffix(""),
            v.src_size,
            size_key="data.vocab.src_size",
            character_coverage=v.src_character_coverage,
            **common,
        )
        train_sentencepiece(
            (t for _, t in train),
            tgt_path.with_suffix(""),
            v.tgt_size,
            size_key="data.vocab.tgt_size",
            character_coverage=v.tgt_character_coverage,
            **common,
        )
    return Vocab(src_path), Vocab(tgt_path)


def _encode(
    pairs: list[Pair], src_vocab: Vocab, tgt_vocab: Vocab, mask_markup: bool = False
) -> tuple[list[list[int]], list[list[int]]]:
    """The ids of both sides; with ``mask_markup`` those of the masked pairs (the text files
    keep the references as they are: what is scored)."""
    if mask_markup:
        pairs = [mask_pair(s, t) for s, t in pairs]
    src = src_vocab.encode([s for s, _ in pairs])
    tgt = tgt_vocab.encode([t for _, t in pairs])
    return src, tgt


def _build(data: DataSettings, out_dir: Path, seed: int, log: Callable[[str], None]) -> None:
    raw = read_corpus(data, log)
    report = CleanReport()
    train = clean_text(raw["train"], data.clean.dedup, report)
    if not train:
        raise NMTError(
            f"data.train: no usable sentence pairs left after cleaning ({report.total} read)"
        )
    if data.mask_markup:  # the model and its vocabularies learn from the masked pairs
        train = [mask_pair(s, t) for s, t in train]
        log("train: inline markup masked on both sides (data.mask_markup)")
    log(
        f"training SentencePiece ({data.vocab.model_type}, joint={data.vocab.joint}) on {len(train):,} pairs"
    )
    src_vocab, tgt_vocab = _train_vocabs(train, out_dir, data, seed)

    src_ids, tgt_ids = _encode(train, src_vocab, tgt_vocab)
    keep = length_filter(src_ids, tgt_ids, data.clean.max_len, data.clean.max_ratio, report)
    splits = {
        "train": ([train[i] for i in keep], [src_ids[i] for i in keep], [tgt_ids[i] for i in keep])
    }
    for line in report.lines():
        log(f"train: {line}")
    for name in ("valid", "test"):
        # Valid and test are normalised but never filtered: every reference is scored.
        pairs = [(normalize(s), normalize(t)) for s, t in raw[name]]
        empty = sum(1 for s, t in pairs if not s or not t)
        if empty:
            log(f"warning: {name} has {empty} pairs with an empty side; they are kept and scored")
        splits[name] = (pairs, *_encode(pairs, src_vocab, tgt_vocab, data.mask_markup))

    for name, (pairs, src, tgt) in splits.items():
        packed = {
            "src": _pack_ids([s + [EOS_ID] for s in src]),
            "tgt": _pack_ids([[BOS_ID] + t + [EOS_ID] for t in tgt]),
        }
        write_atomic(out_dir / f"{name}.pt", lambda f, packed=packed: torch.save(packed, f))
        write_text_atomic(out_dir / f"{name}.{data.src_lang}", "".join(s + "\n" for s, _ in pairs))
        write_text_atomic(out_dir / f"{name}.{data.tgt_lang}", "".join(t + "\n" for _, t in pairs))
        log(f"{name}: {len(pairs):,} pairs")
    write_text_atomic(
        out_dir / "clean_report.json",
        json.dumps(dict(report.dropped, total=report.total, kept=report.kept), indent=2),
    )


def _load(data: DataSettings, out_dir: Path) -> PreparedData:
    src_path, tgt_path = _vocab_paths(out_dir, data)
    splits = {}
    for name in SPLITS:
        packed = torch.load(out_dir / f"{name}.pt", weights_only=True)
        src_text = (out_dir / f"{name}.{data.src_lang}").read_text(encoding="utf-8").splitlines()
        tgt_text = (out_dir / f"{name}.{data.tgt_lang}").read_text(encoding="utf-8").splitlines()
        splits[name] = Split(
            _unpack_ids(packed["src"]), _unpack_ids(packed["tgt"]), src_text, tgt_text
        )
    return PreparedData(out_dir, Vocab(src_path), Vocab(tgt_path), splits)


def prepare(
    data: DataSettings, seed: int = 1234, log: Callable[[str], None] = print
) -> PreparedData:
    """Build (or reuse) the prepared data described by ``data``; return it loaded."""
    out_dir = Path(data.out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise NMTError(f"data.out_dir: cannot create folder {out_dir}: {err.strerror}") from err
    with _exclusive(out_dir / ".lock"):
        return _prepare_locked(data, out_dir, seed, log)


def read_split(
    saved_config: Mapping[str, Any], split: str, log: Callable[[str], None] = print
) -> tuple[list[str], list[str], str, str]:
    """Source and reference lines of a split of a checkpoint's corpus, as ``nmt-prepare`` wrote
    them to ``<data.out_dir>/<split>.{src,tgt}`` (normalised; valid and test unfiltered), and the
    two files' names — so ``split=valid`` scores the text validation scored. ``saved_config`` is
    the config a checkpoint stores (its ``data`` group and ``seed`` are read). Any corpus works,
    recipes included; one not prepared on this machine yet is prepared first."""
    data = load_settings(DataSettings, saved_config.get("data"), "data")
    if split != "train" and getattr(data, split) is None and data.format != "recipe":
        raise NMTError(f"the checkpoint's data config has no {split} split (data.{split} is null)")
    prepared = prepare(data, saved_config.get("seed", 1234), log=log)
    part = prepared.splits[split]
    src_name, ref_name = (
        str(prepared.out_dir / f"{split}.{lang}") for lang in (data.src_lang, data.tgt_lang)
    )
    return part.src_text, part.tgt_text, src_name, ref_name


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``lock_path`` (POSIX ``flock``; elsewhere no lock)."""
    try:
        import fcntl
    except ImportError:  # Windows: concurrent runs must not share an out_dir
        yield
        return
    with contextlib.ExitStack() as stack:
        try:
            lock = stack.enter_context(open(lock_path, "a"))
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes or the process dies
        except OSError:  # a read-only out_dir (nothing can be built there) or no flock support
            pass
        yield


def _manifest_fingerprint(path: Path) -> str | None:
    """The fingerprint recorded in ``manifest.json``; None when it is missing or unreadable (a
    manifest damaged by a crash means the files must be built again)."""
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest.get("fingerprint") if isinstance(manifest, dict) else None


def _prepare_locked(
    data: DataSettings, out_dir: Path, seed: int, log: Callable[[str], None]
) -> PreparedData:
    manifest_path = out_dir / "manifest.json"
    key = fingerprint(data)
    if _manifest_fingerprint(manifest_path) == key:
        log(f"reusing prepared data in {out_dir} (inputs and settings unchanged)")
        return _load(data, out_dir)
    manifest_path.unlink(missing_ok=True)  # the old files no longer describe these settings
    remove_stale_temporaries(out_dir)  # of a build that was killed (we hold the lock)
    start = time.perf_counter()
    _build(data, out_dir, seed, log)
    manifest = {
        "fingerprint": key,
        "format_version": FORMAT_VERSION,
        "data": asdict(data),
    }
    write_text_atomic(manifest_path, json.dumps(manifest, indent=2, ensure_ascii=False))
    log(f"prepared {out_dir} in {time.perf_counter() - start:.1f} s")
    return _load(data, out_dir)
