"""What the ``efficiency`` suite times, counts and weighs, apart from the suite's own bookkeeping: one denoiser call
through a method's hooks, the modules resident while an image is made, FLOPs with fused kernels on their torch path,
and the machine's facts a measurement records (device name, load average)."""
from __future__ import annotations

import os
import platform
from typing import Any, Callable, Optional

import torch

from ..methods.base import Prepared, RowInfo, StepState
from ..perf import flops as flops_mod
from ..perf import memory as memory_mod
from ..seeding import image_generator


def device_name(device: torch.device) -> str:
    """The GPU's name, else the CPU's model name."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> Optional[list[float]]:
    """The 1, 5 and 15 minute load averages (None where the system has none): a loaded machine slows timings."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def denoiser_call(bundle, prepared: Prepared, sampler, prompt: Any, seeds: list[int],
                  cfg: bool) -> Callable[[], Any]:
    """One denoiser call of one image of ``prompt`` per seed through the method's hooks (begin_batch, before_step,
    ``forward_once``, end_batch) at the sampler's first timestep: their CFG rows ``[uncond; cond]`` (``cfg``) or
    their conditional rows alone; image ``i`` draws from the stream of ``seeds[i]``."""
    from ..models.base import Conditioning
    from ..sampler import call_denoiser, denoiser_of, make_scheduler

    param = next(bundle.denoiser.parameters())
    scheduler = make_scheduler(sampler.scheduler, bundle.scheduler_config)
    scheduler.set_timesteps(sampler.steps)
    t = scheduler.timesteps[0]
    shape = bundle.codec.latent_shape(sampler.resolution, sampler.resolution)
    images = len(seeds)
    latents = torch.stack([torch.randn(shape, generator=image_generator(s)) for s in seeds]).to(param.device)
    cond = bundle.conditioner.encode([prompt] * images)
    rows = [RowInfo(i, True) for i in range(images)]
    if cfg:
        cond = Conditioning.cat(bundle.conditioner.unconditional(images), cond)
        rows = [RowInfo(i, False) for i in range(images)] + rows
    x = (torch.cat([latents, latents]) if cfg else latents).to(param.dtype)
    extras = {"guidance": sampler.guidance, "prompts": [prompt] * images, "scheduler": sampler.scheduler}
    denoiser = denoiser_of(prepared, sampler)

    def call() -> torch.Tensor:
        generators = [image_generator(s) for s in seeds]
        prepared.begin_batch(generators, rows)
        try:
            state = StepState(0, sampler.steps, t, latents, rows, generators, extras=extras)
            prepared.before_step(state)
            with torch.no_grad():
                return prepared.forward_once(state, lambda: call_denoiser(bundle, denoiser, x, t.to(param.device),
                                                                          cond))
        finally:
            prepared.end_batch()

    return call


def pipeline_modules(bundle, prepared: Prepared) -> list[torch.nn.Module]:
    """The modules whose weights stay resident while an image is made: the denoisers, the modules the conditioner,
    the codec and the bundle's extras hold, and the modules the prepared method holds in plain objects and
    containers too (maskunet-free's reward models sit in ``prepared.rewards`` as ``(term, scorer)``;
    :func:`~mubench.perf.memory.held_modules`)."""
    return memory_mod.held_modules([bundle.denoiser, prepared.denoiser, bundle.conditioner, bundle.codec,
                                    bundle.extras, prepared])


def count_flops(prepared: Prepared, fn: Callable[[], Any], notes: list[str]) -> tuple[int, dict[str, int]]:
    """``fn``'s FLOPs, with the prepared denoiser's fused kernels on their torch path (the same GEMMs, as aten ops
    FlopCounterMode sees); a note says when one was."""
    with flops_mod.torch_kernels(prepared.denoiser.modules()) as switched:
        counted = flops_mod.count_flops(fn)
    note = f"FLOPs: {', '.join(switched)} counted with kernel=torch (the same arithmetic as kernel=triton, whose " \
           "GEMMs run inside a Triton kernel FlopCounterMode cannot see)"
    if switched and note not in notes:
        notes.append(note)
    return counted
