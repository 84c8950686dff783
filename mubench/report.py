"""Result tables: stored ``results.json`` objects → one row per method, one column per metric.

:func:`build_table` turns a list of results (usually :meth:`Store.latest_results`) and an optional
:class:`TableSpec` (``reports/tables/*.yaml``) into a :class:`Table`; ``render_markdown``,
``render_latex`` and ``render_csv`` print it. The rules every rendering follows:

- each column is one metric of one suite under **one protocol**: when the matching numbers were made
  under different protocols (different ``protocol_hash``), the column is split into one column per
  protocol and a note says so; nothing made under different protocols shares a column;
- every column carries a protocol letter (a, b, ...) whose footnote describes the protocol (sampler,
  images per prompt, prompts, seed, dtype, scorers with version and weights hash) and the n behind it;
- headers carry the metric's direction (↑ higher is better, ↓ lower is better) and the best value of
  each column is in bold, direction aware, compared at the displayed precision; when every row ties,
  nothing is bold (as in the paper's tables), nor is a column's only value.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import pandas as pd

from .errors import UsageError, close_matches

#: The order rows take when no table spec fixes it (the project's method spec names).
METHOD_ORDER = ("sd", "full-ft", "lora", "dropout", "random-mask", "maskunet", "maskunet-free")
MISSING = "–"


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
            hint = close_matches(str(key), valid)
            msg = f"{where}: unknown key {key!r}"
            if hint:
                msg += f"; did you mean {' or '.join(repr(h) for h in hint)}?"
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
    from .specs import find_spec, load_yaml

    name, path = find_spec("reports/tables", name_or_path)
    return parse_table_spec(load_yaml(path), name=name, where=str(path))


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


def describe_protocol(protocols: Sequence[dict[str, Any]], protocol_hash: str) -> str:
    """A one-line description of a protocol; facts that differ between runs are listed with '/'."""
    flat = [_flatten(p or {}) for p in protocols]
    keys: list[str] = []
    for f in flat:
        keys.extend(k for k in f if k not in keys)

    def val(key: str) -> Optional[str]:
        seen = []
        for f in flat:
            if key in f and f[key] is not None and str(f[key]) not in seen:
                seen.append(str(f[key]))
        return "/".join(seen) if seen else None

    parts = []
    sampler = [s for s in (val("sampler.scheduler"),
                           f"{val('sampler.steps')} steps" if val("sampler.steps") else None,
                           f"guidance {val('sampler.guidance')}" if val("sampler.guidance") else None,
                           f"{val('sampler.resolution')} px" if val("sampler.resolution") else None,
                           f"eta {val('sampler.eta')}" if val("sampler.eta") not in (None, "0", "0.0") else None)
               if s]
    if sampler:
        parts.append(" ".join(sampler[:2]) + (", " + ", ".join(sampler[2:]) if sampler[2:] else ""))
    for key, fmt in (("images_per_prompt", "{} img/prompt"), ("n_prompts", "{} prompts"), ("seed", "seed {}"),
                     ("dtype", "{}"), ("device_type", "{}")):
        if val(key) is not None:
            parts.append(fmt.format(val(key)))
    scorer_names = sorted({k.split(".")[1] for k in keys if k.startswith("scorers.") and k.count(".") >= 2})
    scorers = []
    for name in scorer_names:
        ver, wh = val(f"scorers.{name}.version"), val(f"scorers.{name}.weights_hash")
        desc = name + (f" v{ver}" if ver else "") + (f" (weights {wh[:12]})" if wh else "")
        scorers.append(desc)
    if scorers:
        parts.append("scorers: " + ", ".join(scorers))
    known = {"suite", "images_per_prompt", "n_prompts", "seed", "dtype", "device_type"}
    extra = [f"{k}={val(k)}" for k in keys
             if k not in known and not k.startswith(("sampler.", "scorers.")) and val(k) is not None
             and len(str(val(k))) <= 48]
    if extra:
        parts.append(", ".join(extra))
    parts.append(f"protocol {protocol_hash[:12] or '(none)'}")
    return "; ".join(parts)


def protocol_diff(a: dict[str, Any], b: dict[str, Any], limit: int = 6) -> list[str]:
    """``["sampler.steps 20 → 50", ...]``: the protocol facts that differ from ``a`` to ``b``."""
    fa, fb = _flatten(a), _flatten(b)
    keys = list(fa) + [k for k in fb if k not in fa]
    out = [f"{k} {fa.get(k, '(unset)')} → {fb.get(k, '(unset)')}" for k in keys if fa.get(k) != fb.get(k)]
    return out[:limit] + ([f"… {len(out) - limit} more"] if len(out) > limit else [])


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        elif isinstance(v, (list, tuple)):
            out[key] = ",".join(str(x) for x in v)
        else:
            out[key] = v
    return out


def build_table(results: Sequence[dict[str, Any]], spec: Optional[TableSpec] = None) -> Table:
    """Lay out stored results as a :class:`Table` (see the module docstring for the rules)."""
    spec = spec or TableSpec()
    if not results:
        raise UsageError("no stored results to report")
    notes: list[str] = []

    # rows
    models = sorted({str(r["model"]) for r in results})
    if spec.rows:
        row_specs = [RowSpec(r.method, r.name, r.model or spec.model) for r in spec.rows]
    else:
        row_specs = []
        for method in _sort_methods([str(r["method"]) for r in results]):
            ms = sorted({str(r["model"]) for r in results if r["method"] == method})
            row_specs.extend(RowSpec(method, None, m if len(models) > 1 else None) for m in ms)
    show_model = len(models) > 1 and not spec.rows
    rows = [Row(r.method, r.model, r.name or r.method) for r in row_specs]

    # columns (one per spec column / stored metric, then split by protocol)
    if spec.columns:
        col_specs = [ColumnSpec(c.metric, c.name, c.suite or spec.suite, c.format, c.higher_is_better)
                     for c in spec.columns]
    else:
        col_specs = []
        suites = sorted({str(r["suite"]) for r in results if spec.suite in (None, r["suite"])})
        for suite in suites:
            seen: list[str] = []
            for r in results:
                if r["suite"] == suite:
                    seen.extend(m for m in (r.get("metrics") or {}) if m not in seen)
            multi = len(suites) > 1
            col_specs.extend(ColumnSpec(m, f"{suite}: {m}" if multi else m, suite) for m in seen)

    columns: list[Column] = []
    cells: dict[tuple[int, int], Cell] = {}
    groups: dict[tuple[str, str], str] = {}  # (suite, protocol hash) -> letter
    group_runs: dict[str, list[dict[str, Any]]] = {}
    group_n: dict[str, list[str]] = {}
    for cspec in col_specs:
        per_row: list[dict[tuple[str, str], dict[str, Any]]] = []
        for i, row in enumerate(rows):
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
            per_row.append(found)
        keys: list[tuple[str, str]] = []
        for found in per_row:
            keys.extend(k for k in found if k not in keys)
        if not keys:  # nothing stored for this column: keep it (a spec fixes the layout), empty
            keys = [(cspec.suite or "", "")]
        split = len(keys) > 1
        base_label = cspec.name or cspec.metric
        for key in keys:
            if key not in groups and key[1]:
                groups[key] = _letter(len(groups))
            letter = groups.get(key, "")
            hib = cspec.higher_is_better
            directions = {bool(found[key]["metrics"][cspec.metric].get("higher_is_better", True))
                          for found in per_row if key in found}
            if hib is None and len(directions) > 1:
                hib = True
                notes.append(f"{base_label}: runs disagree on the metric's direction; shown as higher is better")
            elif hib is None:
                hib = directions.pop() if directions else True
            j = len(columns)
            columns.append(Column(cspec.metric, base_label, key[0], key[1], letter, bool(hib), cspec.format, split))
            ns = []
            for i, found in enumerate(per_row):
                if key not in found:
                    continue
                r = found[key]
                m = r["metrics"][cspec.metric]
                cells[(i, j)] = Cell(_num(m.get("value")), _num(m.get("ci_low")), _num(m.get("ci_high")),
                                     m.get("n"), str(r["run_id"]))
                group_runs.setdefault(letter, []).append(r)
                ns.append((rows[i].label, m.get("n")))
            if letter:
                distinct = sorted({n for _, n in ns if n is not None})
                if len(distinct) == 1:
                    group_n.setdefault(letter, []).append(f"{base_label} n={distinct[0]}")
                elif distinct:
                    group_n.setdefault(letter, []).append(
                        f"{base_label} n varies by row (" + ", ".join(f"{lab} {n}" for lab, n in ns) + ")")
        if split:
            letters = ", ".join(f"[{groups[k]}]" for k in keys if k in groups)
            notes.append(f"{base_label}: the stored numbers were made under {len(keys)} different protocols; they are "
                         f"shown in separate columns {letters} and are not comparable across them")

    protocols = {}
    first_of_suite: dict[str, str] = {}
    for (suite, phash), letter in groups.items():
        runs = group_runs.get(letter, [])
        desc = f"{suite}: " + describe_protocol([r.get("protocol") or {} for r in runs], phash)
        if group_n.get(letter):
            desc += "; " + "; ".join(group_n[letter])
        other = first_of_suite.setdefault(suite, letter)
        if other != letter and runs and group_runs.get(other):
            diff = protocol_diff(group_runs[other][0].get("protocol") or {}, runs[0].get("protocol") or {})
            if diff:
                desc += f"; differs from [{other}] in " + ", ".join(diff)
        protocols[letter] = desc

    empty_rows = [rows[i].label for i in range(len(rows)) if not any((i, j) in cells for j in range(len(columns)))]
    if empty_rows:
        notes.append("no stored results for: " + ", ".join(empty_rows))
    if any(_half_width(c) is not None for c in cells.values()):
        notes.append("± is half the width of the 95% bootstrap confidence interval")
    notes.extend(spec.notes)
    return Table(spec.caption, spec.label, rows, columns, cells, protocols, notes, show_model)


def _letter(i: int) -> str:
    letters = "abcdefghijklmnopqrstuvwxyz"
    return letters[i] if i < 26 else letters[i // 26 - 1] + letters[i % 26]


def _num(x: Any) -> Optional[float]:
    return None if x is None else float(x)


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
        text += f"{pm}{format_value(hw, fmt)}"
    return text


def render_markdown(table: Table, ci: bool = False) -> str:
    """A GitHub-flavoured pipe table with a caption line and footnotes."""
    best = table.best()
    header = ["Method"] + (["Model"] if table.show_model else []) + [
        f"{c.label} {'↑' if c.higher_is_better else '↓'} [{c.letter}]" if c.letter else
        f"{c.label} {'↑' if c.higher_is_better else '↓'}" for c in table.columns]
    body = []
    for i, row in enumerate(table.rows):
        cells = []
        for j in range(len(table.columns)):
            text = _cell_text(table, i, j, ci, " ± ")
            cells.append(f"**{text}**" if i in best[j] else text)
        body.append([_md_escape(row.label)] + ([row.model or ""] if table.show_model else []) + cells)
    lines = []
    if table.caption:
        lines += [f"**{table.caption}**", ""]
    lines.append("| " + " | ".join(_md_escape(h) for h in header) + " |")
    lines.append("|" + "|".join([":---"] * (1 + table.show_model) + ["---:"] * len(table.columns)) + "|")
    lines.extend("| " + " | ".join(r) + " |" for r in body)
    foot = _footnotes(table)
    if foot:
        lines.append("")
        lines.extend(f"- {f}" for f in foot)
    return "\n".join(lines) + "\n"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def _footnotes(table: Table, bold: bool = True) -> list[str]:
    foot = [f"[{letter}] {desc}" for letter, desc in table.protocols.items()]
    if bold:
        foot += ["Bold: best value of each column (↑ higher is better, ↓ lower is better)."]
    return foot + table.notes


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "±": r"$\pm$", "↑": r"$\uparrow$", "↓": r"$\downarrow$", "–": "--"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def render_latex(table: Table, ci: bool = False) -> str:
    """A booktabs ``tabular`` (pandas Styler) in a ``table`` float with caption, label and footnotes."""
    best = table.best()
    header = ["Method"] + (["Model"] if table.show_model else []) + [
        latex_escape(c.label) + " $" + (r"\uparrow" if c.higher_is_better else r"\downarrow")
        + (f"^{{{c.letter}}}" if c.letter else "") + "$" for c in table.columns]
    data = []
    for i, row in enumerate(table.rows):
        cells = []
        for j in range(len(table.columns)):
            text = latex_escape(_cell_text(table, i, j, ci, " ± "))
            cells.append(rf"\textbf{{{text}}}" if i in best[j] else text)
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
    foot = _footnotes(table)
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
    buf = io.StringIO()
    frame.to_csv(buf, lineterminator="\n")
    for f in _footnotes(table, bold=False):
        buf.write(f"# {f}\n")
    return buf.getvalue()


RENDERERS = {"markdown": render_markdown, "latex": render_latex, "csv": render_csv}


def render(table: Table, fmt: str = "markdown", ci: bool = False) -> str:
    try:
        return RENDERERS[fmt](table, ci=ci)
    except KeyError:
        raise UsageError(f"unknown report format {fmt!r}; expected one of {', '.join(RENDERERS)}") from None


def report(results: Sequence[dict[str, Any]], spec: Optional[TableSpec] = None, fmt: str = "markdown",
           ci: bool = False) -> str:
    """Stored results → rendered table text."""
    return render(build_table(results, spec), fmt, ci)


__all__ = ["TableSpec", "RowSpec", "ColumnSpec", "Table", "Column", "Row", "Cell", "build_table", "render",
           "render_markdown", "render_latex", "render_csv", "report", "load_table_spec", "parse_table_spec",
           "describe_protocol", "protocol_diff", "format_value", "latex_escape"]
