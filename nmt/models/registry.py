"""Named, self-describing model parts: the score functions and the decoder styles.

A part is a class that declares, once, everything the rest of the code base needs to know
about it:

- ``name``           its config value (``model.attention.score: general``), set by the registry
- ``config_keys``    the keys of its config section it needs beyond the common ones, with their
                     types: ``int`` (a positive size) or ``bool``; all required
- ``optional_keys``  keys it accepts but does not need (absent: the constructor's default)
- ``flops``          a classmethod: its matmul FLOPs per token from the sizes (``nmt-benchmark``)

and is registered under its name by a decorator::

    @SCORES.register("general")
    class GeneralScore(Score): ...

:func:`nmt.models.build_model` looks the class up by name, checks and passes exactly its
declared keys; ``nmt-benchmark`` asks the class for its FLOPs; ``scripts/sweep_attention.sh``
lists the registry.  A name that is not registered is one line listing the registered ones.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Generic, TypeVar

from nmt.core.errors import NMTError

OPTION_TYPES = (int, bool)  # what build_model knows how to check: a positive size, true/false


class Declared:
    """Mixin for a registered part: its name and the config keys it reads."""

    name: ClassVar[str] = ""
    config_keys: ClassVar[Mapping[str, type]] = {}
    optional_keys: ClassVar[Mapping[str, type]] = {}

    @classmethod
    def options(cls, cfg: Mapping[str, Any]) -> dict[str, Any]:
        """The values of this part's declared keys that ``cfg`` (its config section) holds."""
        keys = (*cls.config_keys, *cls.optional_keys)
        return {key: cfg[key] for key in keys if key in cfg}


T = TypeVar("T", bound=type[Declared])


class Registry(dict[str, T], Generic[T]):
    """name → class, in registration order; ``key`` is the config key that names a class."""

    def __init__(self, key: str):
        super().__init__()
        self.key = key

    def register(self, name: str) -> Callable[[T], T]:
        """Class decorator: ``@SCORES.register("toy")`` makes ``model.attention.score: toy``."""

        def add(cls: T) -> T:
            if name in self:
                raise ValueError(f"{self.key}: {name!r} is already registered ({self[name]})")
            if inspect.isabstract(cls):
                missing = ", ".join(sorted(cls.__abstractmethods__))
                raise TypeError(f"{cls.__name__} ({self.key} {name!r}) does not define {missing}")
            for key, kind in {**cls.config_keys, **cls.optional_keys}.items():
                if kind not in OPTION_TYPES:
                    raise TypeError(
                        f"{cls.__name__}: config key {key!r} has type {kind}, not int/bool"
                    )
            cls.name = name
            self[name] = cls
            return cls

        return add

    def lookup(self, name: Any) -> T:
        """The class registered as ``name``; else one line naming the key and the known names."""
        if not isinstance(name, str) or name not in self:
            raise NMTError(f"{self.key}: expected one of {', '.join(self)}; got {name!r}")
        return self[name]
