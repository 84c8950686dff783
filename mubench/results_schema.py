"""The shape every ``results.json`` object must have before it is stored, reported or checked."""
from __future__ import annotations

from typing import Any

from .errors import UsageError

RESULTS_SCHEMA = "mubench.results/1"


def validate_results(results: Any) -> None:
    if not isinstance(results, dict):
        raise UsageError(f"a results object must be a dict, got {type(results).__name__}")
    missing = [k for k in ("run_id", "suite", "method", "model") if not results.get(k)]
    if missing:
        raise UsageError(f"results object lacks {', '.join(missing)}")
    metrics = results.get("metrics") or {}
    if not isinstance(metrics, dict):
        raise UsageError("results 'metrics' must map metric names to {value, ci_low, ci_high, n, higher_is_better}")
    for name, m in metrics.items():
        if not isinstance(m, dict) or "value" not in m:
            raise UsageError(f"results metric {name!r} must be a dict with a 'value'")
        value = m["value"]
        if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)):
            raise UsageError(f"results metric {name!r}: value {value!r} is not a number")


__all__ = ["RESULTS_SCHEMA", "validate_results"]
