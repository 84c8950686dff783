"""Where maskunet's sampling-time overhead went: one CFG denoiser call per variant, each optimisation added in turn,
against the base in the same interleaved rounds; one JSON line.

    .venv/bin/python benchmarks/mask_ablation.py [--model micro|sd15-reduced] [--repeats 10] [--weights random]

Variants (``forward_ratio`` = median time / median base time, paired bootstrap CI over rounds):

- ``released``: the released structure — the block's mask generator re-run in every masked linear, the adapter as
  two linears, torch's ``exponential_`` noise, the straight-through float mask ``hard − sg(s) + s``, ``W * M``,
  one batched GEMM;
- ``per_layer_exponential``: generator once per block (pre-hook), bool mask from ``E < e^ℓ``, still
  ``exponential_`` noise, one layer at a time (mubench before this work);
- ``per_layer``: the same with ``E`` drawn by inversion of one uniform;
- ``grouped``: a block's same-shape linears computed together (the default now);
- ``grouped_image_scope``: plus ``mask_scope: image`` (both CFG rows share the conditional row's mask; ours);
- ``grouped_deterministic``: ``mask = ℓ > 0`` (no noise at all), for reference.
- ``grouped_counter``: ``noise: counter`` on the torch path (Philox-4x32-10 in int64 tensor operations: the fused GPU
  kernel's noise, computed on the CPU).

The per-layer and grouped variants run today's code, so they threshold over the logits
(:func:`~mubench.methods.masking.thresholded_product`, since 2026-12-06) where the figures in docs/efficiency.md were
measured with a bool mask.

Also reported: ``ratio_of_minima`` (fastest call / fastest base call), less sensitive to other processes on a shared
CPU.
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _one_call import OneCFGCall  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="sd15-reduced")
    p.add_argument("--weights", default="pretrained")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    import torch.nn.functional as F

    from mubench.methods import maskunet_fast
    from mubench.methods.base import Prepared
    from mubench.perf.timing import interleaved, ratio_ci, resolve_clock
    from mubench.quiet import quiet_libraries

    quiet_libraries()
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    one = OneCFGCall(args.model, args.weights, device)
    build, call = one.maskunet, one.runner

    def exponential_noise_draw(shape, streams, device):  # the noise as before this work
        noise = torch.empty(shape, dtype=torch.float32, device=device)
        for gen, rows_ in streams:
            if len(rows_) == shape[1]:
                noise.exponential_(generator=gen)
            else:
                part = torch.empty((shape[0], len(rows_), *shape[2:]), device=device).exponential_(generator=gen)
                noise[:, rows_] = part
        return noise

    variants = {}
    released = build()
    model = released.model
    raw: dict = {}
    sigs = {key: inspect.signature(model.unet.get_submodule(key).forward) for key in model.blocks}
    for key in model.blocks:
        def capture(module, a, k, key=key):
            bound = sigs[key].bind_partial(*a, **k).arguments
            skips = bound.get("res_hidden_states_tuple")
            raw[key] = (bound["hidden_states"], skips[-1] if skips else None, bound["temb"])
        model.unet.get_submodule(key).register_forward_pre_hook(capture, with_kwargs=True)

    def released_weights(i, module):
        layer = model.masked[i]
        h, skip, temb = raw[layer.block]
        feats = [h] if skip is None else [h, skip]
        pooled = torch.cat([F.adaptive_avg_pool2d(f, (1, 1)) for f in feats], 1)
        grid = model.generators[layer.block.replace(".", "-")](pooled, temb)  # re-run in every layer
        a = model.adapters[i]
        logits = F.linear(F.linear(grid.transpose(-1, -2), a.rows.weight, a.rows.bias).transpose(-1, -2),
                          a.cols.weight, a.cols.bias)
        noise = torch.empty_like(logits)
        for r, gen in enumerate(model.row_generators):
            noise[r].exponential_(generator=gen)
        soft = torch.sigmoid(logits - torch.log(noise))
        hard = (soft > 0.5).float()
        mask = hard - soft + soft
        return maskunet_fast.MaskedWeights(module.weight * mask)

    for i, layer in enumerate(model.masked):
        layer.module.mask_fn = (lambda module, i=i: released_weights(i, module))
    variants["released"] = call(released)

    slow_exp = build()
    slow_exp.model._fused = None
    variants["per_layer_exponential"] = call(slow_exp)
    slow = build()
    slow.model._fused = None
    variants["per_layer"] = call(slow)
    variants["grouped"] = call(build())
    variants["grouped_image_scope"] = call(build(mask_scope="image"))
    variants["grouped_deterministic"] = call(build(deterministic=True))
    variants["grouped_counter"] = call(build(noise="counter"))
    base_prepared = Prepared(one.bundle.denoiser)  # the base model
    variants["base"] = call(base_prepared)

    original = maskunet_fast.draw_group_noise

    def switch(name, fn):
        def run():
            import mubench.methods.maskunet as mu
            if name == "per_layer_exponential":
                mu.draw_group_noise = exponential_noise_draw
            try:
                fn()
            finally:
                mu.draw_group_noise = original
        return run

    timed = {name: switch(name, fn) for name, fn in variants.items()}
    clock = resolve_clock("auto", device)
    times = interleaved(timed, device, warmup=args.warmup, repeats=args.repeats, seed=0)
    base = [t.get(clock) for t in times["base"]]
    out = {}
    for name in variants:
        if name == "base":
            continue
        v = [t.get(clock) for t in times[name]]
        ratio, lo, hi = ratio_ci(v, base)
        out[name] = {"forward_ratio": round(ratio, 3), "ci": None if lo is None else [round(lo, 3), round(hi, 3)],
                     "ms": round(1e3 * sorted(v)[len(v) // 2], 2),
                     "ratio_of_minima": round(min(v) / min(base), 3)}  # robust to another tenant's bursts
    line = {"benchmark": "mask_ablation", "model": args.model, "weights": args.weights, "rows": 2,
            "threads": args.threads, "clock": clock, "repeats": args.repeats, "warmup": args.warmup,
            "base_ms": round(1e3 * sorted(base)[len(base) // 2], 2), "variants": out,
            "masked_weights_per_row": sum(layer.numel for layer in model.masked),
            "load_average": [round(v, 2) for v in os.getloadavg()]}
    sys.stdout.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
