"""Every console script starts in a fresh interpreter: `--help` composes its config there.

In-process tests (tests/test_cli.py) share one interpreter, where an entry point that forgets to
register the config resolvers still works because another module did; a fresh process catches it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import distribution

import pytest

# the installed project's console scripts (pip install -e . or the wheel): name → "module:main"
SCRIPTS = {
    ep.name: ep.value
    for ep in distribution("nmt-enko").entry_points
    if ep.group == "console_scripts"
}


def test_every_command_is_a_console_script():
    assert len(SCRIPTS) >= 12 and all(name.startswith("nmt-") for name in SCRIPTS)


def run_help(name: str) -> subprocess.CompletedProcess[str]:
    module = SCRIPTS[name].split(":")[0]
    return subprocess.run(
        [sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def help_results() -> dict[str, subprocess.CompletedProcess[str]]:
    """Every script's ``--help`` in its own fresh interpreter, run side by side: each one mostly
    waits for torch to import, so the 13 finish in about half the time one after the other."""
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        return dict(zip(sorted(SCRIPTS), pool.map(run_help, sorted(SCRIPTS)), strict=True))


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_console_script_help_in_a_fresh_interpreter(name, help_results):
    module = SCRIPTS[name].split(":")[0]
    result = help_results[name]
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith(f"{name} (python -m {module}): "), result.stdout[:200]
