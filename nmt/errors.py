"""The one exception type for mistakes a user can fix (bad input, bad config).

Entry points print its message on one line, without a traceback, and exit with status 2. The
message (or, for a bug, the traceback) also goes to every log file the run writes — a training
run's ``train.log`` — so a failed run's log says why it failed.
"""

from __future__ import annotations

import functools
import logging
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


def exit_on_user_error(main: F) -> F:
    """Wrap an entry point so that an :class:`NMTError`, or a mandatory (``???``) config value
    left unset, becomes one line on stderr and exit 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
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
        except Exception:
            log_to_files(traceback.format_exc().rstrip())
            raise

    return wrapper  # type: ignore[return-value]


# Command-line lists (``key=value``): Hydra parses ``runs=[a,b]`` as a list and ``runs=a`` as a
# string; the types and ranges of every key are nmt/config_schema.py's.


def str_list(value: object, key: str) -> list[str]:
    """A non-empty list of names or paths: ``key=a`` (one) or ``key=[a,b]``."""
    items = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value]
    if items and all(isinstance(v, str | int | float) and not isinstance(v, bool) for v in items):
        return [str(v) for v in items]
    raise NMTError(f"{key}: expected a file name or a non-empty list [a,b], got {value!r}")
