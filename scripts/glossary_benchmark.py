"""A glossary of the training data's UI strings applied to enko/test: terms kept, BLEU, speed.

    python scripts/glossary_benchmark.py --ckpt CKPT [--limit 60] [--json results.json]
        [--train TSV] [--test TSV] [--glossary-out runs/ui_glossary.tsv]
        [--min-help-occurrences 3] [--beam 5] [--threads 2]

Builds a glossary from enko/train (:func:`build_ui_glossary`: the LibreOffice UI side — menu
items and dialog labels — whose Korean is consistent and which recur, translated the same way,
in the longer sentences of the help text), writes it as a TSV file (``--glossary-out``, sorted)
and counts, in the test split, the *term occurrences to check*: a sentence whose source contains
an English term (:meth:`nmt.data.glossary.Glossary.find`, the glossary's own matching rules)
and whose reference contains its Korean term (one inside protected markup counts, though the
translator imposes no term there: its misses say so). enko/test holds no UI strings (it is drawn from
the documentation and conversation sources only), so the terms are met in running text.

Decodes the split (or its first ``--limit`` sentences) twice with the same checkpoint, beam
``--beam``, markup protected, one run after the other in this process: without the glossary
and with it (``Translator.with_glossary``: each term found becomes a constraint of the
lexically constrained search, nmt.inference.constraints); then once more each way the subset of
sentences with at least one constraint, for the speed of that subset alone. Reports the share of
the occurrences whose output text contains the Korean term, before and after, and every miss
after with its reason; BLEU (ko-mecab) and chrF on all sentences, on those with a glossary term
and on those where a term was imposed that the reference does not use (the reference translator
wrote something else: what explains a drop); sentences/s and the ratio after/before. Prints a
Markdown table; ``--json`` also writes the figures, the misses and the CPU as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from nmt.core.paths import REPO_ROOT
from nmt.core.runtime import cpu_summary
from nmt.data.corpus import Pair, normalize, read_tsv
from nmt.data.glossary import Glossary
from nmt.evaluation.metrics import Headline, score_corpus
from nmt.inference.translator import Translation, Translator

MAX_UI_WORDS = 4  # a UI string is 1–4 English words; a "longer" sentence has more
MAX_KOREAN_WORDS = 6  # its Korean side: at most 6 words, 30 characters
MAX_KOREAN_CHARS = 30
UI_WORD = re.compile(r"[A-Za-z]+(?:['-][A-Za-z]+)*|&")  # letters, inner ' or -; or "&"
_FUNCTION_WORDS = (
    "a an the this that these those it is are of by to for in on at with from when if and or"
)
FUNCTION_WORDS = frozenset(_FUNCTION_WORDS.split())  # a term may not start or end with one
HANGUL = re.compile(r"[\uac00-\ud7a3]")
MARKUP = re.compile(r"[`:<>{}%/]")  # a word with these may be (part of) a markup span


def ui_shaped(english: str) -> bool:
    """1–4 words, each letters (with an inner hyphen or apostrophe: ``Read-only``) or ``&``,
    starting with a letter: no sentence-final punctuation, digits, markup or placeholders."""
    words = english.split()
    return (
        1 <= len(words) <= MAX_UI_WORDS
        and words[0] != "&"
        and all(UI_WORD.fullmatch(w) for w in words)
    )


def short_korean(korean: str) -> bool:
    """A label's translation: Hangul in it, at most 6 words and 30 characters, no final period."""
    return (
        HANGUL.search(korean) is not None
        and len(korean.split()) <= MAX_KOREAN_WORDS
        and len(korean) <= MAX_KOREAN_CHARS
        and not korean.endswith(".")
    )


def names_a_label(term: str) -> bool:
    """Not an ordinary English word on its own: the term has a capital letter (so the glossary
    matches it only as written, :mod:`nmt.data.glossary`) and is two or more words (``Page
    Style``, ``Save As``), or one word with a capital after its first letter (``AutoCorrect``,
    ``DataPilot``, ``URL``). ``Open``, ``Print`` or ``file`` alone are dropped: in running text
    they are mostly the verb or noun, not the menu item. So is a term that starts or ends with
    a function word (:data:`FUNCTION_WORDS`: ``The Navigator``, ``This is``, ``On Linux``,
    ``Value of``, ``Sort by``): capitalised only as the start of a sentence or a heading, or a
    fragment; ``as`` is not one of them, so ``Save As`` stays."""
    words = term.lower().split()
    if term == term.lower() or words[0] in FUNCTION_WORDS or words[-1] in FUNCTION_WORDS:
        return False
    return len(term.split()) >= 2 or any(c.isupper() for c in term[1:])


def build_ui_glossary(
    train_pairs: Sequence[Pair],
    min_help_occurrences: int = 3,
    min_consistency: float = 0.8,
    min_help_agreement: float = 0.5,
    counts: dict[str, int] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, str]:
    """English UI term → Korean, from the UI strings of ``train_pairs`` (normalised pairs).

    The filters, in order (each one's count is logged):

    1. **UI-shaped**: the English side of a line is 1–4 words of letters (:func:`ui_shaped`).
       Every distinct such English line is a candidate.
    2. **Names a label**, not a common word alone (:func:`names_a_label`): a capital letter, and
       two or more words or an inner capital, and no function word first or last. Lower-case
       terms are dropped, all of them.
    3. **Consistent**: of the lines whose whole English side is the term, ≥ ``min_consistency``
       have the same Korean side, the dominant one, and it is short (:func:`short_korean`).
    4. **Recurs in the help text**: the term occurs, by the glossary's rules (a Glossary of the
       candidates left, leftmost-longest), in ≥ ``min_help_occurrences`` distinct longer
       sentences (more than 4 English words).
    5. **Translated the same there**: the dominant Korean term is a substring of the Korean
       side of ≥ ``min_help_agreement`` of those longer sentences.

    The corpus labels no line with its source, so a Python-docs heading of the same shape
    (``Exception classes``) passes as a UI string does when the docs use it the same way.
    ``counts`` (a dict, when given) gets how many candidates each filter keeps. The result is
    sorted by English term (deterministic).
    """
    standalone: dict[str, Counter[str]] = defaultdict(Counter)
    longer: list[int] = []
    for i, (english, korean) in enumerate(train_pairs):
        if ui_shaped(english):
            standalone[english][korean] += 1
        elif len(english.split()) > MAX_UI_WORDS:
            longer.append(i)
    counts = counts if counts is not None else {}
    counts["ui_shaped"] = len(standalone)
    labels = {term: seen for term, seen in standalone.items() if names_a_label(term)}
    counts["names_a_label"] = len(labels)
    consistent = {}
    for term, seen in labels.items():
        korean, n = seen.most_common(1)[0]
        if n >= min_consistency * seen.total() and short_korean(korean):
            consistent[term] = korean
    counts["consistent"] = len(consistent)

    start = time.perf_counter()
    sentences: dict[str, set[int]] = defaultdict(set)
    candidates = Glossary(consistent)
    for i in longer:
        for match in candidates.find(train_pairs[i][0]):
            sentences[match.term].add(i)
    recurring = {t: k for t, k in consistent.items() if len(sentences[t]) >= min_help_occurrences}
    counts["recurs_in_help"] = len(recurring)
    agreed = {}
    for term, korean in recurring.items():
        agree = sum(korean in train_pairs[i][1] for i in sentences[term])
        if agree >= min_help_agreement * len(sentences[term]):
            agreed[term] = korean
    counts["same_korean_in_help"] = len(agreed)
    log(
        f"UI glossary from {len(train_pairs):,} train pairs ({len(longer):,} longer sentences "
        f"searched in {time.perf_counter() - start:.1f} s): "
        f"{counts['ui_shaped']:,} UI-shaped English lines → {counts['names_a_label']:,} name a "
        f"label → {counts['consistent']:,} consistent Korean → {counts['recurs_in_help']:,} in "
        f"≥ {min_help_occurrences} longer sentences → {counts['same_korean_in_help']:,} with the "
        f"same Korean in ≥ {min_help_agreement:.0%} of them"
    )
    return dict(sorted(agreed.items()))


def gold_phrases(references: Sequence[str], per_sentence: int, seed: int) -> list[list[str]]:
    """``per_sentence`` words of each reference, chosen at random (``seed``): whole words with
    Hangul, 2+ characters, no markup, trailing punctuation cut. What a perfect glossary would
    impose: the test of the search's satisfaction rate and speed at scale (Post & Vilar's
    experiment with reference phrases)."""
    rng = random.Random(seed)
    phrases = []
    for reference in references:
        words = {w.strip(".,;:!?()\"'") for w in reference.split()}
        words = sorted(
            w for w in words if HANGUL.search(w) and len(w) >= 2 and not MARKUP.search(w)
        )
        phrases.append(rng.sample(words, min(per_sentence, len(words))))
    return phrases


def gold_run(
    base: Translator, sources: list[str], references: list[str], per_sentence: int
) -> dict[str, object]:
    """Decode ``sources`` without and with :func:`gold_phrases` (one after the other): the
    phrases met, BLEU/chrF and sentences/s of each."""
    phrases = gold_phrases(references, per_sentence, seed=1)
    before, before_speed = timed(base, sources)
    after, after_speed = timed(base, sources, constraints=phrases)
    imposed = sum(len(p) for p in phrases)
    missing = sum(len(t.missing_constraints) for t in after)
    in_text = sum(p in t.text for t, ps in zip(after, phrases, strict=True) for p in ps)
    in_text_before = sum(p in t.text for t, ps in zip(before, phrases, strict=True) for p in ps)
    return {
        "per_sentence": per_sentence,
        "imposed": imposed,
        "in_output_before": in_text_before,
        "met_after": imposed - missing,
        "in_text_after": in_text,
        "before": scores([t.text for t in before], references),
        "after": scores([t.text for t in after], references),
        "sentences_per_s_before": before_speed,
        "sentences_per_s_after": after_speed,
        "misses": [
            {"sentence": i, "phrase": p, "why": why_missed(base, t, p)}
            for i, t in enumerate(after)
            for p in t.missing_constraints
        ],
    }


def why_missed(translator: Translator, translation: Translation, phrase: str) -> str:
    """Why the search did not fit ``phrase`` into ``translation``."""
    if translator.encode_constraints([[phrase]]) == [[[]]]:
        return "a character the target vocabulary lacks (<unk>): no output can hold it"
    if translation.hit_max_len:
        return "the length limit came first"
    return "outscored: no hypothesis that held it survived"


def write_glossary(entries: dict[str, str], path: Path, header: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"# {header}"] + [f"{term}\t{korean}" for term, korean in sorted(entries.items())]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def scores(hypotheses: list[str], references: list[str]) -> dict[str, float] | None:
    """BLEU (ko-mecab) and chrF; None for no sentences."""
    if not hypotheses:
        return None
    headline = Headline.of(score_corpus(hypotheses, references, ("ko-mecab",)))
    return {"bleu": headline.bleu, "chrf": headline.chrf}


def timed(
    translator: Translator, sentences: list[str], **constraints: Any
) -> tuple[list[Translation], float]:
    """The translations and the sentences/s of one call (one run: on a machine shared with
    other work the figure is that work's too; the load average is reported beside it);
    ``constraints``: the keyword arguments of ``translate`` (``constraints=``, ``avoid=``)."""
    start = time.perf_counter()
    translations = translator.translate(sentences, **constraints)
    return translations, len(sentences) / (time.perf_counter() - start)


def default_corpus(name: str) -> Path:
    """``$NMT_CORPORA/enko/NAME``, else ``../shared/corpora/enko/NAME`` beside the checkout."""
    root = os.environ.get("NMT_CORPORA") or (
        REPO_ROOT.parent / "shared" / "corpora" if REPO_ROOT else Path("corpora")
    )
    return Path(root) / "enko" / name


def read_pairs(path: Path) -> list[Pair]:
    return [(normalize(english), normalize(korean)) for english, korean in read_tsv(path)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--train", type=Path, default=default_corpus("train.tsv"))
    parser.add_argument("--test", type=Path, default=default_corpus("test.tsv"))
    parser.add_argument("--glossary-out", type=Path, default=Path("runs/ui_glossary.tsv"))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--limit", type=int, help="only the first LIMIT test sentences")
    parser.add_argument("--min-help-occurrences", type=int, default=3)
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument(
        "--gold", type=int, default=0, help="also impose N random words of each reference"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    filter_counts: dict[str, int] = {}
    entries = build_ui_glossary(
        read_pairs(args.train), args.min_help_occurrences, counts=filter_counts
    )
    write_glossary(
        entries,
        args.glossary_out,
        f"UI terms of {args.train} (scripts/glossary_benchmark.py, "
        f"--min-help-occurrences {args.min_help_occurrences}): {len(entries)} terms",
    )
    glossary = Glossary(entries, str(args.glossary_out))
    print(f"wrote {len(glossary)} terms to {args.glossary_out}")

    test = read_pairs(args.test)[: args.limit]
    sources, references = [s for s, _ in test], [r for _, r in test]
    # the occurrences to check: the source has the English term, the reference its Korean
    found = [{m.target: m.term for m in reversed(glossary.find(s))} for s in sources]
    occurrences = [(i, k) for i, terms in enumerate(found) for k in terms if k in references[i]]
    in_source = sum(len(terms) for terms in found)

    base = Translator.from_checkpoint(args.ckpt, "cpu", beam_size=args.beam, n_best=1)
    base = base.with_markup(True)
    glossed = base.with_glossary(glossary)
    imposed = glossed.constraints_for(glossed.prepare(sources)) or [[] for _ in sources]
    constrained = [i for i, phrases in enumerate(imposed) if phrases]
    outside = [(i, k) for i, k in occurrences if k in imposed[i]]  # not inside protected markup
    unused = [
        (i, k) for i, phrases in enumerate(imposed) for k in phrases if k not in references[i]
    ]
    lacking = sorted({i for i, _ in unused})
    base.translate(sources[:8])  # warm-up: first allocations
    load = os.getloadavg()

    runs: dict[str, list[Translation]] = {}
    results: dict[str, dict] = {}
    subset = [sources[i] for i in constrained]
    for name, translator in (("before", base), ("after", glossed)):
        runs[name], speed = timed(translator, sources)
        _, subset_speed = timed(translator, subset) if subset else (None, None)
        outputs = [t.text for t in runs[name]]
        kept = sum(k in outputs[i] for i, k in occurrences)
        kept_outside = sum(k in outputs[i] for i, k in outside)

        def on(indices: list[int], outputs: list[str] = outputs) -> dict[str, float] | None:
            return scores([outputs[i] for i in indices], [references[i] for i in indices])

        results[name] = {
            "terms_in_output": kept,
            "occurrences": len(occurrences),
            "terms_in_output_outside_markup": kept_outside,
            "occurrences_outside_markup": len(outside),
            "all": on(list(range(len(sources)))),
            "glossary_sentences": on(constrained),
            "reference_lacks_a_term": on(lacking),
            "sentences_per_s": speed,
            "glossary_sentences_per_s": subset_speed,
        }

    misses = []
    for i, korean in occurrences:
        t = runs["after"][i]
        if korean in t.text:
            continue
        if korean not in t.constraints:
            why = "not imposed (the English term is inside protected markup)"
        elif korean in t.missing_constraints:
            why = why_missed(glossed, t, korean)
        else:
            why = "in the output's subwords, but the text differs"
        misses.append({"sentence": i, "term": korean, "english": found[i][korean], "why": why,
                       "source": sources[i], "output": t.text, "reference": references[i]})  # fmt: skip
    missing_total = sum(len(t.missing_constraints) for t in runs["after"])
    imposed_total = sum(len(p) for p in imposed)

    before, after = results["before"], results["after"]
    n = len(occurrences)
    print(
        f"\ntest: {len(sources)} sentences, {in_source} glossary terms in the sources, "
        f"{imposed_total} imposed in {len(constrained)} sentences (outside markup); "
        f"{len({i for i, _ in occurrences})} sentences / {n} term "
        f"occurrences where the reference has the Korean term, {len(unused)} where it does not "
        f"(in {len(lacking)} sentences); beam {args.beam}, markup on, {torch.get_num_threads()} "
        f"threads, CPU {cpu_summary()['model']}, load average {load[0]:.2f} before the "
        f"decodes, {os.getloadavg()[0]:.2f} after\n"
    )

    def rate(kept: int, total: int) -> str:
        return f"{100 * kept / total:.1f}%" if total else "–"

    def pair(s: dict[str, float] | None) -> str:
        return f"{s['bleu']:.2f} / {s['chrf']:.2f}" if s else "–"

    print(
        "| | terms in output | BLEU / chrF, all | BLEU / chrF, glossary sentences | "
        "BLEU / chrF, reference lacks a term | sentences/s, all | sentences/s, glossary |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in ("before", "after"):
        r = results[name]
        subset_speed = r["glossary_sentences_per_s"]
        print(
            f"| {name} | {r['terms_in_output']}/{n} ({rate(r['terms_in_output'], n)})"
            f" | {pair(r['all'])} | {pair(r['glossary_sentences'])} | "
            f"{pair(r['reference_lacks_a_term'])} | {r['sentences_per_s']:.2f} | "
            f"{f'{subset_speed:.2f}' if subset_speed else '–'} |"
        )
    ratio = after["sentences_per_s"] / before["sentences_per_s"]
    subset_ratio = (
        after["glossary_sentences_per_s"] / before["glossary_sentences_per_s"] if subset else None
    )
    print(
        f"\nspeed after/before: {ratio:.2f}× all"
        + (f", {subset_ratio:.2f}× glossary sentences" if subset_ratio else "")
        + f" (goal ≥ 0.6×); constraints missing after: {missing_total}/{imposed_total}"
    )
    print(
        f"terms in output, the {len(outside)} occurrences outside protected markup (imposed): "
        f"{before['terms_in_output_outside_markup']} before, "
        f"{after['terms_in_output_outside_markup']} after"
    )
    print(f"misses after: {len(misses)}" + (":" if misses else ""))
    for m in misses:
        print(f"  [{m['sentence']}] {m['english']} → {m['term']}: {m['why']}")
        print(f"      output: {m['output']}")
    if unused:
        print(f"imposed where the reference lacks the Korean term: {len(unused)}")
        for i, k in unused:
            print(
                f"  [{i}] {k}; reference: {references[i][:80]}; after: {runs['after'][i].text[:80]}"
            )

    gold = None
    if args.gold:
        gold = gold_run(base, sources, references, args.gold)
        b, a = gold["before"], gold["after"]
        print(
            f"\ngold: {args.gold} random reference word(s) per sentence, {gold['imposed']} in all: "
            f"in the output before {gold['in_output_before']} "
            f"({100 * gold['in_output_before'] / gold['imposed']:.1f}%), met after "
            f"{gold['met_after']} ({100 * gold['met_after'] / gold['imposed']:.2f}%; in the text "
            f"{gold['in_text_after']}); BLEU / chrF {pair(b)} → {pair(a)}; sentences/s "
            f"{gold['sentences_per_s_before']:.1f} → {gold['sentences_per_s_after']:.1f} "
            f"({gold['sentences_per_s_after'] / gold['sentences_per_s_before']:.2f}×)"
        )
        for why, n in Counter(m["why"] for m in gold["misses"]).most_common():
            print(f"  missed, {why}: {n}")

    if args.json:
        report = {
            "gold": gold,
            "ckpt": args.ckpt, "train": str(args.train), "test": str(args.test),
            "limit": args.limit, "beam": args.beam, "markup": True,
            "glossary": {"path": str(args.glossary_out), "terms": len(entries),
                         "min_help_occurrences": args.min_help_occurrences,
                         "filters": filter_counts, "entries": entries},
            "sentences": len(sources), "glossary_sentences": len(constrained),
            "constraints_imposed": imposed_total, "constraints_missing_after": missing_total,
            "terms_in_sources": in_source, "occurrences": n,
            "occurrence_sentences": len({i for i, _ in occurrences}),
            "imposed_reference_lacks": [{"sentence": i, "term": k} for i, k in unused],
            "results": results, "speed_ratio": ratio, "glossary_speed_ratio": subset_ratio,
            "misses": misses, "cpu": cpu_summary(), "threads": torch.get_num_threads(),
            "load_average": {"before": load[0], "after": os.getloadavg()[0]},
        }  # fmt: skip
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")


if __name__ == "__main__":
    main()
