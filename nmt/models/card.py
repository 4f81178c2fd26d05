"""The model card: what a checkpoint says about itself, and the checkpoint format's version.

Every checkpoint written since format 2 carries ``format_version`` and a ``card`` (plain
containers only, so it loads weights-only)::

    code        package, version, git commit (and whether the tree had changes), torch
    created     when this file was written (UTC, ISO 8601)
    command     the command line that wrote it
    data        corpus name, pairs per split after cleaning, SHA-256 of the prepared splits
    training    steps, target tokens, wall-clock minutes, precision and why, device, CPU, ranks
    validation  the scores of the validation it was saved after, with sacrebleu's signatures
    best        the early-stopping metric and the best validation score of the run
    tests       what nmt-evaluate measured with it (one entry per split and search)
    averaged_from / ensemble   the files it was averaged from (nmt-average)

The composed config stays where it always was, ``checkpoint["config"]``; :func:`model_card`
returns both. A checkpoint of format 1 (before 2026-12-07: ``validation``, ``runtime`` and
``averaged_from`` at the top level, no card) is migrated when it is loaded
(:func:`migrate_checkpoint`); one of a newer format than this code reads is refused in one line.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from nmt.core.errors import NMTError
from nmt.core.paths import REPO_ROOT, VERSION

FORMAT_VERSION = 2  # what save_checkpoint writes; 1: before the card (no format_version key)
DISTRIBUTION = "nmt-enko"

# the format-1 keys that moved into the card
_FORMAT1_DESCRIPTIVE = ("validation", "runtime", "averaged_from")


def utc_now() -> str:
    """Now, UTC, to the second: ``2026-12-07T13:45:12Z``."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def code_version() -> dict[str, Any]:
    """The code that is running: the package's version and, in a git checkout, the commit and
    whether tracked files differ from it (``commit`` None for an installed wheel)."""
    import torch

    commit, dirty = None, None
    if REPO_ROOT is not None and (REPO_ROOT / ".git").exists():
        commit = _git("rev-parse", "HEAD")
        status = _git("status", "--porcelain", "--untracked-files=no")
        dirty = None if status is None else bool(status)
    return {
        "package": DISTRIBUTION,
        "version": VERSION,
        "commit": commit,
        "dirty": dirty,
        "torch": str(torch.__version__),
    }


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def command_line() -> str:
    """The command that is running, as a shell would take it back (``nmt-train seed=2``)."""
    program = Path(sys.argv[0]).name if sys.argv else "python"
    return shlex.join([program, *sys.argv[1:]])


# --------------------------------------------------------------------------------------------
# Reading: the card of a loaded checkpoint, and the migration from format 1
# --------------------------------------------------------------------------------------------


def format_version(checkpoint: dict[str, Any]) -> int:
    """The checkpoint's format: its ``format_version``, 1 when it has none."""
    return int(checkpoint.get("format_version", 1))


def migrate_checkpoint(checkpoint: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """``checkpoint`` in :data:`FORMAT_VERSION`: format 1 gets a card built from what it had
    (its validation, runtime, progress and averaged_from; no code, data or command: they were
    not recorded). A newer format than this code reads is one line saying what to do."""
    version = format_version(checkpoint)
    if version > FORMAT_VERSION:
        raise NMTError(
            f"{path}: checkpoint format {version}, written by a newer nmt; this one "
            f"({VERSION}) reads formats 1–{FORMAT_VERSION}: upgrade nmt-enko to load it"
        )
    if version == FORMAT_VERSION:
        return checkpoint
    migrated = {k: v for k, v in checkpoint.items() if k not in _FORMAT1_DESCRIPTIVE}
    migrated["format_version"] = FORMAT_VERSION
    migrated["card"] = _format1_card(checkpoint)
    return migrated


def _format1_card(checkpoint: dict[str, Any]) -> dict[str, Any]:
    progress = checkpoint.get("progress") or {}
    runtime = dict(checkpoint.get("runtime") or {})
    torch_version = runtime.pop("torch", None)
    card: dict[str, Any] = {
        "code": {"package": DISTRIBUTION, "version": None, "commit": None, "torch": torch_version},
        "migrated_from_format": 1,
        "training": {
            "steps": progress.get("step"),
            "minutes": progress.get("minutes"),
            **runtime,
        },
        "validation": checkpoint.get("validation"),
        "best": {
            "metric": (checkpoint["config"].get("trainer") or {}).get("early_stopping_metric"),
            "score": progress.get("best_score"),
        },
    }
    if checkpoint.get("averaged_from"):
        card["averaged_from"] = checkpoint["averaged_from"]
    return card


def card_of(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The card of a loaded (migrated) checkpoint; empty when it has none."""
    return dict(checkpoint.get("card") or {})


def with_test_scores(checkpoint: dict[str, Any], key: str, entry: dict[str, Any]) -> dict[str, Any]:
    """``checkpoint`` with ``entry`` (an nmt-evaluate result) recorded in its card's ``tests``
    under ``key`` (split and search, e.g. ``test beam5``); an entry already there with a
    higher BLEU is kept, so the card holds each setting's best."""
    card = card_of(checkpoint)
    tests = dict(card.get("tests") or {})
    old = tests.get(key)
    if old is None or entry.get("bleu", 0.0) >= old.get("bleu", 0.0):
        tests[key] = entry
    return {**checkpoint, "card": {**card, "tests": tests}}


# --------------------------------------------------------------------------------------------
# Showing it
# --------------------------------------------------------------------------------------------


def card_text(card: dict[str, Any], source: str = "") -> str:
    """The card as indented ``key: value`` lines, a heading per section (``nmt-info``)."""
    lines = [f"model card of {source}" if source else "model card"]
    for section, value in card.items():
        if isinstance(value, dict):
            lines.append(f"{section}:")
            lines.extend(_nested_lines(value, indent=2))
        else:
            lines.append(f"{section}: {_plain(value)}")
    return "\n".join(lines)


def _nested_lines(values: dict[str, Any], indent: int) -> list[str]:
    lines = []
    for key, value in values.items():
        if isinstance(value, dict) and value:
            lines.append(f"{' ' * indent}{key}:")
            lines.extend(_nested_lines(value, indent + 2))
        else:
            lines.append(f"{' ' * indent}{key}: {_plain(value)}")
    return lines


def _plain(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, list | tuple):
        return ", ".join(_plain(v) for v in value) or "—"
    return str(value)
