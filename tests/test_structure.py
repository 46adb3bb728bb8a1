"""The package's structure against DEVELOPERS.md's module map.

The imports are read from the source (``ast``), every ``import`` of every module, those inside
functions included:

* no import circle between the package's modules;
* every import between two parts of the map (a sub-package or a top-level module) runs down:
  to a part of a lower layer of the map's table;
* the map names every part and every module of the sub-packages, and its diagram holds the
  same parts in the same layers as its table;
* an import inside a function is kept for one of two reasons, and says which in a comment:
  a heavy optional route (:data:`HEAVY`), or a module whose import must stay free of
  TensorFlow (:data:`TENSORFLOW_FREE`, checked here in a fresh interpreter).
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "aca_keras"

# Third-party modules imported only on the route that needs them (heavy to import, or a
# program that may be missing): ONNX export and verification, plotting, TFDS.
HEAVY = ("onnx", "tf2onnx", "onnxruntime", "tensorflow.lite", "matplotlib",
         "graphviz", "tensorflow_datasets")

# Modules whose import loads neither Keras nor TensorFlow, with the reason; they import
# TensorFlow-side modules inside the functions that need them.
TENSORFLOW_FREE = {
    "aca_keras.cli": "the commands answer --help without TensorFlow and import it only after "
                     "quiet_startup() silences its start-up lines",
    "aca_keras.searching.config": "aca-search builds its flags from the search defaults",
    "aca_keras.zoo": "aca-zoo list and zoo.list() read entries without TensorFlow",
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _part(module: str) -> str:
    """The map's part of a module: ``"io/"`` for a sub-package's module, ``"plots.py"``."""
    parts = module.split(".")
    if len(parts) == 1:
        return "__init__.py"
    return parts[1] + ("/" if (PACKAGE / parts[1]).is_dir() else ".py")


def _imports(module: str) -> list[tuple[ast.stmt, str, bool]]:
    """``(node, imported module, inside a function)`` of every import of the package's own
    modules and of third-party ones (by their dotted name)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.extend((child, alias.name, in_function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    above = package.split(".")[:len(package.split(".")) - child.level + 1]
                    base = ".".join(above + ([base] if base else []))
                for alias in child.names:
                    name = f"{base}.{alias.name}"
                    found.append((child, name if name in MODULES else base, in_function))
            visit(child, in_function or isinstance(
                child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(ast.parse(path.read_text(encoding="utf-8")), False)
    return found


def _edges() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for module in MODULES:
        for _, target, _ in _imports(module):
            if target in MODULES and target != module:
                graph[module].add(target)
    return graph


# ------------------------------------------------------------------------ DEVELOPERS.md map


def _map_section() -> str:
    text = (ROOT / "DEVELOPERS.md").read_text(encoding="utf-8")
    return text.split("## Module map", 1)[1].split("\n## ", 1)[0]


def _table() -> list[tuple[str, list[str], str]]:
    """``(layer, parts, holds)`` of each row of the module map's table, ground first."""
    rows = []
    for line in _map_section().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) != 3 or cells[0] in ("layer", "---"):
            continue
        rows.append((cells[0], re.findall(r"`([^`]+)`", cells[1]), cells[2]))
    return rows


def _layers() -> dict[str, int]:
    """``{part: rank}``: the rank of its layer, counted from the ground up."""
    order: list[str] = []
    ranks = {}
    for layer, parts, _ in _table():
        if layer not in order:
            order.append(layer)
        ranks.update({part: order.index(layer) for part in parts})
    return ranks


def test_the_map_names_every_part_and_module():
    rows = _table()
    assert len(rows) >= 10, "the module map's table was not found in DEVELOPERS.md"
    named = {part for _, parts, _ in rows for part in parts}
    assert {_part(m) for m in MODULES} <= named, (
        f"parts missing from DEVELOPERS.md's module map: {sorted({_part(m) for m in MODULES} - named)}")
    for _, parts, holds in rows:
        for part in (p for p in parts if p.endswith("/")):
            files = sorted(p.name for p in (PACKAGE / part).glob("*.py") if p.name != "__init__.py")
            assert files, f"{part} in the module map is not a sub-package"
            missing = [f for f in files if f"`{f}`" not in holds]
            assert not missing, f"the module map's row of {part} does not name {missing}"


def test_the_diagram_holds_the_tables_layers():
    section = _map_section()
    diagram = section.split("```mermaid", 1)[1].split("```", 1)[0]
    drawn: dict[str, set[str]] = {}
    layer = None
    for line in diagram.splitlines():
        line = line.strip()
        if line.startswith("subgraph "):
            layer = line.split()[1]
            drawn[layer] = set()
        elif line == "end":
            layer = None
        elif layer is not None:
            drawn[layer] |= set(re.findall(r'\["([^"]+)"\]', line))
    table: dict[str, set[str]] = defaultdict(set)
    for name, parts, _ in _table():
        table[name] |= set(parts)
    assert drawn == dict(table)


def test_no_import_circle():
    graph = _edges()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def connect(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for module in MODULES:
        if module not in index:
            connect(module)
    assert not circles


def test_every_import_runs_down_the_layers():
    ranks = _layers()
    upward = []
    for module, targets in _edges().items():
        for target in targets:
            source, goal = _part(module), _part(target)
            if source != goal and ranks[goal] >= ranks[source]:
                upward.append(f"{module} -> {target} ({source} -> {goal})")
    assert not upward, "imports that do not run down DEVELOPERS.md's layers:\n" + "\n".join(upward)


def _comment_near(lines: list[str], node: ast.stmt) -> bool:
    """A comment on the import's lines, or in the comment lines right above it, or on an
    import right above it (one comment for a group of imports)."""
    if any("#" in lines[i] for i in range(node.lineno - 1, node.end_lineno)):
        return True
    above = node.lineno - 2
    while above >= 0 and lines[above].strip().startswith(("import ", "from ")):
        if "#" in lines[above]:
            return True
        above -= 1
    return above >= 0 and lines[above].strip().startswith("#")


def test_function_local_imports_are_heavy_routes_or_keep_a_module_light():
    wrong = []
    for module, path in MODULES.items():
        lines = path.read_text(encoding="utf-8").splitlines()
        light = any(module == m or module.startswith(m + ".") for m in TENSORFLOW_FREE)
        for node, target, in_function in _imports(module):
            if not in_function:
                continue
            heavy = any(target == h or target.startswith(h + ".") for h in HEAVY)
            where = f"{path.relative_to(ROOT)}:{node.lineno} imports {target}"
            if not (heavy or light):
                wrong.append(f"{where} inside a function (move it to the top)")
            elif not _comment_near(lines, node):
                wrong.append(f"{where} inside a function without a comment saying why")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("module", ["aca_keras.cli.search", "aca_keras.cli.train",
                                    "aca_keras.cli.export", "aca_keras.cli.zoo",
                                    "aca_keras.searching.config", "aca_keras.zoo"])
def test_light_modules_import_no_tensorflow(module):
    assert any(module == m or module.startswith(m + ".") for m in TENSORFLOW_FREE)
    code = (f"import sys, {module}; "
            "print(sorted(m for m in ('keras', 'tensorflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout.strip()
    assert out == "[]", f"importing {module} loads {out}"
