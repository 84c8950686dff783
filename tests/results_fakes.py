"""Fake ``results.json`` objects and sample lists for the store / report / check tests (no models)."""
from __future__ import annotations

import uuid
from typing import Any, Optional

LOWER_IS_BETTER = {"fid"}


def fake_results(method: str, metrics: dict[str, float], *, suite: str = "micro", model: str = "micro",
                 protocol_hash: str = "proto-a", created: str = "2026-01-01T00:00:00+00:00", n: int = 100,
                 ci: Optional[float] = None, steps: int = 20) -> dict[str, Any]:
    return {
        "schema": "mubench.results/1", "run_id": uuid.uuid4().hex, "created": created,
        "suite": suite, "method": method, "model": model,
        "metrics": {k: {"value": v, "ci_low": None if ci is None else v - ci, "ci_high": None if ci is None else v + ci,
                        "n": n, "higher_is_better": k not in LOWER_IS_BETTER} for k, v in metrics.items()},
        "config": {"run": {"suite": suite, "method": method, "model": model}},
        "protocol": {"suite": suite, "sampler": {"scheduler": "ddim", "steps": steps, "guidance": 5.0,
                                                 "resolution": 32, "eta": 0.0},
                     "images_per_prompt": 1, "n_prompts": n, "seed": 0, "dtype": "float32", "device_type": "cpu",
                     "scorers": {"micro-clip": {"version": "1", "weights_hash": "0123456789abcdef"}}},
        "protocol_hash": protocol_hash,
        "method_info": {"added_params": 0, "trainable_params": 0, "artifact": None},
        "versions": {"python": "3.11", "torch": "x", "diffusers": "x", "transformers": "x", "mubench": "0.1.0"},
        "git": None, "timing": {"prepare_s": 0.1, "generate_s": 1.0, "score_s": 0.5, "total_s": 1.6},
    }


def fake_samples(n_prompts: int = 3, images_per_prompt: int = 2) -> list[dict[str, Any]]:
    out = []
    for p in range(n_prompts):
        for j in range(images_per_prompt):
            out.append({"prompt_id": f"p{p}", "image_index": j, "seed": 1000 * p + j, "path": f"img/p{p}_{j}.png",
                        "sha256": f"{p:02d}{j:02d}" * 16, "key": f"key-{p}-{j}",
                        "scores": {"micro-clip": {"cos": 0.1 * p + 0.01 * j},
                                   "oracle": {"correct": bool((p + j) % 2), "reason": "ok"}}})
    return out


def fake_units(values, *, prompts=None, seed0: int = 0, higher_is_better: bool = True):
    """Per-unit data of a per-image mean metric (one unit per prompt), for stores that compare and mark."""
    import numpy as np

    from mubench.stats.units import UnitData

    n = len(values)
    prompts = [f"p{i:03d}" for i in range(n)] if prompts is None else prompts
    return UnitData(kind="mean", higher_is_better=higher_is_better, prompt_ids=np.array(prompts),
                    image_index=np.zeros(n, int), values=np.asarray(values, float),
                    seeds=np.arange(n) + 1000 * seed0)
