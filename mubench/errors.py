"""Errors that the CLI turns into a clear message and an exit code (never a traceback)."""
from __future__ import annotations

import difflib
from typing import Iterable


class MubenchError(Exception):
    """Base class. ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class UsageError(MubenchError):
    """Bad input from the user: unknown name or key, bad value, unusable file. Exit 2."""

    exit_code = 2


class AssetError(UsageError):
    """A local file a model, suite or scorer needs is missing or does not match its checksum."""


def close_matches(word: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """Choices that look like ``word`` (difflib), then the dotted keys whose last part abbreviates word's
    (``method.rank`` → ``method.r``: the spelling of the field's libraries, e.g. peft's ``r``)."""
    choices = list(choices)
    similar = difflib.get_close_matches(word, choices, n=n, cutoff=0.5)
    parent, _, leaf = word.rpartition(".")
    shorter = [c for c in choices if c not in similar and c.rpartition(".")[0] == parent
               and leaf.startswith(c.rpartition(".")[2]) and c != word]
    return (similar + shorter)[:n]


def did_you_mean(matches: Iterable[str]) -> str:
    """``"; did you mean 'a' or 'b'?"`` for the close matches found (``""`` for none), to append to a message."""
    matches = list(matches)
    return f"; did you mean {' or '.join(repr(m) for m in matches)}?" if matches else ""


def unknown(kind: str, word: str, choices: Iterable[str]) -> UsageError:
    choices = sorted(set(choices))
    return UsageError(f"unknown {kind} {word!r}{did_you_mean(close_matches(word, choices))}"
                      f"\n  known: {', '.join(choices) if choices else '(none)'}")
