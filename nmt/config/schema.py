"""Each command's typed config: the settings groups the layers declare, composed per command.

Every entry point checks its composed config against its class here before Hydra starts the job
(:class:`nmt.config.hook.CheckConfig`, a Hydra callback that ``configs/hydra/callbacks/nmt.yaml``
installs): a bad value ends the command with one line and exit status 2, before the run dir,
``.hydra/``, the log file or ``data/`` exist. The command then builds its objects from the typed
config; nothing below the commands reads a ``DictConfig``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from nmt.core.errors import NMTError
from nmt.core.runtime import DEVICES
from nmt.core.settings import load_settings, partial_settings, setting
from nmt.data.pipeline import DataSettings
from nmt.inference.ensemble import EnsembleSettings
from nmt.inference.jsonl import INPUT_FORMATS
from nmt.inference.onnx_export import EXPORTERS
from nmt.inference.search import SearchSettings
from nmt.serving.settings import ServeSettings
from nmt.training.settings import TrainConfig
from nmt.training.speed import BenchmarkSettings


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
    # how a list of checkpoints is combined (nmt-serve-bench takes one checkpoint: its default)
    ensemble: EnsembleSettings = setting(default=EnsembleSettings())

    def __post_init__(self) -> None:
        object.__setattr__(self, "search", partial_settings(SearchSettings, self.search, "search"))


@dataclass(frozen=True, kw_only=True)
class TranslateConfig(DecodeCommand):
    ckpt: str | list[str] = setting(nonempty=True)  # a list: an ensemble
    input: str | None = setting()
    output: str | None = setting()
    scores: bool = setting()
    alignment: bool = setting()
    attention_plot: str | None = setting()
    progress: bool = setting()
    markup: bool = setting()  # protect inline markup (nmt.data.markup)
    glossary: str | None = setting()  # a TSV of terms whose Korean side is imposed
    input_format: str = setting(choices=INPUT_FORMATS)  # text | jsonl (with constraints)


@dataclass(frozen=True, kw_only=True)
class EvaluateConfig(DecodeCommand):
    hyp: str | list[str] | None = setting()
    ref: str | list[str] | None = setting()
    json: str | None = setting()
    ckpt: str | list[str] | None = setting()  # a list: an ensemble
    split: str | None = setting(choices=("train", "valid", "test"))
    src: str | None = setting()
    out: str | None = setting()
    progress: bool = setting()
    tokenizers: str | list[str] = setting(nonempty=True)
    record: bool = setting()
    markup: bool = setting()  # ckpt mode: protect inline markup (nmt.data.markup)
    glossary: str | None = setting()  # ckpt mode: a TSV of terms whose Korean side is imposed


@dataclass(frozen=True, kw_only=True)
class ServeConfig(DecodeCommand):
    ckpt: str | list[str] = setting(nonempty=True)  # a list: an ensemble
    host: str = setting(nonempty=True)
    port: int = setting(ge=0, le=65535)
    serve: ServeSettings = setting()
    markup: bool = setting()  # protect inline markup (nmt.data.markup)
    glossary: str | None = setting()  # a TSV of terms whose Korean side is imposed


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
    markup: bool = setting()  # the servers' and the offline run's (nmt.data.markup)


@dataclass(frozen=True, kw_only=True)
class ExploreConfig(DecodeCommand):
    ckpt: str | list[str | list[str]] = setting(nonempty=True)  # an inner list: an ensemble
    input: str = setting(nonempty=True)
    ref: str | None = setting()
    out: str = setting(nonempty=True)
    max_sentences: int = setting(ge=1)
    n_best: int = setting(ge=1)
    bleu_tokenizer: str = setting(nonempty=True)
    title: str | None = setting()
    progress: bool = setting()
    glossary: str | None = setting()  # a TSV of terms whose Korean side is imposed


@dataclass(frozen=True, kw_only=True)
class ExportConfig:
    ckpt: str = setting(nonempty=True)
    out: str = setting(nonempty=True)
    format: str = setting(choices=("onnx",))
    exporter: str = setting(choices=EXPORTERS)
    opset: int = setting(ge=17)
    quantize: str | None = setting(choices=("int8",))


@dataclass(frozen=True, kw_only=True)
class AverageConfig:
    ckpts: str | list[str] | None = setting(expected="a file name or a non-empty list [a,b]")
    run_dir: str | None = setting()
    last: int | None = setting(ge=1)
    out: str | None = setting()
    slim: bool = setting()


@dataclass(frozen=True, kw_only=True)
class InfoConfig:
    ckpt: str = setting(nonempty=True)
    json: bool = setting()
    config: bool = setting()


@dataclass(frozen=True, kw_only=True)
class CompareConfig:
    sweep: str | None = setting()
    out: str | None = setting()
    evaluate_test: bool = setting()
    device: str = setting(choices=DEVICES, expected="auto, cpu or cuda")
    max_sentences: int | None = setting(ge=1)
    markup: bool = setting()  # evaluate_test: protect inline markup (nmt.data.markup)
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
    "info": InfoConfig,
    "compare": CompareConfig,
    "quality_curve": QualityCurveConfig,
}


def check_command(config_name: str, cfg: Any) -> Any:
    """The composed config of command ``config_name`` (``hydra`` left out) as its typed
    schema object, or one NMTError line. The one place a command's ``DictConfig`` becomes
    plain values: everything below reads the typed object."""
    if isinstance(cfg, DictConfig):  # a copy without `hydra`: reading a `???` would raise
        cfg = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
    return load_settings(COMMANDS[config_name], plain_config(cfg, ""))


def plain_config(values: Any, prefix: str) -> Any:
    """An OmegaConf node as plain containers, interpolations resolved, ``???`` kept; an
    interpolation that fails is one NMTError line naming its key."""
    if not isinstance(values, DictConfig | ListConfig):
        return values
    try:
        return OmegaConf.to_container(values, resolve=True)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or prefix or "config"
        raise NMTError(f"{key}: {str(err).splitlines()[0]}") from None
