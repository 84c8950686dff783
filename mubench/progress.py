"""Progress for long stages (generation, scoring, training): bars on a terminal, a line every 30 s elsewhere.

Stages report through :class:`Progress` callbacks (``start(stage, total)``, ``advance(stage, n)``, ``log(msg)``).
The ETA is the elapsed time scaled by what is left (``elapsed * (total - done) / done``), so it shows from the first
finished unit on, however long a unit takes (rich's own estimate needs two updates within its 30 s window and
stayed ``-:--:--`` for a run whose batches take longer). When stderr is not a terminal (``make demo > log``),
:class:`LineReporter` prints ``generate: 12/32 images, 0.41/s, ETA 0:00:49`` at least every ``interval`` seconds
and when a stage finishes.
"""
from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

from rich.progress import ProgressColumn
from rich.text import Text

LINE_INTERVAL_S = 30.0


@dataclass
class Progress:
    """Callbacks the CLI uses to draw progress (no-ops by default)."""

    start: Callable[[str, int], None] = lambda stage, total: None
    advance: Callable[[str, int], None] = lambda stage, n: None
    log: Callable[[str], None] = lambda msg: None


def eta_seconds(done: float, total: float, elapsed: float) -> Optional[float]:
    """Seconds left at the mean rate so far; None before the first unit is done."""
    if done <= 0 or total <= 0 or elapsed <= 0:
        return None
    return max(0.0, elapsed * (total - done) / done)


def fmt_duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-:--:--"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def unit_of(stage: str) -> str:
    return "steps" if stage.startswith("train") else "images"


class EtaColumn(ProgressColumn):
    """``ETA h:mm:ss`` from the mean rate since the stage started."""

    def render(self, task) -> Text:
        if task.finished:
            return Text("done", style="progress.remaining")
        return Text("ETA " + fmt_duration(eta_seconds(task.completed, task.total or 0, task.elapsed or 0.0)),
                    style="progress.remaining")


class RateColumn(ProgressColumn):
    def render(self, task) -> Text:
        elapsed = task.elapsed or 0.0
        rate = task.completed / elapsed if elapsed > 0 else 0.0
        return Text(f"{rate:.2f}/s" if task.completed else "", style="progress.data.speed")


def bar_columns() -> tuple:
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

    return (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(),
            TimeElapsedColumn(), EtaColumn())


@dataclass
class _Stage:
    total: int
    started: float
    done: int = 0
    reported_done: bool = False


@dataclass
class LineReporter:
    """Plain progress lines for logs: every ``interval`` seconds for each unfinished stage, and at each stage's end."""

    interval: float = LINE_INTERVAL_S
    emit: Callable[[str], None] = lambda line: (sys.stderr.write(line + "\n"), sys.stderr.flush())
    clock: Callable[[], float] = time.monotonic
    stages: dict[str, _Stage] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def line(self, stage: str) -> str:
        st = self.stages[stage]
        elapsed = self.clock() - st.started
        rate = st.done / elapsed if elapsed > 0 else 0.0
        eta = eta_seconds(st.done, st.total, elapsed)
        return (f"{stage}: {st.done}/{st.total} {unit_of(stage)}, {rate:.2f}/s, elapsed {fmt_duration(elapsed)}, "
                + ("done" if st.done >= st.total else f"ETA {fmt_duration(eta)}"))

    def start(self, stage: str, total: int) -> None:
        with self._lock:
            self.stages[stage] = _Stage(max(int(total), 0), self.clock())
            if total > 0:
                self.emit(self.line(stage))

    def advance(self, stage: str, n: int) -> None:
        with self._lock:
            st = self.stages[stage]
            st.done += n
            if st.done >= st.total and not st.reported_done:
                st.reported_done = True
                self.emit(self.line(stage))

    def tick(self) -> None:
        """One periodic report: a line for every stage still running."""
        with self._lock:
            for stage, st in self.stages.items():
                if 0 < st.total and st.done < st.total:
                    self.emit(self.line(stage))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.tick()

    def __enter__(self) -> "LineReporter":
        self._thread = threading.Thread(target=self._loop, name="mubench-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)


@contextmanager
def progress_display(mode: str, interval: float = LINE_INTERVAL_S) -> Iterator[Progress]:
    """``bars`` (rich, on stderr), ``lines`` (:class:`LineReporter`) or ``off``; yields the callbacks."""
    def to_stderr(msg: str) -> None:
        sys.stderr.write(msg + "\n")
        sys.stderr.flush()

    if mode == "off":
        yield Progress(log=to_stderr)
        return
    if mode == "lines":
        with LineReporter(interval=interval) as rep:
            yield Progress(start=rep.start, advance=rep.advance, log=to_stderr)
        return
    from rich.console import Console
    from rich.progress import Progress as RichProgress

    console = Console(stderr=True)
    bars = RichProgress(*bar_columns(), console=console, transient=False)
    tasks: dict[str, int] = {}

    def start(stage: str, total: int) -> None:
        tasks[stage] = bars.add_task(stage, total=max(total, 0))

    def advance(stage: str, n: int) -> None:
        bars.advance(tasks[stage], n)

    with bars:
        yield Progress(start=start, advance=advance, log=lambda msg: console.print(msg, markup=False, highlight=False))


def display_mode(enabled: bool, stream=None) -> str:
    """``bars`` on a terminal, ``lines`` when output goes to a file or pipe, ``off`` when not ``enabled``."""
    stream = stream if stream is not None else sys.stderr
    if not enabled:
        return "off"
    return "bars" if stream.isatty() else "lines"
