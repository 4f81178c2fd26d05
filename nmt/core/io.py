"""Durable, atomic file writes: the one way the program writes a file.

:func:`write_atomic` writes to a temporary file in the target's folder, flushes it to the disk
(``fsync``), renames it over the target (``os.replace``, atomic on POSIX and Windows) and then
fsyncs the folder so that the rename itself survives a power loss. A reader therefore sees the
old file or the new one, never half of one; a crash or ``kill -9`` at any moment leaves at most a
``.NAME.*.tmp`` file beside the intact old file (:func:`remove_stale_temporaries` clears them).

The temporary file is created with mode ``0o666`` minus the umask, as ``open()`` would create the
target (``tempfile.mkstemp`` would give ``0o600``), and the rename keeps that mode.

A failure to write — a full disk, a file-size limit, a read-only or unwritable folder — becomes
one :class:`~nmt.core.errors.NMTError` line naming the file and the system's reason
(``…/last.pt: cannot write: No space left on device``); the temporary file is removed and the
old file is left as it was. That holds also where the writer raises an error of its own while
unwinding from the system's (:func:`nmt.core.errors.os_error_behind`: torch's zip writer answers a full disk
with ``RuntimeError: [enforce fail at inline_container.cc] unexpected pos …``).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from nmt.core.errors import NMTError, os_error_behind

TMP_SUFFIX = ".tmp"


def write_atomic(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(f)`` on a temporary binary file, make it durable and rename it to ``path``:
    a reader never sees a half-written file, and an interrupted run or a full disk leaves the old
    one intact."""
    path = Path(path)
    if not path.parent.is_dir():
        raise NMTError(f"{path}: folder {path.parent} does not exist")
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{TMP_SUFFIX}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as err:
        raise write_error(path, err) from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        cause = os_error_behind(err)
        if cause is not None:
            raise write_error(path, cause) from None
        raise


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    write_atomic(path, lambda f: f.write(data))


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` as UTF-8 (see :func:`write_atomic`)."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented UTF-8 JSON, atomically (see :func:`write_atomic`)."""
    write_text_atomic(path, json.dumps(data, ensure_ascii=False, indent=2) + "\n")


def append_line(path: str | Path, line: str) -> None:
    """Append ``line`` (a newline is added) to ``path`` durably; a failed write — a full disk —
    is cut off again, so the file never ends in half a line, and raised as one
    :class:`~nmt.core.errors.NMTError` line naming the file (``validations.jsonl``)."""
    path = Path(path)
    data = memoryview((line + "\n").encode("utf-8"))
    try:
        fd = os.open(
            path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o666
        )
    except OSError as err:
        raise write_error(path, err) from None
    try:
        size = os.fstat(fd).st_size
        try:
            while data:
                data = data[os.write(fd, data) :]
            os.fsync(fd)
        except OSError as err:
            with contextlib.suppress(OSError):  # else the partial line stays; still one error
                os.ftruncate(fd, size)
            raise write_error(path, err) from None
    finally:
        os.close(fd)


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (a rename into it) to the disk; a no-op where folders cannot be
    opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems do not fsync folders (EINVAL); the rename is done anyway
        pass
    finally:
        os.close(fd)


def write_error(path: Path, err: OSError) -> NMTError:
    """The one-line error for a failed write: the file and the system's reason."""
    return NMTError(f"{path}: cannot write: {err.strerror or err}")


def check_writable(folder: str | Path, what: str) -> None:
    """Create ``folder`` if needed and prove that a file can be created in it, or raise one line
    naming ``what`` (e.g. ``run folder``), the folder and the system's reason."""
    folder = Path(folder)
    probe = folder / f".write_test.{secrets.token_hex(4)}{TMP_SUFFIX}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        probe.unlink()
    except OSError as err:
        raise NMTError(f"{what} {folder}: not writable: {err.strerror or err}") from None


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files that a killed writer left in ``folder``; return them."""
    stale = sorted(folder.glob(f".*{TMP_SUFFIX}")) if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale
