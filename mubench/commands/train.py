"""``mubench train method=M model=X [data=micro-art|micro|PATH] [method.train.steps=N] [KEY=VALUE...] [--json]``.

Trains a method's artifact with its recipe (``methods/M.yaml``'s ``train:``, or its ``recipes.<model>`` entry) into
the content-addressed artifact store that ``mubench run`` reads, so a later run with the same method, model and
data finds it. A killed training resumes from its latest checkpoint when the same command is run again; an
artifact that is already complete is reported, not retrained (``force=true`` retrains it from scratch).
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, fields
from typing import Any, Optional

import typer

TRAIN_HELP = """Train a method's artifact (full-ft, dropout, lora, maskunet...) with its recipe.

\b
Keys (KEY=VALUE):
  method=NAME|FILE.yaml   required: the method spec (`mubench list`); method.KEY=VALUE overrides it
                          (e.g. method.train.steps=100)
  model=NAME              base model (default micro); model.KEY=VALUE (e.g. model.path=/weights/sd15)
  data=DATA               training data: micro-art (the micro recipes' default), micro, DIR or
                          FILE.parquet; shortcut for method.train.data=... (part of the artifact's address)
  device=cpu|cuda|auto    dtype=auto|float32|float16|bfloat16 (the frozen base; trainable weights train in fp32 and
                          are saved in this dtype, part of the artifact's address)
  cache=DIR               where artifacts live (default $MUBENCH_HOME/cache; `mubench run` reads the same place)
  weights=pretrained|random   force=true|false (retrain from scratch)
\b
A killed training resumes from its latest checkpoint when the same command is run again.
"""


@dataclass
class TrainCommandConfig:
    method: Optional[str] = None  # required: training is minutes to hours, never a default
    model: str = "micro"
    data: Optional[str] = None
    device: str = "auto"
    dtype: str = "auto"
    cache: Optional[str] = None
    weights: str = "pretrained"
    force: bool = False


def _parse_train_args(args: list[str]) -> tuple[TrainCommandConfig, dict[str, dict[str, Any]]]:
    """The command's own keys as a checked :class:`TrainCommandConfig`, and the model.* / method.* overrides
    (data= joins the latter as method.train.data)."""
    from ..config import build_params, nest_overrides
    from ..errors import UsageError
    from ._kv import as_bool, parse_kv

    flat = parse_kv(args, [f.name for f in fields(TrainCommandConfig)], prefixes=("model", "method"),
                    command="train")
    top = {k: v for k, v in flat.items() if "." not in k}
    if "force" in top:
        top["force"] = as_bool(top["force"], "force")
    nested = nest_overrides([(k, v) for k, v in flat.items() if "." in k])
    sub: dict[str, dict[str, Any]] = {"model": nested.get("model", {}), "method": nested.get("method", {})}
    cfg: TrainCommandConfig = build_params(TrainCommandConfig, top)
    if cfg.method is None:
        raise UsageError("mubench train needs method=NAME (e.g. method=lora-micro; `mubench list` shows them, "
                         "`mubench train --help` the keys)")
    if cfg.weights not in ("pretrained", "random"):
        raise UsageError(f"bad value weights={cfg.weights!r}; expected pretrained or random")
    if cfg.data is not None:
        sub["method"].setdefault("train", {})
        if not isinstance(sub["method"]["train"], dict):
            raise UsageError("data= conflicts with method.train=")
        sub["method"]["train"]["data"] = cfg.data
    return cfg, sub


def train_from_args(args: list[str], show_progress: bool = True) -> dict[str, Any]:
    """Resolve ``KEY=VALUE`` args, load the model, train (or find) the artifact; returns a summary dict."""
    from ..config import resolve_component
    from ..errors import UsageError
    from ..methods.train_recipe import MethodTrainConfig
    from ..registry import load_registries

    # the keys, the components and their params before the heavy imports: bad input is told at once
    cfg, sub = _parse_train_args(args)
    regs = load_registries()
    model_c = resolve_component("model", cfg.model, sub["model"], regs)
    method_c = resolve_component("method", cfg.method, sub["method"], regs, model=model_c.name)
    nothing = UsageError(f"method {method_c.name!r} (kind {method_c.kind}) has nothing to train")
    if not isinstance(getattr(method_c.params, "train", None), MethodTrainConfig):  # a trainable method's recipe
        raise nothing
    from ..devices import resolve_device, resolve_dtype
    from ..methods.artifacts import has_artifact
    from ..methods.base import MethodContext
    from ..methods.training import TrainableMethod, train_artifact
    from ..models.base import LoadContext
    from ..paths import cache_root

    method = regs.methods.get(method_c.kind)(method_c.params, method_c.name)
    if not isinstance(method, TrainableMethod):
        raise nothing
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    bundle = regs.models.get(model_c.kind).load(model_c.params, LoadContext(device, dtype, cfg.weights))
    ctx = MethodContext(artifacts_dir=cache_root(cfg.cache) / "artifacts", train="force" if cfg.force else "auto",
                        device=device, dtype=dtype, model_name=model_c.name, weights=cfg.weights,
                        show_progress=show_progress)
    key, directory = method.artifact_location(bundle, ctx)
    recipe = method.recipe()
    summary: dict[str, Any] = {"method": method_c.name, "kind": method_c.kind, "model": model_c.name,
                               "recipe": method_c.recipe or "spec", "data": recipe.data, "steps": recipe.steps,
                               "key": key, "directory": str(directory)}
    if has_artifact(directory) and not cfg.force:
        meta = json.loads((directory / "meta.json").read_text())
        summary.update(status="exists", sha256=meta.get("weights_sha256"), final_loss=meta.get("final_loss"),
                       wall_s=meta.get("wall_s"))
        return summary
    outcome = train_artifact(method, bundle, ctx, fresh=cfg.force)
    summary.update(status="trained" if outcome["resumed_from"] is None else f"resumed from {outcome['resumed_from']}",
                   sha256=outcome.get("sha256"), final_loss=outcome["final_loss"], wall_s=outcome["wall_s"])
    return summary


def train_command(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout and nothing else."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Do not draw a progress bar."),
) -> None:
    from ..quiet import quiet_libraries

    quiet_libraries()
    summary = train_from_args(list(ctx.args), show_progress=not no_progress and not as_json and sys.stderr.isatty())
    if as_json:
        sys.stdout.write(json.dumps(summary, indent=2, default=str) + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"train {summary['method']} on {summary['model']}", title_justify="left", show_header=False)
    for key in ("status", "recipe", "data", "steps", "final_loss", "wall_s", "sha256", "directory"):
        table.add_row(key, str(summary.get(key)))
    Console().print(table)
