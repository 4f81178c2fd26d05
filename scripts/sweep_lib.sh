# shellcheck shell=bash
# What the sweep scripts share (source it): the deep-model pieces and training one variant for
# every seed.

# The deep-model pieces of docs/models.md, each as the overrides that turn the default recipe into
# it: the variants of sweep_recipes.sh and the rows of bench_pieces.sh.
declare -A DEEP_PIECES=(
    [heads4]="model.attention.heads=4"
    [concat_heads4]="model/attention=concat model.attention.heads=4"
    [layers2]="model.encoder.num_layers=2 model.decoder.num_layers=2"
    [layers2_ln]="model.encoder.num_layers=2 model.decoder.num_layers=2 model.encoder.layer_norm=between model.decoder.layer_norm=between"
    [ln_cell]="model.encoder.layer_norm=cell model.decoder.layer_norm=cell"
    [residual3]="model.encoder.num_layers=3 model.decoder.num_layers=3 model.encoder.residual_from=2 model.decoder.residual_from=2"
    [rnmt2]="model/decoder=rnmt model.decoder.num_layers=2"
    [word_dropout0.1]="model.encoder.word_dropout=0.1 model.decoder.word_dropout=0.1"
)

# require_known KIND TABLE NAME...: exit 2 with one line naming the first NAME that is not a key
# of the associative array TABLE, before anything runs (KIND: "variant", "piece", …).
require_known() {
    local kind=$1 name
    local -n table=$2
    shift 2
    for name in "$@"; do
        if [[ ! -v "table[$name]" ]]; then
            echo "$(basename "$0"): unknown $kind '$name' (known: ${!table[*]})" >&2
            exit 2
        fi
    done
}

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
