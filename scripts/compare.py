"""Compare the runs of a sweep, an alias of nmt-compare (nmt/compare.py): python scripts/compare.py sweep=DIR [evaluate_test=true] [baseline=VARIANT]"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from nmt.compare import main  # noqa: E402

if __name__ == "__main__":
    main()
