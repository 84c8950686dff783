"""``mubench compare A B``: a paired comparison of two runs (or pooled replicate groups) from the store.

A side is a run id (or a unique prefix), or a method name: the newest matching run, which brings its whole
replicate group when it has one. Both sides must share the protocol up to the method and the seed (else a
:class:`ProtocolMismatch` lists the differing keys; ``force`` compares anyway and records the difference).
Every metric both sides have unit data for is compared on the units they share (see
:mod:`mubench.stats.paired`); p-values are Holm-corrected over the metrics compared.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from .errors import UsageError
from .protocols import flatten
from .selection import decode_units, group_of, pooled_result, with_missing_seeds
from .stats.paired import PairedResult, compare_units
from .stats.resample import ALPHA, DEFAULT_PERMUTATIONS, DEFAULT_RESAMPLES, holm
from .stats.units import UnitData
from .store import Store

#: protocol keys that may differ between the two sides of a comparison
FREE_KEYS = ("seed",)


class ProtocolMismatch(UsageError):
    """The two sides were made under different protocols (beyond method and seed)."""


@dataclass
class Side:
    """One side of a comparison: its label, representative results, unit data and the runs behind it."""

    label: str
    results: dict[str, Any]
    units: dict[str, UnitData]
    run_ids: list[str] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        r = self.results
        return {"label": self.label, "method": r.get("method"), "model": r.get("model"), "suite": r.get("suite"),
                "run_ids": self.run_ids, "seeds": _seeds(r), "group": group_of(r),
                "seeds_missing": r.get("replicates_missing", [])}


def _seeds(r: dict[str, Any]) -> Any:
    return (r.get("protocol") or {}).get("seed")


def _stored_units(store: Store, run: dict[str, Any]) -> dict[str, UnitData]:
    return decode_units(store.unit_blobs(str(run["run_id"])), f"run {run['run_id']}")


def resolve_side(store: Store, spec: str, suite: Optional[str] = None, model: Optional[str] = None) -> Side:
    """A run id (or unique prefix) or a method name → the :class:`Side` it stands for."""
    runs = store.all_results(suite=suite, model=model)
    by_id = [r for r in runs if str(r["run_id"]) == spec] or [r for r in runs if str(r["run_id"]).startswith(spec)]
    if len(by_id) > 1:
        raise UsageError(f"run id prefix {spec!r} is ambiguous in {store.path}")
    if by_id:
        return Side(spec, by_id[0], _stored_units(store, by_id[0]), [str(by_id[0]["run_id"])])
    mine = [r for r in runs if r.get("method") == spec]
    if not mine:
        methods = sorted({str(r.get("method")) for r in runs})
        where = "".join(f" {k}={v}" for k, v in (("suite", suite), ("model", model)) if v)
        raise UsageError(f"{spec!r} is neither a run id nor a method with runs in {store.path}{where}"
                         + (f"; methods there: {', '.join(methods)}" if methods else ""))
    suites = sorted({str(r["suite"]) for r in mine})
    if len(suites) > 1 and suite is None:
        raise UsageError(f"method {spec!r} has runs on several suites ({', '.join(suites)}); pass suite=NAME")
    newest = mine[0]  # all_results is newest first
    gid = group_of(newest)
    members = [r for r in mine if gid is not None and group_of(r) == gid]
    if len(members) < 2:
        return Side(spec, with_missing_seeds(newest, members or [newest]), _stored_units(store, newest),
                    [str(newest["run_id"])])
    rep, pooled = pooled_result(members, [_stored_units(store, r) for r in members])
    return Side(spec, rep, pooled, [str(r["run_id"]) for r in members])


def protocol_differences(a: dict[str, Any], b: dict[str, Any], free: Sequence[str] = FREE_KEYS) -> list[str]:
    """``["sampler.steps: 20 vs 50", ...]``: protocol facts that differ, other than the free keys."""
    fa, fb = flatten(a.get("protocol") or {}), flatten(b.get("protocol") or {})
    out = []
    for k in list(fa) + [k for k in fb if k not in fa]:
        if k.split(".")[0] in free or k in free:
            continue
        if fa.get(k) != fb.get(k):
            out.append(f"{k}: {fa.get(k, '(unset)')} vs {fb.get(k, '(unset)')}")
    line = f"suite: {a.get('suite')} vs {b.get('suite')}"
    if a.get("suite") != b.get("suite") and line not in out:  # a protocol's own `suite` key says it already
        out.insert(0, line)
    return out


def compare_sides(a: Side, b: Side, metrics: Optional[Sequence[str]] = None, *, force: bool = False,
                  resamples: int = DEFAULT_RESAMPLES, permutations: int = DEFAULT_PERMUTATIONS, seed: int = 0,
                  alpha: float = ALPHA) -> dict[str, Any]:
    """The comparison as the ``--json`` object (see docs/statistics.md)."""
    diff = protocol_differences(a.results, b.results)
    if diff and not force:
        raise ProtocolMismatch(f"{a.label} and {b.label} were made under different protocols:\n  "
                               + "\n  ".join(diff) + "\n(pass --force to compare anyway)")
    names = [m for m in a.units if m in b.units]
    if metrics:
        unknown = [m for m in metrics if m not in a.units or m not in b.units]
        if unknown:
            have = ", ".join(names) or "none"
            raise UsageError(f"no per-unit data on both sides for {', '.join(unknown)}; comparable metrics: {have}")
        names = list(metrics)
    if not names:
        raise UsageError(f"{a.label} and {b.label} share no metric with per-unit data (runs recorded before "
                         "mubench stored unit data, or a suite without per-image metrics): nothing to compare")
    rows: list[PairedResult] = [compare_units(m, a.units[m], b.units[m], resamples=resamples,
                                              permutations=permutations, seed=seed) for m in names]
    for r, p in zip(rows, holm([r.p for r in rows])):
        r.p_holm = p
        r.decide(alpha)
    units = max((r.units for r in rows), default=0)
    return {
        "a": a.describe(), "b": b.describe(),
        "units": units, "dropped": max((r.dropped for r in rows), default=0),
        "shared_noise": all(r.shared_noise for r in rows),
        "same_runs": sorted(a.run_ids) == sorted(b.run_ids),
        "alpha": alpha, "correction": f"Holm over the {len(rows)} metrics compared",
        "test": {"ci": f"paired cluster bootstrap over prompts, {resamples} resamples (FID: bias-shifted percentile)",
                 "p": f"paired permutation (sign-flip) test swapping whole prompts, {permutations} relabellings",
                 "seed": seed},  # of the resampling and the relabellings: with it, the same CIs and p-values again
        "protocol_differences": diff,
        "metrics": [{"metric": r.metric, "higher_is_better": r.higher_is_better, "a": r.a, "b": r.b,
                     "delta": r.delta, "ci_low": r.ci_low, "ci_high": r.ci_high, "p": r.p, "p_holm": r.p_holm,
                     "significant": r.significant, "better": r.better, "units": r.units, "dropped": r.dropped,
                     "exact": r.exact, "min_p": r.min_p, "testable": r.testable, "note": r.note} for r in rows],
    }


__all__ = ["Side", "resolve_side", "compare_sides", "protocol_differences", "ProtocolMismatch", "FREE_KEYS"]
