"""Where a run computes and keeps things: its device, its dtype, its cache folder (``device=``, ``dtype=``,
``cache=``), resolved with plain errors."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import torch

from .errors import UsageError
from .store import mubench_home

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"bad value device={name!r}; expected cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("device=cuda was asked for but no CUDA device is available (use device=cpu or auto)")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return DTYPES[name]


def cache_root(run_cache: Optional[str]) -> Path:
    if run_cache:
        return Path(run_cache).expanduser()
    return Path(os.environ.get("MUBENCH_CACHE", mubench_home() / "cache"))
