"""Module layout: no import cycle anywhere in the package, the trainer apart from the micro world, and modules
under 400 lines (issue 17, "Layout").

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
    return imports_in(path.read_text(encoding="utf-8"), name if path.name == "__init__.py" else name.rpartition(".")[0])


def imports_in(source: str, package: str) -> set[str]:
    """The mubench modules imported by ``source``, a module of ``package``."""
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(source)):
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


def _runtime_nodes(tree: ast.AST):
    """Every node, except those under ``if TYPE_CHECKING:`` (imports for annotations only, never executed)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo.extend(node.orelse)
        else:
            todo.extend(ast.iter_child_nodes(node))


def is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def graph(folders: tuple[str, ...]) -> dict[str, set[str]]:
    """Module → the modules it imports, over the .py files of these folders of the package."""
    files = [p for folder in folders for p in sorted((PACKAGE / folder).glob("**/*.py" if folder == "." else "*.py"))]
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


@pytest.mark.parametrize("folders", [("micro",), ("train",), ("micro", "train"), (".",)])
def test_no_import_cycles(folders):
    cycle = find_cycle(graph(folders))
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_check_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_lazy_imports_count_and_type_checking_imports_do_not():
    """A function-level import still ties two modules together; one under ``if TYPE_CHECKING:`` never runs."""
    source = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .registry import Registries\n"
              "def f():\n    from .errors import UsageError\n")
    assert imports_in(source, "mubench") == {"mubench.errors"}


def test_modules_stay_under_400_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in sorted(PACKAGE.glob("**/*.py"))
            if (n := len(p.read_text(encoding="utf-8").splitlines())) >= MAX_LINES}
    assert not long, f"modules of mubench at or past {MAX_LINES} lines: {long}"
