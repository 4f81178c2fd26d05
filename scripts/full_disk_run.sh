#!/usr/bin/env bash
# A training run that fills its disk: a 6 MiB tmpfs as the run folder (root: it mounts one at
# MOUNT), 40 steps, a validation every 10 keeping every step checkpoint, a 32-unit model on the
# first 1,000 pairs of enko (checkpoints of 1.6 MB). Prints the exit status, the last line of
# stderr, the files left and whether each checkpoint loads (docs/faults.md).
#   bash scripts/full_disk_run.sh [MOUNT] [CORPORA]    (from the repository root, venv active)
set -u
MOUNT=${1:-/tmp/nmt_full_disk}; CORPORA=${2:-../shared/corpora}
TINY=$(mktemp -d)
head -1000 "$CORPORA/enko/train.tsv" > "$TINY/train.tsv"
head -50 "$CORPORA/enko/valid.tsv" > "$TINY/valid.tsv"
head -50 "$CORPORA/enko/test.tsv" > "$TINY/test.tsv"
umount "$MOUNT" 2>/dev/null; mkdir -p "$MOUNT"
mount -t tmpfs -o size=6m tmpfs "$MOUNT" || exit 1
python -m nmt.train data=tsv data.train="$TINY/train.tsv" data.valid="$TINY/valid.tsv" \
    data.test="$TINY/test.tsv" data.out_dir="$TINY/prepared" data.vocab.src_size=500 \
    data.vocab.tgt_size=800 model.encoder.embed_dim=32 model.encoder.hidden_size=32 \
    model.decoder.embed_dim=32 model.decoder.hidden_size=32 search=greedy \
    data.batching.max_tokens=512 trainer.num_threads=1 trainer.max_steps=40 \
    trainer.val_every_steps=10 trainer.val_max_sentences=10 trainer.keep_every_validation=true \
    hydra.run.dir="$MOUNT/run" > "$TINY/out" 2> "$TINY/err"
echo "exit status $?"
echo "last line of stderr: $(tail -1 "$TINY/err")"
echo "temporary files: $(find "$MOUNT/run" -name '*.tmp' | wc -l)"
python - "$MOUNT/run/checkpoints" <<'PY'
import sys
from pathlib import Path

import torch

for path in sorted(Path(sys.argv[1]).glob("*.pt")):
    step = torch.load(path, weights_only=True)["progress"]["step"]
    print(f"{path.name}: {path.stat().st_size:,} bytes, loads, step {step}")
PY
umount "$MOUNT"; rm -rf "$TINY"
