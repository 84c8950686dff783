"""``mubench run KEY=VALUE... [--json]``."""
from __future__ import annotations

import json
import os
import sys
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

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
  seeds=0,1,2             replicates: one run per seed, stored as one replicate group that
                          report and compare pool (CIs then hold prompt and seed variation)
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


@contextmanager
def _progress_bars(enabled: bool) -> Iterator[object]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    from ..runner import Progress

    if not enabled:
        yield Progress()
        return
    console = Console(stderr=True)
    bars = RichProgress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False)
    tasks: dict[str, int] = {}

    def start(stage: str, total: int) -> None:
        tasks[stage] = bars.add_task(stage, total=max(total, 0))

    def advance(stage: str, n: int) -> None:
        bars.advance(tasks[stage], n)

    with bars:
        yield Progress(start=start, advance=advance, log=lambda msg: console.print(msg))


def run_command(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print the results object as JSON on stdout and nothing else."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Do not draw progress bars."),
) -> None:
    from ..quiet import quiet_libraries

    quiet_libraries()
    regs = load_registries()
    args, seeds = split_seeds(list(ctx.args))
    shard = _shard()
    show = not no_progress and shard.is_main and sys.stderr.isatty()
    if seeds is None:
        _run_one(resolve(args, regs), regs, shard, show, as_json)
        return
    group = uuid.uuid4().hex[:16]
    outputs = []
    for k, seed in enumerate(seeds):
        cfg = resolve(args + [f"seed={seed}"], regs)
        if cfg.run.out:
            cfg.run.out = str(Path(cfg.run.out).expanduser() / f"seed-{seed}")
        replicate = {"group": group, "seeds": seeds, "index": k}
        outputs.append(_run_one(cfg, regs, shard, show, as_json=False, replicate=replicate, quiet=as_json))
    if shard.is_main and as_json:
        sys.stdout.write(json.dumps([o.results for o in outputs], indent=2, sort_keys=True, default=str) + "\n")
    elif shard.is_main:
        from ..selection import pooled_result

        pooled, _ = pooled_result([o.results for o in outputs], [o.units for o in outputs])
        pooled["protocol_hash"] = f"{pooled['protocol_hash']} (replicate group {group}, {len(seeds)} runs)"
        _print_summary(pooled, Path(cfg.run.store or "") if cfg.run.store else None, None)


def split_seeds(args: list[str]) -> tuple[list[str], Optional[list[int]]]:
    """``seeds=0,1,2`` taken out of the arguments (with ``seed=`` it is an error)."""
    from ..errors import UsageError

    rest, seeds = [], None
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and key.strip() == "seeds":
            try:
                seeds = [int(v) for v in value.split(",") if v.strip()]
            except ValueError:
                raise UsageError(f"bad value seeds={value!r}; expected integers separated by commas, e.g. seeds=0,1,2")\
                    from None
            if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
                raise UsageError(f"bad value seeds={value!r}; expected distinct non-negative integers, e.g. seeds=0,1,2")
        else:
            rest.append(arg)
    if seeds is not None and any(a.partition("=")[0].strip() == "seed" for a in rest):
        raise UsageError("pass seed=N or seeds=A,B,..., not both")
    return rest, seeds


def _run_one(cfg, regs, shard, show: bool, as_json: bool, replicate: Optional[dict] = None, quiet: bool = False):
    from ..runner import Runner, record_in_store, write_outputs

    with _progress_bars(show) as progress:
        output = Runner(cfg, regs, shard, progress).execute()
    if output is None:  # not the main process
        return None
    if replicate is not None:
        output.results["replicate"] = replicate
    if cfg.run.out:
        write_outputs(Path(cfg.run.out).expanduser(), output)
        _write_contact_sheet(Path(cfg.run.out).expanduser(), output.results, output.samples)
    store_path = record_in_store(cfg.run.store, output)
    if as_json:
        sys.stdout.write(json.dumps(output.results, indent=2, sort_keys=True, default=str) + "\n")
    elif not quiet:
        _print_summary(output.results, store_path, cfg.run.out)
    return output


def _write_contact_sheet(out: Path, results: dict, samples: list) -> None:
    """``out/contact.png``: the run's first images with their prompts (runs that made no images have none)."""
    if not samples:
        return
    from ..htmlreport.contact import contact_sheet

    contact_sheet(samples, out / "contact.png",
                  title=f"{results['suite']} · {results['method']} · {results['model']} · run {results['run_id'][:12]}")


def _print_summary(results: dict, store_path: Optional[Path], out: Optional[str]) -> None:
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
    if store_path is not None:
        console.print(f"stored in {store_path}" + (f"; results in {out}/results.json" if out else ""))
