"""nmt: English→Korean neural machine translation with recurrent encoders and attention."""

from pathlib import Path

__version__ = "0.1.0"

# The checkout: configs/ lives here, and ../shared/corpora beside it is the default corpus root.
REPO_ROOT = Path(__file__).resolve().parents[1]
