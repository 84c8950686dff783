"""Every missing local file of a run, listed at once before any work starts.

A run needs its suite's data (``Suite.check_assets``), its base model's weights and its scorers' weights. Each
component raises :class:`AssetError` on the first file it misses when it loads; :func:`check_run_assets` asks all of
them up front and raises one error naming every missing file and the ``mubench assets verify ...`` command that
checks them. Model and scorer weights are looked up through the asset manifest: a model's main weights
(``config_key`` ``model.path``) and each scorer asset its suite points at by a parameter of the scorer; assets the
manifest cannot tie to one parameter are left to the component's own check (``Asset.when`` ties the two FID
Inception files, which share ``suite.fid.weights``, to the FID protocol).
With ``weights=random`` nothing but the suite's data is needed.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

from . import assets as A
from .errors import AssetError


class MissingAssets(AssetError):
    """Several missing files at once; ``errors`` holds one AssetError per file."""

    def __init__(self, errors: list[AssetError], hint: str = "") -> None:
        self.errors = errors
        blocks = "\n".join(f"({k}) " + str(e).replace("\n", "\n    ") for k, e in enumerate(errors, 1))
        super().__init__(f"{len(errors)} files this run needs are missing or do not match (nothing is downloaded):\n"
                         + blocks + (f"\n{hint}" if hint else ""))


def collect(checks: list[Callable[[], Any]]) -> list[AssetError]:
    """Run every check; the AssetErrors they raised, one per file (a :class:`MissingAssets` is unpacked)."""
    errors: list[AssetError] = []
    for check in checks:
        try:
            check()
        except MissingAssets as err:
            errors.extend(err.errors)
        except AssetError as err:
            errors.append(err)
    return errors


def check_all(checks: list[Callable[[], Any]], hint: str = "") -> None:
    """Run every check and raise once: the single AssetError, or a :class:`MissingAssets` listing all."""
    errors = collect(checks)
    if len(errors) == 1 and not hint:
        raise errors[0]
    if errors:
        raise MissingAssets(errors, hint)


def _field_names(config_key: str) -> list[str]:
    """``"suite.clip.path (coco) / suite.detector.clip_path (geneval)"`` → ``["path", "clip_path"]``."""
    return [part.split("(")[0].strip().rsplit(".", 1)[-1] for part in config_key.split("/") if part.strip()]


def model_checks(model: str, params: Any) -> list[Callable[[], Any]]:
    out = []
    for asset in A.select(model=model):
        if asset.config_key == "model.path" and hasattr(params, "path"):
            out.append(lambda a=asset: A.require(a.name, getattr(params, "path"), verify=False))
    return out


def scorer_checks(scorer: str, params: dict[str, Any]) -> list[Callable[[], Any]]:
    found = [a for a in A.select(scorer=scorer) if any(f in params for f in _field_names(a.config_key))
             and all(params[k] in values for k, values in a.when if k in params)]
    by_field: dict[str, list] = {}
    for a in found:
        field = next(f for f in _field_names(a.config_key) if f in params)
        by_field.setdefault(field, []).append(a)
    return [lambda a=assets[0], f=field: A.require(a.name, params.get(f), verify=False)
            for field, assets in by_field.items() if len(assets) == 1]


def check_run_assets(suite: Any, suite_name: str, model: str, model_params: Any, weights: str,
                     scorer_uses: Optional[dict[str, Any]] = None, method: Optional[str] = None) -> None:
    """Raise one AssetError listing every missing file of the run (none: return); ``method``: the kind of a method
    whose own scorers are among ``scorer_uses``, named in the verify command too."""
    checks: list[Callable[[], Any]] = [suite.check_assets]
    if weights != "random":
        checks += model_checks(model, model_params)
        for use in (scorer_uses or {}).values():
            checks += scorer_checks(use.scorer, dict(use.params))
    also = f" method={method}" if method else ""
    check_all(checks, hint=f"check them all with: mubench assets verify suite={suite_name} model={model}{also}")
