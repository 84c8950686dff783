"""Where mubench keeps its user data (store, caches, assets, reference statistics)."""
from __future__ import annotations

import os
from pathlib import Path


def mubench_home() -> Path:
    """``$MUBENCH_HOME`` if set, else the platformdirs user cache dir (e.g. ``~/.cache/mubench`` on Linux)."""
    env = os.environ.get("MUBENCH_HOME")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("mubench"))
