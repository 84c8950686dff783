"""The runs an HTML report shows: each stored ``results.json`` with its per-image records.

From a store, records come from :meth:`Store.samples`; from ``results=DIR``, from the ``samples.jsonl`` next to
each ``results.json``. A run without per-image records still shows in the table and the protocols, not in the
gallery.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from ..errors import UsageError
from ..report.table import METHOD_ORDER
from ..store import Store


@dataclass
class RunView:
    """One run as the report shows it: its results object, its per-image records, its column label."""

    results: dict[str, Any]
    samples: list[dict[str, Any]] = field(default_factory=list)
    label: str = ""

    @property
    def run_id(self) -> str:
        return str(self.results["run_id"])

    @property
    def method(self) -> str:
        return str(self.results["method"])


def _samples_files(results_path: str) -> dict[str, Path]:
    """run id → samples.jsonl for every results.json under a run folder / results file / folder of runs."""
    p = Path(results_path).expanduser()
    files = [p] if p.is_file() else [p / "results.json"] if (p / "results.json").is_file() else \
        sorted(p.rglob("results.json"))
    out = {}
    for f in files:
        try:
            run_id = str(json.loads(f.read_text(encoding="utf-8")).get("run_id"))
        except (OSError, ValueError, AttributeError):
            continue
        if (f.parent / "samples.jsonl").is_file():
            out[run_id] = f.parent / "samples.jsonl"
    return out


def gallery_run_id(result: dict[str, Any]) -> str:
    """The run whose images stand for a result: itself, or the first replicate of a pooled group (``seeds=``)."""
    replicates = result.get("replicates") or []
    return str(replicates[0]) if str(result.get("run_id", "")).startswith("group:") and replicates \
        else str(result["run_id"])


def read_samples_jsonl(path: Path) -> list[dict[str, Any]]:
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except ValueError as err:
            raise UsageError(f"{path}:{n}: not a JSON line ({err})") from None
    return out


def order_runs(views: Sequence[RunView], baseline: Optional[str] = None) -> list[RunView]:
    """The report's row order (:data:`mubench.report.METHOD_ORDER`), the baseline's runs first."""
    order = {m: i for i, m in enumerate(METHOD_ORDER)}
    return sorted(views, key=lambda v: (v.method != baseline, order.get(v.method, len(order)), v.method,
                                        str(v.results["model"]), str(v.results.get("created", ""))))


def load_runs(results: Sequence[dict[str, Any]], store: Optional[str] = None,
              results_dir: Optional[str] = None, baseline: Optional[str] = None) -> list[RunView]:
    """A :class:`RunView` per result, with the run's records, labelled by method (and model when several),
    in :func:`order_runs` order."""
    models = {str(r["model"]) for r in results}
    views = []
    if results_dir is not None:
        files = _samples_files(results_dir)
        for r in results:
            f = files.get(gallery_run_id(r))
            views.append(RunView(r, read_samples_jsonl(f) if f else []))
    else:
        with Store(store, create=False) as st:
            views = [RunView(r, st.samples(gallery_run_id(r))) for r in results]
    views = order_runs(views, baseline)
    labels: dict[str, int] = {}
    for v in views:
        base = v.method + (f" · {v.results['model']}" if len(models) > 1 else "")
        labels[base] = labels.get(base, 0) + 1
        v.label = base if labels[base] == 1 else f"{base} ({v.results.get('protocol_hash', '')[:8]})"
    return views
