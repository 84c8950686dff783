"""Shared by the efficiency benchmarks: run ``suite=efficiency`` for several methods on one model, in this process,
and print ONE JSON line with each method's figures (every ratio measured against the base in the same suite run).

Not a module of the package: the scripts next to this file import it by path.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Optional

FIGURES = ("added_params", "trainable_params", "gmacs", "gflops", "base_gflops", "gflops_ratio", "gflops_per_image",
           "base_gflops_per_image", "latency_s", "base_latency_s", "latency_ratio", "forward_ms", "base_forward_ms",
           "forward_ratio", "peak_memory_mb", "base_peak_memory_mb", "peak_memory_ratio", "train_step_s",
           "full_ft_step_s", "train_step_ratio")


def parser(description: str, methods: str, repeats: int, steps: Optional[int]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--methods", default=methods,
                   help=f"comma-separated [LABEL=]SPEC[:KEY=VALUE;...] (method overrides); default {methods}")
    p.add_argument("--repeats", type=int, default=repeats, help="timed rounds per latency figure")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    p.add_argument("--forward-repeats", type=int, default=2 * repeats, help="timed rounds of one denoiser call")
    p.add_argument("--steps", type=int, default=steps, help="the base's DDIM steps (default: the suite's 50)")
    p.add_argument("--images", default="1",
                   help="comma-separated images per call, e.g. 1,32 (32: the GPU default chunk): every method at "
                        "each; figures at N > 1 are keyed LABEL@N (default 1, the paper's batch 1)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: stable on a shared CPU)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--weights", default="pretrained", help="pretrained | random (model and helper models)")
    p.add_argument("--extra", nargs="*", default=[], help="more KEY=VALUE for mubench run (e.g. suite.memory=false)")
    return p


# the training-free method at the paper's schedule (method.md §4.2), whatever a model's recipe in the spec says
PAPER_FREE_SCHEDULE = ("method.early_steps=7", "method.early_updates=1", "method.late_updates=10",
                       "method.final_update=true", "method.sampler.scheduler=dpmsolver++1", "method.sampler.steps=15")


def split_method(entry: str) -> tuple[str, str, list[str]]:
    """``label=spec:KEY=VALUE;KEY=VALUE`` (label and keys optional) → (label, spec, ["method.KEY=VALUE", ...])."""
    label, _, rest = entry.partition("=") if "=" in entry.split(":")[0] else (entry.split(":")[0], "", entry)
    spec, _, keys = rest.partition(":")
    extra = [f"method.{k}" for k in keys.split(";") if k]
    return label, spec, extra


def run_one(method: str, model: str, args: argparse.Namespace, method_keys: tuple[str, ...] = (),
            images: int = 1) -> dict[str, Any]:
    from mubench.config import resolve
    from mubench.errors import MubenchError
    from mubench.registry import load_registries
    from mubench.runner import Runner

    regs = load_registries()
    keys = [f"suite=efficiency", f"method={method}", f"model={model}", f"device={args.device}",
            f"weights={args.weights}", f"suite.repeats={args.repeats}", f"suite.warmup={args.warmup}",
            f"suite.forward_repeats={args.forward_repeats}", f"suite.threads={args.threads}",
            f"suite.images={images}", *method_keys,
            *args.extra]
    if args.steps is not None:
        keys.append(f"suite.sampler.steps={args.steps}")
    try:
        cfg = resolve(keys, regs)
    except MubenchError as err:  # e.g. a method spec that does not exist (yet)
        return {"skipped": str(err).splitlines()[0]}
    t0 = time.perf_counter()
    try:
        results = Runner(cfg, regs).execute().results
    except MubenchError as err:  # e.g. a missing or mismatching asset of this method: report it, go on
        return {"error": str(err).splitlines()[0]}
    except Exception as err:  # noqa: BLE001 - a crash of one method must not lose the others' figures
        import traceback

        traceback.print_exc()
        return {"error": f"{type(err).__name__}: {err}".splitlines()[0]}
    metrics = results["metrics"]
    out: dict[str, Any] = {k: _fig(metrics[k]) for k in FIGURES if k in metrics}
    out["sampler"] = results["protocol"]["sampler"]
    out["dtype"] = results["protocol"].get("dtype")
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    out["load_average"] = [results["measurements"].get("load_average_before"),
                           results["measurements"].get("load_average_after")]
    if results["measurements"].get("notes"):  # e.g. kernel=triton's FLOPs counted with the torch kernel
        out["notes"] = results["measurements"]["notes"]
    out["_protocol"] = results["protocol"]["efficiency"]
    return out


def _fig(m: dict[str, Any]) -> Any:
    value = round(m["value"], 4)
    if m.get("ci_low") is None:
        return value
    return {"value": value, "ci": [round(m["ci_low"], 4), round(m["ci_high"], 4)], "n": m["n"]}


def _value(fig: Any) -> Optional[float]:
    return fig["value"] if isinstance(fig, dict) else fig


def main(benchmark: str, model: str, args: argparse.Namespace, targets: dict[tuple[str, str], float],
         spec_keys: Optional[dict[str, list[str]]] = None) -> None:
    """``spec_keys``: more method keys for every entry of a given spec (e.g. reward settings of maskunet-free)."""
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from mubench.quiet import quiet_libraries

    quiet_libraries()
    torch.set_num_threads(args.threads)
    per_method = {}
    for images in [int(n) for n in args.images.split(",") if n.strip()]:
        for entry in [m for m in args.methods.split(",") if m]:
            label, spec, keys = split_method(entry)
            if spec == "maskunet-free" and not keys:
                keys = list(PAPER_FREE_SCHEDULE)
            keys = keys + list((spec_keys or {}).get(spec, []))
            key = label if images == 1 else f"{label}@{images}"
            per_method[key] = run_one(spec, model, args, tuple(keys), images)
            per_method[key]["images_per_call"] = images
            if keys:
                per_method[key]["method_overrides"] = keys
            # each method's figures as soon as they exist: a time limit that kills the run keeps the ones before
            sys.stderr.write("partial " + json.dumps({key: per_method[key]}, default=str) + "\n")
            sys.stderr.flush()
    protocol = next((v.pop("_protocol") for v in per_method.values() if "_protocol" in v), {})
    for v in per_method.values():
        v.pop("_protocol", None)
    checks = {}
    for (method, figure), bound in targets.items():
        fig = per_method.get(method, {}).get(figure)
        value = _value(fig) if fig is not None else None
        checks[f"{method}.{figure} <= {bound}"] = {"value": value, "met": None if value is None else value <= bound}
    from datetime import datetime, timezone

    from mubench.provenance import package_versions

    dtypes = {v.get("dtype") for v in per_method.values() if v.get("dtype")}
    line = {"benchmark": benchmark, "model": model, "weights": args.weights, "device": protocol.get("device"),
            "device_name": protocol.get("device_name"), "threads": protocol.get("threads"),
            "dtype": dtypes.pop() if len(dtypes) == 1 else sorted(dtypes),
            "clock": protocol.get("clock"), "warmup": args.warmup, "repeats": args.repeats,
            "forward_repeats": args.forward_repeats, "base_sampler": protocol.get("base_sampler"),
            "methods": per_method, "targets": checks,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "versions": package_versions(),
            "git": _git() or os.environ.get("MUBENCH_GIT")}  # a copied tree without .git: the caller's revision
    sys.stdout.write(json.dumps(line, sort_keys=False) + "\n")


def _git() -> Optional[str]:
    from mubench.provenance import git_revision

    return git_revision()
