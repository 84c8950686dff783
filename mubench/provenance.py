"""Where a number came from: the git revision of the code and the versions of the packages that made it."""
from __future__ import annotations

import platform
import subprocess
from pathlib import Path
from typing import Optional

from . import __version__


def git_revision() -> Optional[str]:
    here = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


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
