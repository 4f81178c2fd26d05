#!/usr/bin/env bash
# Beam-5 decoding of all 1,080 enko test sentences, JoeyNMT 2.3.0 vs this project, the same recipe
# (joeynmt_ref, beam 5, alpha 1.0, 64 sentences per batch) after 30 minutes of training each,
# one after the other on a quiet machine.
while pgrep -f "joeynmt train" >/dev/null; do sleep 10; done
ls -la /tmp/bench/joey30/model/
cd /tmp/bench/joey30
echo "== JoeyNMT 2.3.0 best.ckpt"
/usr/bin/time -f "joey wall %e s" /tmp/peers/bin/python -m joeynmt test rnn_test.yaml -o out 2>&1 | grep -E "Generation took|wall|Evaluation result|Loading model|ckpt"
cd /work/main
for ck in best.pt step0000400.pt; do
  echo "== nmt $ck"
  /usr/bin/time -f "nmt wall %e s" python scripts/benchmark.py +experiment=joeynmt_ref benchmark.ckpt=runs/joeynmt-ref-30min/checkpoints/$ck \
    benchmark.warmup_steps=1 benchmark.windows=1 benchmark.steps_per_window=1 benchmark.gemm_repeats=1 \
    benchmark.output=runs/speed/decode_vs_joey_$ck.json 2>&1 | grep -E "decode|wall|device|decoded"
done
echo done
