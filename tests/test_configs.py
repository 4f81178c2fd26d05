"""The Hydra config tree: every option of every group composes and resolves, the command lines print
the resolved config, and unknown options or keys fail with Hydra's message naming them.

After lightning-hydra-template's ``tests/test_configs.py``, which composes its configs in the tests.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import run_main
from hydra.errors import MissingConfigException
from omegaconf import OmegaConf

CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"

# The options each group documents; files added later are composed too (see `options`).
GROUPS = {
    "data": {"enko", "tsv", "aligned", "kep_news", "tatoeba"},
    "model/encoder": {"gru", "lstm"},
    "model/attention": {"concat", "dot", "general", "location", "scaled_dot"},
    "model/decoder": {"bahdanau", "luong"},
    "optim": {"adam", "adamw", "sgd"},
    "search": {"beam", "greedy", "checkpoint"},
    "trainer": {"default"},
}
# Where an option repeats its own name, so that a copied file left unchanged is caught.
NAMED_BY = {
    "data": "data.name",
    "model/encoder": "model.encoder.rnn_type",
    "model/attention": "model.attention.score",
    "model/decoder": "model.decoder.style",
    "optim": "optim.name",
    "search": "search.name",
}
# The documented mandatory values (`???`): corpora given as files need their paths.
FILE_PATHS = ["data.train", "data.valid", "data.test"]
MANDATORY = {("data", "tsv"): FILE_PATHS, ("data", "aligned"): FILE_PATHS}


def options(group: str) -> list[str]:
    return sorted(path.stem for path in (CONFIGS_DIR / group).glob("*.yaml"))


CASES = [(group, option) for group in GROUPS for option in options(group)]


def test_every_documented_option_has_a_file():
    for group, documented in GROUPS.items():
        assert documented <= set(options(group)), group


@pytest.mark.parametrize(("group", "option"), CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_option_composes_and_resolves(compose_config, group, option):
    given = [f"{key}=given/{key}" for key in MANDATORY.get((group, option), [])]
    cfg = compose_config(f"{group}={option}", *given)
    resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    named_by = NAMED_BY.get(group)
    if option == "transformer":  # an encoder type, not an RNN cell
        named_by = {"model/encoder": "model.encoder.type"}.get(group, named_by)
    if named_by and (group, option) != ("search", "checkpoint"):  # all null: see below
        assert OmegaConf.select(cfg, named_by) == option
    assert resolved["data"]["batching"]["seed"] == resolved["seed"]
    assert resolved["data"]["out_dir"] == f"data/{resolved['data']['name']}"
    model = resolved["model"]
    if "rnn_type" in model["decoder"]:  # a recurrent decoder: the encoder's cell, gru beside none
        assert model["decoder"]["rnn_type"] == model["encoder"].get("rnn_type", "gru")


def test_the_checkpoint_search_option_is_refused_by_training(compose_config):
    """search=checkpoint (translate's and evaluate's default) has no values of its own."""
    from nmt.core.errors import NMTError
    from nmt.inference.search import SearchSettings

    cfg = compose_config("search=checkpoint")
    assert set(OmegaConf.to_container(cfg.search).values()) == {None}
    with pytest.raises(NMTError, match="search.name: no value; search=checkpoint"):
        SearchSettings.from_config(cfg.search)


@pytest.mark.parametrize("option", [option for group, option in MANDATORY])
def test_file_corpora_require_their_paths(compose_config, option):
    # The other options have no missing value: test_option_composes_and_resolves throws on one.
    cfg = compose_config(f"data={option}")
    assert OmegaConf.missing_keys(cfg) == set(MANDATORY["data", option])


def test_unknown_group_value_lists_the_choices(compose_config):
    with pytest.raises(MissingConfigException) as err:
        compose_config("model/attention=foo")
    message = str(err.value)
    assert "Could not find 'model/attention/foo'" in message
    listed = message.split("Available options in 'model/attention':")[1].split()
    assert set(options("model/attention")) <= set(listed)


# ------------------------------------------------------------------------ command lines


def test_prepare_prints_the_resolved_config(compose_config):
    overrides = ["data=kep_news", "data.vocab.src_size=123"]
    result = run_main("nmt.prepare", "--cfg", "job", "--resolve", *overrides)
    assert result.returncode == 0, result.stderr
    assert "${" not in result.stdout
    printed = yaml.safe_load(result.stdout)
    assert printed["data"]["vocab"]["src_size"] == 123
    expected = compose_config(*overrides, config_name="prepare")
    assert printed == OmegaConf.to_container(expected, resolve=True)


def test_train_prints_the_resolved_config(run_module, compose_config):
    # In a fresh interpreter, as a user types it (the other command-line tests run in-process).
    overrides = ["model/encoder=lstm", "model/attention=location", "optim=sgd"]
    result = run_module("nmt.train", "--cfg", "job", "--resolve", *overrides)
    assert result.returncode == 0, result.stderr
    assert "${" not in result.stdout
    printed = yaml.safe_load(result.stdout)
    assert printed["model"]["decoder"]["rnn_type"] == "lstm"
    assert printed == OmegaConf.to_container(compose_config(*overrides), resolve=True)


def test_train_rejects_an_unknown_attention_listing_the_choices():
    result = run_main("nmt.train", "model/attention=foo")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "Could not find 'model/attention/foo'" in result.stderr
    assert "Available options in 'model/attention'" in result.stderr
    for option in options("model/attention"):
        assert f"\t{option}\n" in result.stderr


@pytest.mark.parametrize("module", ["nmt.prepare", "nmt.train"])
def test_unknown_key_is_named(module):
    result = run_main(module, "data.foo=1")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "Could not override 'data.foo'" in result.stderr
    assert "Key 'foo' is not in struct" in result.stderr
