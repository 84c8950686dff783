"""Ctrl-C and SIGTERM as one clean stop: both raise :class:`Interrupted` in the main thread.

Everything finished is already durable (atomic cache files, one store transaction), so the command only has to say
what it kept and exit with 128 + the signal number.

A handler runs between bytecodes, also inside an object's ``__del__`` while it is being collected, and Python prints
and drops an exception raised there: the signal would be lost and the command would run on. So a signal that lands in
a finaliser is delivered again 10 ms later (``SIGALRM``), outside it.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from types import FrameType
from typing import Iterator, Optional


class Interrupted(KeyboardInterrupt):
    """A SIGINT or SIGTERM; ``signum`` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


REDELIVER_S = 0.01  # how long after a finaliser's interrupted frame the signal is raised again


def _in_finaliser(frame: Optional[FrameType]) -> bool:
    while frame is not None:
        if frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


def _raise(signum: int, frame: Optional[FrameType]) -> None:
    if _in_finaliser(frame):  # raised here, it would be printed and dropped: raise it once the finaliser is done
        signal.signal(signal.SIGALRM, lambda _alarm, later: _raise(signum, later))
        signal.setitimer(signal.ITIMER_REAL, REDELIVER_S)
        return
    raise Interrupted(signum)


@contextmanager
def interrupts_raise() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`Interrupted` inside the ``with`` body (main thread only); restored after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, _raise) for s in (signal.SIGINT, signal.SIGTERM)}
    old[signal.SIGALRM] = signal.getsignal(signal.SIGALRM)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0.0)  # a redelivery still pending is moot once the body is left
        for s, handler in old.items():
            if handler is not None:  # None: a handler not set from Python, which cannot be put back from here
                signal.signal(s, handler)


def exit_code_of(err: BaseException) -> int:
    return err.exit_code if isinstance(err, Interrupted) else 130
