"""``efficiency``: what a method costs on a model, against the base model measured in the same run.

``mubench run suite=efficiency method=M model=X`` measures instead of generating and scoring (``Suite.measures``):

- ``added_params`` / ``trainable_params``: parameters the method adds / its training updates (``numel``).
- ``gflops`` / ``gmacs`` (and ``base_*``, ``gflops_ratio``): one denoiser forward at batch 1 (one row, no CFG
  doubling) through the method's hooks, *mask path included* (generators, adapters; counted by
  ``torch.utils.flop_counter.FlopCounterMode``, which counts matmul/conv/attention kernels, not elementwise ops; a
  fused Triton kernel through the method's torch kernel, the same arithmetic);
  ``gflops_per_image`` (and ``base_*``): every counted FLOP of one image end to end (text encoder, all denoiser calls
  with CFG, a training-free method's inner updates and rewards, the decoder).
- ``latency_s`` / ``base_latency_s`` / ``latency_ratio``: one image end to end (batch 1, CFG on; text encoding,
  every denoising step, decoding), each at its own sampling protocol: the base at the suite's sampler (default 50
  DDIM steps), the method at the suite's sampler with the method's own settings over it (maskunet-free: 15
  first-order DPM-Solver++ steps with its inner updates). Median over ``repeats`` rounds after ``warmup`` rounds;
  base and method alternate in a freshly shuffled order every round; the ratio's CI resamples rounds (paired).
- ``forward_ms`` / ``base_forward_ms`` / ``forward_ratio``: one CFG denoiser call (the image's two rows), hooks
  included: the per-step cost without the sampler, text encoder and decoder around it.
- ``peak_memory_mb`` / ``base_peak_memory_mb`` / ``peak_memory_ratio``: one image end to end, in tensor bytes: the
  variant's weights (every module it holds, reward models included) plus the image's own peak (CUDA's counters on a
  GPU, the profiler's allocation events on a CPU); caches a method keeps are dropped first, so the image allocates
  them whatever was measured before (:mod:`mubench.perf.memory` says exactly what).
- ``train_step_ratio`` (trainable methods): one trainer step of the method vs one full fine-tune step of the same
  denoiser on the same batch (``train_step_s`` / ``full_ft_step_s``).

By default the method is *built* (its structure with freshly initialised added weights; no artifact trained or
loaded): costs do not depend on the added weights' values (masks are dense computations). ``use_artifact: true``
prepares it as a generating run would (loading, or training on demand, its artifact).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

from ..errors import UsageError
from ..metrics.core import Metric
from ..methods.base import Prepared
from ..perf import flops as flops_mod
from ..perf import memory as memory_mod
from ..perf.timing import interleaved, median_ci, ratio_ci, resolve_clock
from ..seeding import image_seed
from .base import MeasureContext, Measurement, PromptItem, SampleRecord, SamplerParams, ScorerUse, Suite
from .efficiency_probes import count_flops, denoiser_call, device_name, load_average, pipeline_modules

TRAIN_STEP = ("auto", "always", "never")


def _default_sampler() -> SamplerParams:
    return SamplerParams(scheduler="ddim", steps=50)


@dataclass
class EfficiencyParams:
    prompt: str = "a red circle to the left of a blue square"  # text-conditional models
    class_label: int = 0  # class-conditional models
    warmup: int = 2  # untimed rounds before timing
    repeats: int = 10  # timed rounds (one image of each variant per round)
    forward_repeats: int = 20  # timed rounds of the single denoiser call (0: skip)
    # images per call for latency, forward and memory (the sampler's chunk): 1 = the paper's batch 1; a chunk size
    # (32: the GPU default) measures what a run pays per chunk. FLOPs stay per row at batch 1.
    images: int = 1
    clock: str = "auto"  # auto | wall | cpu (see mubench.perf.timing)
    threads: Optional[int] = None  # torch intra-op threads while measuring (None: as configured)
    use_artifact: bool = False  # true: prepare the method (load / train its artifact) instead of building it
    latency: bool = True  # time one image end to end
    flops: bool = True  # count FLOPs of one denoiser forward
    image_flops: bool = True  # count FLOPs of one whole image (one more untimed image per variant)
    memory: bool = True  # peak memory of one image (one more untimed image per variant)
    train_step: str = "auto"  # auto: for trainable methods | always | never
    train_batch_size: int = 2
    train_repeats: int = 5
    train_warmup: int = 1
    train_resolution: Optional[int] = None  # None: the sampler's resolution
    sampler: SamplerParams = field(default_factory=_default_sampler)

    def validate(self) -> None:
        if self.images < 1:
            raise UsageError(f"efficiency: images must be >= 1, got {self.images}")
        if self.repeats < 1 or self.warmup < 0 or self.forward_repeats < 0:
            raise UsageError("efficiency: repeats must be >= 1, warmup and forward_repeats >= 0")
        if self.train_step not in TRAIN_STEP:
            raise UsageError(f"efficiency: train_step must be one of {', '.join(TRAIN_STEP)}, got {self.train_step!r}")
        if self.train_batch_size < 1 or self.train_repeats < 1 or self.train_warmup < 0:
            raise UsageError("efficiency: train_batch_size and train_repeats must be >= 1, train_warmup >= 0")
        if self.threads is not None and self.threads < 1:
            raise UsageError(f"efficiency: threads must be >= 1, got {self.threads}")


def _count(value: float) -> Metric:
    return Metric(float(value), None, None, 1, False)


class EfficiencySuite(Suite):
    Params = EfficiencyParams
    measures = True

    def __init__(self, params: Any, name: str) -> None:
        super().__init__(params, name)
        self._protocol: dict[str, Any] = {}

    # the generate/score contract (unused: this suite measures)
    def items(self) -> list[PromptItem]:
        return [PromptItem(id="efficiency-0", prompt=self.params.prompt)]

    def scorers(self) -> dict[str, ScorerUse]:
        return {}

    def aggregate(self, records: list[SampleRecord]) -> dict[str, Metric]:
        raise UsageError("the efficiency suite measures costs; it has no images to aggregate")

    def protocol(self) -> dict[str, Any]:
        return dict(self._protocol)

    # ---- measuring
    def measure(self, ctx: MeasureContext) -> Measurement:
        p: EfficiencyParams = self.params
        p.validate()
        # the trained artifact (use_artifact) is the one runs at this process's thread count use (the count is part
        # of a CPU artifact's address): prepared before the measurement's own thread count is set
        trained = ctx.method.prepare(ctx.bundle, ctx.method_context) if p.use_artifact else None
        saved_threads = torch.get_num_threads()
        if p.threads is not None:
            torch.set_num_threads(p.threads)
        try:
            return self._measure(ctx, p, trained)
        finally:
            torch.set_num_threads(saved_threads)

    def _measure(self, ctx: MeasureContext, p: EfficiencyParams, trained: Optional[Prepared]) -> Measurement:
        bundle, method, device = ctx.bundle, ctx.method, torch.device(ctx.device)
        notes: list[str] = []
        if device.type == "meta":  # shapes only: parameter and FLOP counts of any architecture, nothing timed
            p = dataclasses.replace(p, latency=False, forward_repeats=0, memory=False, image_flops=False,
                                    train_step="never")
            notes.append("device=meta: parameters and per-forward FLOPs only (nothing runs, nothing is timed)")
        clock = resolve_clock(p.clock, device) if device.type != "meta" else "none"
        load_before = load_average()
        ctx.log(f"efficiency: building {method.name} on {bundle.name}")
        # built: in its sampling form, as a run samples with it (LoRA merged unless merge: false)
        prepared = trained if trained is not None else method.for_sampling(method.build(bundle, ctx.method_context))
        base = Prepared(bundle.denoiser, info={"change": "none (the base model)"})
        base_sampler, method_sampler = ctx.resolve_sampler(base), ctx.resolve_sampler(prepared)
        if base_sampler.guidance == 1.0 or method_sampler.guidance == 1.0:
            raise UsageError("the efficiency protocol measures with classifier-free guidance on; "
                             "guidance 1 turns it off (set suite.sampler.guidance)")
        s = _Session(
            bundle=bundle, p=p, device=device, clock=clock, seed=ctx.seed,
            prompt=p.class_label if bundle.conditioning_kind == "class" else p.prompt,
            seeds=[image_seed(ctx.seed, self.name, f"efficiency-{i}", 0) for i in range(p.images)],
            variants={"base": (base, base_sampler), "method": (prepared, method_sampler)},
            metrics={"added_params": _count(prepared.added_params),
                     "trainable_params": _count(prepared.trainable_params)},
            details={"load_average_before": load_before, "clock": clock, "notes": notes})
        progress = ctx.progress
        if progress is not None:
            progress.start("measure", (2 * (p.warmup + p.repeats) if p.latency else 0) +
                           (2 * (p.warmup + p.forward_repeats) if p.forward_repeats else 0))
            s.advance = lambda name, timed: progress.advance("measure", 1)
        _flop_counts(s)
        if p.latency:
            ctx.log(f"efficiency: timing {p.warmup}+{p.repeats} rounds of one image each ({clock} clock)")
            _time_images(s)
        if p.forward_repeats:
            _time_forwards(s)
        memory_tool = _weigh_images(s) if p.memory else None
        trainable = bool(getattr(type(method), "trainable", False)) and hasattr(prepared, "trainable_parameters")
        if p.train_step == "always" or (p.train_step == "auto" and trainable):
            if not hasattr(prepared, "trainable_parameters"):
                raise UsageError(f"train_step=always: method {method.name} has nothing to train")
            ctx.log("efficiency: timing one training step against a full fine-tune step")
            s.details["train_resolution"] = self._train_steps(ctx, p, s.prompt, method_sampler.resolution,
                                                              s.metrics, s.details)
        elif p.train_step == "auto":
            notes.append(f"train_step_ratio: {method.name} is not trainable")
        s.details["load_average_after"] = load_average()
        self._protocol = {"efficiency": _protocol(s, ctx, base_sampler, memory_tool)}
        return Measurement(s.metrics, prepared=prepared, sampler=method_sampler, details=s.details)

    def _train_steps(self, ctx: MeasureContext, p: EfficiencyParams, prompt: Any, resolution: int,
                     metrics: dict[str, Metric], details: dict[str, Any]) -> int:
        from ..perf.train_step import full_finetune_copy, make_batch, step_fn

        bundle, method = ctx.bundle, ctx.method
        res = int(p.train_resolution or resolution)
        batch = make_batch(bundle, [prompt] * p.train_batch_size, res, seed=ctx.seed)
        fresh = method.build(bundle, ctx.method_context)  # its own copy: the steps change its trainable weights
        params = list(fresh.trainable_parameters())
        full, full_params = full_finetune_copy(bundle)
        steps = {"method": step_fn(bundle, fresh.denoiser, params, batch),
                 "full_ft": step_fn(bundle, full, full_params, batch)}
        times = interleaved(steps, torch.device(ctx.device), warmup=p.train_warmup, repeats=p.train_repeats,
                            seed=ctx.seed + 2)
        clock = details["clock"]
        sm = [t.get(clock) for t in times["method"]]
        sf = [t.get(clock) for t in times["full_ft"]]
        metrics["train_step_s"] = Metric(*median_ci(sm), len(sm), False)
        metrics["full_ft_step_s"] = Metric(*median_ci(sf), len(sf), False)
        metrics["train_step_ratio"] = Metric(*ratio_ci(sm, sf), len(sm), False)
        details["train_steps"] = {k: [round(t.get(clock), 5) for t in v] for k, v in times.items()}
        del full, full_params, fresh
        return res


def _train_protocol(p: EfficiencyParams) -> dict[str, Any]:
    """How train steps are timed (recorded for every method, so all rows of a report share one protocol)."""
    return {"batch": p.train_batch_size, "resolution": p.train_resolution or "the sampler's",
            "optimizer": "AdamW (lr 1e-5)", "loss": "diffusion MSE, the model's prediction type",
            "warmup": p.train_warmup, "repeats": p.train_repeats, "when": p.train_step,
            "reference": "full fine-tune: every denoiser parameter trainable, same batch"}




@dataclass
class _Session:
    """One measurement's fixed inputs (the two variants, the prompt and seeds) and what its stages write."""

    bundle: Any
    p: EfficiencyParams
    device: torch.device
    clock: str
    seed: int
    prompt: Any
    seeds: list[int]
    variants: dict[str, tuple[Prepared, Any]]  # base / method -> (prepared, sampler)
    metrics: dict[str, Metric]
    details: dict[str, Any]
    advance: Optional[Callable[[str, bool], None]] = None  # the progress bar's step per timed call

    def image(self, prep: Prepared, sampler) -> Callable[[], Any]:
        """One call of ``p.images`` images of the prompt, end to end, with the variant's own sampler."""
        from ..sampler import sample_images

        chunked = dataclasses.replace(sampler, chunk=self.p.images)
        return lambda: sample_images(self.bundle, prep, [self.prompt] * self.p.images, self.seeds, chunked)


def _flop_counts(s: _Session) -> None:
    """FLOPs: one denoiser forward at batch 1 (one row), then one whole image; counted on the eager call
    (compile=: a compiled graph's kernels are not the aten ops FlopCounterMode counts), through the torch path of a
    fused kernel (kernel: triton), whose GEMMs FlopCounterMode cannot see."""
    p, notes = s.p, s.details["notes"]
    eager = {key: (prep, dataclasses.replace(sampler, compile="none")) for key, (prep, sampler) in s.variants.items()}
    if p.flops:
        counted = {key: count_flops(prep, denoiser_call(s.bundle, prep, sampler, s.prompt, s.seeds[:1], cfg=False),
                                    notes)
                   for key, (prep, sampler) in eager.items()}
        base_f, method_f = counted["base"][0], counted["method"][0]
        s.metrics.update({
            "gflops": _count(method_f / 1e9), "gmacs": _count(method_f / 2e9),
            "base_gflops": _count(base_f / 1e9), "base_gmacs": _count(base_f / 2e9),
            "gflops_ratio": _count(method_f / base_f if base_f else float("nan")),
        })
        s.details["flops_by_op"] = {k: v[1] for k, v in counted.items()}
    if p.image_flops:
        per_image = {key: count_flops(prep, s.image(prep, sampler), notes)[0] / p.images
                     for key, (prep, sampler) in eager.items()}
        s.metrics["gflops_per_image"] = _count(per_image["method"] / 1e9)
        s.metrics["base_gflops_per_image"] = _count(per_image["base"] / 1e9)


def _time_images(s: _Session) -> None:
    """Latency: one call of the images end to end, interleaved rounds."""
    times = interleaved({key: s.image(prep, sampler) for key, (prep, sampler) in s.variants.items()}, s.device,
                        warmup=s.p.warmup, repeats=s.p.repeats, seed=s.seed, on_call=s.advance)
    b = [t.get(s.clock) for t in times["base"]]
    m = [t.get(s.clock) for t in times["method"]]
    s.metrics["latency_s"] = Metric(*median_ci(m), len(m), False)
    s.metrics["base_latency_s"] = Metric(*median_ci(b), len(b), False)
    s.metrics["latency_ratio"] = Metric(*ratio_ci(m, b), len(m), False)
    s.details["latency"] = {k: {"wall_s": [round(t.wall_s, 5) for t in v],
                                "cpu_s": [round(t.cpu_s, 5) for t in v]} for k, v in times.items()}
    # context for a loaded machine: fastest method run / fastest base run (bursts of load only slow runs)
    s.details["latency"]["ratio_of_minima"] = round(min(m) / min(b), 4)


def _time_forwards(s: _Session) -> None:
    """One CFG denoiser call of the images, hooks included, interleaved rounds."""
    calls = {key: denoiser_call(s.bundle, prep, sampler, s.prompt, s.seeds, cfg=True)
             for key, (prep, sampler) in s.variants.items()}
    ftimes = interleaved(calls, s.device, warmup=s.p.warmup, repeats=s.p.forward_repeats, seed=s.seed + 1,
                         on_call=s.advance)
    fb = [t.get(s.clock) * 1e3 for t in ftimes["base"]]
    fm = [t.get(s.clock) * 1e3 for t in ftimes["method"]]
    s.metrics["forward_ms"] = Metric(*median_ci(fm), len(fm), False)
    s.metrics["base_forward_ms"] = Metric(*median_ci(fb), len(fb), False)
    s.metrics["forward_ratio"] = Metric(*ratio_ci(fm, fb), len(fm), False)


def _weigh_images(s: _Session) -> str:
    """Peak memory of one call of the images per variant; returns the tool that measured it."""
    peaks = {}
    for key, (prep, sampler) in s.variants.items():
        # what the method keeps from its first call on is allocated inside the measured call, whatever
        # ran before (latency, FLOPs at one row): as in a sampling run (mubench.perf.memory)
        memory_mod.drop_caches(prep, prep.denoiser)
        peaks[key] = memory_mod.peak_memory(s.image(prep, sampler), s.device, pipeline_modules(s.bundle, prep))
    s.metrics["peak_memory_mb"] = _count(peaks["method"].peak_mb)
    s.metrics["base_peak_memory_mb"] = _count(peaks["base"].peak_mb)
    s.metrics["peak_memory_ratio"] = _count(peaks["method"].peak_bytes / peaks["base"].peak_bytes)
    s.details["memory"] = {k: {"peak_bytes": v.peak_bytes, "resident_bytes": v.resident_bytes,
                               "transient_bytes": v.transient_bytes} for k, v in peaks.items()}
    return peaks["base"].tool


def _protocol(s: _Session, ctx: MeasureContext, base_sampler, memory_tool: Optional[str]) -> dict[str, Any]:
    p, device = s.p, s.device
    return {
        "device": device.type, "device_name": device_name(device), "threads": torch.get_num_threads(),
        "dtype": str(ctx.dtype).replace("torch.", ""), "clock": s.clock, "warmup": p.warmup,
        "repeats": p.repeats if p.latency else 0, "forward_repeats": p.forward_repeats,
        "order": "base and method alternate, order shuffled every round (seeded)",
        "latency": f"one call of {p.images} image(s) end to end (text encoder, all denoising steps, "
                   f"decoder), batch {p.images}, CFG on, median over rounds",
        "forward": f"one denoiser call of {p.images} image(s)' CFG rows ({2 * p.images} rows)",
        "base_sampler": base_sampler.as_dict(),  # the method's: protocol.sampler
        "method_weights": "artifact (prepared)" if p.use_artifact else "built (freshly initialised)",
        "flops_tool": flops_mod.TOOL if (p.flops or p.image_flops) else None,
        "flops_unit": "gflops = 2 x gmacs; per denoiser forward at batch 1 (one row); elementwise ops "
                      "not counted",
        "memory_tool": memory_tool, "train_step": _train_protocol(p),
    }
