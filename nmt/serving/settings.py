"""The ``serve`` block of ``nmt-serve``: the batching service's limits and the app's options."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from typing import Any

from nmt.core.settings import check_fields, load_settings, setting

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
        """From a ``serve`` mapping (the Python API, tests); the API key falls back to
        ``$NMT_SERVE_API_KEY``. A key the settings do not know is an error naming it."""
        values = {**(serve_cfg or {}), **overrides}
        if values.get("cors_origins") is None:
            values.pop("cors_origins", None)
        return load_settings(cls, values, "serve").with_env_api_key()

    def with_env_api_key(self) -> ServeSettings:
        """These settings, with ``$NMT_SERVE_API_KEY`` as the API key when none is set (the
        ``serve`` block of a typed :class:`~nmt.config.schema.ServeConfig` goes through this
        too: the environment is not part of the composed config)."""
        if self.api_key is None and os.environ.get(API_KEY_ENV):
            return replace(self, api_key=os.environ[API_KEY_ENV])
        return self

    def public(self) -> dict[str, Any]:
        """The settings without the API key, for ``/v1/model``."""
        limits = asdict(self)
        limits["api_key"] = "set" if self.api_key else None
        limits["cors_origins"] = list(self.cors_origins)
        return limits
