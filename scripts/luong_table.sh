#!/usr/bin/env bash
# The Luong-style table of docs/luong-table.md: global (location, dot, general, concat),
# local-m (dot, general) and local-p (dot, general) attention on the default recipe, each trained
# for the same number of optimiser steps (a step budget, so the figures do not depend on how busy
# the CPU is), for each seed in SEEDS; then the table with mean ± std and significance tests.
#
#   bash scripts/luong_table.sh                       # seeds 1 and 2, one run after another
#   SEEDS=1 COMPARE=0 bash scripts/luong_table.sh & SEEDS=2 bash scripts/luong_table.sh  # in parallel
#   HEADS=1,4,8 bash scripts/luong_table.sh          # every row with 1, 4 and 8 heads (sweep_attention.sh)
#
# STEPS (300), WARMUP (100) and THREADS (1: two seeds side by side on a 2-core machine) set the
# protocol; extra arguments go to every nmt.train run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

STEPS="${STEPS:-300}"
WARMUP="${WARMUP:-100}"
THREADS="${THREADS:-1}"
SEEDS="${SEEDS:-1,2}"
OUT="${OUT:-multirun/luong}"
protocol=(
    trainer.max_minutes=null trainer.max_steps="$STEPS" optim.warmup_steps="$WARMUP"
    trainer.val_every_steps="$STEPS" trainer.keep_best=1 trainer.num_threads="$THREADS"
)

for seed in ${SEEDS//,/ }; do
    COMPARE=0 TYPES=global ATTENTIONS=location,dot,general,concat ENCODERS=gru SEEDS="$seed" \
        SWEEP_DIR="$OUT/seed$seed/global" bash scripts/sweep_attention.sh "${protocol[@]}" "$@"
    COMPARE=0 TYPES=local_m,local_p ATTENTIONS=dot,general ENCODERS=gru SEEDS="$seed" \
        SWEEP_DIR="$OUT/seed$seed/local" bash scripts/sweep_attention.sh "${protocol[@]}" "$@"
done

if [[ "${COMPARE:-1}" != 0 ]]; then
    python -m nmt.compare sweep="$OUT" evaluate_test=true baseline=general/gru/luong
fi
