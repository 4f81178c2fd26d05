"""Where the package, its checkout and its Hydra configs are, and its version."""

from pathlib import Path

VERSION = "0.1.0"

_PACKAGE = Path(__file__).resolve().parents[1]

# A source checkout holds the package beside configs/ and pyproject.toml; an installed wheel has
# no checkout (REPO_ROOT is then None) and carries the configs inside the package instead.
REPO_ROOT: Path | None = _PACKAGE.parent if (_PACKAGE.parent / "pyproject.toml").is_file() else None

# The Hydra config folder: nmt/configs in a wheel (setuptools maps the package nmt.configs to
# the top-level configs/), the checkout's configs/ otherwise.
CONFIG_DIR = (
    _PACKAGE / "configs"
    if (_PACKAGE / "configs").is_dir() or REPO_ROOT is None
    else REPO_ROOT / "configs"
)
