"""Fixtures shared by the test suite.

Where things are:
    ``repo_root``, ``configs_dir``, ``corpora_dir`` ($NMT_CORPORA, else ``../shared/corpora``).

The real Hydra config tree and the real command lines:
    ``compose_config(*overrides, config_name="train")`` composes ``configs/<config_name>.yaml``;
    ``run_module("nmt.prepare", *args)`` runs ``python -m`` in a subprocess at the repository root;
    ``run_main("nmt.prepare", *args)`` calls the same entry point in this process, with ``sys.argv``
    set as ``python -m`` sets it, and without paying seconds for a fresh interpreter to import torch.

Other CPUs:
    ``cpu_kind`` runs a test once under each kind of :data:`nmt.core.runtime.CPU_KINDS` (AVX2 only,
    AVX512-BF16, AMX), simulated through ``NMT_CPU_FLAGS``; tests marked ``cpu_dependent`` are
    run again by CI with the variable set for the whole run (``.ci/run``).

A tiny English→Korean corpus (slices of ``enko/``):
    ``tiny_tsv_corpus`` writes train/valid/test.tsv into the test's ``tmp_path``;
    ``tiny_prepared`` is that corpus prepared once per session (SentencePiece models, encoded
    splits). Treat its folder as read-only: copy it (``shutil.copytree``) before changing it.
    ``small_data`` is its data with only 40 training pairs, for tests of the training loop.
    ``tiny_checkpoint``: ``best.pt`` of a tiny model trained for 2 steps on it, once per session
    (greedy search; read-only).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import itertools
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS_DIR = REPO_ROOT / "configs"

# Small enough for a few seconds of SentencePiece training on two shared cores; the Korean
# vocabulary needs room for the ~770 characters that 99.95% coverage keeps in 1,000 lines.
TINY_TRAIN_LINES = 1000
TINY_EVAL_LINES = 50
TINY_SRC_VOCAB = 500
TINY_TGT_VOCAB = 800

# A 16-unit model trained on one thread with small batches and greedy search: what the tests that
# train or decode use, so the suite stays fast. Files add their own settings after these.
TINY_SIZES = [
    "model.encoder.embed_dim=16",
    "model.encoder.hidden_size=16",
    "model.decoder.embed_dim=16",
    "model.decoder.hidden_size=16",
]
TINY_MODEL = [
    *TINY_SIZES,
    "search=greedy",
    "data.batching.max_tokens=512",
    "trainer.num_threads=1",
]


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Tests run tiny models: a second intra-op thread only adds waiting, and on a shared 2-core
    machine oversubscribed threads make the suite several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(params=["avx2", "avx512_bf16", "amx"])
def cpu_kind(request, monkeypatch) -> str:
    """The test runs as if the CPU were each kind in turn (``NMT_CPU_FLAGS``, read afresh by
    :func:`nmt.core.runtime.cpu_flags`; subprocesses inherit it)."""
    from nmt.core.runtime import CPU_FLAGS_ENV, CPU_KINDS

    assert request.param in CPU_KINDS
    monkeypatch.setenv(CPU_FLAGS_ENV, request.param)
    return request.param


def compose_config(*overrides: str, config_name: str = "train") -> DictConfig:
    """``configs/<config_name>.yaml`` composed with command-line style overrides."""
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides))


def run_module(module: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``python -m module args...`` as a user runs it: cwd and PYTHONPATH at the repository root.

    HYDRA_FULL_ERROR is removed so that Hydra's errors look as they do to a user.
    """
    env = dict(os.environ)
    env.pop("HYDRA_FULL_ERROR", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def quote(value: object) -> str:
    """A value quoted for a Hydra override, so paths with any characters parse as strings."""
    text = str(value)
    assert "'" not in text, f"cannot quote {text!r} for Hydra"
    return f"'{text}'"


@dataclass
class MainResult:
    returncode: int
    stdout: str
    stderr: str


def run_main(module: str, *args: str) -> MainResult:
    """``module.main()`` in this process, as ``python -m module args...`` would run it.

    Hydra parses ``sys.argv``; the exit status is that of the SystemExit the entry point raises
    (0 when it returns). stdout and stderr are captured; the logging set-up Hydra installs, the
    global Hydra state and ``sys.argv`` are restored afterwards.
    """
    main = importlib.import_module(module).main
    root_logger = logging.getLogger()
    saved_handlers, saved_level = root_logger.handlers[:], root_logger.level
    saved_argv, saved_full_error = sys.argv, os.environ.pop("HYDRA_FULL_ERROR", None)
    out, err = io.StringIO(), io.StringIO()
    sys.argv = [f"{module.replace('.', '/')}.py", *args]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
                code = 0
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
    finally:
        sys.argv = saved_argv
        if saved_full_error is not None:
            os.environ["HYDRA_FULL_ERROR"] = saved_full_error
        root_logger.handlers[:] = saved_handlers
        root_logger.setLevel(saved_level)
        GlobalHydra.instance().clear()
    return MainResult(code, out.getvalue(), err.getvalue())


@dataclass(frozen=True)
class TinyCorpus:
    """train/valid/test.tsv in ``root``; ``cfg()`` composes a config that points at them."""

    root: Path

    @property
    def train(self) -> Path:
        return self.root / "train.tsv"

    @property
    def valid(self) -> Path:
        return self.root / "valid.tsv"

    @property
    def test(self) -> Path:
        return self.root / "test.tsv"

    def overrides(self, out_dir: Path | None = None) -> list[str]:
        return [
            "data=tsv",
            f"data.train={quote(self.train)}",
            f"data.valid={quote(self.valid)}",
            f"data.test={quote(self.test)}",
            f"data.out_dir={quote(out_dir or self.root / 'prepared')}",
            f"data.vocab.src_size={TINY_SRC_VOCAB}",
            f"data.vocab.tgt_size={TINY_TGT_VOCAB}",
        ]

    def cfg(
        self, *overrides: str, out_dir: Path | None = None, config_name: str = "train"
    ) -> DictConfig:
        """The composed config (``train`` by default, or ``prepare``); ``cfg.data`` for prepare()."""
        return compose_config(*self.overrides(out_dir), *overrides, config_name=config_name)


@dataclass
class TinyPrepared:
    """The tiny corpus after ``nmt.data.pipeline.prepare``: ``data.splits``, ``data.src_vocab``…"""

    corpus: TinyCorpus
    cfg: DictConfig
    data: object  # nmt.data.pipeline.PreparedData
    log: list[str] = field(default_factory=list)


def _corpora_dir() -> Path:
    path = Path(os.environ.get("NMT_CORPORA") or REPO_ROOT.parent / "shared" / "corpora")
    if not (path / "enko" / "train.tsv").is_file():
        pytest.fail(
            f"corpora not found in {path}: put shared/ beside the repository or set NMT_CORPORA"
        )
    return path


def _head(src: Path, dst: Path, lines: int) -> None:
    with open(src, encoding="utf-8") as f:
        dst.write_text("".join(itertools.islice(f, lines)), encoding="utf-8")


def _write_tiny_corpus(folder: Path, corpora: Path) -> TinyCorpus:
    folder.mkdir(parents=True, exist_ok=True)
    corpus = TinyCorpus(folder)
    _head(corpora / "enko" / "train.tsv", corpus.train, TINY_TRAIN_LINES)
    _head(corpora / "enko" / "valid.tsv", corpus.valid, TINY_EVAL_LINES)
    _head(corpora / "enko" / "test.tsv", corpus.test, TINY_EVAL_LINES)
    return corpus


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def configs_dir() -> Path:
    return CONFIGS_DIR


@pytest.fixture(scope="session")
def corpora_dir() -> Path:
    return _corpora_dir()


@pytest.fixture(name="compose_config", scope="session")
def compose_config_fixture() -> Callable[..., DictConfig]:
    return compose_config


@pytest.fixture(name="run_module", scope="session")
def run_module_fixture() -> Callable[..., subprocess.CompletedProcess[str]]:
    return run_module


@pytest.fixture
def tiny_tsv_corpus(tmp_path: Path, corpora_dir: Path) -> TinyCorpus:
    return _write_tiny_corpus(tmp_path / "tiny", corpora_dir)


@pytest.fixture(scope="session")
def tiny_prepared(tmp_path_factory: pytest.TempPathFactory, corpora_dir: Path) -> TinyPrepared:

    corpus = _write_tiny_corpus(tmp_path_factory.mktemp("tiny"), corpora_dir)
    cfg = corpus.cfg()
    log: list[str] = []
    data = prepare(cfg.data, seed=cfg.seed, log=log.append)
    return TinyPrepared(corpus, cfg, data, log)


@pytest.fixture
def small_data(tiny_prepared: TinyPrepared):
    """``tiny_prepared.data`` with only its first 40 training pairs (5 batches of 512 tokens per
    epoch): for tests of the training loop that run many short epochs."""
    data = tiny_prepared.data
    train = data.splits["train"]
    small = replace(
        train,
        src_ids=train.src_ids[:40],
        tgt_ids=train.tgt_ids[:40],
        src_text=train.src_text[:40],
        tgt_text=train.tgt_text[:40],
    )
    return replace(data, splits={**data.splits, "train": small})


def train_tiny_checkpoint(prepared: TinyPrepared, run_dir: Path, *overrides: str) -> Path:
    """``best.pt`` after 2 steps of a TINY_MODEL on the prepared tiny corpus (a Trainer in this
    process, one thread), with ``overrides`` after TINY_MODEL's."""

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cfg = prepared.corpus.cfg(
        *TINY_MODEL,
        *overrides,
        "trainer.max_steps=2",
        "trainer.val_max_sentences=1",
        "trainer.num_attention_plots=0",
        out_dir=prepared.data.out_dir,
    )
    build_trainer(cfg, run_dir, prepared.data).fit()
    torch.set_num_threads(threads)
    return run_dir / "checkpoints" / "best.pt"


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium through Playwright, offline (the explorer's and the demo page's tests);
    skipped where it is not installed."""
    import scripts.explorer_screenshot

    chromium = scripts.explorer_screenshot.CHROMIUM
    if not chromium.exists():
        pytest.skip(
            f"{chromium} not found: the browser tests need Debian's chromium "
            "(apt-get install -y chromium fonts-noto-cjk, as .ci/run does)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = scripts.explorer_screenshot.launch(playwright)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_prepared, tmp_path_factory) -> Path:
    """A checkpoint after 2 steps of a tiny model (concat attention, greedy search; read-only)."""
    run_dir = tmp_path_factory.mktemp("tiny_run")
    overrides = ("model/attention=concat", "model.attention.hidden_size=16")
    return train_tiny_checkpoint(tiny_prepared, run_dir, *overrides)


# ---------------------------------------------------------------------------- typed settings
# The commands type their config once (nmt.config.schema.check_command) and the library takes
# only typed settings; tests compose DictConfigs, so these adapters type them the same way.


def as_settings(schema: type, cfg, prefix: str = ""):
    """``cfg`` (a DictConfig or dict from a test) as the typed ``schema``; typed ones pass."""
    from omegaconf import DictConfig, OmegaConf

    from nmt.core.settings import load_settings

    if isinstance(cfg, schema):
        return cfg
    plain = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    return load_settings(schema, plain, prefix)


def train_config(cfg):
    from nmt.training.settings import TrainConfig

    return as_settings(TrainConfig, cfg)


def build_model(model_cfg, *args, **kwargs):
    """:func:`nmt.models.build_model` from a test's model config."""
    from nmt import models
    from nmt.models.seq2seq import ModelSettings

    return models.build_model(as_settings(ModelSettings, model_cfg, "model"), *args, **kwargs)


def build_trainer(cfg, run_dir: Path, data=None):
    """:func:`nmt.training.trainer.build_trainer` from a test's composed config."""
    from nmt.training import trainer

    return trainer.build_trainer(train_config(cfg), run_dir, data)


def prepare(data_cfg, *args, **kwargs):
    """:func:`nmt.data.pipeline.prepare` from a test's ``data`` config."""
    from nmt.data import pipeline

    return pipeline.prepare(as_settings(pipeline.DataSettings, data_cfg, "data"), *args, **kwargs)


def flops_per_target_token(model_cfg, *args, **kwargs):
    """:func:`nmt.models.flops.flops_per_target_token` from a test's model config."""
    from nmt.models import flops
    from nmt.models.seq2seq import ModelSettings

    model = as_settings(ModelSettings, model_cfg, "model")
    return flops.flops_per_target_token(model, *args, **kwargs)


def best(result) -> list:
    """The best hypothesis of every sentence of a ``SearchResult`` (its n-best lists' heads)."""
    return [nbest[0] for nbest in result.hypotheses]
