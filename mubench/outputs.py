"""What a run leaves behind: ``results.json``, ``samples.jsonl``, ``units.npz`` in ``out=``, and the store's rows."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .fsutil import atomic_write_bytes, atomic_write_text
from .store import Store, default_store_path
from .suites.base import SampleRecord


@dataclass
class RunOutput:
    results: dict[str, Any]
    samples: list[dict[str, Any]] = field(default_factory=list)
    units: dict[str, Any] = field(default_factory=dict)  # metric -> UnitData (per-unit data behind the metric)


def sample_row(record: SampleRecord) -> dict[str, Any]:
    """One line of samples.jsonl: ids, seed, file, sha256 and the per-image scalar scores."""
    path = Path(record.path)
    scores = {name: {k: v for k, v in res.items() if not hasattr(v, "shape")} for name, res in record.scores.items()}
    return {"prompt_id": record.item.id, "image_index": record.image_index, "seed": record.seed,
            "prompt": record.item.prompt if isinstance(record.item.prompt, (str, int)) else str(record.item.prompt),
            "key": record.key, "path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "scores": scores}


def write_outputs(out_dir: Path, output: RunOutput) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps(s, sort_keys=True, default=str) + "\n" for s in output.samples)
    atomic_write_text(out_dir / "samples.jsonl", lines)
    if output.units:
        from .selection import UNITS_FILE, units_file_bytes

        atomic_write_bytes(out_dir / UNITS_FILE, units_file_bytes(output.units))
    # in the order the suite gives its metrics (a table's column order, as the store keeps it), so not sorted
    atomic_write_text(out_dir / "results.json", json.dumps(output.results, indent=2, default=str) + "\n")


def record_in_store(store_path: Optional[str], output: RunOutput) -> Path:
    path = Path(store_path).expanduser() if store_path else default_store_path()
    with Store(path) as store:
        store.record_run(output.results, output.samples, output.units)
    return path
