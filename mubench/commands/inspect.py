"""``mubench inspect method=M model=X [weights=random] [--json]``: what a method changes in a model, and its cost.

Builds the model (``weights=random`` builds it from its config; with ``device=meta``, the default for random weights,
nothing is allocated, so the SD 1.5 architecture can be inspected without its weights) and the method's structure
with freshly initialised added weights (no artifact is loaded or trained), and reports:

- ``masked_layers`` / ``masked_weights``: the layers whose weights are masked and how many weights they hold;
- ``added_params``: parameters the method adds to the base model (generators, adapters, LoRA factors...);
- ``trainable_params``: parameters its training updates;
- ``base_params``: the base denoiser's parameter count;
- ``layers``: the changed layers (name, kind, shape, weights).
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import typer

INSPECT_HELP = """Report the layers a method changes in a model and its parameter counts.

\b
Keys (KEY=VALUE):
  method=NAME|FILE.yaml   method spec (default sd); method.KEY=VALUE overrides its parameters
  model=NAME              base model (default micro); model.KEY=VALUE overrides its parameters
  weights=pretrained|random   random: build the model from its config (no weights needed)
  device=auto|cpu|cuda|meta   auto: meta for random weights (nothing allocated), else cpu
"""


@dataclass
class InspectConfig:
    method: str = "sd"
    model: str = "micro"
    weights: str = "pretrained"  # pretrained | random
    device: str = "auto"  # auto (meta for random weights, else cpu) | cpu | cuda | cuda:N | meta


def inspect_method(args: list[str]) -> dict[str, Any]:
    """Resolve ``KEY=VALUE`` args, build model + method, return the report (see module docstring)."""
    from ..config import build_params, nest_overrides, resolve_component
    from ..errors import UsageError
    from ..registry import load_registries
    from ._kv import parse_kv

    flat = parse_kv(args, [f.name for f in fields(InspectConfig)], prefixes=("model", "method"), command="inspect")
    top = {k: v for k, v in flat.items() if "." not in k}
    nested = nest_overrides([(k, v) for k, v in flat.items() if "." in k])
    sub: dict[str, dict[str, Any]] = {"model": nested.get("model", {}), "method": nested.get("method", {})}
    cfg: InspectConfig = build_params(InspectConfig, top)
    if cfg.weights not in ("pretrained", "random"):
        raise UsageError(f"bad value weights={cfg.weights!r}; expected pretrained or random")
    device = cfg.device
    if device == "auto":
        device = "meta" if cfg.weights == "random" else "cpu"
    import torch

    from ..methods.base import MethodContext, count_params
    from ..models.base import LoadContext
    from ..quiet import quiet_libraries

    quiet_libraries()  # diffusers' dtype-cast notices and the like

    from ..devices import resolve_device

    dev = torch.device("meta") if device == "meta" else resolve_device(device)  # cuda without a GPU: said plainly
    regs = load_registries()
    model_c = resolve_component("model", cfg.model, sub["model"], regs)
    method_c = resolve_component("method", cfg.method, sub["method"], regs, model=model_c.name)
    with torch.random.fork_rng(devices=[]):
        bundle = regs.models.get(model_c.kind).load(model_c.params, LoadContext(dev, torch.float32, cfg.weights))
    method = regs.methods.get(method_c.kind)(method_c.params, method_c.name)
    ctx = MethodContext(artifacts_dir=Path("."), train="never", device=dev, model_name=model_c.name,
                        show_progress=False)
    prepared = method.build(bundle, ctx)
    layers = [dict(layer) for layer in prepared.layers]
    masked = [layer for layer in layers if layer.get("kind") in ("linear", "conv")]
    return {
        "method": method_c.name, "kind": method_c.kind, "model": model_c.name, "weights": cfg.weights,
        "masked_layers": len(masked), "masked_weights": int(sum(layer["weights"] for layer in masked)),
        "added_params": int(prepared.added_params), "trainable_params": int(prepared.trainable_params),
        "base_params": count_params(bundle.denoiser),
        "info": prepared.info, "layers": layers,
    }


def inspect_command(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout and nothing else."),
) -> None:
    report = inspect_method(list(ctx.args))
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2, default=str) + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    summary = Table(title=f"{report['method']} ({report['kind']}) on {report['model']} [{report['weights']} weights]",
                    title_justify="left", show_header=False)
    for key in ("masked_layers", "masked_weights", "added_params", "trainable_params", "base_params"):
        summary.add_row(key, f"{report[key]:,}")
    console.print(summary)
    if report["layers"]:
        table = Table(title="layers", title_justify="left")
        for col in ("name", "kind", "shape", "weights"):
            table.add_column(col, justify="right" if col == "weights" else "left")
        for layer in report["layers"]:
            table.add_row(layer["name"], layer["kind"], "×".join(map(str, layer["shape"])), f"{layer['weights']:,}")
        console.print(table)
