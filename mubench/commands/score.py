"""``mubench score suite=S images=DIR`` — score images made by another tool; ``results=FILE`` imports a reference
evaluator's per-image output (GenEval's ``results.jsonl``)."""
from __future__ import annotations

import json
import sys
import uuid
import warnings
from datetime import datetime, timezone
from pathlib import Path

import typer

from ..config import MismatchWarning, parse_overrides, resolve, stable_hash
from ..errors import UsageError
from ..pathcheck import check_run_paths
from ..registry import load_registries

SCORE_HELP = """Score an existing folder of images in the suite's naming convention (no model, no generation).

\b
  mubench score suite=compbench images=DIR        T2I-CompBench folder naming ({prompt}_{k:06d}.png)
  mubench score suite=geneval images=DIR          GenEval folder naming (NNNNN/samples/NNNN.png)
  mubench score suite=geneval results=FILE --json the official evaluator's results.jsonl -> its summary
  mubench score suite=S images=DIR                other suites: DIR/<prompt id>/<image index>.png
\b
Extra keys: label=NAME (the method column in reports; default external:<folder>), out=DIR, store=PATH,
cache=DIR, limit=N, device=..., suite.KEY=VALUE.
"""

OWN_KEYS = ("images", "results", "label")


def score_command(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print the results object as JSON on stdout and nothing else."),
) -> None:
    from ..quiet import quiet_libraries

    quiet_libraries()
    own, rest = {}, []
    for arg in ctx.args:
        key = arg.partition("=")[0]
        if key in OWN_KEYS:
            own.update(parse_overrides([arg]))
        else:
            rest.append(arg)
    if ("images" in own) == ("results" in own):
        raise UsageError("give exactly one of images=DIR (score a folder) or results=FILE (import evaluator output)")
    _check_input(own)
    regs = load_registries()
    with warnings.catch_warnings():  # model/method are not used when scoring a folder: no suite/model mismatch
        warnings.simplefilter("ignore", MismatchWarning)
        cfg = resolve(rest + ["method=sd", "model=tiny-sd"], regs, check_run=check_run_paths)
    # the heavy imports after the input is checked: bad input is told at once
    from ..outputs import RunOutput, record_in_store, write_outputs
    from ..provenance import package_versions
    from ..runner import Runner
    from ..warnlog import routed_warnings

    with routed_warnings() as warned:  # one line per kind on stderr, and kept in results.json as a run keeps them
        if "results" in own:
            output = RunOutput(_imported_results(cfg, Path(str(own["results"])), package_versions()))
        else:
            folder = Path(str(own["images"])).expanduser()
            label = str(own.get("label") or f"external:{folder.resolve().name}")
            output = Runner(cfg, regs).execute_external(folder, label)
    output.results["warnings"] = warned.records
    output.results["config"] = {"suite": cfg.suite.as_dict(), "score": {k: str(v) for k, v in own.items()}}
    if cfg.run.out:
        write_outputs(Path(cfg.run.out).expanduser(), output)
    store_path = record_in_store(cfg.run.store, output)
    if as_json:
        sys.stdout.write(json.dumps(output.results, indent=2, sort_keys=True, default=str) + "\n")
        return
    from .run import _print_summary

    _print_summary(output.results, store_path, cfg.run.out)


def _check_input(own: dict) -> None:
    """``images=`` must be a folder and ``results=`` a file, told before torch is imported."""
    if "images" in own and not Path(str(own["images"])).expanduser().is_dir():
        raise UsageError(f"images={own['images']}: no such folder")
    if "results" in own and not Path(str(own["results"])).expanduser().is_file():
        raise UsageError(f"results={own['results']}: no such file")


def _imported_results(cfg, path: Path, versions: dict) -> dict:
    """A reference evaluator's per-image results → a results object (only suites that support it)."""
    if cfg.suite.kind != "geneval":
        raise UsageError(f"results=FILE import is supported for suite kind 'geneval', not {cfg.suite.kind!r}")
    from ..suites.geneval import summary_from_results

    metrics = summary_from_results(path)
    protocol = {"suite": cfg.suite.name, "source": "official GenEval evaluator results.jsonl", "file": path.name,
                "sampler": {"external": True}, "images_per_prompt": None,
                "n_prompts": None, "seed": None, "scorers": {"geneval-official": {"version": "imported"}}}
    return {
        "schema": "mubench.results/1", "run_id": uuid.uuid4().hex,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "suite": cfg.suite.name, "method": f"imported:{path.parent.name or path.stem}", "model": "external",
        "metrics": {k: m.as_dict() for k, m in metrics.items()}, "protocol": protocol,
        "protocol_hash": stable_hash(protocol), "method_info": {}, "versions": versions, "git": None, "timing": {},
    }
