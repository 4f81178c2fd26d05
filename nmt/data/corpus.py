"""Reading parallel corpora, with errors that name the file and line, and cleaning with counts.

Two layouts are read:

* TSV: ``english<TAB>korean`` per line; further columns (e.g. Tatoeba's attribution) are ignored.
* aligned: ``PREFIX.en`` and ``PREFIX.ko``, line *i* of one translating line *i* of the other.

Files ending in ``.gz`` are decompressed transparently.
"""

from __future__ import annotations

import gzip
import unicodedata
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from nmt.core.errors import NMTError
from nmt.core.settings import setting

Pair = tuple[str, str]


def _open_bytes(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_lines(path: str | Path, role: str = "") -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` for a UTF-8 file (1-based, without the line break).

    Lines are split at ``\\n`` only, so a stray U+2028 inside a sentence cannot shift the
    alignment. ``role`` ("hypothesis", "reference", "source") goes into the error messages.
    Raises NMTError for a missing file, an empty file, bytes that are not UTF-8 (file:line), or
    a ``.gz`` file that is not gzip or is damaged or cut short (naming the last line read).
    """
    path, what = Path(path), f"{role} file" if role else "file"
    if not path.is_file():
        raise NMTError(f"{path}: {what} not found")
    number = 0
    with _open_bytes(path) as f:
        lines = iter(f)
        while True:
            try:
                raw = next(lines)
            except StopIteration:
                break
            except (OSError, EOFError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
                raise NMTError(f"{path}: {_read_problem(err, number)}") from None
            number += 1
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                in_role = f" in {what}" if role else ""
                raise NMTError(
                    f"{path}:{number}: invalid UTF-8{in_role} "
                    f"(byte 0x{raw[err.start]:02x} at column {err.start + 1})"
                ) from None
            yield number, text.rstrip("\r\n")
    if number == 0:
        unit = "sentence" if role else "sentence pair"
        raise NMTError(f"{path}: {what} is empty, expected one {unit} per line")


def read_text_lines(path: str | Path, role: str) -> list[str]:
    """A UTF-8 file as one string per line, with :func:`read_lines`' errors naming ``role``."""
    return [text for _, text in read_lines(path, role)]


def _read_problem(err: Exception, lines_read: int) -> str:
    """Why a (gzip) file could not be read further, after ``lines_read`` good lines."""
    if isinstance(err, gzip.BadGzipFile):
        return "not a gzip file, though its name ends in .gz"
    if isinstance(err, EOFError | zlib.error):
        return f"damaged or cut-short gzip data after line {lines_read} ({err})"
    return f"cannot read after line {lines_read}: {err.strerror or err}"


def read_tsv(path: Path) -> list[Pair]:
    """Read ``english<TAB>korean[<TAB>ignored...]`` lines."""
    pairs = []
    for number, line in read_lines(path):
        columns = line.split("\t")
        if len(columns) < 2:
            raise NMTError(f"{path}:{number}: expected 'english<TAB>korean', found no tab")
        pairs.append((columns[0], columns[1]))
    return pairs


def read_aligned(src_path: Path, tgt_path: Path) -> list[Pair]:
    """Read two line-aligned files; their line counts must agree."""
    src = [text for _, text in read_lines(src_path)]
    tgt = [text for _, text in read_lines(tgt_path)]
    if len(src) != len(tgt):
        longer, shorter = (src_path, tgt_path) if len(src) > len(tgt) else (tgt_path, src_path)
        raise NMTError(
            f"{longer}:{min(len(src), len(tgt)) + 1}: no matching line in {shorter} "
            f"({src_path} has {len(src)} lines, {tgt_path} has {len(tgt)})"
        )
    return list(zip(src, tgt, strict=True))


def normalize(text: str) -> str:
    """NFC-normalise and fold every run of whitespace into one space."""
    return " ".join(unicodedata.normalize("NFC", text).split())


@dataclass(frozen=True, kw_only=True)
class CleanSettings:
    max_len: int = setting(ge=1)
    max_ratio: float = setting(ge=1)
    dedup: bool = setting()


@dataclass
class CleanReport:
    """How many pairs each cleaning rule dropped, in the order the rules run."""

    total: int = 0
    dropped: Counter = field(default_factory=Counter)

    @property
    def kept(self) -> int:
        return self.total - sum(self.dropped.values())

    def lines(self) -> list[str]:
        out = [f"read {self.total:,} pairs"]
        for reason in ("empty side", "duplicate", "too long", "length ratio"):
            out.append(f"  dropped {self.dropped[reason]:>7,}  {reason}")
        out.append(f"kept {self.kept:,} pairs ({self.kept / max(self.total, 1):.1%})")
        return out


def clean_text(pairs: list[Pair], dedup: bool, report: CleanReport) -> list[Pair]:
    """Normalise every pair; drop pairs with an empty side and (optionally) exact duplicates."""
    report.total = len(pairs)
    seen: set[Pair] = set()
    kept = []
    for src, tgt in pairs:
        pair = (normalize(src), normalize(tgt))
        if not pair[0] or not pair[1]:
            report.dropped["empty side"] += 1
        elif dedup and pair in seen:
            report.dropped["duplicate"] += 1
        else:
            seen.add(pair)
            kept.append(pair)
    return kept


def length_filter(
    src_ids: list[list[int]],
    tgt_ids: list[list[int]],
    max_len: int,
    max_ratio: float,
    report: CleanReport,
) -> list[int]:
    """Indices of pairs within ``max_len`` subwords per side and ``max_ratio`` longer/shorter."""
    keep = []
    for i, (s, t) in enumerate(zip(src_ids, tgt_ids, strict=True)):
        if len(s) > max_len or len(t) > max_len:
            report.dropped["too long"] += 1
        elif max(len(s), len(t)) > max_ratio * max(min(len(s), len(t)), 1):
            report.dropped["length ratio"] += 1
        else:
            keep.append(i)
    return keep
