"""The one exception type for mistakes a user can fix (bad input, bad config).

Entry points print its message on one line, without a traceback, and exit with status 2.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

from omegaconf.errors import MissingMandatoryValue

F = TypeVar("F", bound=Callable)


class NMTError(Exception):
    """A user-facing error: the message names the file, line or config key and what was expected."""


def exit_on_user_error(main: F) -> F:
    """Wrap an entry point so that an :class:`NMTError`, or a mandatory (``???``) config value
    left unset, becomes one line on stderr and exit 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except NMTError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        except MissingMandatoryValue as err:  # a `???` in the config left unset
            key = err.full_key or "a mandatory setting"
            print(f"error: {key}: missing; give it on the command line ({key}=…)", file=sys.stderr)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]
