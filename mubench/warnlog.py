"""Warnings as messages: one handler for mubench's and the libraries' warnings during a command.

Inside :func:`routed_warnings` every warning that the active filters let through is printed once per kind (its
category and text) as ``mubench: warning: TEXT``, without the source path and line Python's default shows, and is
kept in :attr:`WarningLog.records` (``results.json`` ``warnings``). The previous handler and filters come back on
exit.
"""
from __future__ import annotations

import sys
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional


def _to_stderr(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


@dataclass
class WarningLog:
    """The warnings of one command: ``records`` is a list of ``{category, message, count}``, first seen first."""

    emit: Callable[[str], None] = _to_stderr
    records: list[dict[str, Any]] = field(default_factory=list)

    def show(self, message: Any, category: type, filename: str, lineno: int, file: Optional[Any] = None,
             line: Optional[str] = None) -> None:
        text = " ".join(str(message).split())  # one line, whatever the library put in it
        for rec in self.records:
            if rec["category"] == category.__name__ and rec["message"] == text:
                rec["count"] += 1
                return
        self.records.append({"category": category.__name__, "message": text, "count": 1})
        self.emit(f"mubench: warning: {text}")


@contextmanager
def routed_warnings(emit: Callable[[str], None] = _to_stderr) -> Iterator[WarningLog]:
    """Route warnings to a :class:`WarningLog` (printed once per kind through ``emit``) for the ``with`` body."""
    log = WarningLog(emit)
    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)  # repeats are counted here, not dropped by the registry
        for pattern in (".*TF32.*", ".*not writable.*"):  # known library chatter (mubench.quiet)
            warnings.filterwarnings("ignore", message=pattern)
        warnings.showwarning = log.show
        yield log
