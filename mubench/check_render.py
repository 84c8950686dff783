"""``mubench check``'s diff table and verdict, printed with rich."""
from __future__ import annotations

import math
from typing import Optional

from .check import BETTER, MISSING_METRIC, NEW, NOT_RUN, OK, PROTOCOL, REGRESSED, WITHIN, CheckReport



def _fmt(x: Optional[float]) -> str:
    if x is None:
        return "–"
    return "nan" if isinstance(x, float) and math.isnan(x) else f"{x:.6g}"


def render_check(report: CheckReport, console=None) -> None:
    """Print the diff table and a one-line verdict (rich)."""
    from rich.console import Console
    from rich.table import Table as RichTable

    console = console or Console()
    table = RichTable(title="mubench check", show_lines=False)
    for col, justify in (("suite", "left"), ("method", "left"), ("model", "left"), ("metric", "left"),
                         ("", "center"), ("baseline", "right"), ("current", "right"), ("Δ", "right"),
                         ("Δ%", "right"), ("tolerance", "right"), ("status", "left")):
        table.add_column(col, justify=justify, no_wrap=col not in ("status",))
    styles = {OK: "green", BETTER: "green", WITHIN: "yellow", REGRESSED: "bold red", MISSING_METRIC: "bold red",
              PROTOCOL: "bold red", NOT_RUN: "dim", NEW: "cyan"}
    for f in report.findings:
        arrow = "" if f.higher_is_better is None else ("↑" if f.higher_is_better else "↓")
        pct = (f"{100 * f.delta / abs(f.baseline):+.2f}%" if f.delta is not None and f.baseline
               and math.isfinite(f.baseline) else "–")
        delta = f"{f.delta:+.4g}" if f.delta is not None else "–"
        tol = f.tolerance or "–"
        if f.tolerance not in (None, "exact") and f.tolerance.split(":")[0] != "abs" and f.allowed is not None:
            tol += f" ({_fmt(f.allowed)})"
        status = f.status + (f": {f.note}" if f.note else "")
        table.add_row(f.suite, f.method, f.model, f.metric, arrow, _fmt(f.baseline), _fmt(f.current), delta, pct,
                      tol, f"[{styles.get(f.status, '')}]{status}[/]")
    console.print(table)
    failures = report.failures()
    if failures:
        console.print(f"[bold red]check failed[/]: {len(failures)} metric(s) worse than the baseline beyond "
                      f"tolerance, missing, or under a changed protocol")
        for f in failures:
            if f.status == REGRESSED and f.worse_by is not None:
                console.print(f"  {f.suite}/{f.method}/{f.model} {f.metric}: {_fmt(f.baseline)} → {_fmt(f.current)}"
                              f" ({'higher' if f.higher_is_better else 'lower'} is better; worse by "
                              f"{_fmt(f.worse_by)} > allowed {_fmt(f.allowed)}, {f.tolerance})")
            else:
                console.print(f"  {f.suite}/{f.method}/{f.model} {f.metric}: {f.status} {f.note}")
    else:
        console.print(f"[bold green]check passed[/]: {report.checked_entries} run(s) compared"
                      + (f", {report.skipped_entries} baseline entr{'y' if report.skipped_entries == 1 else 'ies'} "
                         "not run" if report.skipped_entries else ""))


__all__ = ["render_check"]
