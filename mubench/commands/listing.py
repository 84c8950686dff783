"""``mubench list [methods|suites|models|scorers|datasets]``."""
from __future__ import annotations

import typer

from ..errors import unknown
from ..registry import load_registries
from ..specs import find_spec, load_yaml, spec_names

KINDS = ("methods", "suites", "models", "scorers", "datasets")


def list_command(
    what: str = typer.Argument("all", help="methods | suites | models | scorers | datasets | all"),
) -> None:
    """List the named methods and suites (spec files) and the registered models, scorers and training data."""
    from rich.console import Console
    from rich.table import Table

    if what != "all" and what not in KINDS:
        raise unknown("list kind", what, KINDS + ("all",))
    regs = load_registries()
    console = Console()
    for kind in KINDS if what == "all" else (what,):
        table = Table(title=kind, title_justify="left")
        table.add_column("name")
        table.add_column("kind" if kind in ("methods", "suites") else "target")
        table.add_column("description")
        if kind in ("methods", "suites"):
            for name in spec_names(kind):
                spec = load_yaml(find_spec(kind, name)[1])
                table.add_row(name, str(spec.get("kind", "?")), str(spec.get("description", "")).strip())
        else:
            registry = getattr(regs, kind)
            for name in registry.names():
                table.add_row(name, registry.target(name), registry.help(name))
        console.print(table)
