"""``mubench check --baseline FILE``: fail (exit 1) when a metric got worse than the baseline."""
from __future__ import annotations

import json
from typing import Optional

import typer

from ..errors import UsageError
from ._kv import as_list, as_str, parse_kv

KEYS = ("store", "results", "suite", "methods", "model", "tolerance", "protocol")


def check_command(
    args: Optional[list[str]] = typer.Argument(
        None, metavar="KEY=VALUE",
        help="results=DIR (run folder(s)) | store=PATH (default: the user store) | suite=S | methods=a,b | model=M | "
             "tolerance=abs:X|rel:Y|ci:K (all metrics) | tolerance.METRIC=abs:X|rel:Y|ci:K | "
             "protocol=strict|any (compare across a changed protocol)"),
    baseline: Optional[str] = typer.Option(None, "--baseline", metavar="FILE", help="Baseline JSON file."),
    as_json: bool = typer.Option(False, "--json", help="Print the comparison as JSON on stdout."),
) -> None:
    """Compare results with a baseline; exit 1 if a metric is worse beyond tolerance, 2 on unusable input.

    Direction aware: for a lower-is-better metric (FID) only an increase counts; improvements are shown and pass. Which tolerance applies: tolerance.METRIC on the command line > the file's METRIC > tolerance on the command line > the file's '*' > exact.

    Example: mubench check --baseline reports/baselines/micro.json results=out/
    """
    from ..check import DEFAULT_KEY, RegressionError, compare, load_baseline, parse_tolerance
    from ..check_render import render_check
    from ..selection import select

    kv = parse_kv(args, KEYS, prefixes=("tolerance",), command="check", options=("baseline",))
    if not baseline:
        raise UsageError("mubench check needs --baseline FILE")
    tolerances = {k.split(".", 1)[1]: parse_tolerance(v, k) for k, v in kv.items() if k.startswith("tolerance.")}
    if kv.get("tolerance") is not None:
        tolerances[DEFAULT_KEY] = parse_tolerance(kv["tolerance"], "tolerance")
    protocol = kv.get("protocol", "strict")
    if protocol not in ("strict", "any"):
        raise UsageError(f"bad value protocol={protocol!r}; expected strict or any")
    base = load_baseline(baseline)
    methods = as_list(kv.get("methods"), "methods")
    suite, model = as_str(kv.get("suite")), as_str(kv.get("model"))
    base["entries"] = _matching_entries(base["entries"], baseline, tolerances, suite, methods, model)
    sel = select(store=as_str(kv.get("store")), results=as_str(kv.get("results")), suite=suite, methods=methods,
                 model=model)
    current, source = sel.results, sel.source
    report = compare(base, current, tolerances, any_protocol=protocol == "any", current_units=sel.units)
    if as_json:
        typer.echo(json.dumps(report.as_dict() | {"baseline": str(baseline), "source": source}, indent=2))
    else:
        from rich.console import Console

        console = Console()
        if not console.is_terminal:
            console = Console(width=200)
        console.print(f"baseline {baseline} vs {source}")
        render_check(report, console)
    if report.failed:
        failures = report.failures()
        raise RegressionError(f"check failed: {len(failures)} metric(s) worse than {baseline} beyond tolerance, "
                              "missing, or under a changed protocol")


def _matching_entries(entries: list[dict], baseline: str, tolerances: dict, suite: Optional[str],
                      methods: Optional[list[str]], model: Optional[str]) -> list[dict]:
    """The baseline's entries the filters select; a clear error for a filter or a tolerance.METRIC that names
    nothing in the baseline (a misspelt tolerance would otherwise leave its metric at the default, silently)."""
    from ..check import DEFAULT_KEY
    from ..errors import close_matches, did_you_mean
    from ..selection import check_filters, matches_filters

    check_filters({k: {str(e[k]) for e in entries} for k in ("suite", "method", "model")}, f"baseline {baseline}",
                  suite, methods, model)
    metrics = {str(m) for e in entries for m in (e.get("metrics") or {})}
    for metric in (k for k in tolerances if k != DEFAULT_KEY):
        if metric not in metrics:
            raise UsageError(f"tolerance.{metric}: baseline {baseline} has no metric {metric!r}"
                             f"{did_you_mean(close_matches(metric, metrics))}"
                             f"\n  its metrics: {', '.join(sorted(metrics)) or '(none)'}")
    kept = [e for e in entries if matches_filters(e, suite, methods, model)]
    if not kept:
        raise UsageError(f"baseline {baseline} has no entries matching the given suite/methods/model")
    return kept
