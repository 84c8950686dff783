"""Every command's ``--help`` reads cleanly at 80 columns: no line past column 80, no bare type tags, and the
``KEY=VALUE`` arguments named in the usage line of the commands that take them."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from mubench.cli import _register_commands, app
from mubench.helpfmt import tidy_help, wrap_line

_register_commands()
COMMANDS = [[], ["run"], ["score"], ["list"], ["runs"], ["report"], ["baseline"], ["check"], ["inspect"],
            ["train"], ["masks"], ["assets"], ["compare"], ["zoo"], ["zoo", "build"], ["zoo", "verify"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "mubench")
def test_help_fits_80_columns(command):
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "80"}, prog_name="mubench")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("Usage: mubench")
    assert [ln for ln in lines if len(ln) > 80] == []
    assert not any(tag in result.output for tag in ("<bool>", "<list[str]>", "<text>", "<str>"))
    if command in (["run"], ["score"], ["inspect"], ["train"], ["masks"], ["report"]):
        assert "[KEY=VALUE]..." in lines[0]


def test_wrap_keeps_the_description_column():
    line = "  suite=NAME|FILE.yaml    suite spec (default micro); suite.KEY=VALUE overrides its parameters, more"
    wrapped = wrap_line(line, 60)
    assert len(wrapped) > 1 and all(len(w) <= 60 for w in wrapped)
    col = line.index("suite spec")
    assert all(w[:col].strip() == "" and w[col] != " " for w in wrapped[1:])
    assert tidy_help("  --json <bool>  Print JSON.\n", 80) == "  --json         Print JSON.\n"


def test_a_description_split_over_source_lines_is_rewrapped_as_one():
    # the docstring's own line ends must not survive as short lines or deeper-indented fragments (run's chunk=N)
    text = ("  chunk=N      images per call, the last chunk padded (default\n"
            "               8 on a CPU); part of the protocol\n"
            "  seed=N       run seed\n")
    assert tidy_help(text, 80) == ("  chunk=N      images per call, the last chunk padded (default 8 on a CPU); part\n"
                                   "               of the protocol\n"
                                   "  seed=N       run seed\n")
    assert tidy_help(text, 40).splitlines()[:4] == ["  chunk=N      images per call, the last",
                                                    "               chunk padded (default 8",
                                                    "               on a CPU); part of the",
                                                    "               protocol"]
    result = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "80"}, prog_name="mubench")
    lines = result.output.splitlines()
    first = next(i for i, ln in enumerate(lines) if ln.lstrip().startswith("chunk=N"))
    assert lines[first + 1].strip().startswith("padded (default 8 on a CPU")  # filled, not cut at "(default"


@pytest.mark.parametrize("argv, code, needles", [
    (["rnu"], 2, ["No such command 'rnu'", "'run'"]),
    (["eval"], 2, ["No such command 'eval'", "Commands: run, score"]),
    (["compare", "sd"], 2, ["Missing argument 'B'", "Usage:"]),
    (["report", "--pdf"], 2, ["No such option: --pdf"]),
])
def test_command_line_mistakes_get_click_s_message_not_an_internal_one(capsys, argv, code, needles):
    from mubench.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == code
    assert all(n in err for n in needles), err
    assert "unexpected" not in err and "Traceback" not in err


def test_version_and_debug_are_on_the_top_level_help(capsys):
    from mubench import __version__
    from mubench.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.startswith(f"mubench {__version__} (git ")
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "--version" in out and "--debug" in out
