"""Replay the unmasked front of a denoiser across repeated calls on the same inputs (training-free inner updates).

maskunet-free runs the denoiser K times per step on the same latents, timestep and text, only the decoder masks
changing between calls. Everything the denoiser computes before its first masked layer is therefore the same every
time: in a UNet with decoder masks, ``conv_in``, the time embedding, every down block and the mid block — about half
of its forward. :class:`PrefixCache` records what those modules return during one call and hands the recorded
outputs back during the following calls instead of running them (their inputs are the same tensors, their weights
frozen, and they come before any masked layer, so the outputs are bitwise the same).

Candidates are the largest submodules holding no masked layer (children of ``nn.ModuleList`` containers are taken one
by one). During recording, a candidate is kept only if it ran exactly once and finished before the first masked
layer started; anything after it (the decoder, ``conv_out``) always runs.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

from torch import nn


def unmasked_candidates(root: nn.Module, masked: Sequence[nn.Module]) -> list[tuple[str, nn.Module]]:
    """The largest submodules of ``root`` that contain none of ``masked`` (ModuleLists are descended into)."""
    masked_ids = {id(m) for m in masked}
    holds: dict[int, bool] = {}

    def has_masked(module: nn.Module) -> bool:
        key = id(module)
        if key not in holds:
            holds[key] = key in masked_ids or any(has_masked(c) for c in module.children())
        return holds[key]

    found: list[tuple[str, nn.Module]] = []

    def walk(prefix: str, module: nn.Module) -> None:
        for name, child in module.named_children():
            path = f"{prefix}{name}"
            if isinstance(child, (nn.ModuleList, nn.ModuleDict)) or has_masked(child):
                walk(path + ".", child)
            elif any(True for _ in child.parameters()):  # parameter-free modules cost nothing to rerun
                found.append((path, child))

    walk("", root)
    return found


class PrefixCache:
    """Record once, then replay, the outputs of the modules that run before the first masked layer."""

    def __init__(self, root: nn.Module, masked: Sequence[nn.Module]) -> None:
        self.candidates = unmasked_candidates(root, masked)
        self.masked = list(masked)
        self.outputs: dict[str, Any] = {}

    @contextlib.contextmanager
    def record(self) -> Iterator[None]:
        """Run normally, keeping the outputs of the candidates that finish before the first masked layer starts."""
        self.outputs = {}
        calls: dict[str, int] = {}
        seen_masked = [False]
        handles = []

        def on_masked(module, args):
            seen_masked[0] = True

        def keep(name: str):
            def hook(module, args, output):
                calls[name] = calls.get(name, 0) + 1
                if not seen_masked[0]:
                    self.outputs[name] = output
            return hook

        try:
            for m in self.masked:
                handles.append(m.register_forward_pre_hook(on_masked))
            for name, module in self.candidates:
                handles.append(module.register_forward_hook(keep(name)))
            yield
        finally:
            for h in handles:
                h.remove()
        self.outputs = {k: v for k, v in self.outputs.items() if calls.get(k) == 1}

    @contextlib.contextmanager
    def replay(self) -> Iterator[None]:
        """Run with every recorded module returning its recorded output instead of computing it."""
        patched = []
        try:
            for name, module in self.candidates:
                if name in self.outputs:
                    output = self.outputs[name]
                    module.forward = lambda *args, _out=output, **kwargs: _out  # an instance attribute
                    patched.append(module)
            yield
        finally:
            for module in patched:
                del module.forward

    def clear(self) -> None:
        self.outputs = {}
