"""JSON lines in and out: sentences with their constraints, translations with what they met.

``nmt-translate input_format=jsonl`` reads one JSON object per line::

    {"text": "Choose File - Save As.", "constraints": ["다른 이름으로 저장"]}
    {"text": "Open the file.", "avoid": ["화일"]}
    {"text": "Where is the station?"}

``text`` (required) is the English sentence; ``constraints`` (optional) the Korean phrases its
translation must contain, added to what a glossary finds; ``avoid`` (optional) the Korean
phrases it must not contain. Blank lines are skipped. An error names the file, the line and
the field.

Each output line is one object, in input order::

    {"text": "파일 - 다른 이름으로 저장을 선택합니다.", "score": -4.21,
     "constraints": ["다른 이름으로 저장"], "missing_constraints": []}

with ``nbest`` (a list of ``{"text", "score", "missing_constraints"}``) when ``n_best`` > 1.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from nmt.core.errors import NMTError
from nmt.inference.translator import Translation

INPUT_FORMATS = ("text", "jsonl")


def parse_jsonl(
    lines: Sequence[str], source: str
) -> tuple[list[str], list[list[str]], list[list[str]]]:
    """The sentences, each one's constraints and each one's avoided phrases from JSON lines
    (the module docstring's format); ``source`` names the input in errors
    (``FILE:LINE: field: …``)."""
    sentences: list[str] = []
    constraints: list[list[str]] = []
    avoid: list[list[str]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{source}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise NMTError(
                f"{where}: not a JSON object ({err.msg} at column {err.colno})"
            ) from None
        if not isinstance(record, dict):
            raise NMTError(f"{where}: expected a JSON object; got {type(record).__name__}")
        unknown = sorted(set(record) - {"text", "constraints", "avoid"})
        if unknown:
            raise NMTError(
                f"{where}: {unknown[0]}: unknown field; expected text, constraints, avoid"
            )
        text = record.get("text")
        if not isinstance(text, str):
            raise NMTError(f"{where}: text: expected a string; got {text!r}")
        sentences.append(text)
        constraints.append(_phrases(record, "constraints", where))
        avoid.append(_phrases(record, "avoid", where))
    return sentences, constraints, avoid


def _phrases(record: dict[str, Any], field_name: str, where: str) -> list[str]:
    phrases = record.get(field_name, [])
    if not isinstance(phrases, list) or not all(isinstance(p, str) for p in phrases):
        raise NMTError(f"{where}: {field_name}: expected a list of strings; got {phrases!r}")
    for j, phrase in enumerate(phrases):
        if not phrase.strip():
            raise NMTError(f"{where}: {field_name}[{j}]: expected a non-empty Korean phrase")
    return phrases


def translation_record(translation: Translation, n_best: int) -> dict[str, Any]:
    """One output line's object (the module docstring's format)."""

    def entry(t: Translation, constraints: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"text": t.text, "score": round(t.score, 4)}
        if constraints and t.constraints:
            out["constraints"] = t.constraints
        if t.constraints:
            out["missing_constraints"] = t.missing_constraints
        return out

    record = entry(translation, constraints=True)
    if n_best > 1:
        record["nbest"] = [entry(t) for t in translation.nbest[:n_best]]
    return record


def format_jsonl(translations: Sequence[Translation], n_best: int) -> str:
    """One JSON line per translation, each ending in a newline (Hangul kept as it is)."""
    return "".join(
        json.dumps(translation_record(t, n_best), ensure_ascii=False) + "\n" for t in translations
    )
