"""Quality against training minutes, an alias of nmt-quality-curve (nmt/quality_curve.py): python scripts/quality_curve.py runs=[RUN,...]"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from nmt.quality_curve import main  # noqa: E402

if __name__ == "__main__":
    main()
