"""Trained artifacts of a method: safetensors weights plus a JSON manifest, content-addressed.

Layout: ``{artifacts_dir}/{kind}-{key}/weights.safetensors`` and ``meta.json``, where ``key`` hashes everything that
decides the trained weights (the method kind, its training-relevant parameters including the ``train`` recipe with
its data and seed, and the base model's weight fingerprint). ``meta.json`` is written last, so a folder without it
is an interrupted write and counts as missing. ``Prepared.artifact`` holds the sha256 of the weights file.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ..cache import cpu_threads
from ..config import stable_hash, to_plain
from ..errors import AssetError, UsageError
from ..fsutil import atomic_write_bytes
from ..models.base import ModelBundle

WEIGHTS_FILE = "weights.safetensors"
META_FILE = "meta.json"


def artifact_key(kind: str, spec: Any, base_fingerprint: str) -> str:
    """Content key of a trained artifact: hash of (kind, training-relevant spec, base weights)."""
    return stable_hash({"kind": kind, "spec": to_plain(spec), "base": base_fingerprint}, length=20)


def artifact_dir(root: Path, kind: str, key: str) -> Path:
    return Path(root) / f"{kind}-{key}"


def has_artifact(directory: Path) -> bool:
    return (Path(directory) / WEIGHTS_FILE).is_file() and (Path(directory) / META_FILE).is_file()


def save_artifact(directory: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> str:
    """Write ``tensors`` (safetensors) and ``meta`` (JSON) atomically; returns the sha256 of the weights file."""
    directory = Path(directory)
    blob = st_save({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()})
    digest = hashlib.sha256(blob).hexdigest()
    atomic_write_bytes(directory / WEIGHTS_FILE, blob)
    manifest = dict(to_plain(meta))
    manifest["weights_sha256"] = digest
    manifest["tensors"] = len(tensors)
    manifest["numel"] = int(sum(v.numel() for v in tensors.values()))
    atomic_write_bytes(directory / META_FILE, json.dumps(manifest, indent=2, sort_keys=True, default=str).encode())
    return digest


def load_artifact(directory: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], str]:
    """(tensors, meta, sha256 of the weights). Raises AssetError when the files are missing or do not match."""
    directory = Path(directory)
    if not has_artifact(directory):
        raise AssetError(f"no complete artifact in {directory} (need {WEIGHTS_FILE} and {META_FILE})")
    blob = (directory / WEIGHTS_FILE).read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    try:
        meta = json.loads((directory / META_FILE).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise AssetError(f"{directory / META_FILE}: unreadable artifact manifest ({err})") from None
    expected = meta.get("weights_sha256")
    if expected and expected != digest:
        raise AssetError(f"{directory / WEIGHTS_FILE}: sha256 {digest} does not match the manifest's {expected}")
    return st_load(blob), meta, digest


def copy_matching_state(expected: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor], what: str) -> None:
    """Copy an artifact's ``tensors`` into ``expected`` (a module's state, in place), cast to each target's dtype;
    a missing, unexpected or wrongly shaped tensor is a UsageError naming ``what`` they were meant for and nothing is
    copied."""
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in set(expected) & set(tensors) if tuple(expected[k].shape) != tuple(tensors[k].shape))
    if missing or extra or wrong:
        raise UsageError(f"artifact does not match {what}: missing {missing[:3]}, unexpected {extra[:3]}, "
                         f"wrong shape {wrong[:3]}")
    with torch.no_grad():
        for key, value in expected.items():
            value.copy_(tensors[key].to(value.dtype))


def base_dtype(bundle: ModelBundle) -> str:
    """The dtype of the base denoiser's weights (``float32``, ``bfloat16``...): the frozen rest runs in it and the
    trained weights are cast to it when saved, so it decides the artifact."""
    for p in bundle.denoiser.parameters():
        if p.is_floating_point():
            return str(p.dtype).replace("torch.", "")
    return "float32"


def train_command(method_name: str, model_name: Optional[str], data: Optional[str], bundle: ModelBundle,
                  device: Any) -> str:
    """The ``mubench train`` command that makes the artifact this run looks for: with the thread count (on a CPU)
    and the base's dtype (where not float32), which are part of the artifact's address."""
    threads = cpu_threads(torch.device(device).type)
    command = (f"OMP_NUM_THREADS={threads} " if threads is not None else "") + \
        f"mubench train method={method_name} model={model_name or 'MODEL'}"
    if data:
        command += f" data={data}"
    dtype = base_dtype(bundle)
    if dtype != "float32":
        command += f" dtype={dtype}"
    return command


def missing_artifact_error(method_name: str, directory: Path, command: str) -> UsageError:
    """The message of ``train=never`` when the artifact is missing."""
    return UsageError(f"no trained artifact for {method_name} at {directory}, and train=never forbids training it.\n"
                      f"  train it with `{command}` (plus the same method.KEY=VALUE overrides), or run with "
                      "train=auto")
