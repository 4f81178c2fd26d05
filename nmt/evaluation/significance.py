"""Paired significance tests of two systems' test outputs: sacrebleu's bootstrap or randomisation.

A system is tested against a baseline on BLEU (ko-mecab) and chrF with sacrebleu's
:class:`~sacrebleu.significance.PairedTest`: paired bootstrap resampling (``bs``, 1,000
resamples by default; Koehn 2004) or paired approximate randomisation (``ar``, 10,000 trials;
Riezler & Maxwell 2005). Each side may hold several runs (seeds): the k-th run of the system is
paired with the k-th run of the baseline and their outputs are concatenated, so both pooled
corpora hold every paired run's translation of every test sentence. The test resamples
sentences, not training runs: read it together with the spread over seeds, which is what a
retrained model shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

SIGNIFICANCE_TESTS = {"bs": "paired bootstrap resampling", "ar": "paired approximate randomisation"}
SIGNIFICANCE_LEVEL = 0.05

# One run's test outputs: (hypotheses, references as scored), one line each per test sentence.
Outputs = tuple[list[str], list[str]]


@dataclass
class Significance:
    """One paired test of a variant against the baseline on the pooled test outputs."""

    test: str  # bs | ar
    samples: int  # resamples (bs) or trials (ar)
    paired_runs: int  # k runs of each side, concatenated
    segments: int  # test sentences × paired runs
    bleu: float  # pooled test BLEU (ko-mecab) of the variant, and the baseline's
    baseline_bleu: float
    bleu_p: float
    chrf: float
    baseline_chrf: float
    chrf_p: float


def untestable(baseline: Sequence[Outputs], system: Sequence[Outputs]) -> str | None:
    """Why the runs of ``system`` cannot be tested against ``baseline``'s (paired k-th with
    k-th), as a note for the table; None when they can."""
    pairs = list(zip(baseline, system, strict=False))
    if any(b[1] != v[1] for b, v in pairs):
        return "test references differ from the baseline's: not tested"
    if all(b[0] == v[0] for b, v in pairs):
        # sacrebleu gives identical systems p = 1/(samples+1) ("a zero difference should
        # not be attributed to chance"), which would mark a difference of exactly 0
        return "test outputs identical to the baseline's: not tested"
    return None


def paired_test(
    baseline: Sequence[Outputs],
    system: Sequence[Outputs],
    test: str,
    samples: int | None = None,
) -> Significance:
    """sacrebleu's paired test (``bs`` or ``ar``) of BLEU ko-mecab and chrF, the k-th system run
    paired with the k-th baseline run, their outputs concatenated. Every pair must have the same
    references. ``samples``: resamples (bs) or trials (ar); None: sacrebleu's default."""
    from sacrebleu.metrics import BLEU, CHRF
    from sacrebleu.significance import PairedTest

    pairs = list(zip(baseline, system, strict=False))  # the shorter side's number of runs
    references = [ref for (_, ref), _ in pairs for ref in ref]
    baseline_hyps = [h for (hyps, _), _ in pairs for h in hyps]
    system_hyps = [h for _, (hyps, _) in pairs for h in hyps]
    metrics = {"bleu": BLEU(tokenize="ko-mecab"), "chrf": CHRF()}
    paired = PairedTest(
        [("baseline", baseline_hyps), ("system", system_hyps)],
        metrics,
        [references],
        test_type=test,
        n_samples=samples or 0,  # 0: sacrebleu's default
    )
    _, scores = paired()
    bleu_name, chrf_name = (name for name in scores if name != "System")
    (base_bleu, bleu), (base_chrf, chrf) = scores[bleu_name], scores[chrf_name]
    return Significance(
        test,
        paired.n_samples,
        len(pairs),
        len(references),
        bleu.score,
        base_bleu.score,
        bleu.p_value,
        chrf.score,
        base_chrf.score,
        chrf.p_value,
    )


def p_cell(p: float) -> str:
    """A p-value for a table, marked ``*`` below :data:`SIGNIFICANCE_LEVEL`."""
    return f"{p:.3f}" + (" *" if p < SIGNIFICANCE_LEVEL else "")
