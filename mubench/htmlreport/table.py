"""The results table of the HTML report, from :func:`mubench.report.build_table`'s :class:`Table`.

Same rules as the Markdown report (direction arrows, protocol letters and footnotes, bold best). Significance
marks and bold winners are read from the table when it carries them (``marks``: ``{(row, col): "▲"}``,
``bold``: ``{col: {rows}}``), else bold falls back to :meth:`Table.best`. Every cell shows its value and its
95% CI ``[low, high]`` when the run recorded one.
"""
from __future__ import annotations

from typing import Any

from ..report.table import Table, auto_format, format_value


def table_context(table: Table) -> dict[str, Any]:
    """Plain data for the template: header cells, body rows (cells with text / ci / bold / mark), footnotes."""
    marks = getattr(table, "marks", None) or {}
    bold = getattr(table, "bold", None)
    if bold is None:
        bold = table.best()
    header = [{"label": c.label, "arrow": "↑" if c.higher_is_better else "↓", "letter": c.letter,
               "title": "higher is better" if c.higher_is_better else "lower is better"} for c in table.columns]
    rows = []
    for i, row in enumerate(table.rows):
        cells = []
        for j, col in enumerate(table.columns):
            cell = table.cells.get((i, j))
            if cell is None or cell.value is None:
                cells.append({"text": format_value(None, None), "ci": "", "bold": False, "mark": "", "n": None})
                continue
            fmt = col.format or auto_format(cell.value)
            ci = ""
            if cell.ci_low is not None and cell.ci_high is not None:
                ci = f"[{format_value(cell.ci_low, fmt)}, {format_value(cell.ci_high, fmt)}]"
            cells.append({"text": format_value(cell.value, fmt), "ci": ci, "bold": i in bold.get(j, set()),
                          "mark": marks.get((i, j), ""), "n": cell.n, "run_id": cell.run_id})
        rows.append({"label": row.label, "model": row.model or "", "cells": cells})
    footnotes = [{"letter": letter, "text": desc} for letter, desc in table.protocols.items()]
    notes = [n for n in table.notes if not n.startswith("± is half the width")]  # the page shows [low, high]
    mark_notes = list(getattr(table, "mark_notes", None) or [])
    if not mark_notes:
        mark_notes = ["Bold: best displayed value of each column (↑ higher is better, ↓ lower is better); not a "
                      "significance mark."]
        if marks:
            mark_notes.append("▲ / ▼: significantly better / worse than the baseline.")
    notes = mark_notes + ["Brackets: the 95% bootstrap CI [low, high]."] + notes
    return {"caption": table.caption, "show_model": table.show_model, "header": header, "rows": rows,
            "footnotes": footnotes, "notes": notes}
