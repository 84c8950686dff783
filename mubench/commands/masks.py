"""``mubench masks method=maskunet model=X [suite=S limit=N] [out=DIR] [KEY=VALUE...] [--json]``.

Samples the first ``limit`` prompts of a suite with a masking method (training its artifact on demand like
``mubench run``), records the mask of every masked layer at every denoising step
(:class:`mubench.methods.mask_stats.MaskRecorder`) and writes to ``out`` (default ``masks-<method>-<model>``):

- ``masks.json``: per-layer mask ratios (fraction of weights zeroed; mean and spread over denoiser rows), per-step
  ratios with their timesteps, the overall ratio, and the run's method, model, suite, sampler and seeds;
- ``mask_ratio_per_layer.png``: the per-layer bar chart (the paper's supplementary Fig. 2b);
- ``mask_ratio_per_timestep.png``: the ratio against the timestep, all masked weights and per block.

Images are sampled one per denoiser call (``chunk`` 1, recorded in ``masks.json``): a padded chunk would add its
padding rows' masks to the statistics. ``chunk=`` other than 1 is refused rather than ignored.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

MASKS_HELP = """Record and plot per-layer and per-timestep mask ratios of a masking method (maskunet, maskunet-free).

\b
Keys (KEY=VALUE), as `mubench run`:
  method=NAME  (default maskunet)   model=NAME (default micro)   suite=NAME (default micro)
  limit=N      prompts to sample (default 16)   seed=N   batch_size=N   device=...   dtype=...
  train=auto|never|force   cache=DIR   weights=pretrained|random   (one image per denoiser call: chunk 1)
  out=DIR      where masks.json and the two PNG plots go (default masks-<method>-<model>)
"""


def record_masks(args: list[str], show_progress: bool = False) -> dict[str, Any]:
    """Resolve the args, sample, record, write the files; returns the masks.json object (plus ``files``)."""
    from ..config import resolve, to_plain
    from ..errors import UsageError
    from ..fsutil import atomic_write_text
    from ..pathcheck import PathNeed, check_path
    from ..registry import load_registries

    regs = load_registries()

    def check_out(run) -> None:  # a given out= is checked before the plug-ins import torch
        if run.out:
            check_path(PathNeed("out", Path(run.out).expanduser(), folder=True))

    cfg = resolve(list(args), regs, defaults={"method": "maskunet", "limit": 16}, check_run=check_out)
    if cfg.run.chunk not in (None, 1):
        raise UsageError(f"chunk={cfg.run.chunk}: masks samples one image per denoiser call (chunk 1), so that no "
                         "padding row's mask enters the statistics; leave chunk= out")
    out = Path(cfg.run.out or f"masks-{cfg.method.name}-{cfg.model.name}").expanduser()
    check_path(PathNeed("out", out, folder=True))  # before the model loads and the images are made
    from ..methods.mask_stats import MaskRecorder, plot_layer_ratios, plot_timestep_ratios  # heavy: after the checks
    from ..runner import Runner
    from ..sampler import make_scheduler, resolve_sampler, sample_images

    runner = Runner(cfg, regs)
    items = runner.items()
    bundle = runner.load_model()
    prepared = runner.prepare(bundle)
    sampler = resolve_sampler(bundle, getattr(runner.suite.params, "sampler", None),
                              getattr(prepared, "sampler_overrides", None), chunk=1)
    recorder = MaskRecorder(prepared, cfg.method.name)
    planned = runner.plan(bundle, prepared, sampler, items)
    bs = cfg.run.batch_size
    for start in range(0, len(planned), bs):
        batch = planned[start:start + bs]
        recorder.new_trajectory()
        sample_images(bundle, prepared, [p.item.prompt for p in batch], [p.seed for p in batch], sampler,
                      step_callback=recorder.next_step)
    scheduler = make_scheduler(sampler.scheduler, bundle.scheduler_config)
    scheduler.set_timesteps(sampler.steps)
    stats = recorder.summary([int(t) for t in scheduler.timesteps])
    out.mkdir(parents=True, exist_ok=True)
    report = {"method": cfg.method.name, "model": cfg.model.name, "suite": cfg.suite.name,
              "n_images": len(planned), "seeds": [p.seed for p in planned],
              "sampler": {**sampler.as_dict(), "chunk": sampler.chunk},
              "method_info": to_plain(prepared.info), "artifact": prepared.artifact, **stats}
    title = f"{cfg.method.name} on {cfg.model.name}: {len(planned)} images, {sampler.scheduler} {sampler.steps} steps"
    files = {"json": str(out / "masks.json"),
             "per_layer": str(plot_layer_ratios(stats, out / "mask_ratio_per_layer.png", title)),
             "per_timestep": str(plot_timestep_ratios(stats, out / "mask_ratio_per_timestep.png", title))}
    atomic_write_text(out / "masks.json", json.dumps(report, indent=2, default=str) + "\n")
    return {**report, "files": files}


def masks_command(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print masks.json's object on stdout and nothing else."),
) -> None:
    from ..quiet import quiet_libraries

    quiet_libraries()
    report = record_masks(list(ctx.args))
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2, default=str) + "\n")
        return
    from rich.console import Console

    console = Console()
    console.print(f"{report['method']} on {report['model']}: {report['n_images']} images, overall mask ratio "
                  f"{100 * report['mask_ratio']:.2f}% of {len(report['layers'])} layers' weights")
    for step in report["steps"]:
        console.print(f"  step {step['step']:>3}  t={step['timestep']}  {100 * step['mask_ratio']:.2f}%")
    for key, path in report["files"].items():
        console.print(f"{key}: {path}")
