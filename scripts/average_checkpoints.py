"""Average checkpoints, an alias of nmt-average (nmt/average.py): python scripts/average_checkpoints.py run_dir=RUN last=K"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from nmt.average import main  # noqa: E402

if __name__ == "__main__":
    main()
