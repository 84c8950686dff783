"""``mubench report``: stored results as a Markdown, LaTeX or CSV table, or an HTML report folder (``--html``)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import UsageError
from ._kv import as_bool, as_list, as_str, parse_kv

KEYS = ("store", "results", "suite", "methods", "model", "table", "ci", "out", "baseline", "differ_by", "masks")
HTML_KEYS = ("differ_by", "masks")  # baseline= is shared with the text formats (significance marks)
HTML_DEFAULT_OUT = "mubench-report"


def report_command(
    args: Optional[list[str]] = typer.Argument(
        None, metavar="KEY=VALUE",
        help="store=PATH (default: the user store) | results=DIR (run folders instead of a store) | suite=S | "
             "methods=a,b | model=M | table=SPEC (name in reports/tables or a YAML path) | ci=true (value ± CI) | "
             "out=FILE (write instead of printing; with --html a folder, default mubench-report) | "
             "--html only: baseline=METHOD (where the others differ from it) | differ_by=SCORER.FIELD "
             "(per-image score, default oracle.correct or clip.clip) | masks=DIR (where `mubench masks` wrote)"),
    markdown: bool = typer.Option(False, "--markdown", help="Markdown pipe table (the default)."),
    latex: bool = typer.Option(False, "--latex", help="LaTeX booktabs tabular in a table float."),
    csv: bool = typer.Option(False, "--csv", help="CSV of raw values; footnotes as trailing # lines."),
    html: bool = typer.Option(False, "--html", help="A folder with index.html: table, side-by-side gallery, "
                                                   "where methods differ, protocols (opens from disk)."),
) -> None:
    """Render stored results: one row per method, one column per metric, best value in bold.

    Columns carry the metric's direction (↑/↓) and a protocol letter whose footnote gives the protocol and n. Numbers made under different protocols never share a column: such a column is split, and a note says so.

    Example: mubench report --latex table=paper-table1

    Example: mubench report --html out=report suite=micro baseline=sd
    """
    from ..report import build_table, load_table_spec, render
    from ..store import select_results

    if sum((markdown, latex, csv, html)) > 1:
        raise UsageError("choose one of --markdown, --latex, --csv, --html")
    fmt = "latex" if latex else "csv" if csv else "markdown"
    kv = parse_kv(args, KEYS, command="report")
    if not html and any(k in kv for k in HTML_KEYS):
        raise UsageError(", ".join(f"{k}=" for k in HTML_KEYS if k in kv) + (" applies" if sum(k in kv for k in HTML_KEYS) == 1 else " apply") + " only to --html")
    spec = load_table_spec(str(kv["table"])) if kv.get("table") else None
    methods = as_list(kv.get("methods"), "methods")
    suite = as_str(kv.get("suite"))
    model = as_str(kv.get("model"))
    if spec is not None and methods:
        unknown_rows = [m for m in methods if m not in {r.method for r in spec.rows}] if spec.rows else []
        if unknown_rows:
            raise UsageError(f"table {spec.name!r} has no rows for {', '.join(unknown_rows)}; "
                             f"its rows: {', '.join(r.method for r in spec.rows)}")
        spec.rows = [r for r in spec.rows if r.method in methods]
    if spec is not None and suite and not spec.columns:
        spec.suite = suite
    results, source = select_results(store=as_str(kv.get("store")), results=as_str(kv.get("results")),
                                     suite=suite, methods=methods, model=model)
    if html:
        _write_html(kv, build_table(results, spec), results, source)
        return
    text = render(build_table(results, spec), fmt, ci=as_bool(kv.get("ci", False), "ci"))
    out = as_str(kv.get("out"))
    if out:
        path = Path(out).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        typer.echo(f"wrote {path} ({fmt}, from {source})", err=True)
    else:
        typer.echo(text, nl=False)


def _write_html(kv: dict, table, results: list, source: str) -> None:
    from ..htmlreport.page import HtmlOptions, write_html_report
    from ..htmlreport.runs import load_runs

    out = Path(as_str(kv.get("out")) or HTML_DEFAULT_OUT).expanduser()
    if out.exists() and not out.is_dir():
        raise UsageError(f"out={out} is a file; --html writes a folder (index.html and its images)")
    masks = as_str(kv.get("masks"))
    if masks and not Path(masks).expanduser().is_dir():
        raise UsageError(f"masks={masks} is not a folder")
    views = load_runs(results, store=as_str(kv.get("store")), results_dir=as_str(kv.get("results")),
                      baseline=as_str(kv.get("baseline")))
    options = HtmlOptions(baseline=as_str(kv.get("baseline")), differ_by=as_str(kv.get("differ_by")),
                          masks_dir=Path(masks).expanduser() if masks else None, source=source)
    index = write_html_report(out, table, views, options)
    typer.echo(f"wrote {index} (html, {len(views)} runs, from {source})", err=True)
