"""Training and decoding speed, memory and FLOPs (see nmt/benchmark.py).

python scripts/benchmark.py [training overrides, e.g. +experiment=joeynmt_ref] [benchmark.key=value]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from nmt.benchmark import main  # noqa: E402

if __name__ == "__main__":
    main()
