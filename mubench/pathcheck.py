"""Checks made before any work: every path a command will write, and the disk space it needs.

A run that generates for hours and then cannot write ``out=`` or ``store=`` has lost those hours, so the paths are
checked before the first model is loaded: the right type (a folder for ``out``/``cache``, a file for ``store``), a
folder we can create files in (probed by creating and removing a temporary file, which also catches read-only
mounts and ``/proc``), and enough free space for the images and scores the run will write.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from .errors import UsageError

MIB = 1024 * 1024
MIN_FREE = 16 * MIB  # a SQLite transaction or a results.json needs little, but never less than this


@dataclass(frozen=True)
class PathNeed:
    """One path a command will write: its key (for the message), whether it names a folder, the bytes it needs."""

    key: str
    path: Path
    folder: bool
    bytes_needed: int = 0


def nearest_existing(path: Path) -> Path:
    """``path`` or its closest existing ancestor; a file met on the way is an error (it cannot hold a folder)."""
    p = path
    while not p.exists():
        if p.parent == p:
            break
        p = p.parent
    return p


def _probe_folder(folder: Path, key: str, shown: Path) -> None:
    """Create and remove a temporary file in ``folder`` (the only reliable test: root ignores mode bits)."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".mubench-probe.", dir=folder)
    except OSError as err:
        raise UsageError(f"{key}={shown}: cannot write in {folder} ({err.strerror or err}); "
                         f"choose a writable {key}=PATH") from None
    os.close(fd)
    os.unlink(tmp)


def check_path(need: PathNeed) -> None:
    """Raise UsageError unless ``need.path`` can be written as a folder (``folder``) or a file, with space left."""
    path, key = need.path.expanduser(), need.key
    if path.exists():
        if need.folder and not path.is_dir():
            raise UsageError(f"{key}={need.path} is a file; {key} names a folder (e.g. {key}={path.parent / 'out'})")
        if not need.folder and path.is_dir():
            raise UsageError(f"{key}={need.path} is a folder; {key} names a file (e.g. {key}={path / 'store.sqlite'})")
        if not need.folder and not os.access(path, os.W_OK):
            raise UsageError(f"{key}={need.path}: the file is not writable")
    base = nearest_existing(path.parent if (path.exists() and not need.folder) else path)
    if not base.exists():
        raise UsageError(f"{key}={need.path}: no part of this path exists")
    if not base.is_dir():
        raise UsageError(f"{key}={need.path}: {base} is a file, so nothing can be created under it")
    folder = base
    _probe_folder(folder, key, need.path)
    check_space(folder, max(need.bytes_needed, MIN_FREE), key, need.path)


def check_space(folder: Path, needed: int, key: str, shown: Path) -> None:
    try:
        free = shutil.disk_usage(folder).free
    except OSError:  # pragma: no cover - a filesystem without statvfs: nothing to check
        return
    if free < needed:
        raise UsageError(f"{key}={shown}: only {free / MIB:.0f} MiB free on that disk, this run needs about "
                         f"{needed / MIB:.0f} MiB; free some space or choose another {key}=PATH")


def image_bytes(resolution: Optional[int]) -> int:
    """A generous estimate of one cached image and its scores on disk (an uncompressed PNG plus 16 KiB)."""
    side = int(resolution or 512)
    return side * side * 3 + 16 * 1024


def run_needs(run: Any, suite_params: Any, n_items: int, cache: Path,
              model_side: Optional[int] = None) -> list[PathNeed]:
    """What ``mubench run`` / ``mubench score`` write: out folder, store file, cache folder (images + scores).
    Images are sized by the suite's sampler resolution, else by ``model_side`` (the model's default), else 512."""
    from .store import default_store_path

    n_images = n_items * getattr(suite_params, "images_per_prompt", 1)
    resolution = getattr(getattr(suite_params, "sampler", None), "resolution", None) or model_side
    store = Path(run.store).expanduser() if run.store else default_store_path()
    needs = [PathNeed("store", store, folder=False, bytes_needed=MIN_FREE + n_images * 4096),
             PathNeed("cache", cache, folder=True, bytes_needed=MIN_FREE + n_images * image_bytes(resolution))]
    if run.out:
        needs.insert(0, PathNeed("out", Path(run.out), folder=True, bytes_needed=MIN_FREE + n_images * 1024))
    return needs


def check_run_paths(run: Any) -> None:
    """The paths of a run's top-level config (``out``, ``store``, ``cache``), checked as soon as it is parsed, before
    the plug-ins and torch are imported (some seconds): type, writable, :data:`MIN_FREE` left; the files already
    there (:func:`check_run_files`). The runner checks them again with the run's sizes once its suite is loaded."""
    from .paths import cache_root

    check_paths(run_needs(run, None, 0, cache_root(run.cache)))
    check_run_files(run)


def check_run_files(run: Any) -> None:
    """The files a run writes into, as they are now: an existing store that is not a mubench store, or a folder
    where the run writes ``results.json`` / ``samples.jsonl``, fails now, not once the images are made."""
    from .store import Store, default_store_path

    store = Path(run.store).expanduser() if run.store else default_store_path()
    if store.is_file():
        Store(store, create=False).close()
    for name in ("results.json", "samples.jsonl") if run.out else ():
        inside = Path(run.out).expanduser() / name
        if inside.is_dir():
            raise UsageError(f"out={run.out}: {inside} is a folder; mubench writes a file of that name there")


def check_out_folder(out: Optional[str], suite: str, method: str, model: str) -> None:
    """``out=`` holding the results of a run of another suite, method or model is refused: this run would replace
    its files (a re-run of the same suite, method and model resumes or refreshes them, as documented)."""
    path = Path(out).expanduser() / "results.json" if out else None
    if path is None or not path.is_file():
        return
    try:
        before = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    mine = {"suite": suite, "method": method, "model": model}
    if not isinstance(before, dict) or all(before.get(k) == v for k, v in mine.items()):
        return
    theirs = ", ".join(f"{k} {before.get(k)}" for k in mine)
    this = ", ".join(f"{k} {v}" for k, v in mine.items())
    raise UsageError(f"out={out} holds the results of another run ({theirs}); this run ({this}) would replace "
                     "them: choose another out= or remove that folder first")


def check_paths(needs: list[PathNeed]) -> None:
    for need in needs:
        check_path(need)
