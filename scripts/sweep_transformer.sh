#!/usr/bin/env bash
# Tuning the Transformer preset (+experiment=transformer) on valid: one change at a time, each
# variant trained for the same wall-clock budget with every seed of SEEDS, then nmt-compare's table
# (mean ± std over seeds, sacrebleu's paired bootstrap against the preset). docs/transformer.md
# has what was run and what it showed.
#
#   MINUTES=30 SEEDS="1 2" SWEEP_DIR=multirun/transformer bash scripts/sweep_transformer.sh
#   VARIANTS="preset dec3 warmup800" bash scripts/sweep_transformer.sh   # a subset
#   SIDE_BY_SIDE=1 MINUTES=15 bash scripts/sweep_transformer.sh         # seeds at once, a core each
# (SIDE_BY_SIDE: scripts/sweep_lib.sh.)
#
# Extra arguments go to every run. A timed sweep: run it alone on the machine.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

MINUTES="${MINUTES:-30}"
SEEDS="${SEEDS:-1 2}"
SWEEP_DIR="${SWEEP_DIR:-multirun/transformer}"
# shellcheck source=scripts/sweep_lib.sh
source scripts/sweep_lib.sh

declare -A VARIANTS_OF=(
    [preset]=""
    [enc4]="model.encoder.num_layers=4"                                  # depth
    [dec3]="model.decoder.num_layers=3"
    [dec1]="model.decoder.num_layers=1"
    [ff512]="model.encoder.ff_size=512 model.decoder.ff_size=512"        # width
    [d192]="model.encoder.embed_dim=192 model.encoder.hidden_size=192 model.decoder.embed_dim=192 model.decoder.hidden_size=192"
    [warmup800]="optim.warmup_steps=800"                                 # warm-up
    [warmup200]="optim.warmup_steps=200"
    [lr2e-3]="optim.lr=2e-3"
    [dropout0.1]="model.encoder.dropout=0.1 model.decoder.dropout=0.1"   # dropout (the preset: 0)
    [dropout0.2]="model.encoder.dropout=0.2 model.decoder.dropout=0.2"
    [batch8k]="data.batching.max_tokens=8192"                            # batch
    [batch2k]="data.batching.max_tokens=2048"
)
VARIANTS="${VARIANTS:-preset dec1 ff512 warmup200 lr2e-3 dropout0.1 batch2k}"

# shellcheck disable=SC2086  # the names are meant to split on spaces
require_known variant VARIANTS_OF $VARIANTS
for name in $VARIANTS; do
    # shellcheck disable=SC2086  # the overrides are meant to split on spaces
    train_variant "$SWEEP_DIR/$name" +experiment=transformer ${VARIANTS_OF[$name]} "$@"
done

if [[ "${COMPARE:-1}" != 0 ]]; then
    baseline=()  # the preset's first seed names the baseline variant, when it ran
    if [[ " $VARIANTS " == *" preset "* ]]; then baseline=("baseline=preset/seed${SEEDS%% *}"); fi
    python -m nmt.compare sweep="$SWEEP_DIR" evaluate_test=true "${baseline[@]}"
fi
