"""``--help`` that reads cleanly at 80 columns: the click command class every ``mubench`` command uses.

Typer's plain (non-rich) help already wraps prose to the terminal; what it leaves are the ``\\b`` key tables of the
commands' docstrings (kept verbatim, so a long key description runs past column 80) and the type tags it appends to
arguments (``KEY=VALUE <list[str]>``). :class:`KVCommand` re-wraps every over-long line with a hanging indent under
its description column, drops the tags, and names the ``KEY=VALUE`` arguments in the usage line of commands that
take them as extra arguments.
"""
from __future__ import annotations

import re
import shutil
import textwrap

import click
from typer.core import TyperCommand

MAX_WIDTH = 80
_TAG = re.compile(r" <(?:bool|list\[str\]|text|integer|float|str|int|path)>")
_COLUMN = re.compile(r"^(\s*\S+(?: \S+)*?\s{2,})(\S.*)$")  # "  key=VALUE   description"


def help_width() -> int:
    return max(40, min(MAX_WIDTH, shutil.get_terminal_size((MAX_WIDTH, 24)).columns))


def wrap_line(line: str, width: int) -> list[str]:
    """``line`` if it fits, else wrapped with continuation lines under its description column."""
    if len(line) <= width:
        return [line]
    lead = len(line) - len(line.lstrip(" "))
    m = _COLUMN.match(line)
    if m and len(m.group(1)) < width // 2:
        first, indent = m.group(1), " " * len(m.group(1))
        return textwrap.wrap(m.group(2), width, initial_indent=first, subsequent_indent=indent,
                             break_on_hyphens=False) or [line]
    return textwrap.wrap(line.strip(), width, initial_indent=" " * lead, subsequent_indent=" " * (lead + 4),
                         break_on_hyphens=False) or [line]


def _untag(tag: str, option: bool) -> str:
    """`` <path>`` of an option → `` PATH``; a flag's `` <bool>`` and an argument's tag → blanks. The result has
    the tag's width, so the description column stays aligned."""
    name = tag.strip()[1:-1]
    word = f" {name.upper()}" if option and name not in ("bool",) and "[" not in name else ""
    return word.ljust(len(tag))


def join_continuations(lines: list[str]) -> list[str]:
    """A key table's description written over several lines (continuations indented to its description column)
    → one line per key, so that re-wrapping fills each line instead of breaking at the source's line ends."""
    out: list[str] = []
    column = None  # the description column of the last key line
    for line in lines:
        lead = len(line) - len(line.lstrip(" "))
        if column is not None and line.strip() and lead == column and out:
            out[-1] = f"{out[-1]} {line.strip()}"
            continue
        m = _COLUMN.match(line)
        column = len(m.group(1)) if m else None
        out.append(line)
    return out


def tidy_help(text: str, width: int) -> str:
    """Blank out type tags, join key descriptions split over lines, re-wrap over-long lines, strip trailing
    blanks."""
    out: list[str] = []
    lines = [line.rstrip() for line in text.splitlines()]
    for line in join_continuations(lines):
        line = _TAG.sub(lambda m: _untag(m.group(0), line.lstrip().startswith("-")), line)
        out.extend(wrap_line(line, width))
    return "\n".join(out) + "\n"


class KVCommand(TyperCommand):
    """A typer command whose help fits 80 columns; with ``allow_extra_args`` its usage shows ``[KEY=VALUE]...``."""

    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        pieces = super().collect_usage_pieces(ctx)
        if ctx.allow_extra_args and not any("KEY=VALUE" in p for p in pieces):
            pieces.append("[KEY=VALUE]...")
        return pieces

    def get_help(self, ctx: click.Context) -> str:
        width = help_width()
        ctx.max_content_width = width
        ctx.terminal_width = width
        return tidy_help(super().get_help(ctx), width)
