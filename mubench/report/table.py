"""The table model: stored results laid out as rows (methods) × columns (a metric under one protocol).

Rules: each column is one metric of one suite under **one protocol** (numbers made under different protocols
are split into separate columns, with a note); every column carries a protocol letter whose footnote gives the
protocol and n; headers carry the metric's direction.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import pandas as pd

from ..errors import UsageError
from ..protocols import describe_protocol, protocol_diff
from .spec import ColumnSpec, RowSpec, TableSpec

#: The order rows take when no table spec fixes it (the project's method spec names).
METHOD_ORDER = ("sd", "full-ft", "lora", "dropout", "random-mask", "maskunet", "maskunet-free")
MISSING = "–"

# ---------------------------------------------------------------------------------------------
# the table model


@dataclass
class Cell:
    value: Optional[float]
    ci_low: Optional[float]
    ci_high: Optional[float]
    n: Optional[int]
    run_id: str


@dataclass
class Column:
    """One rendered column: a metric of a suite under one protocol (``letter`` names its footnote)."""

    metric: str
    label: str
    suite: str
    protocol_hash: str
    letter: str
    higher_is_better: bool
    format: Optional[str]
    split: bool = False  # one of several columns the same spec column was split into (protocols differ)


@dataclass
class Row:
    method: str
    model: Optional[str]
    label: str


@dataclass
class Table:
    """What the renderers print: rows, columns, cells[(row, column index)], footnotes."""

    caption: Optional[str]
    label: Optional[str]
    rows: list[Row]
    columns: list[Column]
    cells: dict[tuple[int, int], Cell]
    protocols: dict[str, str]  # letter -> protocol description (with n)
    notes: list[str]
    show_model: bool = False
    # significance marks (filled by report.marks.apply_marks; without it, bold = best value, no marks)
    bold: Optional[dict[int, set[int]]] = None  # column -> rows in bold
    marks: dict[tuple[int, int], str] = field(default_factory=dict)  # (row, column) -> ▲ / ▼
    bold_rule: str = "value"  # significant | value
    mark_notes: list[str] = field(default_factory=list)

    def emphasis(self) -> dict[int, set[int]]:
        """Column → rows to show in bold (significance bold when marks were applied, else best value)."""
        return self.bold if self.bold is not None else self.best()

    def frame(self) -> pd.DataFrame:
        """Raw values: one row per method, one column per (metric, protocol) column; NaN where missing."""
        data = {c.label + _letter_tag(c): [self._value(i, j) for i in range(len(self.rows))]
                for j, c in enumerate(self.columns)}
        index = pd.Index([r.label for r in self.rows], name="method")
        return pd.DataFrame(data, index=index, dtype="float64")

    def _value(self, i: int, j: int) -> float:
        cell = self.cells.get((i, j))
        return float("nan") if cell is None or cell.value is None else float(cell.value)

    def best(self) -> dict[int, set[int]]:
        """Column index → row indices holding its best value at display precision (empty when all tie,
        and when the column has a single value: there is nothing to be best against)."""
        frame = self.frame()
        out: dict[int, set[int]] = {}
        for j, col in enumerate(self.columns):
            values = frame.iloc[:, j]
            finite = values[values.map(lambda v: math.isfinite(v))]
            if finite.empty:
                out[j] = set()
                continue
            best = finite.max() if col.higher_is_better else finite.min()
            shown = {i: format_value(self._value(i, j), col.format) for i in range(len(self.rows))
                     if math.isfinite(self._value(i, j))}
            winners = {i for i, s in shown.items() if s == format_value(best, col.format)}
            out[j] = winners if len(winners) < len(shown) else set()  # a lone or all-tied value is not "best"
        return out


def _letter_tag(col: Column) -> str:
    return f" [{col.letter}]"


def format_value(value: Optional[float], fmt: Optional[str]) -> str:
    """A number as displayed: the column's format, else 1, 2 or 3 decimals depending on magnitude."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    return format(value, fmt or auto_format(value))


def auto_format(value: float) -> str:
    """1 decimal from 100 up, 2 from 1 up, else 3 (FID 23.39, CLIP 0.331, latency 156.0)."""
    mag = abs(value) if math.isfinite(value) else 0.0
    return ".1f" if mag >= 100 else ".2f" if mag >= 1 else ".3f"


def _half_width(cell: Cell) -> Optional[float]:
    if cell.ci_low is None or cell.ci_high is None:
        return None
    return (float(cell.ci_high) - float(cell.ci_low)) / 2.0


def _sort_methods(methods: Sequence[str]) -> list[str]:
    order = {m: i for i, m in enumerate(METHOD_ORDER)}
    return sorted(set(methods), key=lambda m: (order.get(m, len(order)), m))


def build_table(results: Sequence[dict[str, Any]], spec: Optional[TableSpec] = None) -> Table:
    """Lay out stored results as a :class:`Table` (see the module docstring for the rules)."""
    spec = spec or TableSpec()
    if not results:
        raise UsageError("no stored results to report")
    rows, show_model = _rows(results, spec)
    grid = _Grid(rows)
    for cspec in _column_specs(results, spec):
        grid.add(cspec, [_latest_runs(results, row, cspec) for row in rows])
    notes = grid.notes
    shown = {c.run_id for c in grid.cells.values()}
    notes.extend(n for r in results if str(r["run_id"]) in shown and (n := missing_replicates_note(r)))
    empty_rows = [rows[i].label for i in range(len(rows))
                  if not any((i, j) in grid.cells for j in range(len(grid.columns)))]
    if empty_rows:
        notes.append("no stored results for: " + ", ".join(empty_rows))
    if any(_half_width(c) is not None for c in grid.cells.values()):
        notes.append(CI_NOTE)
    notes.extend(spec.notes)
    if spec.rows:  # a spec's rows need not name a model: show one where the rows' runs come from several
        show_model = _name_models(rows, grid.cells, results) or show_model
    return Table(spec.caption, spec.label, rows, grid.columns, grid.cells, grid.protocols(), notes, show_model)


def _rows(results: Sequence[dict[str, Any]], spec: TableSpec) -> tuple[list[Row], bool]:
    """The spec's rows, else one per stored method (per model where several); and whether to show the model."""
    models = sorted({str(r["model"]) for r in results})
    if spec.rows:
        row_specs = [RowSpec(r.method, r.name, r.model or spec.model) for r in spec.rows]
    else:
        row_specs = []
        for method in _sort_methods([str(r["method"]) for r in results]):
            ms = sorted({str(r["model"]) for r in results if r["method"] == method})
            row_specs.extend(RowSpec(method, None, m if len(models) > 1 else None) for m in ms)
    return [Row(r.method, r.model, r.name or r.method) for r in row_specs], len(models) > 1 and not spec.rows


def _column_specs(results: Sequence[dict[str, Any]], spec: TableSpec) -> list[ColumnSpec]:
    """The spec's columns, else every stored metric of every (selected) suite, suite by suite."""
    if spec.columns:
        return [ColumnSpec(c.metric, c.name, c.suite or spec.suite, c.format, c.higher_is_better)
                for c in spec.columns]
    col_specs = []
    suites = sorted({str(r["suite"]) for r in results if spec.suite in (None, r["suite"])})
    for suite in suites:
        seen: list[str] = []
        for r in results:
            if r["suite"] == suite:
                seen.extend(m for m in (r.get("metrics") or {}) if m not in seen)
        col_specs.extend(ColumnSpec(m, f"{suite}: {m}" if len(suites) > 1 else m, suite) for m in seen)
    return col_specs


def _latest_runs(results: Sequence[dict[str, Any]], row: Row,
                 cspec: ColumnSpec) -> dict[tuple[str, str], dict[str, Any]]:
    """(suite, protocol hash) → the newest run of ``row`` holding ``cspec``'s metric under that protocol."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for r in results:
        if r["method"] != row.method or (row.model and r["model"] != row.model):
            continue
        if cspec.suite and r["suite"] != cspec.suite:
            continue
        if cspec.metric not in (r.get("metrics") or {}):
            continue
        key = (str(r["suite"]), str(r.get("protocol_hash") or ""))
        if key in found and found[key]["model"] != r["model"]:
            raise UsageError(
                f"method {row.method!r} has {cspec.metric!r} results for several models "
                f"({found[key]['model']}, {r['model']}); pass model=NAME or name the model in the table "
                "spec's rows")
        if key not in found or str(r.get("created", "")) > str(found[key].get("created", "")):
            found[key] = r
    return found


class _Grid:
    """Columns and cells as they are added, one spec column at a time, with each protocol's letter, runs and n."""

    def __init__(self, rows: list[Row]) -> None:
        self.rows = rows
        self.columns: list[Column] = []
        self.cells: dict[tuple[int, int], Cell] = {}
        self.notes: list[str] = []
        self.groups: dict[tuple[str, str], str] = {}  # (suite, protocol hash) -> letter
        self.group_runs: dict[str, list[dict[str, Any]]] = {}
        self.group_n: dict[str, list[str]] = {}

    def add(self, cspec: ColumnSpec, per_row: list[dict[tuple[str, str], dict[str, Any]]]) -> None:
        """One column per protocol found among the rows' runs (an empty column where none is)."""
        keys: list[tuple[str, str]] = []
        for found in per_row:
            keys.extend(k for k in found if k not in keys)
        if not keys:  # nothing stored for this column: keep it (a spec fixes the layout), empty
            keys = [(cspec.suite or "", "")]
        base_label = cspec.name or cspec.metric
        for key in keys:
            self._add_column(cspec, base_label, key, per_row, split=len(keys) > 1)
        if len(keys) > 1:
            letters = ", ".join(f"[{self.groups[k]}]" for k in keys if k in self.groups)
            self.notes.append(f"{base_label}: the stored numbers were made under {len(keys)} different protocols; "
                              f"they are shown in separate columns {letters} and are not comparable across them")

    def _add_column(self, cspec: ColumnSpec, base_label: str, key: tuple[str, str],
                    per_row: list[dict[tuple[str, str], dict[str, Any]]], split: bool) -> None:
        if key not in self.groups and key[1]:
            self.groups[key] = _letter(len(self.groups))
        letter = self.groups.get(key, "")
        hib = cspec.higher_is_better
        directions = {bool(found[key]["metrics"][cspec.metric].get("higher_is_better", True))
                      for found in per_row if key in found}
        if hib is None and len(directions) > 1:
            hib = True
            self.notes.append(f"{base_label}: runs disagree on the metric's direction; shown as higher is better")
        elif hib is None:
            hib = directions.pop() if directions else True
        j = len(self.columns)
        self.columns.append(Column(cspec.metric, base_label, key[0], key[1], letter, bool(hib), cspec.format, split))
        ns = []
        for i, found in enumerate(per_row):
            if key not in found:
                continue
            r = found[key]
            m = r["metrics"][cspec.metric]
            self.cells[(i, j)] = Cell(_num(m.get("value")), _num(m.get("ci_low")), _num(m.get("ci_high")),
                                      m.get("n"), str(r["run_id"]))
            self.group_runs.setdefault(letter, []).append(r)
            ns.append((self.rows[i].label, m.get("n")))
        if letter:
            distinct = sorted({n for _, n in ns if n is not None})
            if len(distinct) == 1:
                self.group_n.setdefault(letter, []).append(f"{base_label} n={distinct[0]}")
            elif distinct:
                self.group_n.setdefault(letter, []).append(
                    f"{base_label} n varies by row (" + ", ".join(f"{lab} {n}" for lab, n in ns) + ")")

    def protocols(self) -> dict[str, str]:
        """Letter → the footnote: the protocol, each column's n, and how it differs from its suite's first one."""
        protocols = {}
        first_of_suite: dict[str, str] = {}
        for (suite, phash), letter in self.groups.items():
            runs = self.group_runs.get(letter, [])
            desc = f"{suite}: " + describe_protocol([r.get("protocol") or {} for r in runs], phash)
            if self.group_n.get(letter):
                desc += "; " + "; ".join(self.group_n[letter])
            other = first_of_suite.setdefault(suite, letter)
            if other != letter and runs and self.group_runs.get(other):
                diff = protocol_diff(self.group_runs[other][0].get("protocol") or {}, runs[0].get("protocol") or {})
                if diff:
                    desc += f"; differs from [{other}] in " + ", ".join(diff)
            protocols[letter] = desc
        return protocols


def _name_models(rows: list[Row], cells: dict[tuple[int, int], Cell], results: Sequence[dict[str, Any]]) -> bool:
    """Where a spec's rows draw on runs of several models, name each row's model(s); True when it did."""
    model_of = {str(r["run_id"]): str(r["model"]) for r in results}
    used = [sorted({model_of.get(c.run_id, "?") for (i, _), c in cells.items() if i == k}) for k in range(len(rows))]
    if len({m for ms in used for m in ms}) <= 1:
        return False
    for row, ms in zip(rows, used):
        row.model = row.model or ", ".join(ms)
    return True


def missing_replicates_note(result: dict[str, Any]) -> Optional[str]:
    """What a reader must know of a replicate group some of whose runs never finished (None when complete)."""
    missing = result.get("replicates_missing")
    if not missing:
        return None
    have = len(result.get("replicates") or [])
    return (f"{result.get('method')} on {result.get('suite')} ({result.get('model')}): replicate group of "
            f"{have + len(missing)} seeds with {have} run(s) recorded; seeds {', '.join(map(str, missing))} never "
            "finished (interrupted?): rerun the same command with those seeds to complete it")


#: the note that explains the ± of cells shown with their CI (renderers drop it where no cell shows one)
CI_NOTE = "± is half the width of the 95% bootstrap confidence interval ([low, high] where it is asymmetric)"


def _letter(i: int) -> str:
    letters = "abcdefghijklmnopqrstuvwxyz"
    return letters[i] if i < 26 else letters[i // 26 - 1] + letters[i % 26]


def _num(x: Any) -> Optional[float]:
    return None if x is None else float(x)



__all__ = ["Cell", "Column", "Row", "Table", "build_table", "format_value", "missing_replicates_note", "CI_NOTE",
           "auto_format", "METHOD_ORDER", "MISSING"]
