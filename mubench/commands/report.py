"""``mubench report``: stored results as a Markdown, LaTeX, CSV or JSON table, with significance marks, or an HTML
report folder (``--html``)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import UsageError
from ._kv import as_alpha, as_bool, as_int, as_list, as_str, parse_kv

KEYS = ("store", "results", "suite", "methods", "model", "table", "ci", "out", "baseline", "bold", "alpha",
        "permutations", "differ_by", "masks")
HTML_KEYS = ("differ_by", "masks")  # baseline= serves the text formats' marks and the HTML "where they differ"
HTML_DEFAULT_OUT = "mubench-report"


def report_command(
    args: Optional[list[str]] = typer.Argument(
        None, metavar="[KEY=VALUE]...",
        help="store=PATH (default: the user store) | results=DIR (run folders instead of a store) | suite=S | "
             "methods=a,b | model=M | table=SPEC (name in reports/tables or a YAML path) | ci=true (value with its "
             "CI) | baseline=METHOD (mark cells ▲/▼ where significantly better/worse than it) | "
             "bold=significant|value (default significant) | alpha=0.05 | permutations=2000 | "
             "out=FILE (write instead of printing; with --html a folder, default mubench-report) | "
             "--html only: differ_by=SCORER.FIELD (per-image score the 'where they differ' list sorts by; "
             "default oracle.correct, else clip.clip) | masks=DIR (where `mubench masks` wrote)"),
    markdown: bool = typer.Option(False, "--markdown", help="Markdown pipe table (the default)."),
    latex: bool = typer.Option(False, "--latex", help="LaTeX booktabs tabular in a table float."),
    csv: bool = typer.Option(False, "--csv", help="CSV of raw values; footnotes as trailing # lines."),
    as_json: bool = typer.Option(False, "--json", help="JSON: every cell's value, CI, n, bold and mark."),
    html: bool = typer.Option(False, "--html", help="A folder with index.html: table, side-by-side gallery, "
                                                   "where methods differ from baseline=, protocols (opens from disk)."),
) -> None:
    """Render stored results: one row per method, one column per metric.

    Bold marks a row that is significantly better than every other row of its column (paired permutation test
    on the prompts both share, Holm-corrected within the column); baseline=METHOD adds ▲/▼ where a row is
    significantly better/worse than that method. bold=value restores the 'largest value in bold' of paper tables
    (not a significance mark). Columns carry the metric's direction (↑/↓) and a protocol letter whose footnote
    gives the protocol and n; numbers made under different protocols never share a column.

    Example: mubench report suite=micro baseline=sd ci=true

    Example: mubench report --html out=report suite=micro baseline=sd
    """
    from ..report import build_table, render
    from ..report.marks import apply_marks
    from ..fsutil import atomic_write_text
    from ..outfiles import output_file
    from ..selection import select

    if sum((markdown, latex, csv, as_json, html)) > 1:
        raise UsageError("choose one of --markdown, --latex, --csv, --json, --html")
    fmt = "latex" if latex else "csv" if csv else "json" if as_json else "markdown"
    kv = parse_kv(args, KEYS, command="report")
    if not html and any(k in kv for k in HTML_KEYS):
        given = [f"{k}=" for k in HTML_KEYS if k in kv]
        raise UsageError(", ".join(given) + (" applies" if len(given) == 1 else " apply") + " only to --html")
    out = None if html or not kv.get("out") else output_file(as_str(kv.get("out")), "out")  # before the work
    folders = _check_html_keys(kv) if html else None
    methods = as_list(kv.get("methods"), "methods")
    suite = as_str(kv.get("suite"))
    model = as_str(kv.get("model"))
    spec = _table_spec(as_str(kv.get("table")), methods, suite)
    sel = select(store=as_str(kv.get("store")), results=as_str(kv.get("results")), suite=suite, methods=methods,
                 model=model)
    alpha = as_alpha(kv.get("alpha", 0.05))
    perms = as_int(kv.get("permutations", 2000), "permutations")
    table = build_table(sel.results, spec)
    apply_marks(table, sel.units, bold=str(kv.get("bold", "significant")), baseline=as_str(kv.get("baseline")),
                alpha=alpha, permutations=perms)
    if html:
        _write_html(kv, folders, table, sel.results, sel.source)
        return
    text = render(table, fmt, ci=as_bool(kv.get("ci", False), "ci"))
    if out is not None:
        path = atomic_write_text(out, text)
        typer.echo(f"wrote {path} ({fmt}, from {sel.source})", err=True)
    else:
        typer.echo(text, nl=False)


def _table_spec(name: Optional[str], methods: Optional[list[str]], suite: Optional[str]):
    """table=SPEC restricted to methods= (each must be one of its rows) and, where it names no columns, to suite=;
    None without table=."""
    from ..report import load_table_spec

    if not name:
        return None
    spec = load_table_spec(name)
    if methods:
        unknown_rows = [m for m in methods if m not in {r.method for r in spec.rows}] if spec.rows else []
        if unknown_rows:
            raise UsageError(f"table {spec.name!r} has no rows for {', '.join(unknown_rows)}; "
                             f"its rows: {', '.join(r.method for r in spec.rows)}")
        spec.rows = [r for r in spec.rows if r.method in methods]
    if suite and not spec.columns:
        spec.suite = suite
    return spec


def _check_html_keys(kv: dict) -> tuple[Path, Optional[Path]]:
    """The --html keys, checked before any work: (the report folder, the masks folder or None)."""
    from ..htmlreport.page import check_out_folder

    out = Path(as_str(kv.get("out")) or HTML_DEFAULT_OUT).expanduser()
    check_out_folder(out)  # a file, or a foreign folder
    masks = Path(as_str(kv["masks"])).expanduser() if kv.get("masks") else None
    if masks is not None and not masks.is_dir():
        raise UsageError(f"masks={kv['masks']} is not a folder")
    if kv.get("differ_by") and not kv.get("baseline"):
        raise UsageError("differ_by= sorts the page's 'where they differ' list, which compares each run with "
                         "baseline=METHOD: give baseline= too")
    return out, masks


def _write_html(kv: dict, folders: tuple[Path, Optional[Path]], table, results: list, source: str) -> None:
    from ..htmlreport.page import HtmlOptions, write_html_report
    from ..htmlreport.runs import load_runs

    out, masks = folders
    shown = {c.run_id for c in table.cells.values()}  # the page shows the table's runs (table=, methods=, ...)
    results = [r for r in results if str(r["run_id"]) in shown]
    views = load_runs(results, store=as_str(kv.get("store")), results_dir=as_str(kv.get("results")),
                      baseline=as_str(kv.get("baseline")))
    options = HtmlOptions(baseline=as_str(kv.get("baseline")), differ_by=as_str(kv.get("differ_by")),
                          masks_dir=masks, source=source)
    index = write_html_report(out, table, views, options)
    typer.echo(f"wrote {index} (html, {len(views)} runs, from {source})", err=True)
