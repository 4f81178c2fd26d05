#!/usr/bin/env bash
# Training speed of each deep-model piece against the default, in one sitting: nmt-benchmark on
# the default recipe with one piece changed, in fp32 and bf16 (emulated, and slow, on a CPU
# without bf16 units), no decoding; then one table: target tokens/s, parameters, peak RSS.
#
#   OUT=runs/pieces bash scripts/bench_pieces.sh                  # every piece
#   PIECES="default heads4" PRECISIONS=fp32 bash scripts/bench_pieces.sh
#
# A timed run: run it alone. Extra arguments go to every benchmark.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${OUT:-runs/pieces}"
mkdir -p "$OUT"

# shellcheck source=scripts/sweep_lib.sh
source scripts/sweep_lib.sh
declare -A PIECE=([default]="" [transformer]="+experiment=transformer")
for name in "${!DEEP_PIECES[@]}"; do PIECE[$name]=${DEEP_PIECES[$name]}; done
PIECES="${PIECES:-default heads4 concat_heads4 layers2 layers2_ln ln_cell residual3 rnmt2 word_dropout0.1 transformer}"
PRECISIONS="${PRECISIONS:-fp32 bf16}"

# shellcheck disable=SC2086  # the names are meant to split on spaces
require_known piece PIECE $PIECES
for precision in $PRECISIONS; do
    for name in $PIECES; do
        # shellcheck disable=SC2086  # the overrides are meant to split on spaces
        python -m nmt.benchmark ${PIECE[$name]} trainer.precision="$precision" \
            benchmark.decode_sentences=0 benchmark.output="$OUT/$name.$precision.json" "$@" \
            > "$OUT/$name.$precision.log" 2>&1
    done
done

python - "$OUT" $PIECES <<'PY'
import json, sys
from pathlib import Path
out, names = Path(sys.argv[1]), sys.argv[2:]
print("| piece | precision | train target tokens/s | vs default | parameters | peak RSS MiB |")
print("|---|---|---:|---:|---:|---:|")
for precision in ("fp32", "bf16"):
    base = None
    for name in names:
        path = out / f"{name}.{precision}.json"
        if not path.exists():
            continue
        r = json.loads(path.read_text())
        speed = r["train"]["tgt_tokens_per_s"]
        base = speed if name == "default" else base
        ratio = f"{speed / base:.2f}×" if base else "–"
        rss = f"{r['memory']['peak_rss_mib']:,.0f}"
        print(f"| {name} | {precision} | {speed:,.0f} | {ratio} | {r['model']['parameters']:,} | {rss} |")
print("CPU:", json.loads((out / f"{names[0]}.fp32.json").read_text())["device"])
PY
