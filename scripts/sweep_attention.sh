#!/usr/bin/env bash
# The attention comparison: every score function × GRU/LSTM encoder, each trained for the same
# wall-clock budget, then the comparison table and plots (nmt-compare, nmt/compare.py).
#
#   bash scripts/sweep_attention.sh                      # 10 runs × 30 minutes, one after another
#   MINUTES=10 SWEEP_DIR=multirun/att10 bash scripts/sweep_attention.sh optim.lr=1e-3
#
# Extra arguments go to every nmt.train run. Runs land in
# $SWEEP_DIR/<job>_<type>-<attention>-<encoder>-<decoder>-seed<seed>.
# ATTENTIONS, ENCODERS, TYPES (global, local_m, local_p), SEEDS and HEADS (model.attention.heads;
# comma-separated) choose the variants; every combination runs. With HEADS the run names gain
# -h<H> after the score, e.g. 1_global-concat-h4-gru-luong-seed1234:
#   ATTENTIONS=dot,general,scaled_dot,concat HEADS=1,4,8 bash scripts/sweep_attention.sh
# E.g. to finish an interrupted sweep, or to repeat with seeds:
#   SWEEP_DIR=multirun/attention/rest ATTENTIONS=location ENCODERS=lstm bash scripts/sweep_attention.sh
#   TYPES=local_m,local_p ATTENTIONS=dot,general SEEDS=1,2,3 bash scripts/sweep_attention.sh
#   python -m nmt.compare sweep=multirun/attention   # finds run folders at any depth
# BASELINE (a run's variant label, e.g. global-general/gru/luong) is passed to nmt.compare; runs of
# one variant that differ only in the seed are summarised as mean ± std.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

MINUTES="${MINUTES:-30}"
# default: every registered score function (nmt.models.attention.SCORES), in its order
ATTENTIONS="${ATTENTIONS:-$(python -c 'from nmt.models import SCORES; print(",".join(SCORES))')}"
ENCODERS="${ENCODERS:-gru,lstm}"
TYPES="${TYPES:-global}"
SEEDS="${SEEDS:-1234}"
SWEEP_DIR="${SWEEP_DIR:-multirun/attention}"
score='${model.attention.score}'
heads=()
if [[ -n "${HEADS:-}" ]]; then
    score+='-h${model.attention.heads}'
    heads=(model.attention.heads="$HEADS")
fi

python -m nmt.train -m \
    model/attention="$ATTENTIONS" \
    model/encoder="$ENCODERS" \
    model.attention.type="$TYPES" \
    "${heads[@]}" \
    seed="$SEEDS" \
    trainer.max_minutes="$MINUTES" \
    hydra.sweep.dir="$SWEEP_DIR" \
    "hydra.sweep.subdir=\${hydra.job.num}_\${model.attention.type}-$score-\${model.encoder.rnn_type}-\${model.decoder.style}-seed\${seed}" \
    "$@"

# COMPARE=0: leave the table for later, e.g. while a second half of the sweep still runs
if [[ "${COMPARE:-1}" != 0 ]]; then
    python -m nmt.compare sweep="$SWEEP_DIR" evaluate_test=true ${BASELINE:+baseline="$BASELINE"}
fi
