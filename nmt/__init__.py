"""nmt: English→Korean neural machine translation with recurrent encoders and attention.

The package's public face: ``from nmt import Translator``. The library lives in the folders
(docs/modules.md), the commands beside this file.
"""

from nmt.core.paths import VERSION as __version__

__all__ = ["Translation", "Translator", "__version__"]


def __getattr__(name: str):
    """``from nmt import Translator``: the inference layer, imported on first use so that
    ``import nmt`` alone (configs, errors, the CLI's --help) stays free of torch."""
    if name in ("Translator", "Translation"):
        from nmt.inference import translator

        return getattr(translator, name)
    raise AttributeError(f"module 'nmt' has no attribute {name!r}")
