"""nmt: English→Korean neural machine translation with recurrent encoders and attention."""

from pathlib import Path

__version__ = "0.1.0"

_PACKAGE = Path(__file__).resolve().parent

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

__all__ = ["Translation", "Translator", "__version__"]


def __getattr__(name: str):
    """``from nmt import Translator``: the inference layer, imported on first use so that
    ``import nmt`` alone (configs, errors, the CLI's --help) stays free of torch."""
    if name in ("Translator", "Translation"):
        from nmt import inference

        return getattr(inference, name)
    raise AttributeError(f"module 'nmt' has no attribute {name!r}")
