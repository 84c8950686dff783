"""Regression baselines: snapshot results into a JSON file, later compare new results against it.

A baseline file (``mubench baseline --write FILE``) holds, per (suite, method, model), the metrics of
the newest run, its protocol and protocol hash, and a ``tolerances`` section::

    {"schema": "mubench.baseline/1", "created": "...", "mubench": "0.1.0", "source": "...",
     "tolerances": {"*": "abs:0", "fid": "abs:2.0", "clip": "rel:0.02"},
     "entries": [{"suite": "micro", "method": "sd", "model": "micro", "protocol_hash": "...",
                  "run_id": "...", "created": "...", "protocol": {...},
                  "metrics": {"fid": {"value": 41.2, "ci_low": null, "ci_high": null, "n": 200,
                                      "higher_is_better": false}}}]}

A tolerance is ``abs:X`` (the value may get worse by X), ``rel:Y`` (by Y × |baseline|; ``rel:5%`` works
too) or ``ci:K`` (by K × half the width of the baseline's 95% CI). Which one applies to a metric: the
command line's ``tolerance.METRIC`` > the file's ``METRIC`` > the command line's ``tolerance`` >
the file's ``*`` > exact (up to float rounding). Only the direction that makes a metric worse counts:
improvements are shown and pass.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from .errors import MubenchError, UsageError
from .fsutil import atomic_write_text

BASELINE_SCHEMA = "mubench.baseline/1"
DEFAULT_KEY = "*"
EXACT_REL = 1e-9  # "exact" still forgives float rounding

# statuses
OK, BETTER, WITHIN, REGRESSED, MISSING_METRIC, PROTOCOL, NOT_RUN, NEW = (
    "ok", "better", "worse, within tolerance", "REGRESSED", "MISSING", "PROTOCOL CHANGED", "not run", "new")
FAILING = {REGRESSED, MISSING_METRIC, PROTOCOL}


class RegressionError(MubenchError):
    """Results are worse than the baseline beyond tolerance (or a metric is missing, or the protocol changed). Exit 1."""

    exit_code = 1


@dataclass(frozen=True)
class Tolerance:
    """How much worse than the baseline a metric may get: ``abs`` X, ``rel`` Y × |baseline|, ``ci`` K × CI half-width."""

    kind: str  # abs | rel | ci
    amount: float

    def allowed(self, baseline: Mapping[str, Any]) -> float:
        value = float(baseline["value"])
        if self.kind == "abs":
            allowed = self.amount
        elif self.kind == "rel":
            allowed = self.amount * abs(value)
        else:
            lo, hi = baseline.get("ci_low"), baseline.get("ci_high")
            if lo is None or hi is None:
                raise UsageError(f"tolerance {self} needs the baseline's confidence interval, and this metric has none")
            allowed = self.amount * (float(hi) - float(lo)) / 2.0
        return max(allowed, EXACT_REL * abs(value))

    def __str__(self) -> str:
        return f"{self.kind}:{self.amount:g}"


def parse_tolerance(text: Any, where: str = "tolerance") -> Tolerance:
    """``"abs:0.5"``, ``"rel:0.05"``, ``"rel:5%"``, ``"ci:2"`` or a bare number (absolute)."""
    if isinstance(text, bool):
        raise UsageError(f"{where}: expected abs:X, rel:Y or ci:K, got {text!r}")
    if isinstance(text, (int, float)):
        kind, raw = "abs", str(text)
    else:
        kind, sep, raw = str(text).strip().partition(":")
        kind = kind.strip().lower()
        if not sep:
            kind, raw = "abs", str(text)
    if kind not in ("abs", "rel", "ci"):
        raise UsageError(f"{where}: unknown tolerance kind {kind!r} in {text!r}; expected abs:X, rel:Y or ci:K")
    raw = raw.strip()
    scale = 1.0
    if raw.endswith("%") and kind == "rel":
        raw, scale = raw[:-1], 0.01
    try:
        amount = float(raw) * scale
    except ValueError:
        raise UsageError(f"{where}: {text!r} is not a tolerance; expected abs:X, rel:Y or ci:K with a number") from None
    if not math.isfinite(amount) or amount < 0:
        raise UsageError(f"{where}: tolerance must be a finite number >= 0, got {text!r}")
    return Tolerance(kind, amount)


# ---------------------------------------------------------------------------------------------
# baseline files


def make_baseline(results: Sequence[dict[str, Any]], tolerances: Optional[Mapping[str, Any]] = None,
                  source: str = "", units: Optional[Mapping[str, Mapping[str, Any]]] = None) -> dict[str, Any]:
    """A baseline object from results: the newest run per (suite, method, model), with the per-unit data of
    its metrics (``units``: run id → metric → UnitData) so that ``check`` can test differences."""
    if not results:
        raise UsageError("no results to snapshot")
    newest: dict[tuple[str, str, str], dict[str, Any]] = {}
    for r in results:
        key = (str(r["suite"]), str(r["method"]), str(r["model"]))
        if key not in newest or str(r.get("created", "")) >= str(newest[key].get("created", "")):
            newest[key] = r
    tols = {}
    for metric, tol in (tolerances or {}).items():
        tols[str(metric)] = str(parse_tolerance(tol, f"tolerance for {metric}"))
    from . import __version__

    entries = []
    for key in sorted(newest):
        r = newest[key]
        entries.append({
            "suite": key[0], "method": key[1], "model": key[2],
            "protocol_hash": str(r.get("protocol_hash") or ""), "run_id": str(r.get("run_id", "")),
            "created": r.get("created"), "protocol": r.get("protocol") or {},
            "metrics": {name: {k: m.get(k) for k in ("value", "ci_low", "ci_high", "n", "higher_is_better")}
                        for name, m in (r.get("metrics") or {}).items()},
        })
        run_units = (units or {}).get(str(r.get("run_id", "")))
        if run_units:
            from .baseline_units import encode_units

            entries[-1]["units"] = encode_units({k: v for k, v in run_units.items() if k in entries[-1]["metrics"]})
    check_tolerances(tols, entries)
    return {"schema": BASELINE_SCHEMA, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "mubench": __version__, "source": source, "tolerances": tols, "entries": entries}


def check_tolerances(tols: Mapping[str, str], entries: Sequence[Mapping[str, Any]]) -> None:
    """A baseline's tolerances must be usable by ``check``: every per-metric key names a metric of an entry (a
    misspelt one would leave its metric exact, silently), and a ``ci:`` tolerance only falls on metrics with a CI."""
    from .errors import close_matches, did_you_mean

    names = sorted({n for e in entries for n in e["metrics"]})
    for key in tols:
        if key != DEFAULT_KEY and key not in names:
            hint = did_you_mean(close_matches(key, names))
            raise UsageError(f"tolerance.{key}: the baseline has no metric {key!r}{hint}\n  its metrics: "
                             f"{', '.join(names)}")
    for e in entries:
        for name, m in e["metrics"].items():
            tol = tols.get(name, tols.get(DEFAULT_KEY))
            if tol and tol.startswith("ci:") and (m.get("ci_low") is None or m.get("ci_high") is None):
                raise UsageError(f"tolerance {tol} for {name} ({e['suite']} / {e['method']}): this metric has no "
                                 f"confidence interval; give it tolerance.{name}=abs:X or rel:Y")


def write_baseline(path: str | os.PathLike[str], baseline: dict[str, Any]) -> Path:
    """Write atomically (temporary file + rename)."""
    return atomic_write_text(Path(path).expanduser(), json.dumps(baseline, indent=2, allow_nan=True) + "\n")


def load_baseline(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a baseline file; anything unusable raises UsageError naming what is wrong."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UsageError(f"baseline file {path} does not exist (write one with `mubench baseline --write {path}`)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UsageError(f"baseline {path} is not valid JSON: {err}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"cannot read baseline {path}: {err}") from None
    validate_baseline(data, str(path))
    return data


def validate_baseline(data: Any, where: str = "baseline") -> None:
    def bad(msg: str) -> UsageError:
        return UsageError(f"{where} is not a usable mubench baseline: {msg}")

    if not isinstance(data, dict):
        raise bad(f"the top level must be an object, got {type(data).__name__}")
    if data.get("schema") != BASELINE_SCHEMA:
        raise bad(f"'schema' is {data.get('schema')!r}, expected {BASELINE_SCHEMA!r}")
    tols = data.get("tolerances", {})
    if not isinstance(tols, dict):
        raise bad("'tolerances' must map metric names (or '*') to abs:X / rel:Y / ci:K")
    for metric, tol in tols.items():
        parse_tolerance(tol, f"{where}: tolerances.{metric}")
    entries = data.get("entries")
    if not isinstance(entries, list) or not entries:
        raise bad("'entries' must be a non-empty list")
    for i, e in enumerate(entries):
        if not isinstance(e, dict):
            raise bad(f"entries[{i}] must be an object")
        for key in ("suite", "method", "model"):
            if not isinstance(e.get(key), str) or not e.get(key):
                raise bad(f"entries[{i}] lacks {key!r}")
        metrics = e.get("metrics")
        if not isinstance(metrics, dict) or not metrics:
            raise bad(f"entries[{i}] ({e['suite']}/{e['method']}) has no 'metrics'")
        for name, m in metrics.items():
            if not isinstance(m, dict) or not isinstance(m.get("value"), (int, float)) or isinstance(m.get("value"), bool):
                raise bad(f"entries[{i}].metrics.{name} needs a numeric 'value'")
            if not isinstance(m.get("higher_is_better", True), bool):
                raise bad(f"entries[{i}].metrics.{name}.higher_is_better must be true or false")


# ---------------------------------------------------------------------------------------------
# comparing


@dataclass
class Finding:
    """One compared metric (or one baseline entry that could not be compared)."""

    suite: str
    method: str
    model: str
    metric: str
    status: str
    higher_is_better: Optional[bool] = None
    baseline: Optional[float] = None
    current: Optional[float] = None
    delta: Optional[float] = None  # current - baseline
    worse_by: Optional[float] = None  # > 0: worse in the metric's direction
    allowed: Optional[float] = None
    tolerance: Optional[str] = None
    note: str = ""
    p: Optional[float] = None  # paired test against the baseline's per-unit data (Holm over the entry's metrics)
    significant: Optional[bool] = None  # None: no per-unit data, tolerance-only check

    @property
    def failed(self) -> bool:
        return self.status in FAILING

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"failed": self.failed}


@dataclass
class CheckReport:
    findings: list[Finding]
    checked_entries: int
    skipped_entries: int

    @property
    def failed(self) -> bool:
        return any(f.failed for f in self.findings)

    def failures(self) -> list[Finding]:
        return [f for f in self.findings if f.failed]

    def as_dict(self) -> dict[str, Any]:
        return {"passed": not self.failed, "checked_entries": self.checked_entries,
                "skipped_entries": self.skipped_entries, "findings": [f.as_dict() for f in self.findings]}


def resolve_tolerance(metric: str, file_tols: Mapping[str, Any], cli_tols: Mapping[str, Any]) -> Optional[Tolerance]:
    """CLI ``tolerance.METRIC`` > file ``METRIC`` > CLI ``tolerance`` > file ``*`` > None (exact)."""
    for source, key in ((cli_tols, metric), (file_tols, metric), (cli_tols, DEFAULT_KEY), (file_tols, DEFAULT_KEY)):
        if key in source and source[key] is not None:
            tol = source[key]
            return tol if isinstance(tol, Tolerance) else parse_tolerance(tol, f"tolerance for {metric}")
    return None


def compare(baseline: dict[str, Any], current: Sequence[dict[str, Any]],
            tolerances: Optional[Mapping[str, Any]] = None, *, any_protocol: bool = False,
            current_units: Optional[Mapping[str, Mapping[str, Any]]] = None, alpha: float = 0.05) -> CheckReport:
    """Compare current results (``results.json`` objects) with a baseline object.

    For each baseline entry the newest current run of the same (suite, method, model) and protocol
    hash is used; if only runs under another protocol exist, the entry fails with PROTOCOL CHANGED
    (unless ``any_protocol``). Entries with no current run are reported as "not run" and do not
    fail; if no entry can be compared at all, UsageError (exit 2). Where the baseline entry and the current
    run both carry per-unit data (``current_units``: run id → metric → UnitData), a metric worse beyond its
    tolerance regresses only if the paired difference is also significant (Holm over the entry's metrics).
    """
    cli_tols = dict(tolerances or {})
    file_tols = baseline.get("tolerances") or {}
    findings: list[Finding] = []
    checked = skipped = 0
    for entry in baseline["entries"]:
        s, m, mo = entry["suite"], entry["method"], entry["model"]
        candidates = [r for r in current if (r.get("suite"), r.get("method"), r.get("model")) == (s, m, mo)]
        if not candidates:
            skipped += 1
            findings.append(Finding(s, m, mo, "*", NOT_RUN, note="no current results for this suite/method/model"))
            continue
        checked += 1
        run, note = _run_for_entry(entry, candidates)
        if note and not any_protocol:
            findings.append(Finding(s, m, mo, "*", PROTOCOL, note=note + "; re-write the baseline, or pass "
                                    "protocol=any to compare anyway"))
            continue
        cur_metrics = run.get("metrics") or {}
        from .baseline_units import paired_against_baseline

        paired = paired_against_baseline(entry, (current_units or {}).get(str(run.get("run_id"))), alpha)
        for name, bm in entry["metrics"].items():
            f = Finding(s, m, mo, name, OK, bool(bm.get("higher_is_better", True)), float(bm["value"]), note=note)
            _judge(f, bm, cur_metrics.get(name), resolve_tolerance(name, file_tols, cli_tols), paired.get(name))
            findings.append(f)
        for name, cm in cur_metrics.items():
            if name not in entry["metrics"]:
                findings.append(Finding(s, m, mo, name, NEW, bool(cm.get("higher_is_better", True)),
                                        current=cm.get("value"), note="not in the baseline"))
    if checked == 0:
        wanted = ", ".join(f"{e['suite']}/{e['method']}/{e['model']}" for e in baseline["entries"])
        have = ", ".join(sorted({f"{r.get('suite')}/{r.get('method')}/{r.get('model')}" for r in current})) or "none"
        raise UsageError(f"no current results match the baseline (baseline has {wanted}; current results: {have})")
    return CheckReport(findings, checked, skipped)


def _run_for_entry(entry: dict[str, Any], candidates: list[dict[str, Any]]) -> tuple[dict[str, Any], str]:
    """The newest candidate run under the entry's protocol, with no note; else the newest run of all, with a note
    saying how its protocol differs."""
    candidates = sorted(candidates, key=lambda r: str(r.get("created", "")))
    want = str(entry.get("protocol_hash") or "")
    same = [r for r in candidates if str(r.get("protocol_hash") or "") == want]
    if same:
        return same[-1], ""
    from .protocols import protocol_diff

    run = candidates[-1]
    diff = protocol_diff(entry.get("protocol") or {}, run.get("protocol") or {})
    return run, (f"protocol {want[:12] or '(none)'} → {str(run.get('protocol_hash') or '')[:12] or '(none)'}"
                 + (": " + ", ".join(diff) if diff else ""))


def _judge(f: Finding, bm: Mapping[str, Any], cm: Optional[Mapping[str, Any]], tol: Optional[Tolerance],
           test: Any) -> None:
    """Set ``f``'s status (and current value, delta, allowance, p) from the baseline metric ``bm``, the current one
    ``cm``, the tolerance and the paired test against the baseline's units (None: the tolerance rule alone)."""
    note, base_v = f.note, f.baseline
    f.tolerance = str(tol) if tol else "exact"
    if cm is None or cm.get("value") is None:
        f.status = MISSING_METRIC
        f.note = (note + "; " if note else "") + "metric not in the current results"
        return
    cur_v = float(cm["value"])
    f.current = cur_v
    try:
        f.allowed = tol.allowed(bm) if tol else Tolerance("abs", 0.0).allowed(bm)
    except UsageError as err:
        raise UsageError(f"{f.suite} / {f.method} / {f.metric}: {err} "
                         f"(give it tolerance.{f.metric}=abs:X or rel:Y)") from None
    if math.isnan(base_v) or math.isnan(cur_v):
        f.status = OK if math.isnan(base_v) and math.isnan(cur_v) else REGRESSED
        f.note = (note + "; " if note else "") + ("NaN" if math.isnan(cur_v) else "baseline is NaN")
        return
    f.delta = cur_v - base_v
    f.worse_by = -f.delta if f.higher_is_better else f.delta
    if test is not None and (test.p is None or not test.testable):  # no usable test: the tolerance rule
        f.note = (note + "; " if note else "") + f"no paired test ({test.note or 'not tested'})"
        test = None
    if test is not None:
        f.p, f.significant = test.p_holm, test.significant
    if f.worse_by > f.allowed and test is not None and not (test.significant and test.better == "a"):
        f.status = WITHIN  # worse beyond tolerance, but the paired test does not find the current run worse
        why = (f"not significant (paired p {f.p:.3g})" if not test.significant else
               f"the paired test on the {test.units} shared units finds it significantly better "
               f"(p {f.p:.3g})")
        f.note = (note + "; " if note else "") + f"beyond tolerance but {why}"
    elif f.worse_by > f.allowed:
        f.status = REGRESSED
    elif f.worse_by > 0 and abs(f.delta) > EXACT_REL * abs(base_v):
        f.status = WITHIN
    elif f.worse_by < 0 and abs(f.delta) > EXACT_REL * abs(base_v):
        f.status = BETTER


__all__ = ["Tolerance", "parse_tolerance", "make_baseline", "write_baseline", "load_baseline", "validate_baseline",
           "compare", "CheckReport", "Finding", "RegressionError", "resolve_tolerance", "BASELINE_SCHEMA"]
