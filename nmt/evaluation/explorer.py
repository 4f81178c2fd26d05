"""The attention explorer: checkpoints' translations of some sentences as one self-contained page.

Translates the sentences with one or more checkpoints (through the inference layer's
:class:`~nmt.inference.translator.Translator`) and writes one HTML page: the data sits in a
``<script type="application/json">`` block, the JavaScript and CSS are inline (the template
``explorer.html`` beside this module, with the attention grid it shares with nmt-serve's demo
page, :mod:`nmt.evaluation.attention_grid`), and the page loads nothing from the network.

Per sentence the page shows the source and target subwords; hovering or keyboard-focusing target
subword i shades each source subword j by its attention weight wᵢⱼ (and prints it), hovering a
source subword shades the target subwords that attend to it (column j); a heat-map view of the
whole matrix; the n-best list with scores; the attention diagnostics; and, with references, the
reference with sentence BLEU (``ko-mecab``) and chrF.

Several checkpoints (or a sweep dir, whose run dirs each give ``checkpoints/best.pt``) go side
by side on the same sentences, labelled by their attention · encoder · decoder, with hover
synchronised across them. The checkpoints must share their vocabularies, so that every model
sees the same source subwords.

The page's DOM contract (what tests and scripts may rely on): each source subword element has
``data-src-index``, each target subword ``data-tgt-index`` (``</s>`` is the last index on both
axes); while target subword i of a sentence is hovered or focused, every source subword element
of that sentence carries ``data-weight``, its weight to 3 decimals.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nmt.core.errors import NMTError, str_list
from nmt.core.io import write_text_atomic
from nmt.core.run_dir import checkpoint_of, run_of_checkpoint
from nmt.data.corpus import read_text_lines
from nmt.data.glossary import Glossary
from nmt.evaluation.attention_grid import inline_attention_grid, json_for_script, read_asset
from nmt.evaluation.metrics import SentenceScorer, score_corpus
from nmt.evaluation.sweep import find_sweep_runs
from nmt.inference.ensemble import EnsembleSettings
from nmt.inference.translator import Translation, Translator, check_same_vocabularies
from nmt.models.seq2seq import attention_label
from nmt.models.transformer import LayerAttention

TEMPLATE = "explorer.html"  # beside this module, in the nmt.evaluation package
DATA_MARKER = "__EXPLORER_DATA__"
TITLE_MARKER = "__EXPLORER_TITLE__"
# Attention weights are stored as integers in units of 1/WEIGHT_SCALE: the page shows them to 3
# decimals, and small integers ("0" for most weights) take about half the bytes of 1e-5 steps.
WEIGHT_SCALE = 1000
SCORE_DECIMALS = 4
PAYLOAD_VERSION = 1


@dataclass(frozen=True)
class Sentence:
    """One input sentence: its 1-based line number in the input file, text and reference."""

    line: int
    text: str
    reference: str | None = None


# --------------------------------------------------------------------------------------------
# Inputs: checkpoints and sentences
# --------------------------------------------------------------------------------------------


def resolve_checkpoints(spec: str | Sequence[str | Sequence[str]]) -> list[list[Path]]:
    """The models of ``ckpt=``, each a list of checkpoint files (two or more: an ensemble).

    An entry is a file, a run dir or a sweep dir, or a list of files (``ckpt=[[a.pt,b.pt],c.pt]``
    compares the ensemble of a and b with c). A directory stands for each run dir in it (folders
    with ``.hydra/config.yaml``), each giving its ``checkpoints/best.pt``, else ``last.pt``. A
    missing file is left for the loader to report.
    """
    entries = [spec] if isinstance(spec, str) else list(spec)
    if not entries:
        raise NMTError("ckpt: expected a checkpoint, a run dir or a list of them, got []")
    models = []
    for entry in entries:
        if not isinstance(entry, str):  # an ensemble: its files as given
            models.append([Path(p) for p in str_list(entry, "ckpt")])
            continue
        path = Path(entry)
        if not path.is_dir():
            models.append([path])
            continue
        for run_dir in find_sweep_runs(path):
            ckpt = checkpoint_of(run_dir)
            if ckpt is None:
                raise NMTError(f"{run_dir}: run dir without checkpoints/best.pt or last.pt")
            models.append([ckpt])
    return models


def load_translators(
    models: Sequence[Sequence[Path]],
    device: str,
    search: dict[str, Any],
    n_best: int,
    ensemble: EnsembleSettings | None = None,
) -> list[Translator]:
    """One Translator per model (one checkpoint, or an ensemble of several), all with the same
    vocabularies (else NMTError).

    Without ``n_best`` in ``search``, each keeps min(``n_best``, its beam size) hypotheses.
    """
    translators = []
    for paths in models:
        translator = Translator.from_checkpoints(paths, device, ensemble=ensemble, **search)
        if "n_best" not in search:
            limit = 1 if translator.settings.name == "greedy" else translator.settings.beam_size
            translator = translator.with_settings(n_best=max(1, min(n_best, limit)))
        translators.append(translator)
        check_same_vocabularies(
            translators[0], translator, "compare checkpoints trained on the same prepared data"
        )
    return translators


def read_sentences(
    input_path: str | Path, ref_path: str | Path | None, max_sentences: int
) -> tuple[list[Sentence], int]:
    """The non-blank lines of ``input_path`` (at most ``max_sentences``) with their references,
    and how many non-blank lines the file had."""
    if max_sentences < 1:
        raise NMTError(f"max_sentences: expected an integer >= 1, got {max_sentences}")
    sources = read_text_lines(input_path, "input")
    references: list[str | None] = [None] * len(sources)
    if ref_path is not None:
        references = list(read_text_lines(ref_path, "reference"))
        if len(references) != len(sources):
            raise NMTError(
                f"{ref_path} has {len(references)} lines but {input_path} has {len(sources)}: "
                "expected one reference per input line"
            )
    sentences = [
        Sentence(number, text, ref)
        for number, (text, ref) in enumerate(zip(sources, references, strict=True), start=1)
        if text.strip()
    ]
    if not sentences:
        raise NMTError(f"{input_path}: input file has only blank lines, expected sentences")
    return sentences[:max_sentences], len(sentences)


# --------------------------------------------------------------------------------------------
# The payload: what the page shows, as plain JSON
# --------------------------------------------------------------------------------------------


def model_label(config: dict[str, Any]) -> tuple[str, str, str]:
    """(attention score, encoder, decoder style) from a checkpoint's config: the encoder is its
    RNN cell or ``transformer``; a Transformer decoder's attention is ``multi-head``."""
    model = config.get("model") or {}
    encoder = model.get("encoder") or {}
    decoder = str((model.get("decoder") or {}).get("style", "?"))
    score = str((model.get("attention") or {}).get("score", "?"))
    return (
        attention_label(score, decoder),
        str(encoder.get("rnn_type") or encoder.get("type", "?")),
        decoder,
    )


def model_entries(translators: Sequence[Translator]) -> list[dict[str, Any]]:
    """Label, architecture and search settings of each model; a label two models share gets
    the checkpoint's run dir (or file name) appended."""
    entries = []
    for translator in translators:
        attention, encoder, decoder = model_label(translator.info.config)
        label = f"{attention} · {encoder} · {decoder}"
        if translator.info.members:
            labels = [" · ".join(model_label(m.config)) for m in translator.info.members]
            label = f"ensemble of {len(labels)}: {' + '.join(labels)}"
        settings = translator.settings
        entries.append(
            {
                "label": label,
                "attention": attention,
                "encoder": encoder,
                "decoder": decoder,
                "source": translator.info.source,
                "step": translator.info.step,
                "minutes": _number(translator.info.minutes, 1),
                "card": translator.info.card,
                "search": {
                    "name": settings.name,
                    "beam_size": settings.beam_size,
                    "n_best": settings.n_best,
                    "length_penalty": settings.length_penalty,
                },
            }
        )
    labels = [e["label"] for e in entries]
    for entry, translator in zip(entries, translators, strict=True):
        if labels.count(entry["label"]) > 1:
            entry["label"] += f" ({short_name(translator)})"
    return entries


def scaled(weights: torch.Tensor) -> list[Any]:
    """Attention weights as nested lists of integers: weight × :data:`WEIGHT_SCALE`."""
    return (weights * WEIGHT_SCALE).round().int().tolist()


def heads_entry(maps: Sequence[LayerAttention]) -> dict[str, Any]:
    """The attention per layer and head: ``cross[l][h]`` has the rows and columns of the
    hypothesis's ``attention``; a Transformer's ``self[l][h]`` is rows × rows (the decoder's
    inputs ``<s>`` y_1 … as columns), absent for a recurrent decoder's multi-head attention."""
    entry = {
        "layers": len(maps),
        "heads": int(maps[0].cross_weights.size(0)),
        "cross": [scaled(m.cross_weights) for m in maps],
    }
    if maps[0].self_weights is not None:
        entry["self"] = [scaled(m.self_weights) for m in maps]
    return entry


def hypothesis_entry(
    hyp: Translation,
    reference: str | None,
    scorer: SentenceScorer | None,
    heads: Sequence[LayerAttention] | None = None,
) -> dict[str, Any]:
    """One hypothesis for the page: text, subwords, attention rows and scores.

    ``attention`` is (len(tokens) + 1) × (len(source_tokens) + 1) (``</s>`` last on both axes),
    or len(tokens) rows for a hypothesis cut at the length limit, as integers: weight ×
    :data:`WEIGHT_SCALE`; each row sums to 1 (to rounding). ``heads``: every layer's and head's
    attention (:func:`heads_entry`), for a Transformer decoder's best hypothesis.
    """
    entry: dict[str, Any] = {
        "text": hyp.text,
        "tokens": list(hyp.tokens),
        "attention": scaled(hyp.attention),
        "score": _number(hyp.score),
        "confidence": _number(hyp.confidence),
        "search_score": _number(hyp.search_score),
        "hit_max_len": bool(hyp.hit_max_len),
        "entropy": _number(hyp.entropy),
        "diagonal_mass": _number(hyp.diagonal_mass),
        "coverage_deviation": _number(hyp.coverage_deviation),
    }
    if hyp.constraints:  # the phrases imposed, those missed, and the subwords of those met
        entry["constraints"] = list(hyp.constraints)
        entry["missing_constraints"] = list(hyp.missing_constraints)
        entry["constrained_tokens"] = list(hyp.constrained_tokens)
    if reference is not None and scorer is not None:
        entry.update({k: _number(v) for k, v in scorer(hyp.text, reference).items()})
    if heads:
        entry["heads"] = heads_entry(heads)
    return entry


def build_payload(
    sentences: Sequence[Sentence],
    translators: Sequence[Translator],
    results: Sequence[Sequence[Translation]],
    bleu_tokenizer: str = "ko-mecab",
    title: str = "attention explorer",
    note: str | None = None,
) -> dict[str, Any]:
    """The page's data: ``results[m][k]`` is model m's translation of ``sentences[k]``.

    Layout::

        {"version": 1, "title": ..., "note": ..., "bleu_tokenizer": "ko-mecab" | null,
         "weight_scale": 1000,
         "models": [{"label": "general · gru · luong", "attention": ..., "corpus": {...}}, ...],
         "sentences": [{"line": 3, "source": ..., "reference": ... | null,
                        "source_tokens": [...],
                        "outputs": [{"nbest": [hypothesis, ...]}, ...]}]}   # one per model

    where a hypothesis is :func:`hypothesis_entry`'s dict (``nbest[0]`` the best).
    """
    has_refs = any(s.reference is not None for s in sentences)
    scorer = SentenceScorer(bleu_tokenizer) if has_refs else None
    models = model_entries(translators)
    if has_refs:
        refs = [s.reference or "" for s in sentences]
        for model, translations in zip(models, results, strict=True):
            scores = score_corpus([t.text for t in translations], refs, [bleu_tokenizer])
            model["corpus"] = {
                "bleu": _number(scores[f"bleu_{bleu_tokenizer}"]["score"]),
                "chrf": _number(scores["chrf"]["score"]),
                "bleu_signature": scores[f"bleu_{bleu_tokenizer}"]["signature"],
            }
    items = []
    for k, sentence in enumerate(sentences):
        source_tokens = results[0][k].source_tokens
        outputs = [
            {
                "nbest": [
                    hypothesis_entry(
                        hyp,
                        sentence.reference,
                        scorer,
                        translator.attention_heads(hyp) if rank == 0 else None,
                    )
                    for rank, hyp in enumerate(translations[k].nbest)
                ]
            }
            for translator, translations in zip(translators, results, strict=True)
        ]
        items.append(
            {
                "line": sentence.line,
                "source": sentence.text,
                "reference": sentence.reference,
                "source_tokens": list(source_tokens),
                "outputs": outputs,
            }
        )
    return {
        "version": PAYLOAD_VERSION,
        "title": title,
        "note": note,
        "bleu_tokenizer": bleu_tokenizer if has_refs else None,
        "weight_scale": WEIGHT_SCALE,
        "models": models,
        "sentences": items,
    }


# --------------------------------------------------------------------------------------------
# The page
# --------------------------------------------------------------------------------------------


def render_html(payload: dict[str, Any]) -> str:
    """The template with the title, the data and the attention grid's CSS and JavaScript
    (:mod:`nmt.evaluation.attention_grid`) filled in: one self-contained HTML page."""
    template = inline_attention_grid(read_asset(TEMPLATE), TEMPLATE)
    before, marker, after = template.partition(DATA_MARKER)
    if not marker or DATA_MARKER in after:
        raise RuntimeError(f"{TEMPLATE}: expected one {DATA_MARKER} placeholder")
    before = before.replace(TITLE_MARKER, html.escape(str(payload["title"])))
    return before + json_for_script(payload) + after


def explore(
    ckpt: str | Sequence[str],
    input_path: str | Path,
    ref_path: str | Path | None = None,
    out_path: str | Path = "explorer.html",
    max_sentences: int = 200,
    search: dict[str, Any] | None = None,
    n_best: int = 3,
    bleu_tokenizer: str = "ko-mecab",
    title: str | None = None,
    device: str = "auto",
    progress: bool = False,
    ensemble: EnsembleSettings | None = None,
    glossary: str | Path | None = None,
) -> dict[str, Any]:
    """Translate, build the payload and write the page to ``out_path``; return the payload.
    ``ensemble``: how an inner list of ``ckpt`` is combined (the default: mean log-probability).
    ``glossary``: a glossary file whose terms constrain every model's outputs; the page marks
    the constrained subwords and lists the phrases each output met and missed."""
    out_path = Path(out_path)
    if out_path.is_dir():
        raise NMTError(f"out={out_path}: a directory; expected the HTML file to write")
    if not out_path.parent.is_dir():
        raise NMTError(f"out={out_path}: folder {out_path.parent} does not exist")
    sentences, total = read_sentences(input_path, ref_path, max_sentences)
    models = resolve_checkpoints(ckpt)
    translators = load_translators(models, device, search or {}, n_best, ensemble)
    if glossary is not None:
        terms = Glossary.read(glossary)
        translators = [t.with_glossary(terms) for t in translators]
    texts = [s.text for s in sentences]
    results = [t.translate(texts, progress=progress) for t in translators]
    note = None
    if total > len(sentences):
        note = f"the first {len(sentences)} of {total} sentences (max_sentences={max_sentences})"
    payload = build_payload(
        sentences,
        translators,
        results,
        bleu_tokenizer,
        title or f"attention explorer: {Path(input_path).name}",
        note,
    )
    write_text_atomic(out_path, render_html(payload))
    return payload


def _number(value: float | None, decimals: int = SCORE_DECIMALS) -> float | None:
    """A finite float rounded for the page, else None (JSON has no NaN)."""
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), decimals)


def short_name(translator: Translator) -> str:
    """``RUN/checkpoints/best.pt`` → ``RUN``; any other file → its name; an ensemble: its
    members' joined by ``+``."""
    members = translator.info.members or [translator.info]
    return " + ".join(_file_name(Path(m.source)) for m in members)


def _file_name(ckpt: Path) -> str:
    run = run_of_checkpoint(ckpt)
    return ckpt.name if run is None else run.name
