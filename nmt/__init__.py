"""nmt: English→Korean neural machine translation with recurrent encoders and attention."""

from pathlib import Path

__version__ = "0.1.0"

# The checkout: configs/ lives here, and ../shared/corpora beside it is the default corpus root.
REPO_ROOT = Path(__file__).resolve().parents[1]

__all__ = ["Translation", "Translator", "__version__"]


def __getattr__(name: str):
    """``from nmt import Translator``: the inference layer, imported on first use so that
    ``import nmt`` alone (configs, errors, the CLI's --help) stays free of torch."""
    if name in ("Translator", "Translation"):
        from nmt import inference

        return getattr(inference, name)
    raise AttributeError(f"module 'nmt' has no attribute {name!r}")
