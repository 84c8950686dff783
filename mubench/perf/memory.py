"""Peak memory of one call, on a GPU from CUDA's allocator, on a CPU from torch's CPU allocator events.

Both count in tensor bytes what *this* variant holds: ``resident`` = the unique storages of the parameters and
buffers of the modules given (the pipeline's weights; on a GPU those on that device), plus ``transient`` = the peak
over the call of what the call allocated and has not freed yet.

- **GPU**: ``transient`` = ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` minus
  ``torch.cuda.memory_allocated`` before the call (:func:`gpu_peak`). The device's whole peak would count everything
  else on the device too (the other variant's weights, what earlier measurements left), which makes every ratio
  close to 1 by construction.
- **CPU**: process RSS is useless for this on a shared machine and with glibc keeping freed memory, so ``transient``
  is the peak over the call of the running sum of torch's CPU allocations and frees (``torch.profiler`` with
  ``profile_memory=True``, its ``[memory]`` events). Allocations made outside torch (Python objects, oneDNN scratch
  space) are not counted. The profiler slows the call down, so this is a separate, untimed run.

What a method allocates at its first call and keeps (MaskUNet's stacked adapter weights) belongs in the figure: the
efficiency suite drops such caches before the measured call (``drop_caches``), so the call allocates them as a
sampling run's first call does, whatever ran before it.
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import types
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Optional

import torch
from torch import nn

from .timing import synchronize

CUDA_TOOL = ("tensor bytes: parameters + buffers of the pipeline's modules on the device (reward models included), "
             "plus torch.cuda.max_memory_allocated during the call minus memory_allocated before it (the method's "
             "kept caches dropped before the call)")
CPU_TOOL = ("tensor bytes: parameters + buffers of the pipeline's modules (reward models included), plus the peak "
            "running sum of torch CPU allocations during the call (torch.profiler profile_memory events; the "
            "method's kept caches dropped before the call)")


@dataclass
class PeakMemory:
    peak_bytes: int  # the reported figure
    resident_bytes: int  # the modules' weights
    transient_bytes: int  # peak over the call of what it allocated and had not freed
    tool: str

    @property
    def peak_mb(self) -> float:
        return self.peak_bytes / 2**20


def tensor_bytes(modules: Iterable[nn.Module], device: Optional[torch.device] = None) -> int:
    """Bytes of the unique storages of the modules' parameters and buffers (shared storages counted once); those on
    ``device`` only when given, never the meta device's."""
    seen: dict[int, int] = {}
    for module in modules:
        for t in list(module.parameters()) + list(module.buffers()):
            if t.device.type == "meta" or (device is not None and t.device.type != device.type):
                continue
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


# not searched for modules: values, tensors, generators, code, classes
_LEAVES = (str, bytes, int, float, complex, bool, type(None), torch.Tensor, torch.Generator, torch.device, torch.dtype,
           type, types.ModuleType, types.FunctionType, types.MethodType, types.BuiltinFunctionType)


def held_modules(roots: Iterable[object], depth: int = 6) -> list[nn.Module]:
    """The modules reachable from ``roots`` (each root included) through the attributes of plain objects and the
    items of lists, tuples, sets and dicts, at most ``depth`` steps away; a module's submodules are its own, so the
    walk stops at a module. Finds what a method holds besides its denoiser wherever it keeps it (maskunet-free's
    reward models: ``prepared.rewards`` = [(term, scorer)], the module at ``scorer.model`` or
    ``scorer.encoder.model``)."""
    found: list[nn.Module] = []
    seen: set[int] = set()

    def visit(obj: object, left: int) -> None:
        if id(obj) in seen or isinstance(obj, _LEAVES):
            return
        seen.add(id(obj))
        if isinstance(obj, nn.Module):
            found.append(obj)
            return
        if left == 0:
            return
        if isinstance(obj, dict):
            children = list(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            children = list(obj)
        else:
            children = list(getattr(obj, "__dict__", {}).values())
        for child in children:
            visit(child, left - 1)

    for root in roots:
        visit(root, depth)
    return found


def drop_caches(prepared: object, denoiser: nn.Module) -> int:
    """Call ``drop_caches()`` of every object the prepared method or one of its denoiser's modules holds as an
    attribute and that has one (MaskUNet's ``FusedMasks``: the stacked adapter weights it builds at its first call
    and keeps). The memory run then allocates them inside the measured call, as a sampling run's first call does,
    whatever ran before it. Returns how many were dropped."""
    holders = [prepared, *denoiser.modules()]
    done: set[int] = set()
    for holder in holders:
        for value in list(getattr(holder, "__dict__", {}).values()):
            drop = getattr(value, "drop_caches", None)
            if callable(drop) and not isinstance(value, type) and id(value) not in done:
                done.add(id(value))
                drop()
    return len(done)


def peak_memory(fn: Callable[[], object], device: torch.device, modules: Iterable[nn.Module]) -> PeakMemory:
    """Run ``fn`` once and measure its peak memory (see module docstring)."""
    if device.type == "cuda":
        resident = tensor_bytes(modules, device)
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        return gpu_peak(resident, before, torch.cuda.max_memory_allocated(device))
    resident = tensor_bytes(modules)
    transient = cpu_allocation_peak(fn)
    return PeakMemory(resident + transient, resident, transient, CPU_TOOL)


def gpu_peak(resident: int, allocated_before: int, max_allocated: int) -> PeakMemory:
    """The GPU figure from CUDA's counters: this variant's weights (``resident``) plus the call's own peak, the peak
    allocated during the call minus what was allocated before it (the weights of every variant, leftovers)."""
    transient = max(0, max_allocated - allocated_before)
    return PeakMemory(resident + transient, resident, transient, CUDA_TOOL)


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
