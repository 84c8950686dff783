"""Write the HTML report folder: ``index.html``, ``report.css``, ``report.js``, ``gallery-data.js``, ``images/``
and the marker ``.mubench-report``.

The page is rendered with jinja2 from ``templates/index.html.j2``; it needs no server, network or CDN. Without
JavaScript the table, the protocols, the "where they differ" lists and the first gallery page are plain HTML;
with it, ``report.js`` pages through every gallery row (held in ``gallery-data.js``, a script so that it loads
from ``file://``) and filters by category and pass/fail.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional, Sequence

import jinja2

from ..errors import UsageError
from ..fsutil import atomic_write_bytes, atomic_write_text
from ..report import Table
from .gallery import DifferPlan, column_counts, differ_plan, differ_sections, gallery_rows, rule_field, run_model
from .images import ImageFolder
from .runs import RunView
from .table import table_context

TEMPLATES = Path(__file__).parent / "templates"
STATIC = ("report.css", "report.js")
#: The file that marks a folder as a mubench HTML report: ``report --html`` writes over such a folder, and refuses
#: any other non-empty one (its files would be overwritten).
MARKER = ".mubench-report"
MARKER_TEXT = ("This folder is a mubench HTML report (mubench report --html). `mubench report --html out=` writes\n"
               "over a folder holding this file and refuses any other non-empty folder.\n")


@dataclass
class HtmlOptions:
    """What the page shows beyond the table (the ``report --html`` keys)."""

    baseline: Optional[str] = None  # method the "where they differ" lists compare against
    differ_by: Optional[str] = None  # per-image metric SCORER.FIELD (default: oracle.correct, else clip.clip, ...)
    top: int = 12  # wins and losses shown per method
    page_size: int = 50  # gallery rows per page
    masks_dir: Optional[Path] = None  # where `mubench masks` wrote masks-<method>-<model>/ (default: cwd)
    source: str = ""


def _flat(d: Any, prefix: str = "") -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if isinstance(d, dict):
        for k, v in d.items():
            out.extend(_flat(v, f"{prefix}{k}."))
    else:
        text = ",".join(map(str, d)) if isinstance(d, (list, tuple)) else str(d)
        out.append((prefix[:-1], text if len(text) <= 200 else text[:200] + "…"))
    return out


def protocol_rows(view: RunView) -> dict[str, Any]:
    r = view.results
    facts = _flat(r.get("protocol") or {}, "")
    facts += [(f"versions.{k}", v) for k, v in _flat(r.get("versions") or {})]
    facts += [("git", str(r.get("git") or "(not a git checkout)")), ("protocol_hash", str(r.get("protocol_hash")))]
    facts += [(f"method_info.{k}", v) for k, v in _flat(r.get("method_info") or {})]
    return {"label": view.label, "run_id": view.run_id, "suite": r.get("suite"), "model": r.get("model"),
            "created": r.get("created"), "facts": facts}


def mask_plots(views: Sequence[RunView], images: ImageFolder, masks_dir: Optional[Path]) -> list[dict[str, Any]]:
    root = masks_dir or Path.cwd()
    out, seen = [], set()
    for v in views:
        folder = root / f"masks-{v.method}-{v.results['model']}"
        if folder in seen or not folder.is_dir():
            continue
        seen.add(folder)
        pngs = sorted(folder.glob("mask_ratio_*.png"))
        if pngs:
            out.append({"label": f"{v.method} on {v.results['model']}", "folder": str(folder),
                        "plots": [images.add_file(p, f"{folder.name}-{p.name}") for p in pngs]})
    return out


def check_out_folder(out: Path) -> None:
    """Refuse an ``out`` whose files a report would overwrite: a file, or a non-empty folder without the
    :data:`MARKER` of an earlier report. A new folder, an empty one or an earlier report is fine."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"out={out} is a file; --html writes a folder (index.html and its images)")
    try:
        foreign = out.is_dir() and not (out / MARKER).is_file() and not _older_report(out) and any(out.iterdir())
    except OSError as err:
        raise UsageError(f"out={out}: cannot read the folder ({err.strerror or err})") from None
    if foreign:
        raise UsageError(f"out={out} is a folder that is not empty and not an earlier mubench HTML report (it has "
                         f"no {MARKER} file); --html would overwrite its files (index.html, images/...): "
                         "give out= a new or empty folder")


def _older_report(out: Path) -> bool:
    """A report written before the marker existed: its index.html and gallery-data.js, with the page's title."""
    index = out / "index.html"
    try:
        return ((out / "gallery-data.js").is_file() and index.is_file()
                and "<title>mubench report</title>" in index.read_text(encoding="utf-8", errors="replace")[:2000])
    except OSError:
        return False


@dataclass
class _Suite:
    """One gallery, checked: its runs with per-image records and (with ``baseline=``) its differ plan."""

    gid: str
    suite: str
    views: list[RunView]
    plan: Optional[DifferPlan]


def _plan(views: Sequence[RunView], options: HtmlOptions) -> list[_Suite]:
    """Every check the views can fail (baseline, differ_by), before the folder is created or an image copied."""
    out = []
    for n, suite in enumerate(sorted({str(v.results["suite"]) for v in views})):
        with_samples = [v for v in views if str(v.results["suite"]) == suite and v.samples]
        if not with_samples:
            continue
        plan = None
        if options.baseline and any(v.method == options.baseline for v in with_samples):
            plan = differ_plan(with_samples, options.baseline, options.differ_by)
        out.append(_Suite(f"g{n}", suite, with_samples, plan))
    if options.baseline and not any(s.plan and s.plan.pairs for s in out):
        raise UsageError(f"baseline={options.baseline!r}: no run of that method with per-image records next to "
                         "another run of the same model; methods here: "
                         f"{', '.join(sorted({v.method for v in views}))}")
    return out


def write_html_report(out: Path, table: Table, views: Sequence[RunView], options: HtmlOptions) -> Path:
    """Write the report folder; returns the path of ``index.html``.

    Every check comes first (:func:`check_out_folder`, :func:`_plan`): a refused report leaves ``out`` untouched.
    Text files are written atomically in UTF-8, ``index.html`` last, so a failure keeps the earlier page whole.
    """
    check_out_folder(out)
    suites = _plan(views, options)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / MARKER, MARKER_TEXT)
    images = ImageFolder(out)
    galleries, data = [], {}
    for s in suites:
        rule = rule_field(s.views)
        rows = gallery_rows(s.views, images, rule)
        differ = differ_sections(s.plan, images, options.top) if s.plan else []
        columns = [v.label for v in s.views]
        galleries.append({"id": s.gid, "suite": s.suite, "columns": columns, "rule": rule,
                          "categories": sorted({r["category"] for r in rows}), "n_rows": len(rows),
                          "counts": list(zip(columns, column_counts(s.views))),
                          "models": sorted({run_model(v) for v in s.views}),
                          "skipped": s.plan.skipped if s.plan and differ else [],
                          "first": rows[:options.page_size], "differ": differ,
                          "differ_metric": s.plan.metric if s.plan else ""})
        data[s.gid] = {"columns": columns, "rows": rows}
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES), encoding="utf-8"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    html = env.get_template("index.html.j2").render(
        table=table_context(table), galleries=galleries, options=options, page_size=options.page_size,
        protocols=[protocol_rows(v) for v in views], masks=mask_plots(views, images, options.masks_dir),
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    for name in STATIC:
        atomic_write_bytes(out / name, (TEMPLATES / name).read_bytes())
    payload = json.dumps({"pageSize": options.page_size, "galleries": data}, separators=(",", ":"))
    atomic_write_text(out / "gallery-data.js", "window.MUBENCH_GALLERY = " + payload.replace("</", "<\\/") + ";\n")
    return atomic_write_text(out / "index.html", html)
