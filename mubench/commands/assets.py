"""``mubench assets [list|verify|where] [suite=S] [model=M] [scorer=X] [method=K] [assets.NAME=PATH] [--json]``."""
from __future__ import annotations

import json
from typing import Optional

import typer

from .. import assets as A
from ..config import parse_overrides
from ..errors import AssetError, UsageError, unknown

ACTIONS = ("list", "verify", "where")
FILTERS = ("suite", "model", "scorer", "method")


def assets_command(
    action: str = typer.Argument("list", help="list: what is needed and whether it is found; verify: also check "
                                              "sha256 (exit 2 on any missing or mismatching asset); where: every "
                                              "place mubench looks, in order"),
    args: Optional[list[str]] = typer.Argument(None, help="suite=NAME, model=NAME, scorer=NAME, method=KIND filter "
                                                          "the manifest (method: the files of the scorers a method "
                                                          "runs itself, e.g. maskunet-free's paper rewards); "
                                                          "assets.NAME=PATH points one asset at a file"),
    json_out: bool = typer.Option(False, "--json", help="print a JSON list on stdout"),
) -> None:
    """The external files (weights, data) suites, models and scorers need; nothing is ever downloaded."""
    if action not in ACTIONS:
        raise UsageError(f"unknown action {action!r}; expected one of {', '.join(ACTIONS)}")
    filters, paths = _parse_args(args)
    selected = A.select(**filters)
    if not selected:  # a built-in component (the micro world, toy, tiny models): nothing to find
        what = ", ".join(f"{k}={v}" for k, v in filters.items())
        typer.echo("[]" if json_out else f"{what}: no external files needed (built in or made from a config)")
        return

    rows = [_asset_row(asset, action, paths.get(asset.name)) for asset in selected]
    if json_out:
        typer.echo(json.dumps(rows, indent=2))
    else:
        _print(action, rows)
    bad = [r["name"] for r in rows if action == "verify" and not r["found"]]
    if bad:
        raise AssetError(f"{len(bad)} asset(s) missing or not matching: {', '.join(bad)}")


def _parse_args(args: Optional[list[str]]) -> tuple[dict[str, str], dict]:
    """The filters (suite=, model=, scorer=, method=, each a known name) and the assets.NAME=PATH overrides."""
    filters: dict[str, str] = {}
    overrides: list[tuple[str, object]] = []
    for key, value in parse_overrides(list(args or [])):
        if key in FILTERS:
            filters[key] = str(value)
        elif key.startswith("assets."):
            overrides.append((key, value))
        else:
            raise UsageError(f"unknown key {key!r}; expected suite=, model=, scorer=, method= or assets.NAME=PATH")
    paths = A.parse_asset_overrides(overrides)
    known = _known_names()
    for key, value in filters.items():
        if value not in known[key]:
            raise unknown(key, value, known[key])
    return filters, paths


def _asset_row(asset, action: str, path) -> dict:
    """One asset's row: what it is, and where mubench looks (where) or whether it is found (list, verify)."""
    row: dict = {"name": asset.name, "kind": asset.kind, "description": asset.description,
                 "used_by": list(asset.used_by), "expected_sha256": asset.sha256, "config_key": asset.config_key}
    if action == "where":
        row["looked"] = [f"{w}: {p}" for w, p in A.candidates(asset, path)]
        for repo in A.hf_repos(asset):
            row["looked"].append(f"Hugging Face cache: {repo}" + (f" / {asset.hf_filename}"
                                                                   if asset.hf_filename else ""))
    else:
        st = A.status(asset, path, verify=(action == "verify"))
        row.update(found=st.ok, path=str(st.path) if st.path else None, sha256=st.sha256)
        if not st.ok:
            row["problem"] = st.message
    return row


def _known_names() -> dict[str, set[str]]:
    """Every suite, model and scorer name a filter may give (spec files and registered kinds)."""
    from ..registry import load_registries
    from ..specs import spec_names

    regs = load_registries()
    return {"suite": set(spec_names("suites")) | set(regs.suites.names()), "model": set(regs.models.names()),
            "scorer": set(regs.scorers.names()), "method": set(regs.methods.names())}


def _print(action: str, rows: list[dict]) -> None:
    for row in rows:
        if action == "where":
            typer.echo(f"{row['name']}  ({row['description']})")
            for entry in row["looked"]:
                typer.echo(f"    {entry}")
            continue
        mark = "ok     " if row["found"] else "MISSING"
        where = row["path"] or "-"
        typer.echo(f"{mark} {row['name']:<26} {where}")
        if row.get("sha256"):
            pinned = row["expected_sha256"]
            typer.echo(f"        sha256 {row['sha256']}" + ("" if pinned else "  (not pinned in the manifest)"))
        if action == "verify" and not row["found"]:
            for line in row["problem"].splitlines():
                typer.echo(f"        {line}")
    if action != "where":
        missing = sum(not r["found"] for r in rows)
        typer.echo(f"{len(rows) - missing} of {len(rows)} assets found")
