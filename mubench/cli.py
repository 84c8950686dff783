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


def _print_version(value: bool) -> None:
    if value:
        from . import __version__
        from .provenance import git_revision

        typer.echo(f"mubench {__version__} (git {git_revision() or 'unknown'})")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                 help="Print mubench's version (and the git commit of its checkout) and exit."),
    debug: bool = typer.Option(False, "--debug", help="On an error, also print the Python traceback (for bug "
                                                      "reports); may be given anywhere before `--`."),
) -> None:
    """Benchmark diffusion fine-tuning methods (MaskUNet and baselines) on real suites and an embedded CPU world."""


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
    """Console entry point: every error becomes one ``mubench: error: ...`` line and an exit code, never a
    traceback; ``--debug`` (anywhere before ``--``) adds the traceback for developers."""
    _register_commands()
    args = list(sys.argv[1:] if argv is None else argv)
    head = args[: args.index("--")] if "--" in args else args
    debug = "--debug" in head
    if debug:
        args.remove("--debug")
    from .warnlog import routed_warnings

    try:
        with routed_warnings():  # every command's warnings as `mubench: warning: ...` lines (run keeps its own log)
            rc = app(args=args, standalone_mode=False)
    except BaseException as err:  # noqa: B036 - the one place that turns every failure into a message
        sys.exit(_exit_for(err, debug))
    sys.exit(rc if isinstance(rc, int) else 0)


def _exit_for(err: BaseException, debug: bool) -> int:
    """Print ``err`` the mubench way and return the exit code."""
    if isinstance(err, SystemExit):
        return err.code if isinstance(err.code, int) else (0 if err.code is None else 2)
    if isinstance(err, typer.Exit):
        return err.exit_code
    # typer's own click (typer >= 0.20 vendors it): its exceptions derive from typer.TyperException; usage errors
    # (unknown command or option, missing argument: exit code 2) are shown with their usage line, no traceback
    cli_error = isinstance(err, typer.TyperException) and hasattr(err, "show")
    if debug and not (cli_error and getattr(err, "exit_code", 1) == 2):
        import traceback

        traceback.print_exception(err)
    if isinstance(err, MubenchError):
        _error(str(err))
        return err.exit_code
    if isinstance(err, (typer.Abort, KeyboardInterrupt)):
        typer.echo("mubench: interrupted", err=True)
        return 130
    if cli_error:
        _suggest_command(err)
        err.show()
        return int(getattr(err, "exit_code", 1))
    hint = "" if debug else " (run again with --debug for the traceback)"
    if isinstance(err, OSError):
        where = f": {err.filename}" if err.filename else ""
        _error(f"{err.strerror or err}{where}{hint}")
        return 2
    if isinstance(err, MemoryError):
        _error(f"out of memory{hint}; try a smaller batch_size= or limit=")
        return 2
    _error(f"unexpected {type(err).__name__}: {err}{hint}")
    return 2


def _suggest_command(err: BaseException) -> None:
    """Add the close matches to click's "No such command 'X'." (it gives none)."""
    import re

    from .errors import close_matches

    found = re.match(r"No such command '(.+)'\.$", str(getattr(err, "message", "")))
    ctx = getattr(err, "ctx", None)
    if found and ctx is not None and hasattr(ctx.command, "list_commands"):
        names = ctx.command.list_commands(ctx)
        hint = close_matches(found.group(1), names)
        err.message += (f" Did you mean {' or '.join(repr(h) for h in hint)}?" if hint else "") + \
            f" Commands: {', '.join(names)}."


def _error(message: str) -> None:
    typer.secho(f"mubench: error: {message}", err=True, fg=typer.colors.RED)
