"""Table specs (``reports/tables/*.yaml``): which rows (methods), which columns (metrics of suites), captions."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from ..errors import UsageError, close_matches, did_you_mean

# ---------------------------------------------------------------------------------------------
# table specs


@dataclass
class RowSpec:
    """One row of a table spec: a method spec name, its display name, optionally the model."""

    method: str
    name: Optional[str] = None
    model: Optional[str] = None


@dataclass
class ColumnSpec:
    """One column of a table spec: a metric of a suite, its display name and number format."""

    metric: str
    name: Optional[str] = None
    suite: Optional[str] = None  # default: the spec's suite; None = any suite
    format: Optional[str] = None  # Python format spec, e.g. ".2f", ".3f", ".1%"
    higher_is_better: Optional[bool] = None  # default: what the results say


@dataclass
class TableSpec:
    """A table layout (``reports/tables/NAME.yaml``): rows, columns, caption."""

    name: str = "results"
    caption: Optional[str] = None
    label: Optional[str] = None  # LaTeX \\label
    suite: Optional[str] = None  # default suite of the columns
    model: Optional[str] = None  # default model of the rows
    rows: list[RowSpec] = field(default_factory=list)  # empty: every stored method
    columns: list[ColumnSpec] = field(default_factory=list)  # empty: every stored metric
    notes: list[str] = field(default_factory=list)  # extra footnotes


_SPEC_KEYS = {"table": TableSpec, "rows": RowSpec, "columns": ColumnSpec}


def _check_spec_keys(data: dict[str, Any], cls: type, where: str) -> None:
    valid = list(cls.__dataclass_fields__)
    for key in data:
        if key not in valid:
            msg = f"{where}: unknown key {key!r}{did_you_mean(close_matches(str(key), valid))}"
            raise UsageError(msg + f"\n  valid keys: {', '.join(valid)}")


def parse_table_spec(data: dict[str, Any], name: str = "results", where: str = "table spec") -> TableSpec:
    """A table spec from its YAML mapping; rows / columns may be plain names (``- sd``, ``- fid``)."""
    data = dict(data)
    _check_spec_keys(data, TableSpec, where)
    rows, cols = [], []
    for i, row in enumerate(data.pop("rows", None) or []):
        row = {"method": row} if isinstance(row, str) else row
        if isinstance(row, dict):
            _check_spec_keys(row, RowSpec, f"{where}: rows[{i}]")
        if not isinstance(row, dict) or "method" not in row:
            raise UsageError(f"{where}: rows[{i}] must be a method name or a mapping with 'method'")
        rows.append(RowSpec(**{k: (None if v is None else str(v)) for k, v in row.items()}))
    for i, col in enumerate(data.pop("columns", None) or []):
        col = {"metric": col} if isinstance(col, str) else col
        if isinstance(col, dict):
            _check_spec_keys(col, ColumnSpec, f"{where}: columns[{i}]")
        if not isinstance(col, dict) or "metric" not in col:
            raise UsageError(f"{where}: columns[{i}] must be a metric name or a mapping with 'metric'")
        hib = col.get("higher_is_better")
        if hib is not None and not isinstance(hib, bool):
            raise UsageError(f"{where}: columns[{i}].higher_is_better must be true or false")
        fmt = col.get("format")
        if fmt is not None:
            try:
                format(1.5, str(fmt))
            except ValueError:
                raise UsageError(f"{where}: columns[{i}].format {fmt!r} is not a Python number format "
                                 f"(e.g. '.2f', '.3f', '.1%')") from None
        cols.append(ColumnSpec(metric=str(col["metric"]), name=_opt_str(col.get("name")),
                               suite=_opt_str(col.get("suite")), format=_opt_str(fmt), higher_is_better=hib))
    notes = data.pop("notes", None) or []
    if isinstance(notes, str):
        notes = [notes]
    spec = TableSpec(name=str(data.pop("name", name)), rows=rows, columns=cols, notes=[str(n) for n in notes],
                     **{k: _opt_str(v) for k, v in data.items()})
    return spec


def _opt_str(value: Any) -> Optional[str]:
    return None if value is None else str(value)


def load_table_spec(name_or_path: str) -> TableSpec:
    """A shipped table spec by name (``reports/tables/NAME.yaml``) or a path to a YAML file."""
    from ..specs import find_spec, load_yaml

    name, path = find_spec("reports/tables", name_or_path)
    return parse_table_spec(load_yaml(path), name=name, where=str(path))


__all__ = ["RowSpec", "ColumnSpec", "TableSpec", "parse_table_spec", "load_table_spec"]
