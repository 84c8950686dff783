"""Module layout: imports point one way and modules stay small (issue 17, "Layout").

The graph is read from the source with :mod:`ast` (function-level imports included, since a lazy import still ties
two modules together), so nothing is imported to check it.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mubench"
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """The mubench modules ``path`` imports (``from pkg import sub`` counts as importing ``pkg.sub`` when that is a
    module)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{a.name}" for a in node.names if is_module(f"{target}.{a.name}"))
    return {m for m in found if m == "mubench" or m.startswith("mubench.")}


def is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def graph(folders: tuple[str, ...]) -> dict[str, set[str]]:
    """Module → the modules it imports, over the .py files of these folders of the package."""
    files = [p for folder in folders for p in sorted((PACKAGE / folder).glob("*.py"))]
    return {module_name(p): imported_modules(p) for p in files}


def find_cycle(edges: dict[str, set[str]]) -> list[str]:
    """One import cycle among the graph's own modules ([] when there is none)."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in edges:
                continue
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return []


def test_the_trainer_knows_nothing_of_the_micro_world():
    for module, imports in graph(("train",)).items():
        assert not {m for m in imports if m.startswith("mubench.micro")}, f"{module} imports the micro world"
    assert "micro" not in (PACKAGE / "train" / "data.py").read_text(encoding="utf-8").lower()


@pytest.mark.parametrize("folders", [("micro",), ("train",), ("micro", "train")])
def test_no_import_cycles(folders):
    cycle = find_cycle(graph(folders))
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_check_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


@pytest.mark.parametrize("folder", ["micro", "train"])
def test_modules_stay_under_400_lines(folder):
    long = {p.name: n for p in sorted((PACKAGE / folder).glob("*.py"))
            if (n := len(p.read_text(encoding="utf-8").splitlines())) >= MAX_LINES}
    assert not long, f"modules of mubench/{folder} at or past {MAX_LINES} lines: {long}"
