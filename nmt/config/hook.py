"""The Hydra callback that checks a command's composed config before Hydra starts the job.

``configs/hydra/callbacks/nmt.yaml`` installs it in every command (``override
hydra/callbacks: nmt`` in each configs/<command>.yaml). Hydra calls ``on_run_start`` (and
``on_multirun_start``) after composing the config and before the job: before it creates the run
dir, writes ``.hydra/`` or opens the log file. A value the schema (:mod:`nmt.config.schema`)
rejects ends the command with one line on stderr and exit status 2, leaving nothing on disk.
``--cfg``, ``--help`` and shell completion run no callbacks, so they print as before.
"""

from __future__ import annotations

import sys
from typing import Any

from hydra.experimental.callback import Callback

from nmt.config.schema import COMMANDS, check_command
from nmt.core.errors import NMTError
from nmt.core.io import check_writable


class CheckConfig(Callback):
    """Checks the config of the command named by ``config_name`` (a key of
    :data:`nmt.config.schema.COMMANDS`); for a command with a run dir (``nmt-train``: its
    ``hydra.output_subdir`` is set) also that the run dir can be written, where Hydra would
    stop with a ValueError about its log file handler."""

    def on_run_start(self, config: Any, config_name: str | None = None, **kwargs: Any) -> None:
        check_or_exit(config, config_name, run_dir=True)

    def on_multirun_start(self, config: Any, config_name: str | None = None, **kwargs: Any) -> None:
        check_or_exit(config, config_name, run_dir=False)


def check_or_exit(config: Any, config_name: str | None, run_dir: bool) -> None:
    """:func:`check_command`, and the run dir; a problem: its line on stderr, exit 2."""
    try:
        if config_name in COMMANDS:
            check_command(config_name, config)
        if run_dir and config.hydra.output_subdir is not None:
            check_writable(config.hydra.run.dir, "run folder")
    except NMTError as err:  # Hydra would turn an exception in a callback into a warning
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
