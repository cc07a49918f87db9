"""The tree shows the pipeline: no import circle, small modules, the top level as style.md lays it out."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGE = REPO / "gate"
MAX_LINES = 400
TOP_LEVEL = {"__init__.py", "__main__.py", "errors.py", "records.py", "result.py", "run.py", "api.py", "settings.py",
             "cli", "data", "decide", "engine", "inputs", "metrics", "outputs", "tracking", "train"}


def module_name(path: Path, base: Path = REPO) -> str:
    parts = path.relative_to(base).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, known: set[str], base: Path = REPO) -> set[str]:
    """The gate modules ``path`` imports anywhere in it (functions included; TYPE_CHECKING blocks left out)."""
    tree = ast.parse(path.read_text())
    skipped = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If) and _type_checking(block.test)
               for node in ast.walk(block)}
    name = module_name(path, base)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            source = node.module or ""
            if node.level:  # relative: up from this package
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*up, *filter(None, [source])])
            # `from gate.engine import core` imports the module gate.engine.core; `from x import name`, x itself.
            found |= {f"{source}.{alias.name}" if f"{source}.{alias.name}" in known else source
                      for alias in node.names}
    return {target for target in found if target in known}


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def import_graph(base: Path = REPO) -> dict[str, set[str]]:
    """Module -> the gate modules it imports; importing a.b.c also runs the package a.b (an edge to it)."""
    files = {module_name(p, base): p for p in (base / "gate").rglob("*.py")}
    graph = {name: imports_of(path, set(files), base) for name, path in files.items()}
    for targets in graph.values():
        for target in list(targets):
            parent = target.rpartition(".")[0]
            while parent in files and parent != "gate":  # gate/__init__ imports only errors and settings
                targets.add(parent)
                parent = parent.rpartition(".")[0]
    return {name: {t for t in targets if t != name and not name.startswith(t + ".")}
            for name, targets in graph.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as [a, b, ..., a], or None (depth-first search, colours white/grey/black)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*stack[stack.index(target):], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_find_cycle_finds_one_and_only_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_import_graph_sees_imports_inside_functions(tmp_path: Path) -> None:
    folder = tmp_path / "gate"
    folder.mkdir()
    (folder / "__init__.py").write_text("")
    (folder / "a.py").write_text("def f():\n    from gate import b\n    return b\n")
    (folder / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from gate import a\n"
                                 "from . import c\n")
    (folder / "c.py").write_text("import gate.a\n")
    graph = import_graph(tmp_path)
    assert graph["gate.a"] == {"gate.b"} and graph["gate.b"] == {"gate.c"} and graph["gate.c"] == {"gate.a"}
    assert find_cycle(graph) == ["gate.a", "gate.b", "gate.c", "gate.a"]


def test_no_import_circle_in_gate() -> None:
    graph, cycles = import_graph(), []
    while (cycle := find_cycle(graph)) is not None:  # every circle, each broken at its last edge to go on
        cycles.append(" -> ".join(cycle))
        graph[cycle[-2]].discard(cycle[-1])
    assert not cycles, cycles


def test_no_module_over_400_lines() -> None:
    sizes = {str(p.relative_to(REPO)): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    over = {path: lines for path, lines in sorted(sizes.items()) if lines > MAX_LINES}
    assert not over, f"modules over {MAX_LINES} lines: {over}"


def test_the_top_level_holds_the_packages_and_the_stage_data() -> None:
    names = {p.name for p in PACKAGE.iterdir() if p.name != "__pycache__"}
    assert names <= TOP_LEVEL, sorted(names - TOP_LEVEL)


IGNORE = re.compile(r"#\s*type:\s*ignore(\[[^\]]*\])?(?P<rest>.*)$")


def test_every_type_ignore_says_why() -> None:
    """``# type: ignore[code]  # reason``: a bare one hides what mypy would say next time."""
    bare = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            match = IGNORE.search(line)
            if match and not (match.group(1) and match.group("rest").strip().startswith("#")):
                bare.append(f"{path.relative_to(REPO)}:{number}")
    assert not bare, bare


@pytest.mark.parametrize("module", ["gate", "gate.cli", "gate.settings", "gate.errors"])
def test_light_modules_import_nothing_heavy(module: str) -> None:
    """What ``xgate --help`` imports reaches no module that imports torch, numpy or mlflow at its top."""
    graph = import_graph()
    heavy = re.compile(r"^\s*(import|from)\s+(torch|numpy|mlflow|matplotlib|scipy)\b", re.MULTILINE)
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = PACKAGE.parent / (name.replace(".", "/") + ".py")
        if not path.exists():
            path = PACKAGE.parent / name.replace(".", "/") / "__init__.py"
        top = "\n".join(line for line in path.read_text().splitlines() if not line.startswith((" ", "\t")))
        assert not heavy.search(top), f"{module} imports {name}, which imports a heavy module at its top"
        todo += [t for t in graph[name] if _imported_at_top(path, t)]


def _imported_at_top(path: Path, target: str) -> bool:
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [
                node.module or "", *(f"{node.module}.{a.name}" for a in node.names)]
            if target in names:
                return True
    return False
