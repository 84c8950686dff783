"""``compile=``: the denoiser through ``torch.compile`` against eager, per method, in interleaved rounds; one JSON line.

    .venv/bin/python benchmarks/compile_denoiser.py [--model micro] [--methods sd,lora-micro] [--modes default]
        [--images 16] [--rounds 5] [--device cpu|cuda] [--dtype auto]

For each method and mode: the same ``--images`` images of the suite's prompts (base sampler, the run's default
chunk) made by ``sample_latents`` eagerly and compiled, alternating (eager, compiled, eager, ...) after one untimed
warm-up call of each. The warm-up of the compiled variant is the compilation; it is reported as ``compile_s``
(its time minus the eager warm-up's). Per method and mode:

- ``speedup``: median eager seconds / median compiled seconds, with a paired bootstrap CI over rounds;
- ``repeat_bitwise``: the compiled latents of two calls are bitwise equal (stable from call to call);
- ``max_abs_diff``: the largest difference between compiled and eager final latents (compiled kernels round
  differently, which is why ``compile`` is part of the protocol).

Methods that are not ``compile_safe`` (maskunet-free; stream-noise maskunet with conv layers or on a transformer)
refuse ``compile`` and are reported as skipped. ``--methods`` takes the efficiency benchmarks'
``LABEL=SPEC:KEY=VALUE;...`` form, e.g. ``maskunet-counter=maskunet:noise=counter``. Decision rule (issue 16): a
mode becomes a default only where it is measured faster (CI above 1) and ``repeat_bitwise`` holds, on that device.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _efficiency import split_method  # noqa: E402


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="micro")
    ap.add_argument("--suite", default="micro", help="suite whose prompts and sampler are used (default micro)")
    ap.add_argument("--methods", default="sd,lora-micro",
                    help="comma-separated [LABEL=]SPEC[:KEY=VALUE;...] (method overrides), e.g. "
                         "maskunet-counter=maskunet:noise=counter")
    ap.add_argument("--modes", default="default", help="comma-separated compile modes (default, reduce-overhead, ...)")
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--weights", default="pretrained")
    ap.add_argument("--extra", nargs="*", default=[], help="more KEY=VALUE for the run (e.g. train=never)")
    return ap.parse_args()


def measure(method: str, method_keys: list[str], modes: list[str], args: argparse.Namespace) -> dict:
    from mubench.chunking import default_chunk
    from mubench.config import resolve
    from mubench.errors import MubenchError
    from mubench.perf.timing import interleaved, ratio_ci
    from mubench.registry import load_registries
    from mubench.runner import Runner
    from mubench.sampler import check_compilable, resolve_sampler, sample_latents

    regs = load_registries(plugins=False)
    cfg = resolve([f"suite={args.suite}", f"model={args.model}", f"method={method}", *method_keys,
                   f"device={args.device}", f"dtype={args.dtype}", f"weights={args.weights}", *args.extra], regs)
    runner = Runner(cfg, regs)
    bundle = runner.load_model()
    try:
        prepared = runner.prepare(bundle)
    except MubenchError as err:
        return {"skipped": str(err).splitlines()[0]}
    eager = resolve_sampler(bundle, getattr(runner.suite.params, "sampler", None),
                            getattr(prepared, "sampler_overrides", None), chunk=default_chunk(runner.device))
    items = runner.items()
    prompts = [items[i % len(items)].prompt for i in range(args.images)]
    seeds = list(range(args.images))
    out: dict = {"sampler": eager.as_dict()}
    for mode in modes:
        compiled = replace(eager, compile=mode)
        try:
            check_compilable(prepared, compiled, method)
        except MubenchError as err:
            out[mode] = {"skipped": str(err).splitlines()[0]}
            continue
        made: dict[str, list[torch.Tensor]] = {"eager": [], "compiled": []}

        def make(name: str, sampler) -> None:
            made[name].append(sample_latents(bundle, prepared, prompts, seeds, sampler))

        warm = interleaved({"eager": lambda: make("eager", eager), "compiled": lambda: make("compiled", compiled)},
                           runner.device, warmup=0, repeats=1)
        times = interleaved({"eager": lambda: make("eager", eager), "compiled": lambda: make("compiled", compiled)},
                            runner.device, warmup=0, repeats=args.rounds)
        e = [t.wall_s for t in times["eager"]]
        c = [t.wall_s for t in times["compiled"]]
        speedup, lo, hi = ratio_ci(e, c)
        out[mode] = {
            "speedup": round(speedup, 3), "ci": None if lo is None else [round(lo, 3), round(hi, 3)],
            "eager_images_per_s": round(args.images / sorted(e)[len(e) // 2], 3),
            "compiled_images_per_s": round(args.images / sorted(c)[len(c) // 2], 3),
            "compile_s": round(warm["compiled"][0].wall_s - warm["eager"][0].wall_s, 1),
            "repeat_bitwise": all(torch.equal(made["compiled"][0], x) for x in made["compiled"][1:]),
            "max_abs_diff": float((made["compiled"][-1] - made["eager"][-1]).abs().max()),
        }
        print(f"{method} compile={mode}: {out[mode]}", file=sys.stderr)
    return out


def main() -> None:
    args = parse()
    from mubench.quiet import quiet_libraries

    quiet_libraries()
    modes = [m for m in args.modes.split(",") if m]
    entries = [split_method(m) for m in args.methods.split(",") if m]
    results = {label: measure(method, keys, modes, args) for label, method, keys in entries}
    line = {"benchmark": "compile_denoiser", "model": args.model, "suite": args.suite, "device": args.device,
            "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda")
            else platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(), "images": args.images, "rounds": args.rounds,
            "torch": torch.__version__, "methods": results}
    print(json.dumps(line, sort_keys=True))


if __name__ == "__main__":
    main()
