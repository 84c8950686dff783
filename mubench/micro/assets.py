"""Where the micro world's built weights live, and checking them against their manifest.

A zoo folder (``zoo/micro/`` in a checkout, the ``mubench._zoo`` package data after install) holds
safetensors files, ``manifest.json`` and ``build.log``. The manifest's ``files`` maps each weights
file to its ``sha256`` and ``bytes``; :func:`verified_path` refuses a file that is missing or does
not match, with an :class:`~mubench.errors.AssetError` naming the file, the folder and the checksum.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Optional

from ..errors import AssetError

MANIFEST = "manifest.json"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def default_zoo_root() -> Path:
    """``<repo>/zoo`` in a checkout; the installed ``mubench._zoo`` package otherwise."""
    from ..specs import installed_data_dir

    repo_zoo = Path(__file__).resolve().parents[2] / "zoo"
    if repo_zoo.is_dir():
        return repo_zoo
    # mubench._zoo is a data package without __init__.py: importlib.resources.files() gives a MultiplexedPath there,
    # whose str() is its repr, not a folder; the package's search location is the folder
    installed = installed_data_dir("mubench._zoo")
    if installed is None:  # pragma: no cover - broken install
        raise AssetError(f"no zoo folder: neither {repo_zoo} nor the installed package mubench._zoo exists")
    return installed


def zoo_dir(name: str = "micro", path: Optional[str | Path] = None) -> Path:
    """The folder of zoo entry ``name`` (``path`` overrides the lookup)."""
    return Path(path) if path is not None else default_zoo_root() / name


def load_manifest(folder: Path) -> dict[str, Any]:
    mpath = folder / MANIFEST
    if not mpath.is_file():
        raise AssetError(f"missing {MANIFEST} in {folder}; build it with `mubench zoo build micro --out {folder}`")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise AssetError(f"{mpath} is not valid JSON: {err}") from err
    if not isinstance(manifest.get("files"), dict):
        raise AssetError(f"{mpath} has no 'files' table of sha256 checksums")
    return manifest


def verified_path(folder: Path, filename: str, manifest: Optional[dict[str, Any]] = None) -> Path:
    """``folder / filename`` after checking its sha256 against the manifest."""
    manifest = manifest if manifest is not None else load_manifest(folder)
    entry = manifest["files"].get(filename)
    if entry is None:
        raise AssetError(f"{filename} is not listed in {folder / MANIFEST}")
    path = folder / filename
    if not path.is_file():
        raise AssetError(f"missing weights file {path} (expected sha256 {entry['sha256']})")
    got = sha256_file(path)
    if got != entry["sha256"]:
        raise AssetError(f"checksum mismatch for {path}: expected sha256 {entry['sha256']}, got {got}; "
                         f"the file is damaged or was changed — restore it or rebuild with `mubench zoo build micro`")
    return path


def verify_all(folder: Path) -> dict[str, str]:
    """Check every file of the manifest; returns {file: sha256}. Raises AssetError on the first problem."""
    manifest = load_manifest(folder)
    return {name: sha256_file(verified_path(folder, name, manifest)) for name in manifest["files"]}
