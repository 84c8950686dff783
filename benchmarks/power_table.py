"""Power of `mubench compare`'s paired test on the micro world, simulated from a stored A/A pair.

Needs two runs of one method at two seeds in a store, e.g.

    mubench run suite=micro method=sd seeds=0,1
    python benchmarks/power_table.py [--store PATH] [--method sd] [--sims 200]

For the binary per-image scores (the GenEval-style tasks pooled: correct / incorrect) and for clip, it prints a
Markdown table of power by n (prompts) and effect, with the A/A false-positive rate of the same simulations,
then one JSON line with every point. See docs/statistics.md for how to read it.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, replace

from mubench.comparison import resolve_side
from mubench.stats.power import power_table
from mubench.store import Store


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", default=None)
    ap.add_argument("--method", default="sd")
    ap.add_argument("--suite", default="micro")
    ap.add_argument("--sims", type=int, default=200)
    ap.add_argument("--permutations", type=int, default=500)
    ap.add_argument("--ns", default="64,128,256,512")
    args = ap.parse_args(argv)
    with Store(args.store, create=False) as st:
        runs = [r for r in st.all_results(suite=args.suite, methods=[args.method])]
        if len(runs) < 2:
            print(f"need two {args.method} runs of suite {args.suite} at different seeds", file=sys.stderr)
            return 2
        a = resolve_side(st, str(runs[1]["run_id"]), suite=args.suite)
        b = resolve_side(st, str(runs[0]["run_id"]), suite=args.suite)
    ns = [int(x) for x in args.ns.split(",")]
    metrics = {"binary (GenEval-style tasks pooled)": ("overall", [0.05, 0.10, 0.20]),
               "clip": ("clip", [0.005, 0.01, 0.02])}
    points = {}
    for label, (metric, effects) in metrics.items():
        ua, ub = a.units[metric], b.units[metric]
        if ua.kind == "strata_mean":  # pool the tasks' binary scores as one per-image mean
            ua, ub = replace(ua, kind="mean", strata=None), replace(ub, kind="mean", strata=None)
        points[label] = power_table(ua, ub, ns, effects, sims=args.sims, permutations=args.permutations)
        print(f"\n**{label}** (A/A pair: {args.method} seeds {a.results['protocol'].get('seed')} / "
              f"{b.results['protocol'].get('seed')}, {ua.n} units; {args.sims} simulations per cell)\n")
        print("| n | " + " | ".join(f"δ = {e:g}" for e in effects) + " | A/A false-positive rate |")
        print("|---:|" + "---:|" * (len(effects) + 1))
        for n in ns:
            row = [p for p in points[label] if p.n == n]
            print(f"| {n} | " + " | ".join(f"{p.power:.2f}" for p in row) + f" | {row[0].false_positive_rate:.3f} |")
    print(json.dumps({k: [asdict(p) for p in v] for k, v in points.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
