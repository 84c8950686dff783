"""``geneval``: GenEval's 553 prompts × 4 images, judged by the official rules (see :mod:`.geneval_rules`).

Protocol (djghosh13/geneval): prompts from ``prompts/evaluation_metadata.jsonl`` (asset
``geneval-metadata``, pinned by sha256); the reference generation script makes 4 images per prompt with
50 steps and guidance 9.0, re-seeding 42 before every prompt and drawing the 4 images in sequence —
mubench draws each image from its own per-image stream instead (so results do not depend on batch
size) and records that. The verdict per image comes from the ``geneval-detector`` scorer (Mask2Former +
CLIP colours), or from an official evaluator's ``results.jsonl`` (:func:`read_results_jsonl`);
metrics: per-task mean of ``correct`` for the six tasks and ``overall`` = mean of the task means.

Folder naming (the reference's): ``<root>/<prompt index:05d>/metadata.jsonl`` (that prompt's JSON) and
``<root>/<prompt index:05d>/samples/<image index:05d>.png``; :func:`export_samples` /
:func:`import_folder`.
"""
from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Union

from ..config import LOCATION_ONLY, to_plain
from ..errors import UsageError
from ..metrics.core import Metric, bootstrap_mean
from ..scorers.geneval_detector import GenEvalDetectorParams
from ..stats.build import mean_units, metric_from_units
from ..stats.units import UnitData
from .base import ImportedImage, PromptItem, SampleRecord, SamplerParams, ScorerUse, Suite
from .geneval_rules import TASKS, summarize

N_PROMPTS = 553


@dataclass
class GenEvalParams:
    # path to evaluation_metadata.jsonl (else the assets folder)
    metadata: Optional[str] = field(default=None, metadata=LOCATION_ONLY)
    images_per_prompt: int = 4
    detector: GenEvalDetectorParams = field(default_factory=GenEvalDetectorParams)
    sampler: SamplerParams = field(default_factory=lambda: SamplerParams(steps=50, guidance=9.0))

    def validate(self) -> None:
        if self.images_per_prompt < 1:
            raise ValueError("images_per_prompt must be >= 1")


def read_jsonl_rows(path: Union[str, Path], what: str, required: tuple[str, ...]) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for each JSON object of a JSON-lines file (blank lines skipped); each must hold
    ``required`` keys. Unreadable files, bad JSON and missing keys are UsageErrors naming the file and line."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise UsageError(f"cannot read {what} {path}: {err.strerror}") from None
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as err:
            raise UsageError(f"{path}:{n}: not JSON ({err})") from None
        if not isinstance(row, dict) or any(k not in row for k in required):
            raise UsageError(f"{path}:{n}: a {what} needs {' and '.join(repr(k) for k in required)}")
        rows.append((n, row))
    return rows


def read_metadata(path: Union[str, Path]) -> list[dict[str, Any]]:
    return [row for _, row in read_jsonl_rows(path, "GenEval prompt", ("tag", "prompt"))]


def metadata_file(override: Optional[str] = None) -> Path:
    from ..assets import require

    return require("geneval-metadata", override)


class GenEvalSuite(Suite):
    Params = GenEvalParams

    def __init__(self, params: GenEvalParams, name: str) -> None:
        super().__init__(params, name)
        self._items: Optional[list[PromptItem]] = None

    def items(self) -> list[PromptItem]:
        if self._items is None:
            rows = read_metadata(metadata_file(self.params.metadata))
            if len(rows) != N_PROMPTS:
                raise UsageError(f"evaluation_metadata.jsonl has {len(rows)} prompts, expected {N_PROMPTS}")
            self._items = [PromptItem(id=f"geneval-{i:05d}", prompt=row["prompt"], meta={**row, "index": i})
                           for i, row in enumerate(rows)]
        return self._items

    def import_images(self, folder: Path, items: list[PromptItem]) -> list[ImportedImage]:
        """GenEval naming: ``folder/<prompt index:05d>/samples/<image:04d>.png``."""
        return import_folder(folder, items)

    def check_assets(self) -> None:
        metadata_file(self.params.metadata)

    def scorers(self) -> dict[str, ScorerUse]:
        return {"geneval": ScorerUse("geneval-detector", to_plain(self.params.detector))}

    def aggregate(self, records: list[SampleRecord]) -> dict[str, Metric]:
        rows = [{"tag": r.item.meta["tag"], "correct": r.scores["geneval"]["correct"], "prompt_id": r.item.id}
                for r in records]
        metrics = metrics_from_rows(rows)
        overall = self.units(records).get("overall")
        if overall is not None:  # its CI: the bootstrap over prompts stratified by task (every task keeps its count)
            metrics["overall"] = metric_from_units(overall, value=metrics["overall"].value)
        return metrics

    def units(self, records: list[SampleRecord]) -> dict[str, UnitData]:
        """Each task's per-image correctness, and ``overall`` as the mean of the task means (strata = tasks)."""
        out: dict[str, UnitData] = {}
        correct = {id(r): float(bool(r.scores["geneval"]["correct"])) for r in records}
        for task in sorted({r.item.meta["tag"] for r in records}, key=lambda t: (t not in TASKS, t)):
            mine = [r for r in records if r.item.meta["tag"] == task]
            out[task] = mean_units(mine, [correct[id(r)] for r in mine])
        if records:
            out["overall"] = mean_units(records, [correct[id(r)] for r in records],
                                        strata=[str(r.item.meta["tag"]) for r in records])
        return out

    def protocol(self) -> dict[str, Any]:
        from ..assets import get_asset

        return {"benchmark": "GenEval", "metadata_sha256": get_asset("geneval-metadata").sha256,
                "images_per_prompt": self.params.images_per_prompt,
                "reference_generation": "50 steps, guidance 9.0, seed 42 re-applied before every prompt, 4 images "
                                        "drawn in sequence (mubench: per-image streams)",
                "summary": "per-task mean of correct; overall = mean of the 6 task means"}


def metrics_from_rows(rows: list[dict[str, Any]]) -> dict[str, Metric]:
    """Per-task metrics (bootstrap CI over prompts where prompt ids are known) and ``overall``."""
    metrics: dict[str, Metric] = {}
    tasks = [t for t in TASKS if any(r["tag"] == t for r in rows)]
    tasks += sorted({r["tag"] for r in rows} - set(tasks))
    for t in tasks:
        mine = [r for r in rows if r["tag"] == t]
        groups = [r["prompt_id"] for r in mine] if all(r.get("prompt_id") is not None for r in mine) else None
        metrics[t] = bootstrap_mean([float(bool(r["correct"])) for r in mine], True, groups=groups)
    summary = summarize(rows)
    if tasks:
        metrics["overall"] = Metric(summary["overall"], None, None, len(rows), True)
    return metrics


# ---------------------------------------------------------------------------------------------------
# the official evaluator's output and folder layout


def read_results_jsonl(path: Union[str, Path]) -> list[dict[str, Any]]:
    """Rows of the official ``results.jsonl`` (filename, tag, prompt, correct, reason, metadata, details)."""
    rows = []
    for n, row in read_jsonl_rows(path, "GenEval result", ("tag", "correct")):
        if not isinstance(row["correct"], bool):
            raise UsageError(f"{path}:{n}: 'correct' must be true or false, got {row['correct']!r}")
        m = re.search(r"(\d{5})[/\\]samples[/\\](\d+)\.png$", str(row.get("filename", "")))
        row["prompt_id"] = f"geneval-{int(m.group(1)):05d}" if m else None
        row["image_index"] = int(m.group(2)) if m else None
        rows.append(row)
    if not rows:
        raise UsageError(f"{path}: no results")
    return rows


def summary_from_results(path: Union[str, Path]) -> dict[str, Metric]:
    """What ``mubench score suite=geneval results=FILE`` reports: the official summary as metrics."""
    return metrics_from_rows(read_results_jsonl(path))


def export_samples(records: Iterable[SampleRecord], root: Union[str, Path], overwrite: bool = False) -> list[Path]:
    """Write the reference layout: ``<root>/<i:05d>/metadata.jsonl`` + ``samples/<j:05d>.png``."""
    root = Path(root)
    written = []
    for r in records:
        i = r.item.meta.get("index")
        if i is None:
            raise UsageError(f"sample of prompt {r.item.id} has no index: not a geneval sample")
        folder = root / f"{i:05d}"
        (folder / "samples").mkdir(parents=True, exist_ok=True)
        meta = {k: v for k, v in r.item.meta.items() if k != "index"}
        (folder / "metadata.jsonl").write_text(json.dumps(meta) + "\n")
        dest = folder / "samples" / f"{r.image_index:05d}.png"
        if dest.exists() and not overwrite:
            raise UsageError(f"{dest} exists (pass overwrite=True)")
        shutil.copyfile(r.path, dest)
        written.append(dest)
    return written


def import_folder(root: Union[str, Path], items: list[PromptItem]) -> list[ImportedImage]:
    """Map a GenEval image folder to this suite's prompts; each folder's metadata must match its prompt."""
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"{root} is not a folder")
    by_index = {it.meta["index"]: it for it in items}
    out = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and p.name.isdigit()):
        i = int(folder.name)
        if i not in by_index:
            raise UsageError(f"{folder}: prompt index {i} is outside the {len(items)} GenEval prompts")
        meta_path = folder / "metadata.jsonl"
        if meta_path.is_file():
            meta = json.loads(meta_path.read_text().strip().splitlines()[0])
            if meta.get("prompt") != by_index[i].prompt:
                raise UsageError(f"{meta_path}: prompt {meta.get('prompt')!r} is not prompt {i} "
                                 f"({by_index[i].prompt!r})")
        for img in sorted((folder / "samples").glob("*.png")):
            if re.fullmatch(r"\d+\.png", img.name):  # skips grid.png and other stray files
                out.append(ImportedImage(by_index[i], int(img.stem), img))
    if not out:
        raise UsageError(f"no <index>/samples/<n>.png images under {root}")
    return out
