"""Which stored results a report, comparison or check works on, with the per-unit data behind them.

Results come from a store (the newest run per (suite, method, model, protocol hash)) or from run folders
(``results=DIR``). A run that belongs to a replicate group (``mubench run seeds=0,1,2``) stands for its whole
group: the group's runs are pooled into one representative results object (``run_id`` ``group:<id>``), whose
metrics are recomputed from the pooled per-unit data, so their CIs hold prompt and seed variation.
"""
from __future__ import annotations

import copy
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from .config import stable_hash
from .errors import UsageError, close_matches, did_you_mean
from .results_schema import validate_results
from .stats.paired import unit_ci
from .stats.units import UnitData, pool
from .store import Store

UNITS_FILE = "units.npz"  # next to results.json: the per-unit data of the run's metrics


@dataclass
class Selection:
    """Results to show (groups pooled), where they came from, and unit data by results ``run_id`` and metric."""

    results: list[dict[str, Any]]
    source: str
    units: dict[str, dict[str, UnitData]] = field(default_factory=dict)


def group_of(result: dict[str, Any]) -> Optional[str]:
    rep = result.get("replicate") or {}
    return str(rep["group"]) if isinstance(rep, dict) and rep.get("group") else None


def decode_units(blobs: dict[str, bytes], where: str) -> dict[str, UnitData]:
    out = {}
    for metric, blob in blobs.items():
        try:
            out[metric] = UnitData.from_bytes(blob)
        except (ValueError, KeyError, OSError) as err:
            raise UsageError(f"{where}: per-unit data of {metric!r} is unreadable ({err})") from None
    return out


def units_file_bytes(units: dict[str, UnitData]) -> bytes:
    """The bytes of ``units.npz``: one uint8 array per metric holding its serialised unit data."""
    import io

    buf = io.BytesIO()
    np.savez(buf, **{name: np.frombuffer(u.to_bytes(), dtype=np.uint8) for name, u in units.items()})
    return buf.getvalue()


def read_units_file(path: Path) -> dict[str, UnitData]:
    if not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as z:
            blobs = {k: z[k].tobytes() for k in z.files}
    except (OSError, ValueError) as err:
        raise UsageError(f"{path}: cannot read per-unit data ({err})") from None
    return decode_units(blobs, str(path))


def read_results_dir(path: str | os.PathLike[str], with_units: bool = False):
    """``results.json`` objects from a run's ``out`` folder, a results file, or a folder of run folders
    (with ``with_units``: also their ``units.npz`` data by run id)."""
    p = Path(path).expanduser()
    if p.is_file():
        files = [p]
    elif p.is_dir():
        files = [p / "results.json"] if (p / "results.json").is_file() else sorted(p.rglob("results.json"))
    else:
        raise UsageError(f"results path {p} does not exist")
    if not files:
        raise UsageError(f"no results.json under {p}")
    out, units = [], {}
    for f in files:
        try:
            data = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise UsageError(f"{f}: cannot read results ({err})") from None
        try:
            validate_results(data)
        except UsageError as err:
            raise UsageError(f"{f}: {err}") from None
        out.append(data)
        if with_units:
            units[str(data["run_id"])] = read_units_file(f.parent / UNITS_FILE)
    return (out, units) if with_units else out


def pooled_result(runs: Sequence[dict[str, Any]], units: Sequence[dict[str, UnitData]],
                  resamples: int = 2000) -> tuple[dict[str, Any], dict[str, UnitData]]:
    """One representative results object for a replicate group, and its pooled unit data."""
    order = sorted(range(len(runs)), key=lambda k: int((runs[k].get("replicate") or {}).get("index", 0)))
    runs, units = [runs[k] for k in order], [units[k] for k in order]  # replicate k of the pool is seeds[k]'s run
    rep = copy.deepcopy(runs[-1])
    seeds = [r.get("protocol", {}).get("seed", r.get("config", {}).get("run", {}).get("seed")) for r in runs]
    names = [m for m in units[0] if all(m in u for u in units)]
    pooled = {m: pool([u[m] for u in units]) for m in names}
    metrics = {}
    for name, m in (rep.get("metrics") or {}).items():
        if name in pooled:
            lo, hi = unit_ci(pooled[name], resamples=resamples)
            metrics[name] = {**m, "value": pooled[name].value(), "ci_low": lo, "ci_high": hi, "n": pooled[name].n}
        else:
            values = [r["metrics"][name]["value"] for r in runs if name in (r.get("metrics") or {})]
            finite = [v for v in values if v is not None]
            ns = [r["metrics"][name].get("n") for r in runs if name in (r.get("metrics") or {})]
            metrics[name] = {**m, "value": float(np.mean(finite)) if finite else None, "ci_low": None,
                             "ci_high": None, "n": sum(ns) if ns and all(isinstance(n, int) for n in ns) else None}
    rep["metrics"] = metrics
    protocol = dict(rep.get("protocol") or {})
    protocol["seed"] = seeds
    rep["protocol"] = protocol
    rep["protocol_hash"] = stable_hash(protocol)
    rep["run_id"] = f"group:{group_of(runs[-1])}"
    rep["replicates"] = [str(r["run_id"]) for r in runs]
    return with_missing_seeds(rep, runs), pooled


def with_missing_seeds(result: dict[str, Any], members: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``result`` (a group's representative) with ``replicates_missing``: the seeds its ``run seeds=...`` was started
    with that no member ran to the end (an interrupted command). Unchanged when the group is complete."""
    planned = (members[-1].get("replicate") or {}).get("seeds") or []
    have = {(r.get("protocol") or {}).get("seed") for r in members}
    missing = [s for s in planned if s not in have]
    if not missing:
        return result
    return {**result, "replicates_missing": missing, "replicates": [str(r["run_id"]) for r in members]}


def matches_filters(record: dict[str, Any], suite: Optional[str] = None, methods: Optional[Sequence[str]] = None,
                    model: Optional[str] = None) -> bool:
    """Whether a results object (or a baseline entry) is of ``suite``, one of ``methods`` and ``model`` (each filter
    given)."""
    return ((not suite or record.get("suite") == suite) and (not methods or record.get("method") in methods)
            and (not model or record.get("model") == model))


def check_filters(recorded: dict[str, set[str]], where: str, suite: Optional[str] = None,
                  methods: Optional[Sequence[str]] = None, model: Optional[str] = None) -> None:
    """A ``suite=`` / ``methods=`` / ``model=`` value with no results at all in ``where`` is a UsageError with close
    matches (a typo must not silently shrink a report or a check); ``recorded``: key → the values there."""
    for key, flag, asked in (("suite", "suite", [suite] if suite else []), ("method", "methods", list(methods or [])),
                             ("model", "model", [model] if model else [])):
        have = sorted(recorded.get(key, set()))
        for value in asked:
            if value not in have:
                raise UsageError(f"no results match {flag}={value} in {where}{did_you_mean(close_matches(value, have))}"
                                 f"\n  {key}s there: {', '.join(have) if have else '(none)'}")


def store_filters(st: Store) -> dict[str, set[str]]:
    return {key: st.recorded(key) for key in ("suite", "method", "model")}


def select(store: Optional[str] = None, results: Optional[str] = None, suite: Optional[str] = None,
           methods: Optional[Sequence[str]] = None, model: Optional[str] = None) -> Selection:
    """Results to report, compare or check, replicate groups pooled, with their unit data.

    ``results`` (a run's ``out`` folder, a ``results.json`` file or a folder of run folders) wins over
    ``store``; from a store, the newest run per (suite, method, model, protocol hash) is taken, and a run of a
    replicate group brings its whole group. No matching results raises UsageError.
    """
    if results is not None and store is not None:
        raise UsageError("pass results=DIR or store=PATH, not both")
    if results is not None:
        found, everything, units, source = _from_results(results, suite, methods, model)
    else:
        found, everything, units, source = _from_store(store, suite, methods, model)
    if not found:
        filters = ", ".join(f"{k}={v if isinstance(v, str) else ','.join(v)}"
                            for k, v in (("suite", suite), ("methods", methods), ("model", model)) if v)
        raise UsageError(f"no results in {source}" + (f" match {filters}" if filters else ""))
    return Selection(_pool_groups(found, everything, units), source, units)


_Found = tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, dict[str, UnitData]], str]


def _from_results(results: str, suite: Optional[str], methods: Optional[Sequence[str]],
                  model: Optional[str]) -> _Found:
    """(the matching results, the same as every run a group may need, their units, the source) of run folders."""
    found, units = read_results_dir(results, with_units=True)
    check_filters({k: {str(r.get(k)) for r in found} for k in ("suite", "method", "model")}, f"results {results}",
                  suite, methods, model)
    found = [r for r in found if matches_filters(r, suite, methods, model)]
    return found, found, units, f"results {results}"


def _from_store(store: Optional[str], suite: Optional[str], methods: Optional[Sequence[str]],
                model: Optional[str]) -> _Found:
    """(the newest run per (suite, method, model, protocol hash), those and the other runs of their replicate
    groups, the units of all of them, the source) of a store; warns where runs differ in settings the hash hides."""
    units: dict[str, dict[str, UnitData]] = {}
    with Store(store, create=False) as st:
        check_filters(store_filters(st), f"store {st.path}", suite, methods, model)
        found = st.latest_results(suite=suite, methods=methods, model=model)
        everything = st.all_results(suite=suite, methods=methods, model=model)  # groups, hidden settings
        warn_hidden_settings(found, everything)
        groups = {group_of(r) for r in found} - {None}
        shown_ids = {str(r["run_id"]) for r in found}
        everything = [r for r in everything if str(r["run_id"]) in shown_ids or group_of(r) in groups]
        for r in everything:
            units[str(r["run_id"])] = decode_units(st.unit_blobs(str(r["run_id"])), f"run {r['run_id']}")
        return found, everything, units, f"store {st.path}"


def _pool_groups(found: list[dict[str, Any]], everything: list[dict[str, Any]],
                 units: dict[str, dict[str, UnitData]]) -> list[dict[str, Any]]:
    """The results to show: a run alone as it is, a replicate group's runs pooled into one result (its pooled units
    added to ``units`` under the pooled result's run id), a group with one run found marked with its missing seeds."""
    shown, seen_groups = [], set()
    for r in found:
        gid = group_of(r)
        if gid is None:
            shown.append(r)
            continue
        if gid in seen_groups:
            continue
        seen_groups.add(gid)
        members = [x for x in everything if group_of(x) == gid]
        if len(members) < 2:
            shown.append(with_missing_seeds(r, members))
            continue
        rep, pooled = pooled_result(members, [units.get(str(x["run_id"]), {}) for x in members])
        units[rep["run_id"]] = pooled
        shown.append(rep)
    return shown


def _settings(result: dict[str, Any]) -> dict[str, Any]:
    """What a run's row stands for besides its names and protocol, flattened: the method's resolved settings and the
    base model's weights (its fingerprint)."""
    from .protocols import flatten

    method = dict((result.get("config") or {}).get("method") or {})
    params = dict(method.get("params") or {})
    artifact = (result.get("method_info") or {}).get("artifact")
    if artifact:  # a trained method: its weights' sha256 stands for its train settings (log_every & co change nothing)
        params.pop("train", None)
    return flatten({"method": params, "recipe": method.get("recipe"), "model": result.get("model_fingerprint"),
                    "artifact": artifact})


def _setting_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Settings both runs state with different values (a key only one states is a code version's, not a choice)."""
    return [f"{k} {old[k]} → {new[k]}" for k in new if k in old and old[k] != new[k]]


def warn_hidden_settings(found: Sequence[dict[str, Any]], everything: Sequence[dict[str, Any]]) -> None:
    """A warning where the newest run of a (suite, method, model, protocol) hides older runs made with other method
    settings (``method.ratio=0.9`` then ``0.0``) or other base weights: the table shows only the newest."""
    def key(r: dict[str, Any]) -> tuple:
        return r.get("suite"), r.get("method"), r.get("model"), r.get("protocol_hash")

    by_key: dict[tuple, list[dict[str, Any]]] = {}
    for x in everything:
        by_key.setdefault(key(x), []).append(x)
    for r in found:
        mine = _settings(r)
        changes = [c for c in (_setting_changes(_settings(x), mine) for x in by_key.get(key(r), [])) if c]
        if changes:
            warnings.warn(f"{r.get('method')} on {r.get('suite')}/{r.get('model')}: the newest run "
                          f"({str(r.get('run_id'))[:12]}) hides {len(changes)} older run(s) with other settings "
                          f"(e.g. {'; '.join(changes[0][:3])}); only the newest is shown — give each setting its "
                          "own spec name (method=my.yaml) or its own store= to compare them side by side",
                          stacklevel=2)


def select_results(store: Optional[str] = None, results: Optional[str] = None, suite: Optional[str] = None,
                   methods: Optional[Sequence[str]] = None, model: Optional[str] = None) -> tuple[list[dict], str]:
    """:func:`select` without the unit data: (results, where they came from)."""
    sel = select(store=store, results=results, suite=suite, methods=methods, model=model)
    return sel.results, sel.source


__all__ = ["Selection", "select", "select_results", "read_results_dir", "pooled_result", "group_of", "matches_filters",
           "with_missing_seeds", "UNITS_FILE", "units_file_bytes", "read_units_file", "decode_units"]
