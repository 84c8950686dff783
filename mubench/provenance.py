"""Where a number came from: the git revision of the code and the versions of the packages that made it."""
from __future__ import annotations

import platform
import subprocess
from pathlib import Path
from typing import Optional

from . import __version__


def git_revision(root: Optional[Path] = None) -> Optional[str]:
    """The checkout's ``HEAD`` commit, with ``-dirty`` appended where tracked files differ from it (the code that made
    a number was then not that commit's); None outside a git checkout or without git."""
    here = root or Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if out.returncode != 0 or not out.stdout.strip():
            return None
        changed = subprocess.run(["git", "--no-optional-locks", "-C", str(here), "status", "--porcelain",
                                  "--untracked-files=no"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    dirty = changed.returncode == 0 and changed.stdout.strip() != ""
    return out.stdout.strip() + ("-dirty" if dirty else "")


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "mubench": __version__}
    for name in ("torch", "diffusers", "transformers", "accelerate", "peft", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


__all__ = ["git_revision", "package_versions"]
