"""``mubench zoo build micro|micro-dit|micro-art [--out DIR] [KEY=VALUE...]`` and ``mubench zoo verify micro|micro-dit|micro-art``."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional

import typer

from ..config import build_params, parse_overrides
from ..errors import unknown

app = typer.Typer(help="Build and verify the embedded model zoo (the micro world's weights).", no_args_is_help=True)
ENTRIES = ("micro", "micro-dit", "micro-art")


def _check_entry(name: str) -> None:
    if name not in ENTRIES:
        raise unknown("zoo entry", name, ENTRIES)


def _builder(name: str):
    """(recipe class, build function) of zoo entry ``name``: :func:`mubench.micro.zoo.build_micro` with its
    :class:`~mubench.micro.zoo.BuildParams`, or :func:`mubench.micro.dit.build_micro_dit` with its
    :class:`~mubench.micro.dit.DiTBuildParams`."""
    _check_entry(name)
    if name == "micro-art":
        from ..micro.art_clip import ArtClipBuildParams, build_micro_art

        return ArtClipBuildParams, build_micro_art
    if name == "micro-dit":
        from ..micro.dit import DiTBuildParams, build_micro_dit

        return DiTBuildParams, build_micro_dit
    from ..micro.zoo import BuildParams, build_micro

    return BuildParams, build_micro


def _recipe(args: list[str], name: str = "micro"):
    """KEY=VALUE overrides of the entry's build recipe (see :func:`_builder`), checked against its types."""
    BuildParams, _ = _builder(name)
    fields = {f.name for f in dataclasses.fields(BuildParams)}
    pairs = parse_overrides(args)
    for key, _ in pairs:
        if key not in fields:
            raise unknown("build parameter", key, fields)
    return build_params(BuildParams, dict(pairs))


@app.command("build")
def build_command(
    name: str = typer.Argument("micro", help="zoo entry to build (micro, micro-dit, micro-art)"),
    args: Optional[list[str]] = typer.Argument(None, help="recipe overrides, e.g. steps=3000 threads=2 "
                                                          "max_train_minutes=90 (see docs/micro-world.md)"),
    out: Optional[Path] = typer.Option(None, "--out", help="output folder (default: the repository's zoo/<name>)"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar; the log still goes to build.log"),
    no_eval: bool = typer.Option(False, "--no-eval", help="skip the build's own quality check"),
) -> None:
    """Train the micro world's weights reproducibly (seeded, resumable) and write safetensors + manifest.json + build.log."""
    if out is not None:  # before the builder imports torch, and long before the first file is written
        from ..pathcheck import PathNeed, check_path

        _check_entry(name)
        check_path(PathNeed("--out", out, folder=True))
    _, build = _builder(name)
    params = _recipe(list(args or []), name)
    manifest = build(out, params, show_progress=not quiet, echo=True, evaluate=not no_eval)
    base = manifest.get("quality", {}).get("base")
    if base:
        typer.echo(f"single_object={base['single_object']:.3f} color={base['color']:.3f} shape={base['shape']:.3f}")


@app.command("verify")
def verify_command(
    name: str = typer.Argument("micro", help="zoo entry to verify (micro, micro-dit, micro-art)"),
    out: Optional[Path] = typer.Option(None, "--out", help="zoo folder (default: the shipped zoo/<name>)"),
    json_out: bool = typer.Option(False, "--json", help="print {file: sha256} as JSON"),
) -> None:
    """Check every file of the zoo entry against the sha256 in its manifest (exit 2 on a mismatch)."""
    _check_entry(name)
    from ..micro.assets import verify_all, zoo_dir

    folder = zoo_dir(name, out)
    hashes = verify_all(folder)
    if json_out:
        typer.echo(json.dumps(hashes, indent=2))
    else:
        for f, h in hashes.items():
            typer.echo(f"ok  {f}  {h}")
