"""Whether a command may write its output file at a path: never over a folder, never over mubench data it did not
make (a run's results, a baseline, a store), checked before the work so that a bad path costs nothing."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Union

from .errors import UsageError
from .store import is_sqlite_file

RUN_FILES = {"results.json": "a run's results", "samples.jsonl": "a run's sample records",
             "units.npz": "a run's per-unit data"}
BASELINE = "a mubench baseline"


def mubench_data(path: Path) -> Optional[str]:
    """What mubench data the file at ``path`` holds (None: nothing mubench reads back)."""
    if path.name in RUN_FILES:
        return RUN_FILES[path.name]
    try:
        if is_sqlite_file(path):
            return "an SQLite database (a results store?)"
        with path.open("rb") as fh:  # only a JSON object can be results or a baseline: do not read anything else
            if not fh.read(64).lstrip().startswith(b"{"):
                return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if isinstance(data, dict) and "entries" in data and "tolerances" in data:
        return BASELINE if str(data.get("schema", "")).startswith("mubench.baseline/") else "a JSON file of yours"
    if isinstance(data, dict) and "run_id" in data and "protocol" in data:
        return "a run's results"
    return None


def output_file(path: Union[str, Path], key: str, *, only_over: Optional[str] = None) -> Path:
    """``path`` (user-expanded) if ``key``'s output may be written there, else a UsageError naming what is in the way.

    A folder is refused; so is an existing file holding mubench data, unless it is of the kind ``only_over`` names
    (then any other existing file is refused too: ``baseline --write`` replaces a baseline and nothing else)."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise UsageError(f"{key}={path} is a folder; give a file name (e.g. {path / 'out'})")
    if not path.exists():
        return path
    held = mubench_data(path)
    if only_over is not None and held != only_over:
        raise UsageError(f"{key}={path} exists and is not {only_over} ({held or 'another file'}); refusing to "
                         "overwrite it: remove it first or choose another file")
    if only_over is None and held is not None:
        raise UsageError(f"{key}={path} holds {held}; refusing to overwrite it: choose another file")
    return path
