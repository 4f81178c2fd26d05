# shellcheck shell=bash
# What the sweep scripts share (source it): training one variant for every seed.

# train_variant RUN_DIR [ARG...]: `python -m nmt.train ARG... trainer.max_minutes=$MINUTES`, once
# per seed of $SEEDS into RUN_DIR/seed<N>; with SEEDS empty, once into RUN_DIR with the config's
# seed. SIDE_BY_SIDE=1 trains the seeds at the same time, each pinned to its own core with one
# torch thread: every variant then runs under the same conditions as the others, in less wall
# time, but each run gets fewer steps than a run with every core. A failed run fails the caller.
train_variant() {
    local run_dir=$1 core=0 seed pid
    shift
    if [[ -z "${SEEDS:-}" ]]; then
        python -m nmt.train "$@" trainer.max_minutes="$MINUTES" hydra.run.dir="$run_dir"
        return
    fi
    local pids=()
    for seed in $SEEDS; do
        local run=(python -m nmt.train "$@" seed="$seed" trainer.max_minutes="$MINUTES")
        run+=(hydra.run.dir="$run_dir/seed$seed")
        if [[ "${SIDE_BY_SIDE:-0}" != 0 ]]; then
            taskset -c "$core" "${run[@]}" trainer.num_threads=1 &
            pids+=($!)
            core=$(((core + 1) % $(nproc)))
        else
            "${run[@]}"
        fi
    done
    for pid in "${pids[@]}"; do wait "$pid"; done
}
