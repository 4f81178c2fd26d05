"""The OmegaConf resolvers that configs/ uses, registered when this module is imported.

Every entry point imports it before ``hydra.main`` composes its config:

* ``${nmt.flat_dirname:TEXT}``: TEXT with every ``/`` replaced by ``.``, so that a multirun
  job's folder (``hydra.sweep.subdir``, from ``hydra.job.override_dirname``) is one folder
  directly below the sweep dir: ``model/attention=dot`` → ``model.attention=dot``, where Hydra
  would nest ``model/`` → ``attention=dot``.
* ``${nmt.groups:GROUP,...}``: one line per config group, ``  GROUP: a, b, c``, its options being
  the stems of ``configs/GROUP/*.yaml``. ``GROUP-OPTION`` leaves OPTION out (``search-checkpoint``:
  training refuses it), ``+GROUP`` is a group that is not in the defaults list (``+experiment``).
  The ``--help`` texts list the groups a command accepts with it: which groups is written by
  hand (Hydra's ``$APP_CONFIG_GROUPS`` lists every folder of configs/, also those a command
  does not use), their options come from the files, so a new option shows up by itself.
"""

from __future__ import annotations

from omegaconf import OmegaConf

from nmt.core.paths import CONFIG_DIR


def flat_dirname(text: str) -> str:
    """``text`` as one folder name: each ``/`` becomes ``.``."""
    return str(text).replace("/", ".")


def group_options(group: str, *excluded: str) -> list[str]:
    """The options of ``configs/<group>/`` (their file names without .yaml), sorted."""
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml") if p.stem not in excluded)


def groups_help(*specs: str) -> str:
    """The ``--help`` lines of the groups in ``specs`` (see the module docstring)."""
    names = [spec.split("-")[0] for spec in specs]  # "+experiment", "search", ...
    width = max(map(len, names)) + 1
    lines = []
    for spec, name in zip(specs, names, strict=True):
        options = group_options(name.lstrip("+"), *spec.split("-")[1:])
        lines.append(f"  {name + ':':<{width}} {', '.join(options) or '(none)'}")
    return "\n".join(lines)


def register() -> None:
    """Register the resolvers (again: ``replace=True``, so importing twice is harmless)."""
    OmegaConf.register_new_resolver("nmt.flat_dirname", flat_dirname, replace=True)
    OmegaConf.register_new_resolver("nmt.groups", groups_help, replace=True)


register()
