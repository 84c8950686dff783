"""``mubench run KEY=VALUE... [--json]``."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from ..config import resolve
from ..registry import load_registries

RUN_HELP = """Generate, score and aggregate one (suite, method, model); store and print the results.

\b
Keys (KEY=VALUE):
  suite=NAME|FILE.yaml    suite spec (default micro); suite.KEY=VALUE overrides its parameters
  method=NAME|FILE.yaml   method spec (default sd); method.KEY=VALUE overrides its parameters
  model=NAME              base model (default micro); model.KEY=VALUE (e.g. model.path=/weights/sd15)
  limit=N                 first N prompts of the suite
  batch_size=N            images per batch (results do not depend on it)
  seed=N                  run seed (image j of prompt i: seed from (seed, suite, prompt id, j))
  device=cpu|cuda|auto    dtype=auto|float32|float16|bfloat16
  out=DIR                 write DIR/results.json and DIR/samples.jsonl
  store=PATH              SQLite results store (default $MUBENCH_HOME/store.sqlite)
  cache=DIR               sample/score cache (default $MUBENCH_HOME/cache)
  train=auto|never|force  train a method's missing artifact on demand
  weights=pretrained|random
\b
Re-running the same command resumes: finished images and scores are reused.
Multi-process: accelerate launch --num_processes N [--cpu] -m mubench run ...
"""


def _shard():
    from ..runner import Shard

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Shard()
    from accelerate import PartialState

    state = PartialState()
    return Shard(rank=state.process_index, world=state.num_processes, barrier=state.wait_for_everyone)


def run_command(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print the results object as JSON on stdout and nothing else."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Do not draw progress bars or progress lines."),
) -> None:
    from ..interrupts import Interrupted, exit_code_of, interrupts_raise
    from ..progress import display_mode, progress_display
    from ..quiet import quiet_libraries
    from ..runner import Runner, record_in_store, write_outputs
    from ..warnlog import routed_warnings

    quiet_libraries()
    regs = load_registries()
    cfg = resolve(list(ctx.args), regs)
    shard = _shard()
    runner = None
    with interrupts_raise():
        try:
            with progress_display(display_mode(not no_progress and shard.is_main)) as progress, \
                    routed_warnings(progress.log if shard.is_main else lambda msg: None) as warned:
                runner = Runner(cfg, regs, shard, progress)
                output = runner.execute()
                if output is None:  # not the main process
                    return
                output.results["warnings"] = warned.records
                if cfg.run.out:
                    write_outputs(Path(cfg.run.out).expanduser(), output)
                store_path = record_in_store(cfg.run.store, output)
        except (Interrupted, KeyboardInterrupt) as err:
            kept, total = runner.kept() if runner is not None else (0, 0)
            if total:
                typer.echo(f"interrupted: {kept} of {total} images kept; run the same command to resume", err=True)
            else:
                typer.echo("interrupted before generation started; nothing to keep", err=True)
            raise typer.Exit(exit_code_of(err)) from None
    if as_json:
        sys.stdout.write(json.dumps(output.results, indent=2, sort_keys=True, default=str) + "\n")
        return
    _print_summary(output.results, store_path, cfg.run.out)


def _print_summary(results: dict, store_path: Path, out: Optional[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"{results['suite']} · {results['method']} · {results['model']}")
    for col in ("metric", "value", "95% CI", "n"):
        table.add_column(col, justify="right" if col != "metric" else "left")
    for name, m in results["metrics"].items():
        arrow = "↑" if m["higher_is_better"] else "↓"
        ci = "" if m["ci_low"] is None else f"[{m['ci_low']:.4g}, {m['ci_high']:.4g}]"
        table.add_row(f"{name} {arrow}", f"{m['value']:.4g}", ci, str(m["n"]))
    console.print(table)
    p = results["protocol"]
    s = p["sampler"]
    if "scheduler" in s:
        made = f"{s['scheduler']} {s['steps']} steps, guidance {s['guidance']}, {s['resolution']}px"
    else:
        made = "images made by another tool"
    console.print(f"protocol {results['protocol_hash']}: {made}, {p['n_prompts']} prompts × "
                  f"{p['images_per_prompt']} images, seed {p['seed']}")
    console.print(f"stored in {store_path}" + (f"; results in {out}/results.json" if out else ""))
