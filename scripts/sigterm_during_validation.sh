#!/usr/bin/env bash
# How long a preempted run takes to stop when the signal arrives during a validation.
#   bash scripts/sigterm_during_validation.sh RUN_DIR [training overrides ...]
# Starts the default recipe (run from the repository root, its venv active) with a validation
# every 10 steps over all the valid sentences, sends SIGTERM 2 s after the validation's progress
# bar appears, and prints the seconds from the signal to the exit (docs/faults.md).
set -u
RUN=$1; shift
rm -rf "$RUN"
python -m nmt.train trainer.max_steps=2000 trainer.val_every_steps=10 trainer.val_max_sentences=null \
    hydra.run.dir="$RUN" "$@" > "$RUN.out" 2> "$RUN.err" &
PID=$!
until grep -q "translating" "$RUN.err" 2>/dev/null; do
    sleep 0.2
    kill -0 $PID 2>/dev/null || { echo "the run ended before its validation: see $RUN.err"; exit 1; }
done
sleep 2
START=$(date +%s.%N)
echo "SIGTERM at $(date +%T.%N | cut -c1-12)"
kill -TERM $PID
wait $PID
STATUS=$?
echo "exit status $STATUS, $(python -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$START" "$(date +%s.%N)") s from SIGTERM to exit"
