"""Peak memory of one call, on a GPU from CUDA's allocator, on a CPU from torch's CPU allocator events.

- **GPU**: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``: every tensor byte allocated on the
  device at the peak, weights included (``resident``: what was allocated before the call).
- **CPU**: process RSS is useless for this on a shared machine and with glibc keeping freed memory, so the peak is
  counted in tensor bytes: ``resident`` = the unique storages of the parameters and buffers of the modules given
  (the pipeline's weights), plus the peak over the call of the running sum of torch's CPU allocations and frees
  (``torch.profiler`` with ``profile_memory=True``, its ``[memory]`` events). Allocations made outside torch (Python
  objects, oneDNN scratch space) are not counted. The profiler slows the call down, so this is a separate, untimed run.
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import torch
from torch import nn

from .timing import synchronize

CUDA_TOOL = "torch.cuda.max_memory_allocated (all tensors on the device at the peak, weights included)"
CPU_TOOL = ("tensor bytes: parameters + buffers of the pipeline's modules, plus the peak running sum of torch CPU "
            "allocations during the call (torch.profiler profile_memory events)")


@dataclass
class PeakMemory:
    peak_bytes: int  # the reported figure
    resident_bytes: int  # allocated before the call (GPU) / the modules' weights (CPU)
    transient_bytes: int  # peak minus resident
    tool: str

    @property
    def peak_mb(self) -> float:
        return self.peak_bytes / 2**20


def tensor_bytes(modules: Iterable[nn.Module]) -> int:
    """Bytes of the unique storages of the modules' parameters and buffers (shared storages counted once)."""
    seen: dict[int, int] = {}
    for module in modules:
        for t in list(module.parameters()) + list(module.buffers()):
            if t.device.type == "meta":
                continue
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def peak_memory(fn: Callable[[], object], device: torch.device, modules: Iterable[nn.Module]) -> PeakMemory:
    """Run ``fn`` once and measure its peak memory (see module docstring)."""
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        return PeakMemory(peak, before, peak - before, CUDA_TOOL)
    resident = tensor_bytes(modules)
    transient = cpu_allocation_peak(fn)
    return PeakMemory(resident + transient, resident, transient, CPU_TOOL)


def cpu_allocation_peak(fn: Callable[[], object]) -> int:
    """Peak over ``fn`` of (bytes allocated − bytes freed) by torch's CPU allocator, from the profiler's events."""
    from torch.profiler import ProfilerActivity, profile

    with _without_profiler_chatter(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events()
              if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU]
    current = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        current += e.nbytes()
        peak = max(peak, current)
    return peak


# lines the profiler's native code prints on every start/stop on a machine without a GPU
_PROFILER_CHATTER = ("SyncActivityProfilerHandler", "gpuGetDeviceCount", "allocated before the profiling started")


@contextlib.contextmanager
def _without_profiler_chatter() -> Iterator[None]:
    """Hold back what native code writes to stderr (fd 2) meanwhile; pass on every line that is not known chatter."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            for line in held.read().decode(errors="replace").splitlines(keepends=True):
                if not any(mark in line for mark in _PROFILER_CHATTER):
                    sys.stderr.write(line)
