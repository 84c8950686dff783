"""The ``mubench`` command line (typer). Each command's code lives in ``mubench/commands/``."""
from __future__ import annotations

import sys

import typer

from .errors import MubenchError

app = typer.Typer(
    name="mubench",
    help="Benchmark diffusion fine-tuning methods (MaskUNet and baselines) on real suites and an embedded CPU world.\n\n"
         "Configuration is given as KEY=VALUE arguments, e.g. `mubench run suite=micro method=random-mask "
         "method.ratio=0.5 limit=8`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register_commands() -> None:
    from .commands import listing, run

    app.command("run", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(run.run_command)
    app.command("list")(listing.list_command)
    app.command("runs")(__import__("mubench.commands.runs", fromlist=["runs_command"]).runs_command)
    app.command("report")(__import__("mubench.commands.report", fromlist=["report_command"]).report_command)
    app.command("baseline")(__import__("mubench.commands.baseline", fromlist=["x"]).baseline_command)
    app.command("check")(__import__("mubench.commands.check", fromlist=["check_command"]).check_command)
    app.command("assets")(__import__("mubench.commands.assets", fromlist=["assets_command"]).assets_command)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: mubench errors become a message on stderr and their exit code."""
    _register_commands()
    try:
        app(args=argv, standalone_mode=False)
    except MubenchError as err:
        typer.secho(f"mubench: error: {err}", err=True, fg=typer.colors.RED)
        sys.exit(err.exit_code)
    except typer.Exit as err:
        sys.exit(err.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except Exception as err:  # click usage errors
        import click

        if isinstance(err, click.exceptions.ClickException):
            err.show()
            sys.exit(2 if isinstance(err, click.exceptions.UsageError) else 1)
        raise
    sys.exit(0)
