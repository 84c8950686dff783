"""Where mubench keeps its user data (store, caches, assets, reference statistics)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional


def mubench_home() -> Path:
    """``$MUBENCH_HOME`` if set, else the platformdirs user cache dir (e.g. ``~/.cache/mubench`` on Linux)."""
    env = os.environ.get("MUBENCH_HOME")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("mubench"))


def cache_root(run_cache: Optional[str]) -> Path:
    """The image/score cache: ``cache=`` if given, else ``$MUBENCH_CACHE``, else ``<mubench home>/cache``."""
    if run_cache:
        return Path(run_cache).expanduser()
    return Path(os.environ.get("MUBENCH_CACHE", mubench_home() / "cache"))
