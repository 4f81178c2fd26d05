"""Each checkpoint alone against their ensemble on a split: BLEU, chrF, paired significance, speed.

    python scripts/ensemble_benchmark.py A.pt B.pt [--split test] [--beam 5] [--out results.json]

Every system decodes the whole split with the same search (beam ``--beam``, the checkpoints' own
length penalty and n-gram blocking, ``search.precision`` as the checkpoint says: fp32 unless it
was set otherwise), one after the other in this process, so the times compare on this machine.
The ensemble decodes twice: combining the members' log-probabilities (``ensemble.combine=
log_prob``, the default) and their probabilities (``prob``). Each ensemble is tested against
each member with sacrebleu's paired bootstrap (1,000 resamples, BLEU ko-mecab and chrF). Prints
a Markdown table; ``--out`` also writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from nmt.core.runtime import cpu_summary
from nmt.data.pipeline import read_split
from nmt.evaluation.metrics import Headline, score_corpus
from nmt.evaluation.significance import paired_test
from nmt.inference.ensemble import EnsembleSettings
from nmt.inference.translator import Translator


def load(ckpts: list[str], search: dict) -> dict[str, Translator]:
    """Each checkpoint alone (named by its run dir), then the ensembles of all of them."""
    translators = {
        Path(p).parent.parent.name or p: Translator.from_checkpoint(p, "cpu", **search)
        for p in ckpts
    }
    for combine in ("log_prob", "prob"):
        settings = EnsembleSettings(combine=combine)
        translators[f"ensemble ({combine})"] = Translator.from_checkpoints(
            ckpts, "cpu", ensemble=settings, **search
        )
    return translators


def decode(translator: Translator, sources: list[str]) -> tuple[list[str], float]:
    start = time.perf_counter()
    hypotheses = translator.translate_text(sources)
    return hypotheses, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ckpts", nargs="+", help="two checkpoints or more, same vocabularies")
    parser.add_argument("--split", default="test")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    translators = load(args.ckpts, {"beam_size": args.beam, "n_best": 1})
    members = list(translators)[: len(args.ckpts)]
    first = translators[members[0]]
    sources, references, _, _ = read_split(first.info.config, args.split, log=print)
    translators["ensemble (prob)"].translate_text(sources[:8])  # warm-up: first allocations

    results, outputs = {}, {}
    for name, translator in translators.items():
        outputs[name], seconds = decode(translator, sources)
        headline = Headline.of(score_corpus(outputs[name], references, ("ko-mecab",)))
        results[name] = {
            "bleu": headline.bleu,
            "chrf": headline.chrf,
            "seconds": seconds,
            "sentences_per_s": len(sources) / seconds,
            "precision": translator.precision.name,
        }
    for name in results:
        if name in members:
            continue
        for member in members:
            test = paired_test([(outputs[member], references)], [(outputs[name], references)], "bs")
            results[name][f"vs {member}"] = {"bleu_p": test.bleu_p, "chrf_p": test.chrf_p}

    print(
        f"\n{args.split}: {len(sources)} sentences, beam {args.beam}, "
        f"{torch.get_num_threads()} threads, CPU {cpu_summary()['model']}\n"
    )
    heads = " | ".join(f"p against {m} (BLEU, chrF)" for m in members)
    print(f"| system | BLEU | chrF | sentences/s | {heads} |")
    print("|---|---:|---:|---:|" + "---|" * len(members))
    single = sum(results[m]["sentences_per_s"] for m in members) / len(members)
    for name, r in results.items():
        ps = [r.get(f"vs {m}") for m in members]
        cells = " | ".join(f"{p['bleu_p']:.3f}, {p['chrf_p']:.3f}" if p else "" for p in ps)
        speed = f"{r['sentences_per_s']:.1f} ({r['sentences_per_s'] / single:.2f}×)"
        print(f"| {name} | {r['bleu']:.2f} | {r['chrf']:.2f} | {speed} | {cells} |")
    print(
        "\n(×: against the members' mean speed; p: sacrebleu's paired bootstrap, 1,000 resamples)"
    )
    if args.out:
        report = {
            "split": args.split,
            "beam": args.beam,
            "checkpoints": args.ckpts,
            "systems": results,
            "cpu": cpu_summary(),
            "threads": torch.get_num_threads(),
        }
        args.out.write_text(json.dumps(report, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
