"""Decode and score one test set: hypothesis files, or a checkpoint decoding a split or a file.

What ``nmt-evaluate`` prints and the comparison and the quality curve build on. Every system
gets the same report from :mod:`nmt.evaluation.metrics` that validation uses during training:
BLEU (ko-mecab, char, 13a), chrF and TER with their sacrebleu signatures, and the degeneracy
diagnostics (when decoded here, with ``max_len_rate``, the share of hypotheses the decoder cut
at its length limit). A report, as printed by :func:`format_report` and written as JSON::

    {"ref": "test.ko", "src": null, "ckpt": null, "split": null,
     "systems": [{"system": "a.ko", "lines": 1080,
                  "scores": {"bleu_ko-mecab": {"score": 12.3, "signature": "nrefs:1|...", ...},
                             ...},
                  "degeneracy": {"repetition_rate": 0.01, ...},
                  "decoding": {"precision": "fp32", "precision_reason": "...", "backend": "torch",
                               "device": "cpu", "cpu": {"model": "...", "bf16_flags": [...]}}}]}

``decoding`` (decoded here only) says what produced the hypotheses: the search's precision and
why, the backend and the device, the CPU
(:meth:`nmt.inference.translator.Translator.decoding_summary`); ``search`` its settings.
:func:`record_test_scores` keeps a split's scores in the checkpoint's model card.

(The module is named for what it scores, one test set — a split or a pair of files — as
opposed to :mod:`nmt.evaluation.metrics`, the metrics themselves.)
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nmt.core.errors import NMTError
from nmt.core.io import write_text_atomic
from nmt.data.corpus import read_text_lines
from nmt.data.pipeline import SPLITS, read_split
from nmt.evaluation.metrics import (
    DEFAULT_TOKENIZERS,
    Headline,
    degeneracy,
    format_table,
    score_corpus,
)
from nmt.models.card import utc_now, with_test_scores
from nmt.models.checkpoint import load_checkpoint, save_checkpoint

if TYPE_CHECKING:
    from nmt.inference.ensemble import EnsembleSettings
    from nmt.inference.translator import Translation, Translator


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr)


def score_system(
    name: str,
    hypotheses: Sequence[str],
    references: Sequence[str],
    tokenizers: Sequence[str] = DEFAULT_TOKENIZERS,
    max_len_hits: Sequence[bool] | None = None,
) -> dict[str, Any]:
    """One system's entry of the report: scores and degeneracy diagnostics."""
    return {
        "system": name,
        "lines": len(hypotheses),
        "scores": score_corpus(hypotheses, references, tokenizers),
        "degeneracy": degeneracy(hypotheses, references, max_len_hits),
    }


def evaluate_files(
    hyp_paths: Sequence[str | Path],
    ref_path: str | Path,
    tokenizers: Sequence[str] = DEFAULT_TOKENIZERS,
) -> dict[str, Any]:
    """Score each hypothesis file against the reference file; all files are checked first."""
    references = read_text_lines(ref_path, "reference")
    systems = []
    for hyp_path in hyp_paths:
        hypotheses = read_text_lines(hyp_path, "hypothesis")
        if len(hypotheses) != len(references):
            raise NMTError(
                f"{hyp_path} has {len(hypotheses)} lines but {ref_path} has {len(references)}: "
                "expected one hypothesis per reference line"
            )
        systems.append((str(hyp_path), hypotheses))
    return {
        "ref": str(ref_path),
        "src": None,
        "ckpt": None,
        "split": None,
        "systems": [score_system(name, hyps, references, tokenizers) for name, hyps in systems],
    }


def evaluate_checkpoint(
    ckpt_path: str | Path | Sequence[str | Path],
    search: Mapping[str, Any] | None = None,
    device: str = "auto",
    ensemble: EnsembleSettings | None = None,
    markup: bool = False,
    glossary: str | Path | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Load ``ckpt_path`` (its search settings with the ``search`` overrides, plain keys and
    values; a list of paths: their ensemble, combined as ``ensemble`` says) and
    :func:`evaluate_translator` it, protecting inline markup with ``markup``
    (:meth:`~nmt.inference.translator.Translator.with_markup`) and constraining the outputs to
    ``glossary``'s terms (:meth:`~nmt.inference.translator.Translator.with_glossary`);
    ``kwargs`` as there."""
    from nmt.inference.translator import Translator

    paths = [ckpt_path] if isinstance(ckpt_path, str | Path) else list(ckpt_path)
    translator = Translator.from_checkpoints(paths, device, ensemble=ensemble, **(search or {}))
    translator = translator.with_markup(markup).with_glossary(glossary)
    return evaluate_translator(translator, **kwargs)


def evaluate_translator(
    translator: Translator,
    split: str | None = None,
    src_path: str | Path | None = None,
    ref_path: str | Path | None = None,
    out_path: str | Path | None = None,
    tokenizers: Sequence[str] = DEFAULT_TOKENIZERS,
    max_sentences: int | None = None,
    progress: bool = False,
    ref_out_path: str | Path | None = None,
    log: Callable[[str], None] = _to_stderr,
) -> dict[str, Any]:
    """Translate a split of the model's corpus (or ``src_path``) and score it.

    Give either ``split`` (read from the checkpoint's data config by
    :func:`nmt.data.pipeline.read_split`, which logs to ``log`` when it has to prepare the
    corpus first) or both ``src_path`` and ``ref_path``. With ``out_path`` the decoded
    hypotheses are also written there, one per line, and with ``ref_out_path`` the references
    exactly as scored (normalised), so that a significance test can pair them later.
    ``max_sentences`` keeps only the first N sentences (a quick look; the scores are not
    comparable with the whole split's).
    """
    if split is not None and split not in SPLITS:
        raise NMTError(f"split: expected one of {', '.join(SPLITS)}, got {split!r}")
    if split is not None:
        sources, references, src_name, ref_name = read_split(translator.info.config, split, log)
    else:
        sources = read_text_lines(src_path, "source")
        references = read_text_lines(ref_path, "reference")
        src_name, ref_name = str(src_path), str(ref_path)
        if len(sources) != len(references):
            raise NMTError(
                f"{src_path} has {len(sources)} lines but {ref_path} has {len(references)}: "
                "expected one reference per source line"
            )
    if max_sentences is not None:
        sources, references = sources[:max_sentences], references[:max_sentences]
    translations = translator.translate(sources, progress=progress)
    hypotheses = [t.text for t in translations]
    if out_path is not None:
        write_text_atomic(out_path, "".join(h + "\n" for h in hypotheses))
    if ref_out_path is not None:
        write_text_atomic(ref_out_path, "".join(r + "\n" for r in references))
    max_len_hits = [t.hit_max_len for t in translations]
    name = translator.info.source
    system = score_system(name, hypotheses, references, tokenizers, max_len_hits)
    system["decoding"] = translator.decoding_summary()  # the precision beside the signatures
    system["search"] = asdict(translator.settings)
    system["markup"] = translator.markup  # spans masked and put back, or translated as text
    if translator.glossary is not None:
        system["glossary"] = glossary_summary(translator.glossary.source, translations)
    return {"ref": ref_name, "src": src_name, "ckpt": name, "split": split, "systems": [system]}


def glossary_summary(source: str, translations: Sequence[Translation]) -> dict[str, Any]:
    """What a glossary did to a test set: the phrases imposed and met, the sentences with any,
    and each miss (line number, 1-based, and phrase)."""
    imposed = sum(len(t.constraints) for t in translations)
    misses = [
        {"line": i + 1, "phrase": phrase}
        for i, t in enumerate(translations)
        for phrase in t.missing_constraints
    ]
    return {
        "file": source,
        "sentences": sum(1 for t in translations if t.constraints),
        "constraints": imposed,
        "met": imposed - len(misses),
        "missed": misses,
    }


def record_test_scores(ckpt_path: str | Path, report: dict[str, Any]) -> str:
    """Write ``report``'s scores (one checkpoint decoding a whole split) into the checkpoint's
    model card (:func:`nmt.models.card.with_test_scores`: under ``"<split> <search>"``, e.g.
    ``test beam5``, the best BLEU of that setting kept); return the key. The file is rewritten
    atomically, in the current format."""
    system = report["systems"][0]
    search, scores = system["search"], system["scores"]
    headline = Headline.of(scores)
    beam = f"beam{search['beam_size']}" if search["name"] == "beam" else "greedy"
    key = f"{report['split']} {beam}" + ("" if system["markup"] else " markup=off")
    if "glossary" in system:
        key += f" glossary={Path(system['glossary']['file']).name}"
    entry = {
        "bleu": headline.bleu,
        "chrf": scores["chrf"]["score"],
        "signatures": {"bleu": headline.bleu_signature, "chrf": scores["chrf"]["signature"]},
        "lines": system["lines"],
        "search": {k: search[k] for k in ("name", "beam_size", "length_penalty", "n_best")},
        "precision": system["decoding"]["precision"],
        "markup": system["markup"],
        "evaluated": utc_now(),
    }
    checkpoint = load_checkpoint(ckpt_path)
    save_checkpoint(Path(ckpt_path), with_test_scores(checkpoint, key, entry))
    return key


def format_report(report: dict[str, Any]) -> str:
    """The printed form of a report: one table per system, under a heading naming its inputs."""
    blocks = []
    for system in report["systems"]:
        source = f", src {report['src']}" if report["src"] else ""
        heading = f"== {system['system']} vs {report['ref']}{source} ({system['lines']} lines)"
        decoding = system.get("decoding")
        if decoding:  # decoded here (ckpt mode): say what produced the text
            heading += (
                f"\ndecoded in {decoding['precision']} ({decoding['precision_reason']}), "
                f"{decoding['backend']} on {decoding['device']}, CPU {decoding['cpu']['model']}"
            )
            if "markup" in system:
                heading += "; markup " + ("protected" if system["markup"] else "translated as text")
            if "glossary" in system:
                used = system["glossary"]
                heading += (
                    f"\nglossary {used['file']}: {used['met']} of {used['constraints']} terms met "
                    f"in {used['sentences']} sentences"
                )
        blocks.append(heading + "\n" + format_table(system["scores"], system["degeneracy"]))
    return "\n\n".join(blocks)
