"""The method cases every cross-method test runs: each shipped method spec (some in several settings) on the tiny
random SD-style bundle, with a stand-in for training so the trainable ones really change the model."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mubench.config import resolve_component
from mubench.methods.base import MethodContext, Prepared
from mubench.sampler import SamplerConfig

PROMPTS = ["a red circle", "two blue squares", "a green star"]
SEEDS = [11, 22, 33]
SAMPLER = SamplerConfig(scheduler="ddim", steps=3, guidance=3.0, resolution=32)


@dataclass
class Case:
    spec: str
    overrides: dict[str, Any] = field(default_factory=dict)
    changes_images: bool = True


CASES = {
    "sd": Case("sd", changes_images=False),
    "random-mask-step": Case("random-mask", {"ratio": 0.3, "resample": "step"}),
    "random-mask-image": Case("random-mask", {"ratio": 0.3, "resample": "image"}),
    "random-mask-conv": Case("random-mask", {"ratio": 0.1, "layers": "decoder-attn+conv"}),
    "maskunet": Case("maskunet"),
    "maskunet-faithful": Case("maskunet-faithful"),
    "maskunet-deterministic": Case("maskunet", {"deterministic": True}),
    "maskunet-counter": Case("maskunet", {"noise": "counter"}),  # Philox-keyed noise (the fused kernel's)
    "maskunet-image": Case("maskunet", {"mask_scope": "image"}),  # an image's CFG rows share one mask
    "maskunet-conv": Case("maskunet", {"layers": "decoder-attn+conv"}),
    "lora": Case("lora-micro"),
    "lora-paper": Case("lora"),  # the paper's r=256 spec
    "lora-unmerged": Case("lora-micro", {"merge": False}),  # the factors as separate matmuls (merge: true folds them)
    "full-ft": Case("full-ft"),
    "dropout": Case("dropout"),
    # training-free: rewards from a random micro-CLIP (the run's weights=random), a short update schedule
    "maskunet-free": Case("maskunet-free", {"rewards": [{"scorer": "micro-clip", "weight": 5.0, "target": 1.0}],
                                            "early_steps": 1, "late_updates": 2}),
}


def method_of(regs, case: Case):
    comp = resolve_component("method", case.spec, case.overrides, regs)
    return regs.methods.get(comp.kind)(comp.params, comp.name)


def context(artifacts: Path) -> MethodContext:
    return MethodContext(artifacts_dir=artifacts, train="never", model_name="tiny-sd", weights="random")


def fake_training(prepared: Prepared, seed: int = 0) -> None:
    """Stand-in for the trainer: move every trainable weight so the method really changes the model."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in prepared.trainable_parameters():
            p.add_(torch.randn(p.shape, generator=gen) * (0.05 if p.ndim > 1 else 2.0))


def prepared_case(regs, bundle, artifacts, name: str) -> tuple[Any, Prepared]:
    method = method_of(regs, CASES[name])
    if getattr(method, "trainable", False):
        built = method.build(bundle, context(artifacts))
        fake_training(built)
        method.save(built, bundle, context(artifacts))
    return method, method.prepare(bundle, context(artifacts))


def traced_like_eager(bundle, prepared: Prepared, sampler: SamplerConfig, monkeypatch, backend: str = "eager") -> None:
    """Samples three images eagerly, then through ``torch.compile`` with dynamo's ``backend`` (the run's
    ``compile=default`` rerouted, so no C++ compiler is needed), then compiled again with the images in reverse
    order; asserts one graph, no graph break, and the eager images bit for bit both times (other keys in the same
    graph: each image its own masks still) and eagerly once more after it."""
    from dataclasses import replace

    from torch._dynamo.utils import counters

    from mubench.sampler import sample_latents

    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, mode=None, dynamic=None:
                        real_compile(model, backend=backend, dynamic=dynamic))
    prompts, seeds = ["a red circle", "a blue square", "two green dots"], [0, 1, 2]
    eager = sample_latents(bundle, prepared, prompts, seeds, sampler)
    torch._dynamo.reset()
    counters.clear()
    traced = sample_latents(bundle, prepared, prompts, seeds, replace(sampler, compile="default"))
    flipped = sample_latents(bundle, prepared, prompts[::-1], seeds[::-1], replace(sampler, compile="default"))
    assert counters["stats"]["unique_graphs"] == 1, dict(counters["stats"])
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert torch.equal(traced, eager)
    assert torch.equal(flipped.flip(0), eager)
    assert torch.equal(sample_latents(bundle, prepared, prompts, seeds, sampler), eager)
