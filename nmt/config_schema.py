"""The typed schema of every config group and command: types and ranges declared once.

Each config group (``data``, ``model/encoder``, ``model/attention``, ``model/decoder``,
``optim``, ``trainer``, ``search``, ``serve`` …) and each command's top-level config
(``train``, ``translate``, ``evaluate``, ``serve``, ``export``, ``benchmark``, ``compare`` …) is
a frozen dataclass below. A field's annotation is its type and its :func:`setting` metadata its
range or choices; ``__post_init__`` holds the checks that involve two keys. The YAML files in
configs/ keep the defaults and their comments; a field has a default here only where a saved
checkpoint config may lack the key.

:func:`settings` checks a config against its schema and returns the typed object, or raises one
:class:`NMTError` line naming the key and what was expected::

    trainer.max_steps: expected an integer >= 1 or null; got 'abc'

The check is strict where OmegaConf's structured configs convert: ``1`` is not ``true`` and
``'5'`` is not ``5``. Every entry point runs it on the composed config before Hydra starts the
job (:class:`nmt.config_hook.CheckConfig`, a Hydra callback that ``configs/hydra/callbacks/nmt.yaml``
installs):
a bad value ends the command with that line and exit status 2, before the run dir, ``.hydra/``,
the log file or ``data/`` exist.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

from nmt.errors import NMTError

MISSING_VALUE = "???"  # OmegaConf's mandatory value left unset
DEVICES = ("auto", "cpu", "cuda")
Choices = tuple[str, ...] | Callable[[], Sequence[str]]


def setting(
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: Choices | None = None,
    length: int | None = None,
    nonempty: bool = False,
    expected: str | None = None,
    default: Any = dataclasses.MISSING,
) -> Any:
    """A schema field: the range ``ge``/``gt``/``le``/``lt`` of a number (of each item of a
    list), the ``choices`` of a string (a tuple, or a function returning the names that another
    module declares), a list's ``length`` or ``nonempty``; ``expected`` replaces the generated
    description in the error; ``default`` only for keys old configs lack."""
    rules = {"ge": ge, "gt": gt, "le": le, "lt": lt, "choices": choices, "length": length}
    rules = {k: v for k, v in rules.items() if v is not None}
    if nonempty:
        rules["nonempty"] = True
    if expected:
        rules["expected"] = expected
    return field(default=default, metadata=rules)


# --------------------------------------------------------------------------------------------
# The checker


T = typing.TypeVar("T")


def load_settings(schema: type[T], values: Any, prefix: str = "") -> T:
    """``values`` (a mapping, a DictConfig resolved first) checked against the dataclass
    ``schema``: unknown and missing keys, types, ranges, choices, then ``__post_init__``.
    Returns the typed object; nested groups become nested dataclasses."""
    return _build(schema, _plain(values, prefix), prefix)


def _plain(values: Any, prefix: str) -> Any:
    """An OmegaConf node as plain containers, interpolations resolved, ``???`` kept."""
    from omegaconf import DictConfig, ListConfig, OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if not isinstance(values, DictConfig | ListConfig):
        return values
    try:
        return OmegaConf.to_container(values, resolve=True)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or prefix or "config"
        raise NMTError(f"{key}: {str(err).splitlines()[0]}") from None


def _key(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


@functools.cache
def _hints(schema: type) -> dict[str, Any]:
    return typing.get_type_hints(schema)


def _build(schema: type[T], values: Any, prefix: str) -> T:
    if not isinstance(values, Mapping):
        raise NMTError(f"{prefix or 'config'}: expected a mapping of settings; got {values!r}")
    hints, kwargs = _hints(schema), {}
    own = {f.name: f for f in fields(schema) if f.name != PART_OPTIONS}  # type: ignore[arg-type]
    # a registered part's own keys (declared: None for a plain group)
    declared = _declared_keys(schema, values, own, hints, prefix)
    known = [*own, *(declared or ())]
    part = f" for {schema.PART_FIELD} {values[schema.PART_FIELD]!r}" if declared is not None else ""
    for name in values:
        if name not in known:
            raise NMTError(
                f"{_key(prefix, name)}: unknown setting{part}; expected one of {', '.join(known)}"
            )
    for f in own.values():
        key = _key(prefix, f.name)
        if f.name in values:
            kwargs[f.name] = check_value(values[f.name], hints[f.name], f.metadata, key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise NMTError(f"{key}: missing")
    if declared is not None:
        kwargs[PART_OPTIONS] = _part_options(values, declared, prefix)
    return schema(**kwargs)


# A group whose keys depend on a registered part (model.attention on its score, model.decoder on
# its style) names the part's field in PART_FIELD and the registry in REGISTRY; the part's own
# keys (its class's config_keys, required, and optional_keys) land in the field PART_OPTIONS.
PART_OPTIONS = "options"
PART_RULES = {int: {"ge": 1}, bool: {}}  # what a part may declare: a positive size, true/false


def _declared_keys(
    schema: type, values: Mapping, own: Mapping[str, Any], hints: Mapping, prefix: str
) -> dict[str, tuple[type, bool]] | None:
    """key → (type, required) of the registered part that ``values`` names; None for a plain
    group. The part's name is checked first, so an unknown one lists the registered names."""
    registry = getattr(schema, "REGISTRY", None)
    if registry is None:
        return None
    name_field = own[schema.PART_FIELD]
    if schema.PART_FIELD not in values:
        raise NMTError(f"{_key(prefix, schema.PART_FIELD)}: missing")
    name = check_value(
        values[schema.PART_FIELD],
        hints[name_field.name],
        name_field.metadata,
        _key(prefix, schema.PART_FIELD),
    )
    part = registry()[name]
    return {
        **{key: (kind, False) for key, kind in part.optional_keys.items()},
        **{key: (kind, True) for key, kind in part.config_keys.items()},
    }


def _part_options(
    values: Mapping, declared: Mapping[str, tuple[type, bool]], prefix: str
) -> dict[str, Any]:
    options = {}
    for key, (kind, required) in declared.items():
        if key in values:
            options[key] = check_value(values[key], kind, PART_RULES[kind], _key(prefix, key))
        elif required:
            raise NMTError(f"{_key(prefix, key)}: missing")
    return options


def check_fields(obj: Any, prefix: str) -> None:
    """Check the fields of a dataclass built directly (``SearchSettings(beam_size=0)``)."""
    hints = _hints(type(obj))
    for f in fields(obj):
        check_value(getattr(obj, f.name), hints[f.name], f.metadata, _key(prefix, f.name))


def check_value(value: Any, hint: Any, rules: Mapping[str, Any], key: str) -> Any:
    """``value`` converted to ``hint`` (int → float, list → tuple) and checked, or NMTError."""
    if isinstance(value, str) and value == MISSING_VALUE:
        raise NMTError(f"{key}: missing; give it on the command line ({key}=…)")
    converted = _convert(value, hint, rules, key)
    if converted is _WRONG:
        raise NMTError(f"{key}: expected {describe(hint, rules)}; got {value!r}")
    return converted


_WRONG = object()


def _convert(value: Any, hint: Any, rules: Mapping[str, Any], key: str) -> Any:
    if hint is Any:
        return value
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None if type(None) in args else _WRONG
        for option in (a for a in args if a is not type(None)):
            converted = _convert(value, option, rules, key)
            if converted is not _WRONG:
                return converted
        return _WRONG
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key)  # type: ignore[arg-type]
    if origin in (list, tuple):
        if not isinstance(value, Sequence) or isinstance(value, str):
            return _WRONG
        items = [_convert(v, args[0], rules, key) for v in value]
        if _WRONG in items or (rules.get("nonempty") and not items):
            return _WRONG
        if "length" in rules and len(items) != rules["length"]:
            return _WRONG
        return tuple(items) if origin is tuple else items
    return _scalar(value, hint, rules)


def _scalar(value: Any, hint: Any, rules: Mapping[str, Any]) -> Any:
    if hint is bool:
        return value if isinstance(value, bool) else _WRONG
    if isinstance(value, bool) or value is None:
        return _WRONG
    if hint is str:
        if not isinstance(value, str | int | float):  # Hydra parses port=8000 as an int
            return _WRONG
        value = value if isinstance(value, str) else str(value)
        if rules.get("nonempty") and not value:
            return _WRONG
        choices = _choices(rules)
        return _WRONG if choices is not None and value not in choices else value
    if hint is int and not isinstance(value, int):
        return _WRONG
    if hint is float and (not isinstance(value, int | float) or not math.isfinite(value)):
        return _WRONG  # an int stays an int: the configs' `10` prints as it did
    return value if _in_range(value, rules) else _WRONG


def _in_range(value: float, rules: Mapping[str, Any]) -> bool:
    checks = {
        "ge": lambda b: value >= b,
        "gt": lambda b: value > b,
        "le": lambda b: value <= b,
        "lt": lambda b: value < b,
    }
    return all(test(rules[name]) for name, test in checks.items() if name in rules)


def _choices(rules: Mapping[str, Any]) -> Sequence[str] | None:
    choices = rules.get("choices")
    return tuple(choices()) if callable(choices) else choices


def describe(hint: Any, rules: Mapping[str, Any]) -> str:
    """What a field expects, in words: ``an integer >= 1 or null``, ``one of gru, lstm``."""
    if rules.get("expected"):
        return rules["expected"]
    if hint is Any:
        return "any value"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        words = [describe(a, rules) for a in args if a is not type(None)]
        return " or ".join(words + (["null"] if type(None) in args else []))
    if dataclasses.is_dataclass(hint):
        return "a mapping of settings"
    if origin in (list, tuple):
        item = describe(args[0], rules)
        size = f"{rules['length']} " if "length" in rules else ""
        plural = item.replace("an integer", "integers").replace("a number", "numbers")
        plural = plural.replace("a string", "strings")
        return f"{'a non-empty ' if rules.get('nonempty') else 'a '}list of {size}{plural}"
    if hint is bool:
        return "true or false"
    if hint is str:
        choices = _choices(rules)
        if choices is not None:
            return f"one of {', '.join(choices)}"
        return "a non-empty string" if rules.get("nonempty") else "a string"
    return ("an integer" if hint is int else "a number") + _range_words(rules)


def _range_words(rules: Mapping[str, Any]) -> str:
    def num(x: float) -> str:
        return f"{x:g}"

    low = ("[", rules["ge"]) if "ge" in rules else ("(", rules["gt"]) if "gt" in rules else None
    high = ("]", rules["le"]) if "le" in rules else (")", rules["lt"]) if "lt" in rules else None
    if low and high:
        return f" in {low[0]}{num(low[1])}, {num(high[1])}{high[0]}"
    if low:
        return f" {'>=' if low[0] == '[' else '>'} {num(low[1])}"
    if high:
        return f" {'<=' if high[0] == ']' else '<'} {num(high[1])}"
    return ""


def _partial(schema: type, values: Any, prefix: str) -> dict[str, Any]:
    """The keys ``values`` sets (not null) checked against ``schema``'s fields, as a dict: a
    ``search: checkpoint`` group, whose nulls keep the checkpoint's values."""
    values = _plain(values, prefix) or {}
    if not isinstance(values, Mapping):
        raise NMTError(f"{prefix}: expected a mapping of settings; got {values!r}")
    hints, by_name = _hints(schema), {f.name: f for f in fields(schema)}
    given = {}
    for name, value in values.items():
        if name not in by_name:
            raise NMTError(
                f"{_key(prefix, name)}: unknown setting; expected one of {', '.join(by_name)}"
            )
        if value is not None:
            rules = by_name[name].metadata
            given[name] = check_value(value, hints[name], rules, _key(prefix, name))
    return given


# --------------------------------------------------------------------------------------------
# data (configs/data/*.yaml)


@dataclass(frozen=True, kw_only=True)
class VocabSettings:
    model_type: str = setting(choices=("unigram", "bpe"))
    joint: bool = setting()
    src_size: int = setting(ge=1)
    tgt_size: int = setting(ge=1)
    src_character_coverage: float = setting(gt=0, le=1)
    tgt_character_coverage: float = setting(gt=0, le=1)
    input_sentence_size: int = setting(ge=1)


@dataclass(frozen=True, kw_only=True)
class CleanSettings:
    max_len: int = setting(ge=1)
    max_ratio: float = setting(ge=1)
    dedup: bool = setting()


@dataclass(frozen=True, kw_only=True)
class BatchingSettings:
    max_tokens: int = setting(ge=1)  # source or target subwords per batch, padding included
    bucket_width: int = setting(ge=1)
    seed: int = setting()


@dataclass(frozen=True, kw_only=True)
class DataSettings:
    name: str = setting(nonempty=True)
    format: str = setting(choices=("tsv", "aligned", "recipe"))
    recipe: str | None = setting()
    root: str | None = setting()
    mirror: str | None = setting()
    splits: list[str] | None = setting()
    train: str | None = setting()
    valid: str | None = setting()
    test: str | None = setting()
    out_dir: str = setting(nonempty=True)
    src_lang: str = setting(nonempty=True)
    tgt_lang: str = setting(nonempty=True)
    vocab: VocabSettings = setting()
    clean: CleanSettings = setting()
    batching: BatchingSettings = setting()


# --------------------------------------------------------------------------------------------
# model (configs/model/{encoder,attention,decoder}/*.yaml); the names come from nmt.models


def _rnn_types() -> Sequence[str]:
    from nmt.models.encoder import RNN_TYPES

    return RNN_TYPES


def _scores() -> Mapping[str, Any]:
    from nmt.models.attention import SCORES

    return SCORES


def _attention_types() -> Sequence[str]:
    from nmt.models.attention import ATTENTION_TYPES

    return ATTENTION_TYPES


def _decoder_styles() -> Mapping[str, Any]:
    from nmt.models.decoder import DECODER_STYLES

    return DECODER_STYLES


@dataclass(frozen=True, kw_only=True)
class EncoderSettings:
    rnn_type: str = setting(choices=_rnn_types)
    embed_dim: int = setting(ge=1)
    hidden_size: int = setting(ge=1)  # per direction
    num_layers: int = setting(ge=1)
    bidirectional: bool = setting()
    dropout: float = setting(ge=0, lt=1)


@dataclass(frozen=True, kw_only=True)
class AttentionSettings:
    """``score``, ``type`` and ``window``, plus the keys the score's class declares
    (``hidden_size`` for concat, ``max_src_len`` for location: ``config_keys`` in
    nmt/models/attention.py) in ``options``. ``type`` and ``window`` may be absent from configs
    saved before local attention: global attention."""

    REGISTRY: ClassVar[Callable[[], Mapping[str, Any]]] = staticmethod(_scores)
    PART_FIELD: ClassVar[str] = "score"

    score: str = setting(choices=_scores)
    type: str = setting(choices=_attention_types, default="global")
    window: int | None = setting(ge=1, default=None)  # local attention's D
    options: dict[str, Any] = field(default_factory=dict)  # the score's declared keys


@dataclass(frozen=True, kw_only=True)
class DecoderSettings:
    """The keys every style has, plus those the style's class declares (``input_feeding``)
    in ``options``."""

    REGISTRY: ClassVar[Callable[[], Mapping[str, Any]]] = staticmethod(_decoder_styles)
    PART_FIELD: ClassVar[str] = "style"

    style: str = setting(choices=_decoder_styles)
    rnn_type: str = setting(choices=_rnn_types)
    embed_dim: int = setting(ge=1)
    hidden_size: int = setting(ge=1)
    num_layers: int = setting(ge=1)
    dropout: float = setting(ge=0, lt=1)
    bridge: bool = setting()
    options: dict[str, Any] = field(default_factory=dict)  # the style's declared keys


@dataclass(frozen=True, kw_only=True)
class ModelSettings:
    encoder: EncoderSettings = setting()
    attention: AttentionSettings = setting()
    decoder: DecoderSettings = setting()
    tie_embeddings: bool = setting()


# --------------------------------------------------------------------------------------------
# optim and trainer (configs/optim/*.yaml, configs/trainer/default.yaml)


def _optimizers() -> Sequence[str]:
    from nmt.optim import OPTIMIZERS

    return OPTIMIZERS


def _schedulers() -> Sequence[str]:
    from nmt.optim import SCHEDULERS

    return SCHEDULERS


def _warmup_shapes() -> Sequence[str]:
    from nmt.optim import WARMUP_SHAPES

    return WARMUP_SHAPES


def _precisions() -> Sequence[str]:
    from nmt.runtime import PRECISIONS

    return PRECISIONS


@dataclass(frozen=True, kw_only=True)
class OptimSettings:
    name: str = setting(choices=_optimizers)
    lr: float = setting(ge=0)  # 0 freezes the weights (the early-stopping tests use it)
    betas: list[float] = setting(ge=0, lt=1, length=2, expected="two numbers in [0, 1)")
    momentum: float = setting(ge=0)
    weight_decay: float = setting(ge=0)
    clip_grad_norm: float | None = setting(ge=0)
    scheduler: str = setting(choices=_schedulers)
    warmup_steps: int = setting(ge=0)
    warmup_shape: str = setting(choices=_warmup_shapes)
    plateau_factor: float = setting(gt=0, le=1)
    plateau_patience: int = setting(ge=1)
    min_lr: float = setting(ge=0)


STOPPING_METRICS = ("bleu", "chrf", "loss")  # what validation returns and early stopping can watch


@dataclass(frozen=True, kw_only=True)
class TrainerSettings:
    device: str = setting(choices=DEVICES, expected="auto, cpu or cuda")
    precision: str = setting(choices=_precisions)
    max_steps: int | None = setting(ge=1)
    max_epochs: int | None = setting(ge=1)
    max_minutes: float | None = setting(gt=0)
    accum_steps: int = setting(ge=1)
    label_smoothing: float = setting(ge=0, le=1)  # F.cross_entropy's range
    param_init: float | None = setting(gt=0)
    teacher_forcing: float = setting(ge=0, le=1)
    val_every_steps: int = setting(ge=1)
    val_max_sentences: int | None = setting(ge=1)
    log_every_steps: int = setting(ge=1)
    early_stopping_metric: str = setting(choices=STOPPING_METRICS)
    early_stopping_patience: int | None = setting(ge=1)
    keep_best: int = setting(ge=1)
    keep_last: int = setting(ge=0)
    keep_every_validation: bool = setting()
    average_last: int = setting(ge=0)
    resume: bool | str | None = setting(expected="null, true, auto or a checkpoint path")
    save_every_minutes: float | None = setting(gt=0)
    save_every_steps: int | None = setting(ge=1)
    preempt_signals: list[str] | None = setting()
    max_nonfinite_steps: int = setting(ge=1)
    num_samples: int = setting(ge=0)
    num_attention_plots: int = setting(ge=0)
    distributed: bool = setting()
    dist_timeout_minutes: float = setting(gt=0)
    num_threads: int | None = setting(ge=1)
    keep_freed_memory: bool = setting()

    def __post_init__(self) -> None:
        from nmt.preemption import parse_signals

        parse_signals(self.preempt_signals)
        if self.average_last > self.keep_last and not self.keep_every_validation:
            k = self.average_last
            raise NMTError(
                f"trainer.average_last={k} averages the newest {k} step checkpoints: set "
                f"trainer.keep_last >= {k} (now {self.keep_last}) or "
                "trainer.keep_every_validation=true to keep them on disk"
            )


# --------------------------------------------------------------------------------------------
# search (configs/search/*.yaml) and serve: settings objects with defaults, built from
# configs or from keyword arguments (the Python API)


SEARCH_NAMES = ("greedy", "beam")


@dataclass(frozen=True)
class SearchSettings:
    """The search and its parameters: the ``search`` config group, typed and checked.

    ``name`` greedy or beam; ``beam_size`` hypotheses kept per sentence (beam); ``n_best``
    hypotheses returned per sentence (1 <= n_best <= beam_size); ``length_penalty`` GNMT's alpha;
    ``max_len_ratio`` / ``max_len_offset`` the per-sentence length limit; ``no_repeat_ngram_size``
    n > 0 blocks repeated n-grams; ``batch_size`` sentences decoded together, and at most
    ``batch_tokens`` source subwords, padding included, in one decoder call's hypotheses
    (sentences × ``beam_size`` × the longest source, ``</s>`` included; 0: no such limit; CPU
    only: :meth:`padded_budget`); ``precision`` the autocast the search runs under (fp32, bf16, or
    auto: :func:`nmt.search.search_precision`).
    """

    name: str = setting(choices=SEARCH_NAMES, default="beam")
    beam_size: int = setting(ge=1, default=5)
    length_penalty: float = setting(ge=0, default=2.0)
    max_len_ratio: float = setting(ge=0, default=1.5)
    max_len_offset: float = setting(ge=0, default=10)
    n_best: int = setting(ge=1, default=1)
    no_repeat_ngram_size: int = setting(ge=0, default=4)
    batch_size: int = setting(ge=1, default=64)
    batch_tokens: int = setting(ge=0, default=10240)
    precision: str = setting(choices=("auto", "fp32", "bf16"), default="auto")

    def __post_init__(self) -> None:
        check_fields(self, "search")
        limit = self.hypotheses
        if self.n_best > limit:
            raise NMTError(
                f"search.n_best: expected 1 <= n_best <= {limit} "
                f"({'greedy search keeps one hypothesis' if self.name == 'greedy' else 'beam_size'}"
                f"); got {self.n_best}"
            )

    @classmethod
    def from_config(cls, search_cfg: Any, **overrides: Any) -> SearchSettings:
        """From a ``search`` config (a DictConfig or dict), with keyword ``overrides``.

        A key the settings do not know is an error naming it. ``beam_size`` given without
        ``name`` picks the search: 1 → greedy, more → beam. Configs saved before
        ``no_repeat_ngram_size`` or ``precision`` existed decode as they did (0: off; fp32).
        """
        values = {"no_repeat_ngram_size": 0, "precision": "fp32", **_plain(search_cfg, "search")}
        if "beam_size" in overrides and "name" not in overrides:
            overrides["name"] = "greedy" if overrides["beam_size"] == 1 else "beam"
        if overrides.get("name") == "greedy" and "beam_size" not in overrides:
            overrides["beam_size"] = 1
        values = {**values, **overrides}
        for key in (f.name for f in fields(cls)):
            if key in values and values[key] is None:
                raise NMTError(
                    f"search.{key}: no value; search=checkpoint takes the settings of the "
                    "checkpoint being decoded, so it works in translate and evaluate, not here"
                )
        return load_settings(cls, values, "search")

    def replace(self, **overrides: Any) -> SearchSettings:
        """These settings with ``overrides`` (same rules as :meth:`from_config`)."""
        return SearchSettings.from_config(asdict(self), **overrides)

    @property
    def hypotheses(self) -> int:
        """Hypotheses kept per sentence: 1 for greedy (which ignores ``beam_size``)."""
        return 1 if self.name == "greedy" else self.beam_size

    def padded_budget(self, device_type: str) -> int | None:
        """``batch_tokens`` per sentence's worth of hypotheses, on the CPU: the most
        sentences × longest source of one batch (:func:`nmt.search.padded_chunks`); None: no
        limit. Counted over the hypotheses because a step's cost grows with its rows (sentences ×
        beam): with one budget in sentences × longest, beam 5 was fastest at 2,048 but greedy
        14–18% slower than with no limit (enko/test, 2-core EPYC). Not on a GPU, where a step is
        bound by kernel launches, not arithmetic, and larger batches win (docs/benchmarks.md:
        batches of 512 on the H200)."""
        if not self.batch_tokens or device_type != "cpu":
            return None
        return self.batch_tokens // self.hypotheses


def explicit_settings(search_cfg: Any) -> dict[str, Any]:
    """The keys a ``search`` config sets, checked, for :meth:`SearchSettings.from_config`'s
    overrides: ``null`` (``configs/search/checkpoint.yaml``) keeps the checkpoint's value."""
    return _partial(SearchSettings, search_cfg, "search")


API_KEY_ENV = "NMT_SERVE_API_KEY"
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


@dataclass(frozen=True)
class ServeSettings:
    """The ``serve`` config block of ``nmt-serve``, typed and checked (``configs/serve.yaml``)."""

    max_batch_sentences: int = setting(ge=1, default=64)
    max_batch_tokens: int = setting(ge=1, default=6000)
    max_wait_ms: float = setting(ge=0, default=10.0)
    max_sentences_per_request: int = setting(ge=1, default=64)
    max_sentence_tokens: int = setting(ge=1, default=256)
    max_request_bytes: int = setting(ge=1, default=1_000_000)
    max_queue_sentences: int = setting(ge=1, default=2048)
    max_beam_size: int = setting(ge=1, default=16)
    timeout_s: float = setting(gt=0, default=60.0)
    retry_after_s: int = setting(ge=0, default=1)
    api_key: str | None = setting(nonempty=True, default=None)
    cors_origins: tuple[str, ...] = setting(
        default=(), expected="a list of origins (https://example.org)"
    )
    model_name: str | None = setting(default=None)
    threads: int | None = setting(ge=1, default=None)
    access_log: bool = setting(default=False)
    log_level: str = setting(choices=LOG_LEVELS, default="info")

    def __post_init__(self) -> None:
        check_fields(self, "serve")

    @classmethod
    def from_config(cls, serve_cfg: Any, **overrides: Any) -> ServeSettings:
        """From the ``serve`` config block (a DictConfig or dict); the API key falls back to
        ``$NMT_SERVE_API_KEY``. A key the settings do not know is an error naming it."""
        values = {**(_plain(serve_cfg, "serve") or {}), **overrides}
        if values.get("api_key") is None and os.environ.get(API_KEY_ENV):
            values["api_key"] = os.environ[API_KEY_ENV]
        if values.get("cors_origins") is None:
            values.pop("cors_origins", None)
        return load_settings(cls, values, "serve")

    def public(self) -> dict[str, Any]:
        """The settings without the API key, for ``/v1/model``."""
        limits = asdict(self)
        limits["api_key"] = "set" if self.api_key else None
        limits["cors_origins"] = list(self.cors_origins)
        return limits


# --------------------------------------------------------------------------------------------
# The commands' top-level configs (configs/<command>.yaml)


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    seed: int = setting()
    data: DataSettings = setting()
    model: ModelSettings = setting()
    optim: OptimSettings = setting()
    trainer: TrainerSettings = setting()
    search: SearchSettings = setting()

    def __post_init__(self) -> None:
        t = self.trainer  # the benchmark runs the same groups without a limit
        if type(self) is TrainConfig and (t.max_steps, t.max_epochs, t.max_minutes) == (None,) * 3:
            raise NMTError("trainer: set at least one of max_steps, max_epochs, max_minutes")


@dataclass(frozen=True, kw_only=True)
class BenchmarkSettings:
    warmup_steps: int = setting(ge=0)
    windows: int = setting(ge=1)
    steps_per_window: int = setting(ge=1)
    decode_sentences: int | None = setting(ge=0)
    beam_size: int = setting(ge=1)
    threads: int | None = setting(ge=1)
    gemm_sizes: list[int] = setting(ge=1, nonempty=True)
    gemm_repeats: int = setting(ge=1)
    ckpt: str | None = setting()
    exported: list[str] = setting()
    output: str = setting(nonempty=True, expected="a file path")


@dataclass(frozen=True, kw_only=True)
class BenchmarkConfig(TrainConfig):
    benchmark: BenchmarkSettings = setting()


@dataclass(frozen=True, kw_only=True)
class PrepareConfig:
    seed: int = setting()
    data: DataSettings = setting()


@dataclass(frozen=True, kw_only=True)
class DecodeCommand:
    """What the commands that decode a checkpoint share."""

    search: dict[str, Any] = setting()  # search=checkpoint: the keys given, checked
    device: str = setting(choices=DEVICES, expected="auto, cpu or cuda")

    def __post_init__(self) -> None:
        object.__setattr__(self, "search", _partial(SearchSettings, self.search, "search"))


@dataclass(frozen=True, kw_only=True)
class TranslateConfig(DecodeCommand):
    ckpt: str = setting(nonempty=True)
    input: str | None = setting()
    output: str | None = setting()
    scores: bool = setting()
    alignment: bool = setting()
    attention_plot: str | None = setting()
    progress: bool = setting()


@dataclass(frozen=True, kw_only=True)
class EvaluateConfig(DecodeCommand):
    hyp: str | list[str] | None = setting()
    ref: str | list[str] | None = setting()
    json: str | None = setting()
    ckpt: str | None = setting()
    split: str | None = setting(choices=("train", "valid", "test"))
    src: str | None = setting()
    out: str | None = setting()
    progress: bool = setting()
    tokenizers: str | list[str] = setting(nonempty=True)


@dataclass(frozen=True, kw_only=True)
class ServeConfig(DecodeCommand):
    ckpt: str = setting(nonempty=True)
    host: str = setting(nonempty=True)
    port: int = setting(ge=0, le=65535)
    serve: ServeSettings = setting()


@dataclass(frozen=True, kw_only=True)
class ServeBenchConfig(DecodeCommand):
    ckpt: str = setting(nonempty=True)
    input: str | None = setting()
    requests: int = setting(ge=1)
    seed: int = setting()
    clients: int | list[int] = setting(ge=1, nonempty=True)
    max_seconds: float = setting(gt=0)
    batch_sentences: int = setting(ge=1)
    max_wait_ms: float = setting(ge=0)
    threads: int | None = setting(ge=1)
    client: str = setting(choices=("raw", "httpx"))
    server_args: list[str] = setting()
    startup_timeout_s: float = setting(gt=0)
    output: str | None = setting()


@dataclass(frozen=True, kw_only=True)
class ExploreConfig(DecodeCommand):
    ckpt: str | list[str] = setting(nonempty=True)
    input: str = setting(nonempty=True)
    ref: str | None = setting()
    out: str = setting(nonempty=True)
    max_sentences: int = setting(ge=1)
    n_best: int = setting(ge=1)
    bleu_tokenizer: str = setting(nonempty=True)
    title: str | None = setting()
    progress: bool = setting()


def _exporters() -> Sequence[str]:
    from nmt.export import EXPORTERS

    return EXPORTERS


@dataclass(frozen=True, kw_only=True)
class ExportConfig:
    ckpt: str = setting(nonempty=True)
    out: str = setting(nonempty=True)
    format: str = setting(choices=("onnx",))
    exporter: str = setting(choices=_exporters)
    opset: int = setting(ge=17)
    quantize: str | None = setting(choices=("int8",))


@dataclass(frozen=True, kw_only=True)
class AverageConfig:
    ckpts: str | list[str] | None = setting(expected="a file name or a non-empty list [a,b]")
    run_dir: str | None = setting()
    last: int | None = setting(ge=1)
    out: str | None = setting()


@dataclass(frozen=True, kw_only=True)
class CompareConfig:
    sweep: str | None = setting()
    out: str | None = setting()
    evaluate_test: bool = setting()
    device: str = setting(choices=DEVICES, expected="auto, cpu or cuda")
    max_sentences: int | None = setting(ge=1)
    baseline: str | None = setting()
    significance: str = setting(choices=("bs", "ar"))
    samples: int | None = setting(ge=1)


@dataclass(frozen=True, kw_only=True)
class QualityCurveConfig:
    runs: str | list[str] | None = setting(expected="a file name or a non-empty list [a,b]")
    labels: str | list[str] | None = setting(expected="a name or a non-empty list [a,b]")
    out: str | None = setting()
    beam: int | None = setting(ge=1)
    max_sentences: int | None = setting(ge=1)
    device: str = setting(choices=DEVICES, expected="auto, cpu or cuda")
    fresh: bool = setting()


COMMANDS: dict[str, type] = {  # config name → its schema
    "train": TrainConfig,
    "benchmark": BenchmarkConfig,
    "prepare": PrepareConfig,
    "translate": TranslateConfig,
    "evaluate": EvaluateConfig,
    "serve": ServeConfig,
    "serve_bench": ServeBenchConfig,
    "explore": ExploreConfig,
    "export": ExportConfig,
    "average": AverageConfig,
    "compare": CompareConfig,
    "quality_curve": QualityCurveConfig,
}


def check_command(config_name: str, cfg: Any) -> Any:
    """The composed config of command ``config_name`` (``hydra`` left out) as its typed
    schema object, or one NMTError line."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):  # a copy without `hydra`: reading a `???` would raise
        cfg = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
    return load_settings(COMMANDS[config_name], cfg)
