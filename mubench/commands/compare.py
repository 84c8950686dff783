"""``mubench compare A B``: is the difference between two methods' runs significant, metric by metric?"""
from __future__ import annotations

import json
from typing import Optional

import typer

from ..errors import UsageError
from ._kv import as_alpha, as_int, as_list, as_str, parse_kv

KEYS = ("store", "suite", "model", "metrics", "resamples", "permutations", "alpha", "seed")

COMPARE_HELP = """Paired comparison of two runs on the units (prompt, image) they share.

A and B are method names (the newest run of that method in the store, with its
whole replicate group when it was run with seeds=...) or run ids (`mubench runs`).
For every metric: A, B, the difference B - A with its paired 95% bootstrap CI
(prompts resampled, the same for both sides), a paired permutation p-value
(whole prompts swapped between A and B), Holm's correction over the metrics
compared, and which side is significantly better. Runs made under different
protocols (anything but the method and the seed) are refused unless --force.

\b
Keys (KEY=VALUE):
  suite=S             only runs of suite S
  model=M             only runs of model M
  metrics=m1,m2       compare only these metrics (default: all with unit data)
  store=PATH          results store (default $MUBENCH_HOME/store.sqlite)
  resamples=N         bootstrap resamples (2000)
  permutations=N      permutation relabellings (2000)
  alpha=A             significance level after Holm (0.05)
  seed=N              seed of the resampling (0)
\b
Example: mubench compare sd random-mask suite=micro --json
"""


def compare_command(
    a: str = typer.Argument(..., metavar="A", help="Method name or run id (the reference side)."),
    b: str = typer.Argument(..., metavar="B", help="Method name or run id (the side being judged)."),
    args: Optional[list[str]] = typer.Argument(None, metavar="[KEY=VALUE]...", help="See the keys above."),
    as_json: bool = typer.Option(False, "--json", help="Print the comparison as JSON."),
    markdown: bool = typer.Option(False, "--markdown", help="Markdown table (the default)."),
    latex: bool = typer.Option(False, "--latex", help="LaTeX booktabs table."),
    force: bool = typer.Option(False, "--force", help="Compare even if the protocols differ."),
) -> None:
    from ..comparison import compare_sides, resolve_side
    from ..report.comparison_text import comparison_latex, comparison_markdown
    from ..selection import check_filters, store_filters
    from ..store import Store

    if sum((as_json, markdown, latex)) > 1:
        raise UsageError("choose one of --json, --markdown, --latex")
    if "=" in a or "=" in b:
        raise UsageError("compare needs two sides first: mubench compare A B [KEY=VALUE]... "
                         f"(got {a!r} {b!r})")
    kv = parse_kv(args, KEYS, command="compare")
    resamples = as_int(kv.get("resamples", 2000), "resamples")
    permutations = as_int(kv.get("permutations", 2000), "permutations")
    seed = as_int(kv.get("seed", 0), "seed", minimum=0)
    alpha = as_alpha(kv.get("alpha", 0.05))
    suite, model = as_str(kv.get("suite")), as_str(kv.get("model"))
    with Store(as_str(kv.get("store")), create=False) as store:
        check_filters(store_filters(store), f"store {store.path}", suite=suite, model=model)
        side_a = resolve_side(store, a, suite=suite, model=model)
        side_b = resolve_side(store, b, suite=suite, model=model)
    result = compare_sides(side_a, side_b, as_list(kv.get("metrics"), "metrics"), force=force,
                           resamples=resamples, permutations=permutations, seed=seed, alpha=alpha)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    elif latex:
        typer.echo(comparison_latex(result), nl=False)
    else:
        typer.echo(comparison_markdown(result), nl=False)
