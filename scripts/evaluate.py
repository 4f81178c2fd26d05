"""Score translations (see nmt/evaluate.py): python scripts/evaluate.py hyp=FILE ref=FILE ..."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from nmt.evaluate import main  # noqa: E402

if __name__ == "__main__":
    main()
