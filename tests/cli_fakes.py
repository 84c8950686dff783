"""Running one `mubench COMMAND ...` in-process: :func:`call` through ``main()`` as a user's shell would, and
:func:`invoke_faked` through typer's test runner with the function behind it faked, so a test sees exactly what the
command prints and what it handed on, without the work itself."""
from __future__ import annotations

from typing import Any, Callable

import pytest


def call(capsys, *args: str) -> tuple[int, str, str]:
    """Run the CLI in-process (main() maps errors to exit codes); return (code, stdout, stderr)."""
    from mubench.cli import main

    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def invoke_faked(monkeypatch, command: str, args: list[str], target: str, fake: Callable[..., Any]):
    """``mubench COMMAND ARGS`` with ``target`` (a dotted path, e.g. ``mubench.commands.masks.record_masks``)
    replaced by ``fake``; returns typer's result (``exit_code``, ``stdout``, ``output``)."""
    from typer.testing import CliRunner

    from mubench.cli import _register_commands, app

    _register_commands()
    monkeypatch.setattr(target, fake)
    return CliRunner().invoke(app, [command, *args], env={"COLUMNS": "200"}, prog_name="mubench")
