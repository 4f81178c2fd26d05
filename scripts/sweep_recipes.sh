#!/usr/bin/env bash
# Recipe experiments: the default config with one setting changed per run, each trained for the
# same wall-clock budget, then the table (nmt-compare; rank by valid BLEU). docs/recipes.md
# has the results and the command that produced them.
#
#   MINUTES=12 SWEEP_DIR=multirun/recipes bash scripts/sweep_recipes.sh trainer.num_threads=1
#   VARIANTS="untied ls0" bash scripts/sweep_recipes.sh     # a subset, e.g. one of two parallel halves
#   SEEDS="1 2" SIDE_BY_SIDE=1 VARIANTS="default heads4 rnmt2" bash scripts/sweep_recipes.sh
#
# SEEDS: each variant once per seed, in <variant>/seed<N>; SIDE_BY_SIDE: scripts/sweep_lib.sh. The
# deep-model variants (heads4, layers2_ln, rnmt2, …) are the pieces of docs/models.md,
# DEEP_PIECES in scripts/sweep_lib.sh.
#
# Extra arguments go to every run. The baseline (the default config, unchanged) is "default".
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

MINUTES="${MINUTES:-30}"
SWEEP_DIR="${SWEEP_DIR:-multirun/recipes}"
# shellcheck source=scripts/sweep_lib.sh
source scripts/sweep_lib.sh

declare -A RECIPES=(
    [default]=""
    [warmup200]="optim.warmup_steps=200"
    [lr3e-3]="optim.lr=3e-3"
    [vocab4k]="data.out_dir=data/enko_unigram4k data.vocab.src_size=4000 data.vocab.tgt_size=4000"
    [joint16k]="data.out_dir=data/enko_joint16k data.vocab.joint=true data.vocab.src_size=16000 data.vocab.tgt_size=16000"
    [bpe8k]="data.out_dir=data/enko_bpe8k data.vocab.model_type=bpe"
    [untied]="model.tie_embeddings=false"
    [ls0]="trainer.label_smoothing=0.0"
    [dropout0.1]="model.encoder.dropout=0.1 model.decoder.dropout=0.1"
    [batch8k]="data.batching.max_tokens=8192"
    [input_feeding]="model.decoder.input_feeding=true"
)
for name in "${!DEEP_PIECES[@]}"; do RECIPES[$name]=${DEEP_PIECES[$name]}; done
VARIANTS="${VARIANTS:-default warmup200 lr3e-3 vocab4k untied ls0}"

# shellcheck disable=SC2086  # the names are meant to split on spaces
require_known variant RECIPES $VARIANTS
for name in $VARIANTS; do
    # shellcheck disable=SC2086  # the overrides are meant to split on spaces
    train_variant "$SWEEP_DIR/$name" ${RECIPES[$name]} "$@"
done

# COMPARE=0: leave the table for later, e.g. while a second half of the sweep still runs
if [[ "${COMPARE:-1}" != 0 ]]; then
    python -m nmt.compare sweep="$SWEEP_DIR" evaluate_test=true
fi
