"""``mubench baseline --write FILE``: snapshot results for later regression checks."""
from __future__ import annotations

from typing import Optional

import typer

from ..errors import UsageError
from ._kv import as_list, as_str, parse_kv

KEYS = ("store", "results", "suite", "methods", "model", "tolerance")


def baseline_command(
    args: Optional[list[str]] = typer.Argument(
        None, metavar="KEY=VALUE",
        help="store=PATH | results=DIR | suite=S | methods=a,b | model=M | tolerance=abs:X|rel:Y|ci:K (default for "
             "all metrics) | tolerance.METRIC=abs:X|rel:Y|ci:K (per metric); tolerances are written into the file"),
    write: Optional[str] = typer.Option(None, "--write", metavar="FILE", help="Baseline JSON file to write."),
) -> None:
    """Snapshot the newest results per (suite, method, model) into a baseline JSON file for `mubench check`."""
    from ..check import DEFAULT_KEY, make_baseline, write_baseline
    from ..outfiles import BASELINE, output_file
    from ..selection import select

    kv = parse_kv(args, KEYS, prefixes=("tolerance",), command="baseline", options=("write",))
    if not write:
        raise UsageError("mubench baseline needs --write FILE")
    target = output_file(write, "--write", only_over=BASELINE)
    tolerances = {k.split(".", 1)[1]: v for k, v in kv.items() if k.startswith("tolerance.")}
    if kv.get("tolerance") is not None:
        tolerances[DEFAULT_KEY] = kv["tolerance"]
    sel = select(store=as_str(kv.get("store")), results=as_str(kv.get("results")), suite=as_str(kv.get("suite")),
                 methods=as_list(kv.get("methods"), "methods"), model=as_str(kv.get("model")))
    baseline = make_baseline(sel.results, tolerances, source=sel.source, units=sel.units)
    path = write_baseline(target, baseline)
    source = sel.source
    n_metrics = sum(len(e["metrics"]) for e in baseline["entries"])
    typer.echo(f"wrote {path}: {len(baseline['entries'])} run(s), {n_metrics} metric(s) from {source}"
               + (f"; tolerances {baseline['tolerances']}" if baseline["tolerances"] else "; exact tolerances"),
               err=True)
