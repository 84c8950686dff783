"""What maskunet's default sampling path spends per denoiser call, stage by stage, against the base forward; one JSON
line.

    .venv/bin/python benchmarks/mask_stages.py [--model sd15-reduced] [--repeats 12] [--device cpu]

One CFG call (an image's two rows) of the default settings (``noise: stream``, grouped linears, ``kernel: torch``).
Every round times, in shuffled order: the base model's call, maskunet's call, and the mask computation of every group
replayed from the features that call captured, stage by stage (each stage synchronised and timed on its own, summed
over the groups):

- ``adapter_h``: ``h = A_out · grid + b_out`` (the first batched adapter GEMM);
- ``adapter_logits``: ``ℓ = h · A_inᵀ + b_in`` (the second);
- ``uniform``: ``U ~ U[0, 1)`` from a generator stream (torch's mt19937 on a CPU: the bits of ``noise: stream``);
- ``to_exponential``: ``E = −log(1 − U)``;
- ``threshold``: ``W ⊙ [E < e^ℓ]`` (:func:`~mubench.methods.masking.thresholded_product`);
- for comparison, not part of the path: ``threshold_bool_mask``, the same weights through a bool mask
  (``masked_product(W, E < e^ℓ)``: what the path did before, and still does where ``on_mask`` observes masks).

Reported: median milliseconds per stage with a 95 % CI, each as a fraction of the base call; ``forward_ratio`` of
the whole call (paired CI over rounds); and ``floor_ratio`` = 1 + (uniform + adapter GEMMs) / base: what the default
path would cost if every other part of it were free, since the stream's bits and the adapter's arithmetic are what
keeps its masks (and every number computed with them) unchanged.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _one_call import OneCFGCall  # noqa: E402

STAGES = ("adapter_h", "adapter_logits", "uniform", "to_exponential", "threshold")
COMPARED = ("threshold_bool_mask",)  # timed for comparison, not part of the path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="sd15-reduced")
    p.add_argument("--weights", default="random", help="pretrained | random")
    p.add_argument("--repeats", type=int, default=12, help="timed rounds")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: stable on a shared CPU)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", help="float32 | float16 | bfloat16 (weights and activations)")
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from mubench.methods.base import Prepared
    from mubench.methods.maskunet_fast import _to_exponential
    from mubench.methods.masking import keep_mask, masked_product, thresholded_product
    from mubench.perf.timing import interleaved, median_ci, ratio_ci, resolve_clock, time_call
    from mubench.quiet import quiet_libraries

    quiet_libraries()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    one = OneCFGCall(args.model, args.weights, device, getattr(torch, args.dtype))
    prepared = one.maskunet()
    fused = prepared.model._fused
    grids: dict[int, torch.Tensor] = {}
    compute = fused._compute

    def capture(g: int) -> None:
        grids[g] = prepared.model._grids[(fused.groups[g].block, (1, 1))].clone()
        compute(g)

    fused._compute = capture
    one.runner(prepared)()
    fused._compute = compute

    stage_times: dict[str, list[float]] = {name: [] for name in STAGES + COMPARED}
    clock = resolve_clock("auto", device)

    @torch.no_grad()
    def stages() -> None:
        spent = dict.fromkeys(STAGES + COMPARED, 0.0)
        noise_gen = torch.Generator(device=device).manual_seed(7)
        for g, group in enumerate(fused.groups):
            grid, L, (out_f, in_f) = grids[g], len(group.layers), group.shape
            B = grid.shape[0]
            b_out, a_out, b_in, a_in_t, weight = fused._stacked_params(g, B)
            found: dict[str, torch.Tensor] = {}
            steps = {
                "adapter_h": lambda: found.__setitem__("h", torch.baddbmm(
                    b_out, a_out, grid.to(a_out.dtype)[None].expand(L, *grid.shape).reshape(L * B, *grid.shape[1:]))),
                "adapter_logits": lambda: found.__setitem__("logits", torch.baddbmm(
                    b_in, found["h"], a_in_t).view(L, B, out_f, in_f).float()),
                "uniform": lambda: found.__setitem__("u", torch.empty_like(found["logits"]).uniform_(
                    0.0, 1.0, generator=noise_gen)),
                "to_exponential": lambda: _to_exponential(found["u"]),
                "threshold_bool_mask": lambda: masked_product(weight, keep_mask(found["copy"], found["u"])),
                "threshold": lambda: thresholded_product(weight, found["logits"], found["u"]),
            }
            for name in STAGES[:-1] + COMPARED + STAGES[-1:]:
                if name == "threshold_bool_mask":  # its own copy of the logits (both thresholds overwrite them)
                    found["copy"] = found["logits"].clone()
                spent[name] += time_call(steps[name], device).get(clock)
        for name in spent:
            stage_times[name].append(spent[name])

    times = interleaved({"base": one.runner(Prepared(one.bundle.denoiser)), "maskunet": one.runner(prepared),
                         "stages": stages}, device, warmup=args.warmup, repeats=args.repeats, seed=0)
    for name in stage_times:
        del stage_times[name][:args.warmup]
    base = [tm.get(clock) for tm in times["base"]]
    masked = [tm.get(clock) for tm in times["maskunet"]]
    base_ms = 1e3 * median_ci(base)[0]
    out = {}
    for name in STAGES + COMPARED:
        med, lo, hi = median_ci(stage_times[name])
        out[name] = {"ms": round(1e3 * med, 2), "ci": None if lo is None else [round(1e3 * lo, 2), round(1e3 * hi, 2)],
                     "of_base": round(1e3 * med / base_ms, 4)}
    ratio, lo, hi = ratio_ci(masked, base)
    floor = 1 + sum(out[name]["ms"] for name in ("adapter_h", "adapter_logits", "uniform")) / base_ms
    line = {"benchmark": "mask_stages", "model": args.model, "weights": args.weights, "device": str(device),
            "dtype": args.dtype, "threads": args.threads, "clock": clock, "repeats": args.repeats,
            "warmup": args.warmup, "rows": 2,
            "groups": len(fused.groups), "masked_weights_per_row": sum(m.numel for m in prepared.model.masked),
            "base_ms": round(base_ms, 2), "maskunet_ms": round(1e3 * median_ci(masked)[0], 2),
            "forward_ratio": {"value": round(ratio, 3), "ci": None if lo is None else [round(lo, 3), round(hi, 3)]},
            "stages": out, "mask_stages_of_base": round(sum(out[name]["ms"] for name in STAGES) / base_ms, 4),
            "floor_ratio": round(floor, 3), "torch": torch.__version__,
            "load_average": [round(v, 2) for v in os.getloadavg()]}
    sys.stdout.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
