"""Result tables: stored results → one row per method, one column per metric (see :mod:`.table` for the
layout rules, :mod:`.marks` for the significance marks, :mod:`.render` for Markdown / LaTeX / CSV)."""
from __future__ import annotations

from ..protocols import describe_protocol, protocol_diff
from .render import latex_escape, render, render_csv, render_latex, render_markdown, report
from .spec import ColumnSpec, RowSpec, TableSpec, load_table_spec, parse_table_spec
from .table import Cell, Column, Row, Table, build_table, format_value

__all__ = ["TableSpec", "RowSpec", "ColumnSpec", "Table", "Column", "Row", "Cell", "build_table", "render",
           "render_markdown", "render_latex", "render_csv", "report", "load_table_spec", "parse_table_spec",
           "describe_protocol", "protocol_diff", "format_value", "latex_escape"]
