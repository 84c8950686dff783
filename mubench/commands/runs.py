"""``mubench runs``: the runs recorded in a results store."""
from __future__ import annotations

import json
from typing import Optional

import typer

from ..config import plain
from ..errors import UsageError
from ._kv import as_list, as_str, parse_kv

KEYS = ("store", "suite", "methods", "method", "model", "limit")


def runs_command(
    args: Optional[list[str]] = typer.Argument(
        None, metavar="KEY=VALUE",
        help="store=PATH (default: the user store) | suite=S | methods=a,b | model=M | limit=N (newest N)"),
    as_json: bool = typer.Option(False, "--json", help="Print the list as JSON on stdout (and nothing else there)."),
) -> None:
    """List recorded runs, newest first: id, time, suite, method, model, protocol, samples, metrics."""
    from ..selection import check_filters, store_filters
    from ..store import Store

    kv = parse_kv(args, KEYS, command="runs")
    limit = plain(kv.get("limit"))
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise UsageError(f"bad value limit={limit!r}; expected a positive integer")
    methods = as_list(kv.get("methods") or kv.get("method"), "methods")
    with Store(as_str(kv.get("store")), create=False) as store:
        check_filters(store_filters(store), f"store {store.path}", as_str(kv.get("suite")), methods,
                      as_str(kv.get("model")))
        rows = store.runs(suite=as_str(kv.get("suite")), methods=methods, model=as_str(kv.get("model")), limit=limit)
        path = store.path
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console = Console(width=200)
    table = Table(title=f"runs in {path}", caption=f"{len(rows)} run(s)")
    for col in ("run", "created (UTC)", "suite", "method", "model", "protocol", "samples", "time", "metrics"):
        table.add_column(col, no_wrap=col != "metrics", justify="right" if col in ("samples", "time") else "left")
    for r in rows:
        metrics = "  ".join(f"{k}={v:.4g}" if isinstance(v, (int, float)) else f"{k}={v}"
                            for k, v in list(r["metrics"].items())[:6])
        if len(r["metrics"]) > 6:
            metrics += f"  (+{len(r['metrics']) - 6})"
        total = r.get("total_s")
        table.add_row(r["run_id"][:12], str(r["created"])[:19].replace("T", " "), r["suite"], r["method"], r["model"],
                      (r["protocol_hash"] or "")[:12], str(r["n_samples"]),
                      f"{total:.1f}s" if isinstance(total, (int, float)) else "–", metrics)
    console.print(table)
