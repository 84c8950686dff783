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
    rich_markup_mode=None,
)


EXTRA_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True}  # commands that take KEY=VALUE arguments


def _register_commands() -> None:
    """One line per command; each command's code is imported only when the CLI starts."""
    from .commands import assets, baseline, check, compare, inspect, listing, masks, report, run, runs, score, train, zoo
    from .helpfmt import KVCommand

    plain, kv = {"cls": KVCommand}, {"cls": KVCommand, "context_settings": EXTRA_ARGS}

    app.command("run", help=run.RUN_HELP, **kv)(run.run_command)
    app.command("score", help=score.SCORE_HELP, **kv)(score.score_command)
    app.command("list", **plain)(listing.list_command)
    app.command("runs", **plain)(runs.runs_command)
    app.command("report", **plain)(report.report_command)
    app.command("compare", help=compare.COMPARE_HELP, **plain)(compare.compare_command)
    app.command("baseline", **plain)(baseline.baseline_command)
    app.command("check", **plain)(check.check_command)
    app.command("inspect", help=inspect.INSPECT_HELP, **kv)(inspect.inspect_command)
    app.command("train", help=train.TRAIN_HELP, **kv)(train.train_command)
    app.command("masks", help=masks.MASKS_HELP, **kv)(masks.masks_command)
    app.command("assets", **plain)(assets.assets_command)
    for info in zoo.app.registered_commands:  # the zoo sub-commands get the same 80-column help
        info.cls = KVCommand
    app.add_typer(zoo.app, name="zoo")


def main(argv: list[str] | None = None) -> None:
    """Console entry point: mubench errors become a message on stderr and their exit code."""
    _register_commands()
    try:
        rc = app(args=argv, standalone_mode=False)
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
    sys.exit(rc if isinstance(rc, int) else 0)
