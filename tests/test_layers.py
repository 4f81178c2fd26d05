"""The layers of docs/modules.md hold: a module's folder is its layer, every module is listed in
the map, none imports a higher layer or a command (function-level and lazy imports included),
there is no import circle, and every command is short."""

from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# bottom to top; a module may import its own layer and the layers below it
LAYERS = [
    "core",
    "data",
    "models",
    "inference",
    "evaluation",
    "training",
    "serving",
    "config",
    "commands",
]
ROW = re.compile(r"^\| `(nmt[\w.]*)` \| (\w+) \|", re.MULTILINE)
COMMAND_LINES = 200  # a command composes its config, builds objects and prints
LONG_COMMANDS: dict[str, str] = {}  # command → why it may be longer (none today)


def module_name(path: Path, package_dir: Path) -> str:
    parts = path.relative_to(package_dir.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(package_dir: Path) -> dict[str, Path]:
    return {module_name(p, package_dir): p for p in sorted(package_dir.rglob("*.py"))}


def layer_of(module: str) -> str:
    """``nmt.<folder>.…`` → the folder; ``nmt.<command>`` and ``nmt`` itself (the public
    ``from nmt import Translator``) → commands."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else "commands"


def is_command(module: str) -> bool:
    return module.count(".") == 1 and layer_of(module) == "commands"


def nmt_imports(path: Path, known: set[str], package: str) -> set[str]:
    """The nmt modules a file imports anywhere in it: module level, inside functions, lazily.
    ``from nmt.x import y`` counts as ``nmt.x.y`` when that is a module, else as ``nmt.x``."""
    found = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the file's own package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
    return {m for m in found if m == "nmt" or m.startswith("nmt.")}


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    found = modules(package_dir)
    graph = {}
    for name, path in found.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        graph[name] = nmt_imports(path, set(found), package) - {name}
    return graph


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for importer, imported in graph.items():
        for target in sorted(imported):
            if target not in graph:
                continue
            if LAYERS.index(layer_of(target)) > LAYERS.index(layer_of(importer)):
                bad.append(
                    f"{importer} ({layer_of(importer)}) imports {target} ({layer_of(target)})"
                )
            elif is_command(target) and importer != "nmt":
                bad.append(f"{importer} imports the command {target}")
    return bad


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every circle of imports (depth-first search; each reported once, from its smallest name)."""
    circles, seen = [], set()

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt == path[0]:
                circle = path + [nxt]
                key = frozenset(circle)
                if key not in seen and path[0] == min(path):
                    seen.add(key)
                    circles.append(circle)
            elif nxt not in path and nxt > path[0]:
                visit(nxt, path + [nxt])

    for start in sorted(graph):
        visit(start, [start])
    return circles


def module_map() -> dict[str, str]:
    rows = ROW.findall((ROOT / "docs" / "modules.md").read_text(encoding="utf-8"))
    return dict(rows)


def test_every_module_is_in_the_map_under_its_folders_layer():
    table, found = module_map(), modules(ROOT / "nmt")
    assert sorted(found.keys() - table.keys()) == [], "add these modules to docs/modules.md"
    assert sorted(table.keys() - found.keys()) == [], (
        "docs/modules.md lists modules that do not exist"
    )
    wrong = {m: (layer, layer_of(m)) for m, layer in table.items() if layer != layer_of(m)}
    assert wrong == {}, "the layer in docs/modules.md is not the module's folder"


def test_no_module_imports_a_higher_layer_or_a_command():
    assert upward_imports(import_graph(ROOT / "nmt")) == []


def test_no_import_circle():
    assert import_circles(import_graph(ROOT / "nmt")) == []


def test_commands_are_short():
    long = {
        name: len(path.read_text(encoding="utf-8").splitlines())
        for name, path in modules(ROOT / "nmt").items()
        if is_command(name) and name not in LONG_COMMANDS
    }
    assert {name: n for name, n in long.items() if n > COMMAND_LINES} == {}


def test_the_checks_fail_on_an_upward_import_and_a_circle(tmp_path):
    """A copy of the package with a function-level upward import and a circle added: both are
    found, so the checks above cannot pass vacuously."""
    copy = tmp_path / "nmt"
    shutil.copytree(ROOT / "nmt", copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert upward_imports(import_graph(copy)) == [] and import_circles(import_graph(copy)) == []
    io = copy / "core" / "io.py"
    io.write_text(io.read_text() + "\n\ndef _later():\n    from nmt.training import trainer\n")
    assert upward_imports(import_graph(copy)) == [
        "nmt.core.io (core) imports nmt.training.trainer (training)"
    ]
    corpus = copy / "data" / "batching.py"
    corpus.write_text(corpus.read_text() + "\n\ndef _lazy():\n    import nmt.data.pipeline\n")
    assert ["nmt.data.batching", "nmt.data.pipeline", "nmt.data.batching"] in import_circles(
        import_graph(copy)
    )
    command = copy / "explore.py"
    command.write_text(command.read_text() + "\nfrom nmt import compare\n")
    assert "nmt.explore imports the command nmt.compare" in upward_imports(import_graph(copy))
