"""Renderers: a :class:`~mubench.report.table.Table` as Markdown, LaTeX (booktabs) or CSV."""
from __future__ import annotations

import io
from typing import Any, Optional, Sequence

import pandas as pd

from ..errors import UsageError
from .spec import TableSpec
from .table import CI_NOTE, MISSING, Table, _half_width, _letter_tag, auto_format, build_table, format_value

# ---------------------------------------------------------------------------------------------
# renderers


def _cell_text(table: Table, i: int, j: int, ci: bool, pm: str) -> str:
    cell = table.cells.get((i, j))
    col = table.columns[j]
    if cell is None or cell.value is None:
        return MISSING
    fmt = col.format or auto_format(cell.value)
    text = format_value(cell.value, fmt)
    hw = _half_width(cell) if ci else None
    if hw is not None:
        lo, hi = format_value(cell.value - cell.ci_low, fmt), format_value(cell.ci_high - cell.value, fmt)
        if lo == hi:  # symmetric at display precision
            text += f"{pm}{format_value(hw, fmt)}"
        else:
            text += f" [{format_value(cell.ci_low, fmt)}, {format_value(cell.ci_high, fmt)}]"
    return text


def _mark(table: Table, i: int, j: int, latex: bool = False) -> str:
    mark = table.marks.get((i, j), "")
    if not mark:
        return ""
    return (r"$^\uparrow$" if mark == "▲" else r"$^\downarrow$") if latex else f" {mark}"


def render_markdown(table: Table, ci: bool = False) -> str:
    """A GitHub-flavoured pipe table with a caption line and footnotes."""
    best = table.emphasis()
    header = ["Method"] + (["Model"] if table.show_model else []) + [
        f"{c.label} {'↑' if c.higher_is_better else '↓'} [{c.letter}]" if c.letter else
        f"{c.label} {'↑' if c.higher_is_better else '↓'}" for c in table.columns]
    body = []
    for i, row in enumerate(table.rows):
        cells = []
        for j in range(len(table.columns)):
            text = _cell_text(table, i, j, ci, " ± ")
            cells.append((f"**{text}**" if i in best.get(j, ()) else text) + _mark(table, i, j))
        body.append([_md_escape(row.label)] + ([row.model or ""] if table.show_model else []) + cells)
    lines = []
    if table.caption:
        lines += [f"**{table.caption}**", ""]
    lines.append("| " + " | ".join(_md_escape(h) for h in header) + " |")
    lines.append("|" + "|".join([":---"] * (1 + table.show_model) + ["---:"] * len(table.columns)) + "|")
    lines.extend("| " + " | ".join(r) + " |" for r in body)
    foot = _footnotes(table, ci=ci)
    if foot:
        lines.append("")
        lines.extend(f"- {f}" for f in foot)
    return "\n".join(lines) + "\n"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def _footnotes(table: Table, bold: bool = True, ci: bool = True) -> list[str]:
    """The table's footnotes; without ``ci`` (no cell shows ±) the note explaining ± is left out."""
    foot = [f"[{letter}] {desc}" for letter, desc in table.protocols.items()]
    if bold:
        foot += table.mark_notes or ["Bold: best displayed value of each column (↑ higher is better, ↓ lower is "
                                     "better); not a significance mark."]
    return foot + [n for n in table.notes if ci or n != CI_NOTE]


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "±": r"$\pm$", "↑": r"$\uparrow$", "↓": r"$\downarrow$", "–": "--",
                  # what footnotes and compare's table hold beyond ASCII (pdflatex stops at an unmapped one)
                  "▲": r"$^\uparrow$", "▼": r"$^\downarrow$", "→": r"$\rightarrow$", "Δ": r"$\Delta$", "−": "$-$",
                  "<": r"\textless{}", ">": r"\textgreater{}", "≤": r"$\le$", "≥": r"$\ge$", "×": r"$\times$",
                  "·": r"$\cdot$", "…": r"\ldots{}", "≈": r"$\approx$"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def render_latex(table: Table, ci: bool = False) -> str:
    """A booktabs ``tabular`` (pandas Styler) in a ``table`` float with caption, label and footnotes."""
    best = table.emphasis()
    header = ["Method"] + (["Model"] if table.show_model else []) + [
        latex_escape(c.label) + " $" + (r"\uparrow" if c.higher_is_better else r"\downarrow")
        + (f"^{{{c.letter}}}" if c.letter else "") + "$" for c in table.columns]
    data = []
    for i, row in enumerate(table.rows):
        cells = []
        for j in range(len(table.columns)):
            text = latex_escape(_cell_text(table, i, j, ci, " ± "))
            cells.append((rf"\textbf{{{text}}}" if i in best.get(j, ()) else text) + _mark(table, i, j, latex=True))
        data.append([latex_escape(row.label)] + ([latex_escape(row.model or "")] if table.show_model else []) + cells)
    frame = pd.DataFrame(data, columns=header)
    column_format = "l" * (1 + table.show_model) + "r" * len(table.columns)
    tabular = frame.style.hide(axis="index").to_latex(column_format=column_format, hrules=True)
    lines = [r"\begin{table}[t]", r"\centering"]
    if table.caption:
        lines.append(rf"\caption{{{latex_escape(table.caption)}}}")
    if table.label:
        lines.append(rf"\label{{{table.label}}}")
    lines.append(tabular.rstrip("\n"))
    foot = _footnotes(table, ci=ci)
    if foot:
        lines.append(r"\par\smallskip")
        lines.append(r"{\footnotesize")
        for f in foot:
            if f.startswith("[") and "]" in f:
                letter, rest = f[1:].split("]", 1)
                lines.append(rf"$^{{{letter}}}${latex_escape(rest)}\par")
            else:
                lines.append(latex_escape(f) + r"\par")
        lines.append("}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def render_csv(table: Table, ci: bool = False) -> str:
    """Raw values at full precision (``ci`` adds ``ci_low`` / ``ci_high`` / ``n`` columns); footnotes as
    trailing ``#`` lines (``pandas.read_csv(..., comment="#")`` skips them)."""
    frame = table.frame()
    if table.show_model:
        frame.insert(0, "model", [r.model or "" for r in table.rows])
    if ci:
        for j, col in reversed(list(enumerate(table.columns))):
            name = col.label + _letter_tag(col)
            pos = frame.columns.get_loc(name) + 1
            for k, attr in enumerate(("ci_low", "ci_high", "n")):
                values = [getattr(table.cells[(i, j)], attr) if (i, j) in table.cells else None
                          for i in range(len(table.rows))]
                frame.insert(pos + k, f"{name} {attr}",
                             pd.array(values, dtype="Int64" if attr == "n" else "Float64"))
    if table.bold is not None or table.marks:  # significance marks: "best" (bold) and ▲ / ▼ per cell
        emphasis = table.emphasis()
        for j, col in reversed(list(enumerate(table.columns))):
            name = col.label + _letter_tag(col)
            pos = frame.columns.get_loc(name) + (4 if ci else 1)
            frame.insert(pos, f"{name} mark", [" ".join(x for x in ("best" if i in emphasis.get(j, ()) else "",
                                                                   table.marks.get((i, j), "")) if x)
                                               for i in range(len(table.rows))])
    buf = io.StringIO()
    frame.to_csv(buf, lineterminator="\n")
    for f in _footnotes(table, bold=table.bold is not None, ci=False):  # CIs are columns here, never ±
        buf.write(f"# {f}\n")
    return buf.getvalue()


def render_json(table: Table, ci: bool = True) -> str:
    """The table as JSON: columns, rows, and per cell value, CI, n, run id, bold and mark; footnotes."""
    import json

    emphasis = table.emphasis()
    cols = [{"metric": c.metric, "label": c.label, "suite": c.suite, "protocol": c.letter,
             "protocol_hash": c.protocol_hash, "higher_is_better": c.higher_is_better} for c in table.columns]
    rows = []
    for i, row in enumerate(table.rows):
        cells = []
        for j in range(len(table.columns)):
            cell = table.cells.get((i, j))
            cells.append(None if cell is None else {
                "value": cell.value, "ci_low": cell.ci_low, "ci_high": cell.ci_high, "n": cell.n,
                "run_id": cell.run_id, "bold": i in emphasis.get(j, ()), "mark": table.marks.get((i, j))})
        rows.append({"method": row.method, "model": row.model, "label": row.label, "cells": cells})
    return json.dumps({"caption": table.caption, "bold_rule": table.bold_rule, "columns": cols, "rows": rows,
                       "protocols": table.protocols, "footnotes": _footnotes(table)}, indent=2) + "\n"


RENDERERS = {"markdown": render_markdown, "latex": render_latex, "csv": render_csv, "json": render_json}


def render(table: Table, fmt: str = "markdown", ci: bool = False) -> str:
    try:
        return RENDERERS[fmt](table, ci=ci)
    except KeyError:
        raise UsageError(f"unknown report format {fmt!r}; expected one of {', '.join(RENDERERS)}") from None


def report(results: Sequence[dict[str, Any]], spec: Optional[TableSpec] = None, fmt: str = "markdown",
           ci: bool = False) -> str:
    """Stored results → rendered table text."""
    return render(build_table(results, spec), fmt, ci)



__all__ = ["render", "render_markdown", "render_latex", "render_csv", "render_json", "report", "latex_escape", "RENDERERS"]
