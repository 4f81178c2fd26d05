"""Inline markup kept, before and after protecting it: spans kept, BLEU and chrF, speed.

    python scripts/markup_benchmark.py CKPT [--split test] [--beam 5] [--out results.json]

Decodes the split twice with one checkpoint, one run after the other in this process: markup
translated as text (``markup=false``) and protected (``markup=true``, nmt.data.markup). Counts
the spans kept by the references' rule (:func:`nmt.data.markup.count_kept`) — for the
references too — and scores BLEU (ko-mecab) and chrF on the sentences with markup and on all.
Prints a Markdown table; ``--out`` also writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from nmt.core.runtime import cpu_summary
from nmt.data.markup import count_kept, find_spans
from nmt.data.pipeline import read_split
from nmt.evaluation.metrics import Headline, score_corpus
from nmt.inference.translator import Translator


def kept_share(sources: list[str], outputs: list[str]) -> tuple[int, int]:
    pairs = [count_kept(s, o) for s, o in zip(sources, outputs, strict=True)]
    return sum(k for k, _ in pairs), sum(n for _, n in pairs)


def scores(hypotheses: list[str], references: list[str]) -> tuple[float, float]:
    headline = Headline.of(score_corpus(hypotheses, references, ("ko-mecab",)))
    return headline.bleu, headline.chrf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ckpt")
    parser.add_argument("--split", default="test")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    translator = Translator.from_checkpoint(args.ckpt, "cpu", beam_size=args.beam, n_best=1)
    sources, references, _, _ = read_split(translator.info.config, args.split, log=print)
    marked = [i for i, s in enumerate(sources) if find_spans(s)]
    translator.translate_text(sources[:8])  # warm-up: first allocations

    kept, total = kept_share([sources[i] for i in marked], [references[i] for i in marked])
    results = {"references": {"kept": kept, "spans": total}}
    for name, protect in (("markup=false", False), ("markup=true", True)):
        start = time.perf_counter()
        outputs = translator.with_markup(protect).translate_text(sources)
        seconds = time.perf_counter() - start
        kept, total = kept_share([sources[i] for i in marked], [outputs[i] for i in marked])
        bleu_marked, chrf_marked = scores(
            [outputs[i] for i in marked], [references[i] for i in marked]
        )
        bleu, chrf = scores(outputs, references)
        results[name] = {
            "kept": kept,
            "spans": total,
            "bleu_markup_sentences": bleu_marked,
            "chrf_markup_sentences": chrf_marked,
            "bleu": bleu,
            "chrf": chrf,
            "sentences_per_s": len(sources) / seconds,
        }

    print(
        f"\n{args.split}: {len(sources)} sentences, {len(marked)} with markup, beam {args.beam}, "
        f"{torch.get_num_threads()} threads, CPU {cpu_summary()['model']}\n"
    )
    print("| | spans kept | BLEU / chrF, sentences with markup | BLEU / chrF, all | sentences/s |")
    print("|---|---:|---:|---:|---:|")
    ref = results["references"]
    print(
        f"| references | {ref['kept']}/{ref['spans']} ({100 * ref['kept'] / ref['spans']:.1f}%) | | | |"
    )
    for name in ("markup=false", "markup=true"):
        r = results[name]
        print(
            f"| {name} | {r['kept']}/{r['spans']} ({100 * r['kept'] / r['spans']:.1f}%) | "
            f"{r['bleu_markup_sentences']:.2f} / {r['chrf_markup_sentences']:.2f} | "
            f"{r['bleu']:.2f} / {r['chrf']:.2f} | {r['sentences_per_s']:.1f} |"
        )
    if args.out:
        report = {"ckpt": args.ckpt, "split": args.split, "beam": args.beam, "results": results,
                  "cpu": cpu_summary(), "threads": torch.get_num_threads()}  # fmt: skip
        args.out.write_text(json.dumps(report, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
