"""What maskunet-free's optimisations bought: one image of each variant against the base in the same interleaved
rounds, on the micro model; one JSON line.

    .venv/bin/python benchmarks/free_ablation.py [--repeats 3] [--weights random]

Variants (``latency_ratio`` = median time of one image / the base's, 50 DDIM steps for the base):

- ``before``: ``mubench/methods/maskunet_free.py`` as first committed (``--before`` revision, read with ``git show``):
  torch's ``exponential_`` noise, the straight-through estimator as a chain of elementwise ops, per-tensor AdamW, the
  whole UNet run at every inner update;
- ``no_replay``: the current code with ``reuse_unmasked: false``;
- ``current``: the current code (the UNet's unmasked front replayed across a step's inner updates).

All three sample the paper's schedule (15 first-order DPM-Solver++ steps, 7 × 1 + 8 × 10 updates; set here whatever
the spec's micro recipe says) with the micro world's reward (micro-CLIP).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BEFORE = "6ba86a8"  # the commit that added maskunet-free


def load_before(rev: str):
    """The module as of ``rev``, imported as a sibling of the current one (its relative imports resolve)."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:mubench/methods/maskunet_free.py"],
                            capture_output=True, text=True, check=True).stdout
    with tempfile.TemporaryDirectory() as folder:  # executed once on import: the file need not outlive it
        tmp = Path(folder) / "maskunet_free_before.py"
        tmp.write_text(source)
        spec = importlib.util.spec_from_file_location("mubench.methods.maskunet_free_before", tmp)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return module


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--weights", default="pretrained")
    p.add_argument("--before", default=BEFORE)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from mubench.config import resolve_component
    from mubench.methods.base import MethodContext, Prepared
    from mubench.models.base import LoadContext
    from mubench.perf.timing import interleaved, ratio_ci, resolve_clock
    from mubench.quiet import quiet_libraries
    from mubench.registry import load_registries
    from mubench.sampler import SamplerConfig, sample_images

    quiet_libraries()
    torch.set_num_threads(args.threads)
    regs = load_registries()
    cls = regs.models.get("micro")
    bundle = cls.load(cls.Params(), LoadContext(torch.device("cpu"), torch.float32, args.weights))
    ctx = MethodContext(artifacts_dir=Path("."), weights=args.weights, show_progress=False)

    paper = {"early_steps": 7, "early_updates": 1, "late_updates": 10, "final_update": True,
             "sampler": {"scheduler": "dpmsolver++1", "steps": 15}}  # the paper's schedule, whatever the recipe

    def prepared(module=None, **overrides):
        comp = resolve_component("method", "maskunet-free", {**paper, **overrides}, regs, model="micro")
        if module is None:
            return regs.methods.get(comp.kind)(comp.params, comp.name).prepare(bundle, ctx)
        params = module.MaskUNetFreeParams(**{k: v for k, v in vars(comp.params).items()
                                             if k in module.MaskUNetFreeParams.__dataclass_fields__})
        params.rewards = [module.RewardTerm(**vars(t)) for t in comp.params.rewards]
        params.sampler = module.FreeSamplerParams(**vars(comp.params.sampler))
        return module.MaskUNetFree(params, comp.name).prepare(bundle, ctx)

    free_cfg = SamplerConfig("dpmsolver++1", 15, bundle.default_sampler.get("guidance", 4.0), bundle.resolution)
    base_cfg = SamplerConfig("ddim", 50, free_cfg.guidance, bundle.resolution)

    def image(prep, cfg):
        return lambda: sample_images(bundle, prep, ["a red circle to the left of a blue square"], [3], cfg)

    variants = {
        "base": image(Prepared(bundle.denoiser), base_cfg),
        "before": image(prepared(load_before(args.before)), free_cfg),
        "no_replay": image(prepared(reuse_unmasked=False), free_cfg),
        "current": image(prepared(), free_cfg),
    }
    device = torch.device("cpu")
    clock = resolve_clock("auto", device)
    times = interleaved(variants, device, warmup=args.warmup, repeats=args.repeats, seed=0)
    base = [t.get(clock) for t in times["base"]]
    out = {}
    for name in ("before", "no_replay", "current"):
        v = [t.get(clock) for t in times[name]]
        ratio, lo, hi = ratio_ci(v, base)
        out[name] = {"latency_ratio": round(ratio, 3), "ci": None if lo is None else [round(lo, 3), round(hi, 3)],
                     "latency_s": round(sorted(v)[len(v) // 2], 3), "ratio_of_minima": round(min(v) / min(base), 3)}
    line = {"benchmark": "free_ablation", "model": "micro", "weights": args.weights, "before": args.before,
            "threads": args.threads, "clock": clock, "repeats": args.repeats, "warmup": args.warmup,
            "base_latency_s": round(sorted(base)[len(base) // 2], 3), "variants": out,
            "load_average": [round(x, 2) for x in os.getloadavg()]}
    sys.stdout.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
