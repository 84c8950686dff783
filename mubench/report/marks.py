"""Significance marks on a table: bold = significantly better than every other row of the column; ▲ / ▼ =
significantly better / worse than the ``baseline`` row. Both come from the paired permutation test of
:mod:`mubench.stats.paired` on the units two rows share, Holm-corrected within the column (bold: over all
pairs of the column; baseline marks: over the rows compared with the baseline). Rows without per-unit data,
or that share no units, are never bold and never marked.
"""
from __future__ import annotations

from dataclasses import replace
from itertools import combinations
from typing import Mapping, Optional

from ..errors import UsageError
from ..stats.paired import PairedResult, compare_units
from ..stats.resample import ALPHA, DEFAULT_PERMUTATIONS, holm
from ..stats.units import UnitData
from .table import Table

BOLD_RULES = ("significant", "value")
UP, DOWN = "▲", "▼"


def _units(table: Table, units: Mapping[str, Mapping[str, UnitData]], i: int, j: int) -> Optional[UnitData]:
    cell = table.cells.get((i, j))
    if cell is None or cell.value is None:
        return None
    return units.get(cell.run_id, {}).get(table.columns[j].metric)


def _pair(table, units, i, k, j, permutations, memo: dict) -> Optional[PairedResult]:
    """Row i (A) against row k (B) in column j; each pair is tested once (bold and baseline marks share it, each
    applying its own Holm family to a copy)."""
    if (i, k, j) not in memo:
        ua, ub = _units(table, units, i, j), _units(table, units, k, j)
        res = None
        if ua is not None and ub is not None and ua.kind == ub.kind:
            res = compare_units(table.columns[j].metric, ua, ub, resamples=0, permutations=permutations)
            res = res if res.p is not None and res.units >= 2 else None
            if res is not None:  # the column's direction (a table spec may set it), not the unit data's
                res.higher_is_better = table.columns[j].higher_is_better
        memo[(i, k, j)] = res
    return None if memo[(i, k, j)] is None else replace(memo[(i, k, j)])


def apply_marks(table: Table, units: Mapping[str, Mapping[str, UnitData]], *, bold: str = "significant",
                baseline: Optional[str] = None, alpha: float = ALPHA,
                permutations: int = DEFAULT_PERMUTATIONS) -> Table:
    """Fill ``table.bold`` (column → rows), ``table.marks`` ((row, column) → ▲/▼) and their footnotes."""
    if bold not in BOLD_RULES:
        raise UsageError(f"bad value bold={bold!r}; expected one of {', '.join(BOLD_RULES)}")
    base_of = _baseline_rows(table, baseline)
    table.bold_rule = bold
    table.bold = table.best() if bold == "value" else {}
    table.marks = {}
    tests = _Tests(table, units, alpha, permutations)
    untested: set[str] = set()
    for j, col in enumerate(table.columns):
        present = [i for i in range(len(table.rows)) if _units(table, units, i, j) is not None]
        valued = [i for i in range(len(table.rows))
                  if table.cells.get((i, j)) and table.cells[(i, j)].value is not None]
        if len(present) < len(valued):
            untested.add(col.label)
        if bold == "significant":
            table.bold[j] = tests.bold_rows(j, present) if len(valued) >= 2 and len(present) == len(valued) else set()
        base_for = {k: base_of.get(table.rows[k].model) for k in present}
        tests.mark_against_baselines(j, [(b, k) for k, b in base_for.items()
                                         if b is not None and b != k and b in present])
    table.mark_notes.extend(_notes(table, bold, base_of, untested, tests.ns, alpha, permutations))
    return table


def _baseline_rows(table: Table, baseline: Optional[str]) -> dict[Optional[str], int]:
    """Model → its baseline row (each row is compared within its model); empty without a baseline."""
    base_of: dict[Optional[str], int] = {}
    if baseline is not None:
        for i, r in enumerate(table.rows):
            if baseline in (r.method, r.label):
                base_of.setdefault(r.model, i)
        if not base_of:
            raise UsageError(f"baseline={baseline!r} is not a row of the table; rows: "
                             + ", ".join(r.label for r in table.rows))
    return base_of


class _Tests:
    """The paired tests of one table (each pair tested once), the Holm families, and the shared-unit counts seen."""

    def __init__(self, table: Table, units: Mapping[str, Mapping[str, UnitData]], alpha: float,
                 permutations: int) -> None:
        self.table, self.units, self.alpha, self.permutations = table, units, alpha, permutations
        self.memo: dict = {}
        self.ns: set[int] = set()

    def _decided(self, pairs: list[tuple[int, int]], j: int) -> list[Optional[PairedResult]]:
        """Each pair (i, k) tested (i as A), Holm-corrected as one family, decided at alpha."""
        res = [_pair(self.table, self.units, i, k, j, self.permutations, self.memo) for i, k in pairs]
        for r, p in zip(res, holm([None if r is None else r.p for r in res])):
            if r is not None:
                r.p_holm = p
                r.decide(self.alpha)
                self.ns.add(r.units)
        return res

    def bold_rows(self, j: int, present: list[int]) -> set[int]:
        """The rows of column ``j`` significantly better than every other row (Holm over all the column's pairs)."""
        keys = list(combinations(present, 2))
        pairs = dict(zip(keys, self._decided(keys, j)))
        out = set()
        for i in present:
            wins = []
            for k in present:
                if k == i:
                    continue
                r = pairs.get((i, k)) or pairs.get((k, i))
                first_is_i = (i, k) in pairs
                wins.append(r is not None and r.significant and r.better == ("a" if first_is_i else "b"))
            if wins and all(wins):
                out.add(i)
        return out

    def mark_against_baselines(self, j: int, pairs_b: list[tuple[int, int]]) -> None:
        """▲ / ▼ on row k of column ``j`` for each (baseline row b, row k) significantly apart (Holm over them)."""
        # pairs are tested in row order (the p-value does not depend on which side is A)
        res = self._decided([(min(b, k), max(b, k)) for b, k in pairs_b], j)
        for (b, k), r in zip(pairs_b, res):
            if r is not None and r.significant:
                k_side = "b" if k > b else "a"
                self.table.marks[(k, j)] = UP if r.better == k_side else DOWN


def _notes(table: Table, bold: str, base_of: dict[Optional[str], int], untested: set[str], ns: set[int],
           alpha: float, permutations: int) -> list[str]:
    """The footnotes that say what bold and the arrows mean, over how many units, and which columns had no test."""
    notes = []
    n_text = ("n = " + (str(min(ns)) if len(ns) == 1 else f"{min(ns)}–{max(ns)}") + " shared units per pair") if ns \
        else "no pair could be tested"
    test = (f"paired permutation test (whole prompts swapped, {permutations} relabellings) on the units both rows "
            f"share, alpha {alpha}")
    if bold == "significant":
        notes.append(f"Bold: significantly better than every other row of its column ({test}, Holm-"
                     f"corrected over the column's pairs; {n_text}).")
    else:
        notes.append("Bold: best displayed value of each column (bold=value); this is not a significance mark.")
    if base_of:
        against = table.rows[next(iter(base_of.values()))].label + (
            " of the row's own model" if len(base_of) > 1 else "")
        notes.append(f"{UP} / {DOWN}: significantly better / worse than {against} "
                     f"({test}, Holm-corrected over the column's rows).")
    if untested:
        notes.append("No paired test (rows without per-unit data): " + ", ".join(sorted(untested)) + ".")
    return notes


__all__ = ["apply_marks", "BOLD_RULES", "UP", "DOWN"]
