"""Eager PyTorch vs onnxruntime fp32 vs int8: sentences/s, BLEU and identical outputs.

python scripts/bench_export.py CKPT FP32_DIR INT8_DIR [threads=1] [rounds=2] [json=OUT.json]

The folders come from ``nmt-export ckpt=CKPT out=FP32_DIR`` and ``… out=INT8_DIR quantize=int8``.
Decodes the checkpoint's test split greedy and with beam 5, every system in this process with
the same thread count (:func:`nmt.evaluation.export_benchmark.benchmark_backends`), and prints a
Markdown table.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from nmt.core.errors import NMTError, exit_on_user_error  # noqa: E402
from nmt.core.io import write_json  # noqa: E402
from nmt.evaluation.export_benchmark import benchmark_backends, format_benchmark  # noqa: E402


@exit_on_user_error
def main(argv: list[str]) -> None:
    paths = [a for a in argv if "=" not in a]
    options = dict(a.split("=", 1) for a in argv if "=" in a)
    if len(paths) != 3 or set(options) - {"threads", "rounds", "json"}:
        raise NMTError(f"usage: {__doc__.strip().splitlines()[2]}")
    ckpt, fp32, int8 = paths
    report = benchmark_backends(
        ckpt,
        {"onnx fp32": fp32, "onnx int8": int8},
        threads=int(options.get("threads", 1)),
        rounds=int(options.get("rounds", 2)),
    )
    print(format_benchmark(report))
    if "json" in options:
        write_json(options["json"], report)


if __name__ == "__main__":
    main(sys.argv[1:])
