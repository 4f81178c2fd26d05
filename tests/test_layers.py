"""The module map of docs/modules.md holds: every module is listed, none imports a higher layer."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["base", "data", "model", "evaluation", "inference", "training", "entry"]
ROW = re.compile(r"^\| `(nmt[\w.]*)` \| (\w+)(\*?) \|", re.MULTILINE)


def module_map() -> dict[str, str]:
    """module → layer; a layer marked ``*`` (``base*``) may import higher layers inside
    functions, so only its module-level imports are checked."""
    rows = ROW.findall((ROOT / "docs" / "modules.md").read_text(encoding="utf-8"))
    return {module: layer + star for module, layer, star in rows}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_level(tree: ast.Module) -> list[ast.AST]:
    """The nodes that run at import time: everything but the bodies of functions."""
    nodes, todo = [], list(tree.body)
    while todo:
        node = todo.pop()
        nodes.append(node)
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            todo.extend(ast.iter_child_nodes(node))
    return nodes


def nmt_imports(path: Path, functions_too: bool = True) -> set[str]:
    """The nmt modules a file imports; function-level imports count unless ``functions_too``
    is false."""
    found = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree) if functions_too else module_level(tree):
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
    assert {layer.rstrip("*") for layer in table.values()} <= set(LAYERS)


def test_no_module_imports_a_higher_layer():
    table = module_map()
    rank = {module: LAYERS.index(layer.rstrip("*")) for module, layer in table.items()}
    upward = []
    for path in (ROOT / "nmt").rglob("*.py"):
        importer = module_name(path)
        lazy_upward_allowed = table.get(importer, "").endswith("*")
        for imported in nmt_imports(path, functions_too=not lazy_upward_allowed):
            # `from nmt.models import x` names the package; a missing entry is the test above's
            if imported in rank and importer in rank and rank[imported] > rank[importer]:
                upward.append(
                    f"{importer} ({table[importer]}) imports {imported} ({table[imported]})"
                )
    assert upward == []


def test_the_check_sees_an_upward_import(tmp_path):
    """The parser finds function-level imports, so the rule above cannot pass vacuously."""
    source = tmp_path / "m.py"
    source.write_text("import nmt.core.io\n\ndef f():\n    from nmt.training.trainer import Trainer\n")
    assert nmt_imports(source) == {"nmt.training.trainer", "nmt.core.io"}
    assert nmt_imports(source, functions_too=False) == {"nmt.core.io"}
