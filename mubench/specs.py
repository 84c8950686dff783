"""Finding and safely loading the YAML specs shipped in methods/, suites/ and reports/.

In a source checkout they are the top-level folders; after ``pip install`` they are package data
under ``mubench._specs``. A path to a user YAML file is accepted wherever a spec name is.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import yaml

from .errors import UsageError, unknown

SPEC_KINDS = ("methods", "suites", "reports", "reports/tables", "reports/baselines")


def spec_dir(kind: str) -> Path:
    """Folder holding the shipped specs of one kind (``methods``, ``suites``, ``reports/tables``...)."""
    source = Path(__file__).resolve().parent.parent / kind
    if source.is_dir():
        return source
    return installed_data_dir("mubench._specs." + kind.replace("/", ".")) or source


def installed_data_dir(package: str) -> Path | None:
    """Folder of an installed data package (a namespace package: no ``__init__.py``), or None."""
    try:
        spec = importlib.util.find_spec(package)
    except ModuleNotFoundError:
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def load_yaml(path: Path) -> dict[str, Any]:
    """``yaml.safe_load`` (no tags that construct objects); the top level must be a mapping."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise UsageError(f"{path}: not a UTF-8 text file (byte {err.start}: {err.reason}); "
                         "a spec is YAML text") from None
    except yaml.YAMLError as err:
        raise UsageError(f"{path}: not valid YAML: {err}") from None
    except OSError as err:
        raise UsageError(f"{path}: cannot read: {err.strerror}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UsageError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data


def spec_names(kind: str) -> list[str]:
    return sorted(p.stem for p in spec_dir(kind).glob("*.yaml"))


def find_spec(kind: str, name_or_path: str) -> tuple[str, Path]:
    """Return (name, path) of a shipped spec or of a user YAML file: a value that ends in .yaml / .yml or holds a
    folder separator is a file (a file in the working folder that happens to be named ``maskunet`` is not)."""
    candidate = Path(name_or_path).expanduser()
    if name_or_path.endswith((".yaml", ".yml")) or "/" in name_or_path or os.sep in name_or_path:
        if not candidate.is_file():
            raise UsageError(f"{kind[:-1]} spec file {name_or_path!r} does not exist")
        return candidate.stem, candidate
    path = spec_dir(kind) / f"{name_or_path}.yaml"
    if not path.is_file():
        raise unknown(kind[:-1], name_or_path, spec_names(kind))
    return name_or_path, path
