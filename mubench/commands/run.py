"""``mubench run KEY=VALUE... [--json]``."""
from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path
from typing import Optional

import typer

from ..config import resolve
from ..pathcheck import check_run_paths
from ..registry import load_registries

RUN_HELP = """Generate, score and aggregate one (suite, method, model); store and print the results.

\b
Keys (KEY=VALUE):
  suite=NAME|FILE.yaml    suite spec (default micro); suite.KEY=VALUE overrides its parameters
  method=NAME|FILE.yaml   method spec (default sd); method.KEY=VALUE overrides its parameters
  model=NAME              base model (default: the suite's, micro for suite=micro); model.KEY=VALUE
                          (e.g. model.path=/weights/sd15)
  limit=N                 first N prompts of the suite
  chunk=N                 images per denoiser/decoder call, the last chunk padded (default
                          8 on a CPU, 32 on a GPU); part of the protocol: images depend on it
                          at the 1e-6 level, never on batch_size or the number of processes
  batch_size=N            images held at once, in whole chunks (results do not depend on it)
  seed=N                  run seed (image j of prompt i: seed from (seed, suite, prompt id, j))
  seeds=0,1,2             replicates: one run per seed, stored as one replicate group that
                          report and compare pool (CIs then hold prompt and seed variation)
  device=cpu|cuda|auto    dtype=auto|float32|float16|bfloat16
  out=DIR                 write DIR/results.json and DIR/samples.jsonl
  store=PATH              SQLite results store (default $MUBENCH_HOME/store.sqlite)
  cache=DIR               sample/score cache (default $MUBENCH_HOME/cache)
  train=auto|never|force  train a method's missing artifact on demand
  weights=pretrained|random
  compile=MODE            none|default|reduce-overhead|max-autotune: torch.compile the
                          denoiser (reduce-overhead: CUDA graphs); off by default;
                          part of the protocol when on
\b
Re-running the same command resumes: finished images and scores are reused.
Multi-process: accelerate launch --num_processes N -m mubench run ... (GPUs);
torchrun --standalone --nproc_per_node N -m mubench run ... (CPUs)
"""


def _shard():
    from ..runner import Shard

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Shard()
    import torch
    from accelerate import PartialState

    # without cpu=True accelerate sees no distributed setup on a machine without CUDA and every process ran the
    # whole run (torchrun) or one process ran alone (accelerate launch --cpu)
    state = PartialState(cpu=not torch.cuda.is_available())
    return Shard(rank=state.process_index, world=state.num_processes, barrier=state.wait_for_everyone)


def run_command(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print the results object as JSON on stdout and nothing else."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Do not draw progress bars or progress lines."),
) -> None:
    """Ctrl-C / SIGTERM: say how many images are kept (they are durable) and exit 128 + signal."""
    from ..interrupts import Interrupted, exit_code_of, interrupts_raise

    runners: list = []  # the runners started, so an interrupt can say what the last one kept
    with interrupts_raise():
        try:
            _run_command(ctx, as_json, no_progress, runners)
        except (Interrupted, KeyboardInterrupt) as err:
            typer.echo(f"interrupted: {_kept(runners)}", err=True)
            raise typer.Exit(exit_code_of(err)) from None
        except OSError:  # a full disk mid-run: what is finished is kept, as after an interrupt
            if runners and runners[-1].kept()[1]:
                typer.echo(f"mubench: {_kept(runners)}", err=True)
            raise


def _kept(runners: list) -> str:
    """What an interrupted run keeps: its finished images, or (before generation) its training checkpoints."""
    kept, total = runners[-1].kept() if runners else (0, 0)
    if total:
        return f"{kept} of {total} images kept; run the same command to resume"
    return ("before generation started: no image to keep (an on-demand training keeps its checkpoints and resumes "
            "from the last one); run the same command to resume")


def _run_command(ctx: typer.Context, as_json: bool, no_progress: bool, runners: list) -> None:
    from ..quiet import quiet_libraries

    quiet_libraries()
    regs = load_registries()
    args, seeds = split_seeds(list(ctx.args))
    # every run's configuration before anything heavy is imported: bad input is told in a fraction of a second
    cfgs = [resolve(args if seeds is None else args + [f"seed={seed}"], regs, check_run=check_run_paths)
            for seed in (seeds or [None])]
    shard = _shard()
    from ..progress import display_mode

    show = display_mode(not no_progress and shard.is_main)
    if seeds is None:
        _run_one(cfgs[0], regs, shard, show, as_json, runners=runners)
        return
    group = uuid.uuid4().hex[:16]
    outputs = []
    for k, (seed, cfg) in enumerate(zip(seeds, cfgs)):
        if cfg.run.out:
            cfg.run.out = str(Path(cfg.run.out).expanduser() / f"seed-{seed}")
        replicate = {"group": group, "seeds": seeds, "index": k}
        outputs.append(_run_one(cfg, regs, shard, show, as_json=False, replicate=replicate, quiet=as_json,
                                runners=runners))
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


def _run_one(cfg, regs, shard, show: str, as_json: bool, replicate: Optional[dict] = None, quiet: bool = False,
             runners: Optional[list] = None):
    """One run; ``show`` is the progress display mode (bars, lines, off); warnings become one line each."""
    from ..progress import progress_display
    from ..outputs import record_in_store, write_outputs
    from ..runner import Runner
    from ..warnlog import routed_warnings

    with progress_display(show) as progress, \
            routed_warnings(progress.log if shard.is_main else lambda msg: None) as warned:
        runner = Runner(cfg, regs, shard, progress)
        if runners is not None:
            runners.append(runner)
        output = runner.execute()
        if output is None:  # not the main process
            return None
        output.results["warnings"] = warned.records
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
        made += f", chunk {s['chunk']}" if "chunk" in s else ""
        made += f", torch.compile {s['compile']}" if "compile" in s else ""
    else:
        made = "images made by another tool"
    console.print(f"protocol {results['protocol_hash']}: {made}, {p['n_prompts']} prompts × "
                  f"{p['images_per_prompt']} images, seed {p['seed']}")
    if store_path is not None:
        console.print(f"stored in {store_path}" + (f"; results in {out}/results.json" if out else ""))
