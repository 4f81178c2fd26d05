"""The parity table of docs/export.md: every combination exported and compared with eager.

python scripts/export_parity.py [exporter=legacy|dynamo]

Each row: a tiny random model (tests/export_grid.py's tiny_model_config) exported into a
temporary folder and checked at batches of source lengths nmt.inference.onnx_export.CHECK_LENGTHS
(the example was EXPORT_LENGTHS), 6 decoder steps with beam-like reordering; the largest
differences.
"""

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

import torch  # noqa: E402

from nmt.core.errors import NMTError  # noqa: E402
from tests.export_grid import parity_grid, tiny_model_config, tiny_parity  # noqa: E402


def main(argv: list[str]) -> None:
    exporter = argv[0].split("=", 1)[1] if argv else "legacy"
    torch.set_num_threads(1)
    print(
        "| encoder | score | decoder | input feeding | max abs Δ log-prob | max abs Δ attention |"
    )
    print("|---|---|---|---|---:|---:|")
    for rnn, score, style, feeding in parity_grid():
        with tempfile.TemporaryDirectory() as folder:
            cfg = tiny_model_config(rnn, score, style, feeding)
            try:
                p = tiny_parity(cfg, Path(folder), exporter)
                cells = f"{p['log_prob']:.2e} | {p['attn_weights']:.2e}"
            except NMTError as err:
                cells = f"fails: {str(err)[:120]} | –"
        feed = ("on" if feeding else "off") if style == "luong" else "–"
        print(f"| {rnn} | {score} | {style} | {feed} | {cells} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
