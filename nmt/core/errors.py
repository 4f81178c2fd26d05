"""The one exception type for mistakes a user can fix (bad input, bad config).

Entry points print its message on one line, without a traceback, and exit with status 2. The
message (or, for a bug, the traceback) also goes to every log file the run writes — a training
run's ``train.log`` — so a failed run's log says why it failed.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import TypeVar

from omegaconf.errors import MissingMandatoryValue

F = TypeVar("F", bound=Callable)


class NMTError(Exception):
    """A user-facing error: the message names the file, line or config key and what was expected."""


def log_to_files(message: str) -> None:
    """Write ``message`` as an ERROR record to the root logger's file handlers only (the console
    already shows it)."""
    record = logging.LogRecord("nmt", logging.ERROR, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def os_error_behind(err: BaseException | None) -> OSError | None:
    """The OSError that ``err`` is, or was raised while handling (``__context__``) or from
    (``__cause__``); None when there is none (an error raised ``from None`` has dealt with its
    context already: an :class:`NMTError` that names the file). Writers of other libraries raise errors of their
    own while unwinding from the system's: torch's zip writer answers a full disk with
    ``RuntimeError: [enforce fail at inline_container.cc] unexpected pos …``."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError):
            return err
        seen.add(id(err))
        err = err.__cause__ or (None if err.__suppress_context__ else err.__context__)
    return None


# a write the disk refused: full, over quota, over a file-size limit, read-only
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})


def disk_error_line(err: BaseException) -> str | None:
    """``cannot write …: <reason>`` when ``err`` comes from a write the disk refused (a writer
    that does not report it itself, such as matplotlib's ``savefig``); else None."""
    cause = os_error_behind(err)
    if cause is None or cause.errno not in DISK_ERRNOS:
        return None
    where = f"{cause.filename}: " if cause.filename else ""
    return f"{where}cannot write: {cause.strerror or cause}"


BROKEN_PIPE_EXIT_STATUS = 141  # 128 + SIGPIPE, what a shell tool killed by a closed pipe returns


def exit_on_user_error(main: F) -> F:
    """Wrap an entry point so that an :class:`NMTError`, a mandatory (``???``) config value left
    unset, or a write the disk refused (:func:`disk_error_line`) becomes one line on stderr and
    exit 2; a reader that closed stdout early (``| head``) ends it quietly with exit 141."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            result = main(*args, **kwargs)
            sys.stdout.flush()  # here, where a closed pipe is caught, not at interpreter exit
            return result
        except BrokenPipeError:  # the reader left (`nmt-translate … | head`): stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(BROKEN_PIPE_EXIT_STATUS)
        except NMTError as err:
            print(f"error: {err}", file=sys.stderr)
            log_to_files(f"error: {err}")
            sys.exit(2)
        except MissingMandatoryValue as err:  # a `???` in the config left unset
            key = err.full_key or "a mandatory setting"
            message = f"error: {key}: missing; give it on the command line ({key}=…)"
            print(message, file=sys.stderr)
            log_to_files(message)
            sys.exit(2)
        except Exception as err:
            line = disk_error_line(err)
            if line is not None:
                print(f"error: {line}", file=sys.stderr)
                sys.exit(2)
            log_to_files(traceback.format_exc().rstrip())
            raise

    return wrapper  # type: ignore[return-value]


# Command-line lists (``key=value``): Hydra parses ``runs=[a,b]`` as a list and ``runs=a`` as a
# string; the types and ranges of every key are nmt/config/schema.py's.


def str_list(value: object, key: str) -> list[str]:
    """A non-empty list of names or paths: ``key=a`` (one) or ``key=[a,b]``."""
    items = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value]
    if items and all(isinstance(v, str | int | float) and not isinstance(v, bool) for v in items):
        return [str(v) for v in items]
    raise NMTError(f"{key}: expected a file name or a non-empty list [a,b], got {value!r}")
