"""The commands' ``--help`` (each config's ``hydra.help.template``) and the scripts/ aliases."""

from __future__ import annotations

import functools
import importlib.util
import re
import subprocess
import sys

import pytest
from conftest import CONFIGS_DIR, REPO_ROOT, compose_config, run_main
from omegaconf import OmegaConf

# module → (config, the config groups its --help lists)
TRAINING_GROUPS = {
    "data",
    "model/encoder",
    "model/attention",
    "model/decoder",
    "optim",
    "trainer",
    "search",
    "+experiment",
}
COMMANDS = {
    "train": ("train", TRAINING_GROUPS),
    "prepare": ("prepare", {"data"}),
    "translate": ("translate", {"search"}),
    "evaluate": ("evaluate", {"search"}),
    "benchmark": ("benchmark", TRAINING_GROUPS),
    "average": ("average", set()),
    "compare": ("compare", set()),
    "quality_curve": ("quality_curve", set()),
    "serve": ("serve", {"search"}),
    "serve_bench": ("serve_bench", {"search"}),
    "explore": ("explore", {"search"}),
    "export": ("export", set()),
}
# commands whose --help lists every key of their config by name
KEYS_LISTED = ("translate", "evaluate", "average", "compare", "quality_curve", "explore", "export")


@functools.cache
def help_text(module: str) -> str:
    result = run_main(f"nmt.{module}", "--help")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    return result.stdout


def listed_groups(text: str) -> dict[str, list[str]]:
    """``{group: options}`` of the ``== Config group(s) ==`` section."""
    section = re.search(r"== Config groups? .*?==\n(.*?)\n\n", text, re.S)
    if section is None:
        return {}
    lines = re.findall(r"^  (\+?[\w/]+): +(.*)$", section.group(1), re.M)
    return {group: options.split(", ") for group, options in lines}


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS_DIR / group.lstrip("+")).glob("*.yaml"))


@pytest.mark.parametrize("module", COMMANDS)
def test_help_says_what_the_command_does_with_examples(module):
    text = help_text(module)
    command = "nmt-" + module.replace("_", "-")
    assert text.startswith(f"{command} (python -m nmt.{module}): ")
    assert "powered by Hydra" not in text  # Hydra's generic header
    examples = text.split("== Examples ==\n")[1].split("\n\n")[0].splitlines()
    assert len(examples) >= 2
    assert all(line.lstrip().startswith(("nmt-", "echo")) for line in examples)
    assert f'eval "$({command} -sc install=bash)"' in text  # '$$' in the YAML


@pytest.mark.parametrize("module", COMMANDS)
def test_help_lists_the_groups_the_command_accepts(module):
    config, groups = COMMANDS[module]
    listed = listed_groups(help_text(module))
    assert set(listed) == groups
    for group, names in listed.items():
        # every option on disk; training refuses search=checkpoint, so it is left out there
        refused = {"checkpoint"} if group == "search" and "data" in groups else set()
        assert names == [o for o in options(group) if o not in refused], group
    cfg = compose_config(config_name=config)
    for group in groups - {"+experiment"}:  # the defaults list holds each group listed
        assert OmegaConf.select(cfg, group.replace("/", ".")) is not None, group


@pytest.mark.parametrize("module", KEYS_LISTED)
def test_help_names_every_key_of_the_config(module):
    text = help_text(module)
    cfg = compose_config(config_name=COMMANDS[module][0])
    for key in cfg:
        if key == "search":  # the group, listed as such
            continue
        # a group of keys is listed as group.key= (`???` values are not read)
        nested = OmegaConf.is_dict(cfg._get_node(key))
        assert f"  {key}{'.' if nested else '='}" in text, key


SCRIPTS = [
    "average_checkpoints.py",
    "compare.py",
    "quality_curve.py",
    "benchmark.py",
    "evaluate.py",
]


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_aliases_call_the_command(script):
    """scripts/*.py put the checkout on sys.path and call the command's main."""
    name = f"scripts_{script.removesuffix('.py')}"
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / script)
    alias = importlib.util.module_from_spec(spec)
    sys.modules[name] = alias
    try:
        spec.loader.exec_module(alias)
        result = run_main(name, "--help")
    finally:
        del sys.modules[name]
    assert result.returncode == 0, result.stderr
    assert result.stdout == help_text(alias.main.__module__.removeprefix("nmt."))


def test_an_alias_runs_from_another_folder(tmp_path):
    """As a user runs it, from outside the checkout: a fresh interpreter finds nmt and configs/."""
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "evaluate.py"), "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("nmt-evaluate (python -m nmt.evaluate): ")
