"""Write the HTML report folder: ``index.html``, ``report.css``, ``report.js``, ``gallery-data.js``, ``images/``.

The page is rendered with jinja2 from ``templates/index.html.j2``; it needs no server, network or CDN. Without
JavaScript the table, the protocols, the "where they differ" lists and the first gallery page are plain HTML;
with it, ``report.js`` pages through every gallery row (held in ``gallery-data.js``, a script so that it loads
from ``file://``) and filters by category and pass/fail.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional, Sequence

import jinja2

from ..report import Table
from .gallery import differ_sections, gallery_rows, rule_field
from .images import ImageFolder
from .runs import RunView
from .table import table_context

TEMPLATES = Path(__file__).parent / "templates"
STATIC = ("report.css", "report.js")


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


def write_html_report(out: Path, table: Table, views: Sequence[RunView], options: HtmlOptions) -> Path:
    """Write the report folder; returns the path of ``index.html``."""
    out.mkdir(parents=True, exist_ok=True)
    images = ImageFolder(out)
    suites = sorted({str(v.results["suite"]) for v in views})
    galleries, data = [], {}
    for n, suite in enumerate(suites):
        sv = [v for v in views if v.results["suite"] == suite]
        with_samples = [v for v in sv if v.samples]
        if not with_samples:
            continue
        rule = rule_field(with_samples)
        rows = gallery_rows(with_samples, images, rule)
        differ_metric, differ = "", []
        if options.baseline and any(v.method == options.baseline for v in with_samples):
            differ_metric, differ = differ_sections(with_samples, options.baseline, options.differ_by, images,
                                                    options.top)
        gid = f"g{n}"
        galleries.append({"id": gid, "suite": suite, "columns": [v.label for v in with_samples], "rule": rule,
                          "categories": sorted({r["category"] for r in rows}), "n_rows": len(rows),
                          "first": rows[:options.page_size], "differ": differ, "differ_metric": differ_metric})
        data[gid] = {"columns": [v.label for v in with_samples], "rows": rows}
    if options.baseline and not any(g["differ"] for g in galleries):
        from ..errors import UsageError

        raise UsageError(f"baseline={options.baseline!r}: no run of that method with per-image records next to "
                         f"another; methods here: {', '.join(sorted({v.method for v in views}))}")
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    html = env.get_template("index.html.j2").render(
        table=table_context(table), galleries=galleries, options=options, page_size=options.page_size,
        protocols=[protocol_rows(v) for v in views], masks=mask_plots(views, images, options.masks_dir),
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    for name in STATIC:
        shutil.copyfile(TEMPLATES / name, out / name)
    payload = json.dumps({"pageSize": options.page_size, "galleries": data}, separators=(",", ":"))
    (out / "gallery-data.js").write_text("window.MUBENCH_GALLERY = " + payload.replace("</", "<\\/") + ";\n")
    index = out / "index.html"
    index.write_text(html)
    return index
