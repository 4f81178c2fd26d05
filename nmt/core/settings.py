"""Typed settings: a frozen dataclass per config group, checked once, with one-line errors.

Each layer declares the settings of the code it owns beside that code (``SearchSettings`` in
``nmt.inference.search``, ``BatchingSettings`` in ``nmt.data.batching`` …); ``nmt.config.schema``
composes them into each command's top-level config. A field's annotation is its type and its
:func:`setting` metadata its range or choices; ``__post_init__`` holds the checks that involve two
keys. The YAML files in configs/ keep the defaults and their comments; a field has a default here
only where a saved checkpoint config may lack the key.

:func:`load_settings` checks a mapping against its schema and returns the typed
object, or raises one :class:`NMTError` line naming the key and what was expected::

    trainer.max_steps: expected an integer >= 1 or null; got 'abc'

The check is strict where OmegaConf's structured configs convert: ``1`` is not ``true`` and
``'5'`` is not ``5``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import field, fields
from typing import Any

from nmt.core.errors import NMTError

MISSING_VALUE = "???"  # OmegaConf's mandatory value left unset


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


T = typing.TypeVar("T")


def load_settings(schema: type[T], values: Any, prefix: str = "") -> T:
    """``values`` (a mapping) checked against the dataclass ``schema``: unknown and missing
    keys, types, ranges, choices, then ``__post_init__``. Returns the typed object; nested groups
    become nested dataclasses."""
    return _build(schema, values, prefix)


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
    part = (
        f" for {schema.PART_FIELD} {values.get(schema.PART_FIELD)!r}"
        if declared is not None
        else ""
    )
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
    if schema.PART_FIELD in values:
        value = values[schema.PART_FIELD]
    elif name_field.default is not dataclasses.MISSING:  # configs saved before the field
        value = name_field.default
    else:
        raise NMTError(f"{_key(prefix, schema.PART_FIELD)}: missing")
    name = check_value(
        value,
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


def partial_settings(schema: type, values: Any, prefix: str) -> dict[str, Any]:
    """The keys ``values`` sets (not null) checked against ``schema``'s fields, as a dict: a
    ``search: checkpoint`` group, whose nulls keep the checkpoint's values."""
    values = values or {}
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


def settings_dict(settings: Any) -> dict[str, Any]:
    """The plain mapping ``settings`` reads as — :func:`load_settings` inverted: nested groups
    become dicts, a registered part's ``options`` go back among its group's keys, tuples become
    lists. What a checkpoint stores as its config."""
    plain: dict[str, Any] = {}
    for f in fields(settings):
        value = getattr(settings, f.name)
        if f.name == PART_OPTIONS and hasattr(type(settings), "PART_FIELD"):
            plain.update(value)
        elif dataclasses.is_dataclass(value):
            plain[f.name] = settings_dict(value)
        else:
            plain[f.name] = list(value) if isinstance(value, tuple) else value
    return plain
