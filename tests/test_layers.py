"""The module map of docs/modules.md holds: every module is listed, none imports a higher layer."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["base", "data", "model", "evaluation", "inference", "training", "entry"]
ROW = re.compile(r"^\| `(nmt[\w.]*)` \| (\w+) \|", re.MULTILINE)


def module_map() -> dict[str, str]:
    return dict(ROW.findall((ROOT / "docs" / "modules.md").read_text(encoding="utf-8")))


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def nmt_imports(path: Path) -> set[str]:
    """The nmt modules a file imports, at any depth (function-level imports count too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found.update(n for n in names if n == "nmt" or n.startswith("nmt."))
    return found


def test_every_module_is_in_the_map_with_a_known_layer():
    table = module_map()
    modules = {module_name(p) for p in (ROOT / "nmt").rglob("*.py")}
    assert sorted(modules - table.keys()) == [], "add these modules to docs/modules.md"
    assert sorted(table.keys() - modules) == [], "docs/modules.md lists modules that do not exist"
    assert {layer for layer in table.values()} <= set(LAYERS)


def test_no_module_imports_a_higher_layer():
    table = module_map()
    rank = {module: LAYERS.index(layer) for module, layer in table.items()}
    upward = []
    for path in (ROOT / "nmt").rglob("*.py"):
        importer = module_name(path)
        for imported in nmt_imports(path):
            # `from nmt.models import x` names the package; a missing entry is the test above's
            if imported in rank and importer in rank and rank[imported] > rank[importer]:
                upward.append(
                    f"{importer} ({table[importer]}) imports {imported} ({table[imported]})"
                )
    assert upward == []


def test_the_check_sees_an_upward_import(tmp_path):
    """The parser finds function-level imports, so the rule above cannot pass vacuously."""
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from nmt.trainer import Trainer\n    import nmt.io\n")
    assert nmt_imports(source) == {"nmt.trainer", "nmt.io"}
