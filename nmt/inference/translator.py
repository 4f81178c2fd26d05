"""The inference layer: a trained model as a :class:`Translator`, its outputs as :class:`Translation`.

Everything that decodes goes through here — validation during training, ``nmt.translate``,
``nmt.evaluate``, the benchmark and the quality curve — so one checkpoint gives the same text
everywhere::

    from nmt import Translator

    translator = Translator.from_checkpoint("runs/x/checkpoints/best.pt", beam_size=5, n_best=3)
    result = translator.translate(["Open the file.", "Where is the station?"])
    result[0].text           # '파일을 엽니다.'
    result[0].attention      # (len(tokens) + 1, len(source_tokens) + 1), </s> on both axes
    result[0].nbest[1].text  # the runner-up

The search settings default to the checkpoint's own (its training-time ``search`` config); any
of :class:`~nmt.inference.search.SearchSettings`' fields can be overridden by keyword.

This module imports no training code (no trainer, no TensorBoard), so ``import nmt.inference.translator``
stays light for a server or a notebook.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from nmt.core.errors import NMTError
from nmt.core.runtime import Precision, cpu_summary, pick_device
from nmt.core.special_ids import BOS_ID, EOS_ID, UNK_ID
from nmt.data.corpus import normalize
from nmt.data.glossary import Glossary
from nmt.data.markup import Protected, protect, restore_spans
from nmt.data.vocab import Vocab
from nmt.inference.constraints import missing_phrases, phrase_positions
from nmt.inference.ensemble import Ensemble, EnsembleSettings, ensemble_card
from nmt.inference.search import Hypothesis, SearchSettings, decode_ids, search_precision
from nmt.models import Seq2Seq
from nmt.models.attention import MultiHeadScoreAttention
from nmt.models.attention_stats import attention_statistics
from nmt.models.card import card_of
from nmt.models.checkpoint import load_checkpoint, model_from_checkpoint
from nmt.models.transformer import LayerAttention

BACKENDS = ("auto", "torch", "onnx")


@dataclass
class Translation:
    """One translation of one source sentence.

    text: the detokenised Korean text.
    score: sum of the log-probabilities of its subwords and its ``</s>`` (teacher-forced
        log-probability of the whole output).
    confidence: ``score`` divided by the number of predicted tokens (length-normalised
        log-probability, ≤ 0; 0 for an empty input).
    tokens / source_tokens: target and source subwords (SentencePiece pieces), without ``</s>``.
    attention: (len(tokens) + 1, len(source_tokens) + 1) attention weights, ``</s>`` the last
        row and column; each row sums to 1. A hypothesis stopped by the length limit
        (``hit_max_len``) predicted no ``</s>`` and has len(tokens) rows. Empty for an empty input.
    nbest: the n-best list, best first, each a Translation with an empty ``nbest`` of its own
        (``nbest[0]`` equals this one); one entry with ``n_best=1``.
    entropy / diagonal_mass / coverage_deviation: this sentence's attention diagnostics
        (:mod:`nmt.models.attention_stats`), computed on first access; ``None`` for an empty input.
    search_score: what the search ranked by (``score`` over GNMT's length penalty).
    token_ids: the target subword ids behind ``tokens``.
    constraints: the target phrases this sentence's output had to contain (given, and found by
        the glossary), as text; empty without constraints.
    missing_constraints: those this output does not contain (a phrase that did not fit within
        the length limit, or an n-best runner-up); empty when all are met.
    constrained_tokens: positions in ``tokens`` that belong to a met constraint (its first
        occurrence), for the explorer and the demo to mark.
    source_ids: the source subword ids behind ``source_tokens`` (without ``</s>``).
    """

    text: str
    score: float
    confidence: float
    tokens: list[str]
    source_tokens: list[str]
    attention: torch.Tensor
    hit_max_len: bool
    search_score: float
    token_ids: list[int]
    nbest: list[Translation] = field(default_factory=list)
    constraints: list[str] = field(default_factory=list)
    missing_constraints: list[str] = field(default_factory=list)
    constrained_tokens: list[int] = field(default_factory=list)
    source_ids: list[int] = field(default_factory=list)

    @functools.cached_property
    def _diagnostics(self) -> dict[str, float]:
        # computed on first use: most callers (translate, serve, the benchmark) never read them
        return attention_statistics([self.attention])

    @property
    def entropy(self) -> float | None:
        return self._diagnostics.get("attn_entropy")

    @property
    def diagonal_mass(self) -> float | None:
        return self._diagnostics.get("attn_diagonal_mass")

    @property
    def coverage_deviation(self) -> float | None:
        return self._diagnostics.get("attn_coverage_deviation")

    @property
    def num_predicted(self) -> int:
        """Tokens the decoder predicted: the subwords and, when it ended so, ``</s>``."""
        return int(self.attention.shape[0]) if self.attention.dim() == 2 else 0

    def attention_labels(self) -> tuple[list[str], list[str]]:
        """(source labels, target labels) of :attr:`attention`'s columns and rows: the subwords
        and ``</s>``. The target side has one label too many when the hypothesis hit the length
        limit; plots cut it to the matrix's rows."""
        return self.source_tokens + ["</s>"], self.tokens + ["</s>"]

    def alignment(self) -> list[tuple[int, int]]:
        """Hard alignment ``(source index, target index)`` of each target subword: the source
        subword with its largest attention weight (``</s>`` excluded on both sides), as fairseq's
        ``--print-alignment``."""
        if not self.tokens or not self.source_tokens:
            return []
        weights = self.attention[: len(self.tokens), : len(self.source_tokens)]
        return [(int(j), i) for i, j in enumerate(weights.argmax(dim=1).tolist())]


@dataclass
class ModelInfo:
    """Where a Translator's model came from, for reports, ``nmt-info`` and ``/v1/model``."""

    source: str  # the checkpoint path, or a description
    config: dict[str, Any]  # the run's resolved config (empty when built from a live model)
    step: int | None = None  # optimiser steps the checkpoint had taken
    best_score: float | None = None  # its best validation score, by its early-stopping metric
    minutes: float | None = None  # its training run's wall-clock minutes
    # its model card (nmt.models.card): code, data, training, validation, tests; {} for a live model
    card: dict[str, Any] = field(default_factory=dict)
    members: list[ModelInfo] = field(default_factory=list)  # an ensemble's members, in order

    @classmethod
    def of_checkpoint(cls, checkpoint: dict[str, Any], source: str) -> ModelInfo:
        """From a loaded (migrated) checkpoint."""
        progress = checkpoint.get("progress") or {}
        return cls(
            source=source,
            config=dict(checkpoint["config"]),
            step=progress.get("step"),
            best_score=progress.get("best_score"),
            minutes=progress.get("minutes"),
            card=card_of(checkpoint),
        )


def check_same_vocabularies(
    first: Translator,
    other: Translator,
    advice: str = "an ensemble's members must share both vocabularies (train them on the same "
    "prepared data)",
) -> None:
    """One line naming both files, ending in ``advice``, unless ``other`` has ``first``'s source
    and target vocabularies (an ensemble feeds one token id to every member; a comparison
    needs one source segmentation)."""
    for side, mine, theirs in (
        ("source", first.src_vocab, other.src_vocab),
        ("target", first.tgt_vocab, other.tgt_vocab),
    ):
        if not mine.same_subwords(theirs):
            sizes = f"{len(theirs):,} and {len(mine):,} subwords"
            if len(theirs) == len(mine):
                sizes = f"{len(mine):,} subwords each, not the same ones"
            raise NMTError(
                f"ckpt: {other.info.source} and {first.info.source} have different {side} "
                f"vocabularies ({sizes}): {advice}"
            )


class Translator:
    """A model, its vocabularies and search settings: text in, :class:`Translation` out."""

    def __init__(
        self,
        model: Seq2Seq,
        src_vocab: Vocab,
        tgt_vocab: Vocab,
        settings: SearchSettings,
        device: torch.device | None = None,
        info: ModelInfo | None = None,
    ):
        """Wrap a built model (e.g. the one being trained); :meth:`from_checkpoint` loads one."""
        self.model = model
        self.src_vocab = src_vocab
        self.tgt_vocab = tgt_vocab
        self.settings = settings
        self.device = device if device is not None else next(model.parameters()).device
        self.info = info or ModelInfo(source="a model in memory", config={})
        # protect inline markup (nmt.data.markup): with_markup() sets it; a model trained on
        # masked pairs (data.mask_markup) has only ever seen placeholders, so it starts on
        self.markup = bool((self.info.config.get("data") or {}).get("mask_markup", False))
        self.glossary: Glossary | None = None  # terms turned into constraints; with_glossary()

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: str | torch.device = "auto",
        backend: str = "auto",
        **search: Any,
    ) -> Translator:
        """Load a checkpoint written by ``nmt.train``, or a folder written by ``nmt.export``.

        ``backend``: ``torch`` (a checkpoint file), ``onnx`` (an exported folder, run by
        onnxruntime on the CPU through the same search code), or ``auto``: ``onnx`` when
        ``path`` is a folder. ``search``: overrides of the checkpoint's search settings
        (``beam_size=5``, ``n_best=3``, ``length_penalty=1.0``, ``no_repeat_ngram_size=0``,
        ``batch_size=128``, ``name=greedy``). A wrong value raises
        :class:`~nmt.core.errors.NMTError` naming the field.
        """
        if backend not in BACKENDS:
            raise NMTError(f"backend: expected one of {', '.join(BACKENDS)}; got {backend!r}")
        if backend == "onnx" or (backend == "auto" and Path(path).is_dir()):
            return cls._from_exported(path, device, search)
        device = pick_device(device)
        checkpoint = load_checkpoint(path, map_location=device)
        model, src_vocab, tgt_vocab, cfg = model_from_checkpoint(checkpoint, path, device)
        settings = SearchSettings.from_config(cfg.get("search") or {}, **search)
        info = ModelInfo.of_checkpoint(checkpoint, str(path))
        return cls(model, src_vocab, tgt_vocab, settings, device, info)

    @classmethod
    def from_checkpoints(
        cls,
        paths: Sequence[str | Path],
        device: str | torch.device = "auto",
        backend: str = "auto",
        ensemble: EnsembleSettings | None = None,
        **search: Any,
    ) -> Translator:
        """An ensemble of checkpoints (or exported folders) decoded together, or one alone.

        Each path loads as :meth:`from_checkpoint` loads it; two or more become one
        :class:`~nmt.inference.ensemble.Ensemble`, combined as ``ensemble`` says (default: the
        renormalised mean of their log-probabilities at each step, the mean of their attention
        weights). They must share both vocabularies: otherwise one line naming both files. The
        search settings are the first's, with the ``search`` overrides.
        """
        if isinstance(paths, str | Path):
            raise TypeError("from_checkpoints() takes a list of paths; from_checkpoint() takes one")
        if not paths:
            raise NMTError("ckpt: expected a checkpoint or a list of them, got []")
        members = [cls.from_checkpoint(p, device, backend, **search) for p in paths]
        if len(members) == 1:
            return members[0]
        first = members[0]
        for other in members[1:]:
            check_same_vocabularies(first, other)
        ensemble = ensemble or EnsembleSettings()
        model = Ensemble([m.model for m in members], ensemble)
        sources = [m.info.source for m in members]
        info = ModelInfo(
            source=f"ensemble of {len(members)}: {' + '.join(sources)}",
            config=first.info.config,
            card=ensemble_card(sources, [m.info.card for m in members], ensemble),
            members=[m.info for m in members],
        )
        return cls(model, first.src_vocab, first.tgt_vocab, first.settings, first.device, info)

    @classmethod
    def _from_exported(
        cls, path: str | Path, device: str | torch.device, search: dict[str, Any]
    ) -> Translator:
        """An ``nmt.export`` folder: onnxruntime on the CPU behind the model's step API."""
        from nmt.inference.onnx_backend import load_exported

        if device != "auto" and pick_device(device).type != "cpu":
            raise NMTError(f"device={device}: the onnx backend runs on the CPU; use cpu or auto")
        model, src_vocab, tgt_vocab, manifest = load_exported(path)
        config = manifest["config"]
        settings = SearchSettings.from_config(config.get("search") or {}, **search)
        source = manifest.get("source") or {}
        info = ModelInfo(
            source=str(path),
            config=dict(config),
            step=source.get("step"),
            best_score=source.get("best_score"),
            minutes=source.get("minutes"),
            card=manifest.get("card") or {},
        )
        return cls(model, src_vocab, tgt_vocab, settings, torch.device("cpu"), info)  # type: ignore[arg-type]

    @property
    def backend(self) -> str:
        """``torch`` (a model in memory or a checkpoint), ``onnx`` (an exported folder), or for
        an ensemble its members' backends (``onnx+torch`` when it mixes them)."""
        models = self.model.models if isinstance(self.model, Ensemble) else [self.model]
        return "+".join(sorted({"torch" if isinstance(m, Seq2Seq) else "onnx" for m in models}))

    @property
    def precision(self) -> Precision:
        """What the searches run in: ``search.precision`` resolved on the device; an exported
        folder runs its fp32 graphs in onnxruntime whatever ``search.precision`` says."""
        if self.backend == "onnx":
            ignored = f"; search.precision={self.settings.precision} does not apply"
            note = ignored if self.settings.precision == "bf16" else ""
            return Precision("fp32", f"onnxruntime runs the exported fp32 graphs{note}")
        return search_precision(self.settings, self.device)

    def decoding_summary(self) -> dict[str, Any]:
        """What produced this translator's outputs, for reports: the precision and its reason,
        the backend, the device and the CPU (:func:`nmt.core.runtime.cpu_summary`)."""
        precision = self.precision
        return {
            "precision": precision.name,
            "precision_reason": precision.reason,
            "backend": self.backend,
            "device": str(self.device),
            "cpu": cpu_summary(),
        }

    def with_settings(self, **search: Any) -> Translator:
        """The same model (shared, not copied) with other search settings."""
        other = copy.copy(self)
        other.settings = self.settings.replace(**search)
        return other

    def with_markup(self, protect: bool = True) -> Translator:
        """The same model and settings, with inline markup protected (``True``: reST roles and
        literals, placeholders, tags and URLs come through byte-identical, :mod:`nmt.data.markup`)
        or translated as text (``False``: a Translator's default, unless its model was trained
        on masked pairs, ``data.mask_markup``)."""
        other = copy.copy(self)
        other.markup = protect
        return other

    def with_glossary(self, glossary: Glossary | str | Path | None) -> Translator:
        """The same model and settings with a glossary (a :class:`~nmt.data.glossary.Glossary`
        or the path of its TSV file; None: none): every term found in a source sentence makes
        its Korean side a constraint of the translation (:meth:`constraints_for`)."""
        if glossary is not None and not isinstance(glossary, Glossary):
            glossary = Glossary.read(glossary)
        other = copy.copy(self)
        other.glossary = glossary
        return other

    def constraints_for(
        self,
        prepared: Sequence[Protected],
        constraints: Sequence[Sequence[str]] | None = None,
    ) -> list[list[str]] | None:
        """Each sentence's constraints as text: ``constraints[i]`` (normalised, checked) and the
        Korean terms :attr:`glossary` finds in its masked text (so a term inside protected
        markup is left alone), each phrase once; None when no sentence has any."""
        given = checked_phrases(constraints, len(prepared), "constraints")
        result = []
        for phrases, sentence in zip(given, prepared, strict=True):
            found = self.glossary.targets(sentence.masked) if self.glossary is not None else []
            result.append(list(dict.fromkeys(phrases + found)))
        return result if any(result) else None

    def encode_constraints(self, constraints: Sequence[Sequence[str]]) -> list[list[list[int]]]:
        """The target subword ids of each sentence's phrases (a phrase encodes alone as at the
        start of a word, which is where a term starts in Korean text). A phrase with a
        character the target vocabulary lacks encodes to ``[]``: no output can contain it, so
        the search is not asked to, and it is reported missing."""
        flat = [phrase for phrases in constraints for phrase in phrases]
        ids = iter(self.tgt_vocab.encode(flat))
        encoded = [[next(ids) for _ in phrases] for phrases in constraints]
        return [[[] if UNK_ID in p else p for p in phrases] for phrases in encoded]

    def prepare(self, sentences: Sequence[str]) -> list[Protected]:
        """Each sentence normalised as the corpus is (NFC, whitespace folded) and, with
        :attr:`markup`, its spans masked (:func:`nmt.data.markup.protect`); with a
        :attr:`glossary` too, its terms in a labelled role's shown text translated
        (:meth:`~nmt.data.glossary.Glossary.translate_shown_text`)."""
        if isinstance(sentences, str):
            raise TypeError("prepare() takes a sequence of sentences; wrap one in a list")
        normalized = [normalize(s) for s in sentences]
        if not self.markup:
            return [Protected(text, (), "") for text in normalized]
        protected = [protect(text) for text in normalized]
        if self.glossary is None:
            return protected
        # a glossary term in a labelled role's shown text is translated there
        shown = self.glossary.translate_shown_text
        return [replace(p, spans=tuple(shown(span) for span in p.spans)) for p in protected]

    def encode(self, sentences: Sequence[str]) -> list[list[int]]:
        """The source subword ids of each sentence, as the model sees them (without ``</s>``):
        prepared by :meth:`prepare` (normalised; its markup masked when :attr:`markup` is on),
        then SentencePiece-encoded by :meth:`encode_prepared`."""
        return self.encode_prepared(self.prepare(sentences))

    def encode_prepared(self, prepared: Sequence[Protected]) -> list[list[int]]:
        """The source subword ids of sentences from :meth:`prepare`: their masked text,
        SentencePiece-encoded.

        The one place text becomes source ids: :meth:`translate` goes through it, and
        ``nmt.serving`` encodes a request's sentences with it once (to check their length and
        to batch them by it), then decodes those ids with :meth:`translate_ids` and puts the
        spans back with :meth:`restore`.
        """
        return self.src_vocab.encode([p.masked for p in prepared])

    def restore(
        self, translations: Sequence[Translation], prepared: Sequence[Protected]
    ) -> list[Translation]:
        """``translations`` of sentences from :meth:`prepare` with their masked spans back in
        the text of every n-best entry (:func:`nmt.data.markup.restore`); ``tokens`` and
        ``attention`` stay those of the masked sentence, placeholders and all."""
        return [
            self._restored(t, p) if p.spans else t
            for t, p in zip(translations, prepared, strict=True)
        ]

    @staticmethod
    def _restored(translation: Translation, prepared: Protected) -> Translation:
        options = [
            replace(h, text=restore_spans(h.text, prepared, h.source_tokens, h.tokens, h.attention))
            for h in translation.nbest
        ]
        return replace(options[0], nbest=options)

    def translate(
        self,
        sentences: Sequence[str],
        progress: bool = False,
        interrupt: Callable[[], None] | None = None,
        constraints: Sequence[Sequence[str]] | None = None,
        avoid: Sequence[Sequence[str]] | None = None,
    ) -> list[Translation]:
        """Translate English sentences; one :class:`Translation` each, in input order.

        Each sentence is normalised as the corpus is (NFC, whitespace folded), its markup masked
        when :attr:`markup` is on (:meth:`prepare`), encoded (:meth:`encode`), decoded as
        :meth:`translate_ids` decodes, and its spans put back (:meth:`restore`).
        ``constraints[i]``: Korean phrases sentence i's translation must contain, added to what
        :attr:`glossary` finds (:meth:`constraints_for`); each :class:`Translation` lists the
        ones it misses. ``avoid[i]``: Korean phrases no output of sentence i may contain.
        """
        if isinstance(sentences, str):
            raise TypeError("translate() takes a sequence of sentences; wrap one in a list")
        prepared = self.prepare(sentences)
        phrases = self.constraints_for(prepared, constraints)
        avoided = checked_phrases(avoid, len(prepared), "avoid") if avoid is not None else None
        translations = self.translate_ids(
            self.encode_prepared(prepared), progress, interrupt, phrases, avoided
        )
        return self.restore(translations, prepared)

    def translate_ids(
        self,
        encoded: Sequence[Sequence[int]],
        progress: bool = False,
        interrupt: Callable[[], None] | None = None,
        constraints: Sequence[Sequence[str]] | None = None,
        avoid: Sequence[Sequence[str]] | None = None,
    ) -> list[Translation]:
        """Translate sentences already encoded by :meth:`encode` (source ids without ``</s>``);
        one :class:`Translation` each, in input order.

        They are decoded in length-sorted batches within ``settings.batch_size`` and, on the
        CPU, ``settings.batch_tokens`` (:func:`nmt.inference.search.decode_ids`; sentences
        already within those limits are one batch). ``progress`` shows a tqdm bar on stderr.
        ``interrupt()`` is called after each batch; what it raises ends the call (the
        trainer's validation stops so on a preemption signal). ``constraints[i]``: the phrases
        (text, from :meth:`constraints_for`) sentence i's output must contain; they are decoded
        by the constrained search (:mod:`nmt.inference.constraints`); ``avoid[i]``: phrases no
        output of sentence i contains (one with a character the target vocabulary lacks cannot
        be produced anyway).
        """
        encoded = [list(ids) for ids in encoded]
        if constraints is not None and len(constraints) != len(encoded):
            raise NMTError(f"constraints: {len(constraints)} lists for {len(encoded)} sentences")
        phrase_ids = self.encode_constraints(constraints) if constraints is not None else None
        producible = [[p for p in ps if p] for ps in phrase_ids] if phrase_ids else None
        if avoid is not None and len(avoid) != len(encoded):
            raise NMTError(f"avoid: {len(avoid)} lists for {len(encoded)} sentences")
        avoided = self._avoided_ids(avoid) if avoid else None
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(encoded), unit="sent", desc="translating", leave=False, delay=1.0)

        def after_batch(sentences_done: int) -> None:
            if bar is not None:
                bar.update(sentences_done)
            if interrupt is not None:
                interrupt()

        try:
            nbest_lists = decode_ids(
                self.model,
                encoded,
                self.settings,
                self.device,
                after_batch,
                self.precision,
                constraints=producible,
                avoid=avoided,
            )
        finally:
            if bar is not None:
                bar.close()
        translations = [
            self._translation(ids, nbest) for ids, nbest in zip(encoded, nbest_lists, strict=True)
        ]
        if constraints is None or phrase_ids is None:
            return translations
        return [
            self._constrained(t, list(texts), ids)
            for t, texts, ids in zip(translations, constraints, phrase_ids, strict=True)
        ]

    def _avoided_ids(self, avoid: Sequence[Sequence[str]]) -> list[list[list[int]]]:
        """The id sequences no output may contain, for each sentence's avoided phrases: each
        phrase (without one it cannot spell), and the phrase with its last piece replaced by
        every longer piece that starts with it, so that 파일 is avoided in 파일을 and 파일의
        too (the tokenizer spells a word and its particle as one piece where it can)."""
        pieces = self._target_pieces
        result = []
        for phrases in self.encode_constraints(avoid):
            variants = []
            for ids in (p for p in phrases if p):
                last = pieces[ids[-1]]
                longer = [j for j, piece in enumerate(pieces) if piece.startswith(last)]
                variants += [ids[:-1] + [j] for j in longer]
            result.append(variants)
        return result

    @functools.cached_property
    def _target_pieces(self) -> list[str]:
        return self.tgt_vocab.pieces(list(range(len(self.tgt_vocab))))

    @staticmethod
    def _constrained(
        translation: Translation, texts: list[str], phrase_ids: list[list[int]]
    ) -> Translation:
        """``translation`` with what every n-best entry met and missed of ``texts`` (a phrase
        that encoded to ``[]`` is missed by every output)."""

        def marked(t: Translation) -> Translation:
            missing = set(missing_phrases(t.token_ids, phrase_ids))
            missing |= {c for c, ids in enumerate(phrase_ids) if not ids}
            return replace(
                t,
                constraints=texts,
                missing_constraints=[text for c, text in enumerate(texts) if c in missing],
                constrained_tokens=phrase_positions(t.token_ids, [p for p in phrase_ids if p]),
            )

        options = [marked(t) for t in translation.nbest]
        return replace(options[0], nbest=options)

    def translate_text(self, sentences: Sequence[str], progress: bool = False) -> list[str]:
        """Only the best translation's text of each sentence."""
        return [t.text for t in self.translate(sentences, progress)]

    def _translation(self, src_ids: list[int], nbest: list[Hypothesis]) -> Translation:
        source_tokens = self.src_vocab.pieces(src_ids)
        texts = self.tgt_vocab.decode([h.tokens for h in nbest])
        options = [
            replace(self._one(h, text, source_tokens), source_ids=list(src_ids))
            for h, text in zip(nbest, texts, strict=True)
        ]
        return replace(options[0], nbest=options)  # a copy: no Translation contains itself

    @torch.inference_mode()
    def attention_heads(self, translation: Translation) -> list[LayerAttention] | None:
        """The attention per head behind ``translation`` (its tokens forced through the model,
        rows and columns as in :attr:`Translation.attention`): every decoder layer's self- and
        cross-attention for a Transformer decoder; the one layer of cross-attention heads for a
        recurrent decoder with ``model.attention.heads`` > 1 (``self_weights`` None).  None for
        a single-head recurrent decoder (its attention is :attr:`Translation.attention`), an
        ensemble or an exported folder.  Computed in fp32, in eval mode."""
        decoder = getattr(self.model, "decoder", None)
        transformer = hasattr(decoder, "attention_maps")
        multi_head = isinstance(getattr(decoder, "attention", None), MultiHeadScoreAttention)
        if not (transformer or multi_head) or translation.num_predicted == 0:
            return None
        training = self.model.training
        self.model.eval()
        try:
            return self._attention_heads(decoder, translation, transformer)
        finally:
            self.model.train(training)

    def _attention_heads(
        self, decoder: Any, translation: Translation, transformer: bool
    ) -> list[LayerAttention]:
        device = self.device
        src = torch.tensor([[*translation.source_ids, EOS_ID]], device=device)
        src_lengths = torch.tensor([src.size(1)], device=device)
        rows = translation.num_predicted  # the inputs: <s> y_1 .. y_{rows-1}
        tgt_in = torch.tensor([[BOS_ID, *translation.token_ids][:rows]], device=device)
        if transformer:
            memory = self.model.encode(src, src_lengths)
            maps = decoder.attention_maps(self.model.tgt_embed(tgt_in), memory)
            return [
                LayerAttention(m.self_weights[0].float(), m.cross_weights[0].float()) for m in maps
            ]
        attention, collected = decoder.attention, []

        def collect(module: Any, args: tuple[Any, ...], kwargs: dict, output: Any) -> None:
            # the call's query, keys, src_mask and positions give every head's weights
            query, keys, _, src_mask, *rest = (*args, *kwargs.values())
            collected.append(module.head_weights(query, keys, src_mask, *rest[:1]))

        hook = attention.register_forward_hook(collect, with_kwargs=True)
        try:
            self.model(src, src_lengths, tgt_in)  # teacher-forced: one call or one per step
        finally:
            hook.remove()
        heads = torch.cat(collected, dim=2)[0].float()  # (H, rows, src_len)
        return [LayerAttention(None, heads)]

    def _one(self, hyp: Hypothesis, text: str, source_tokens: list[str]) -> Translation:
        attention = hyp.attn_weights
        predicted = int(attention.shape[0]) if attention.dim() == 2 else 0
        return Translation(
            text=text,
            score=hyp.log_prob,
            confidence=hyp.log_prob / predicted if predicted else 0.0,
            tokens=self.tgt_vocab.pieces(hyp.tokens),
            source_tokens=source_tokens,
            attention=attention,
            hit_max_len=hyp.hit_max_len,
            search_score=hyp.score,
            token_ids=list(hyp.tokens),
        )


def checked_phrases(
    lists: Sequence[Sequence[str]] | None, sentences: int, field_name: str
) -> list[list[str]]:
    """One list of Korean phrases per sentence (``[]`` each when ``lists`` is None), each
    normalised; :class:`NMTError` naming ``field_name[i]`` for an entry that is not a list
    (a bare string would otherwise be read as one phrase per character), ``field_name[i][j]``
    for a phrase that is not a non-empty string, or the count when it is not ``sentences``."""
    if lists is None:
        return [[] for _ in range(sentences)]
    if isinstance(lists, str):
        raise TypeError(f"{field_name}: one list of phrases per sentence")
    if len(lists) != sentences:
        raise NMTError(
            f"{field_name}: expected one list per sentence ({sentences}); got {len(lists)}"
        )
    result = []
    for i, phrases in enumerate(lists):
        if isinstance(phrases, str) or not isinstance(phrases, Sequence):
            raise NMTError(f"{field_name}[{i}]: expected a list of Korean phrases; got {phrases!r}")
        normalised = []
        for j, phrase in enumerate(phrases):
            if not isinstance(phrase, str) or not normalize(phrase):
                raise NMTError(
                    f"{field_name}[{i}][{j}]: expected a non-empty Korean phrase; got {phrase!r}"
                )
            normalised.append(normalize(phrase))
        result.append(normalised)
    return result
