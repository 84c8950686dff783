"""Helpers shared by the transformer-masking tests (test_transformer_masks.py, test_transformer_mask_generators.py):
a tiny random DiT / PixArt-α (conftest's ``dit`` and ``pixart`` fixtures), a method from its spec, a method context
that never trains, and a seeded perturbation of a prepared method's trainable parameters."""
from __future__ import annotations

from pathlib import Path

import torch

from mubench.config import resolve_component
from mubench.methods.base import MethodContext
from mubench.models.base import LoadContext

CPU = LoadContext(torch.device("cpu"), torch.float32, "random")


def tiny_transformer(regs, name: str):
    """The model ``name`` (``dit`` or ``pixart``) at its tiny random config, 16 px."""
    over = {"arch": "tiny", "resolution": 16}
    if name == "pixart":
        over["max_length"] = 8
    comp = resolve_component("model", name, over, regs)
    return regs.models.get(name).load(comp.params, CPU)


def method_from_spec(regs, spec: str, **overrides):
    comp = resolve_component("method", spec, overrides, regs)
    return regs.methods.get(comp.kind)(comp.params, comp.name)


def untrained_ctx(tmp: Path) -> MethodContext:
    return MethodContext(artifacts_dir=tmp, train="never", model_name="tiny")


def perturb(prepared, seed: int = 0, scale: float = 0.5) -> None:
    """Adds seeded N(0, scale²) noise to every trainable parameter, so generators and adapters are far from their
    initial values."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in prepared.trainable_parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)
