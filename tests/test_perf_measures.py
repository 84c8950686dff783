"""The efficiency-measurement modules (mubench.perf) other than timing (test_perf_timing.py): tensor-byte and
peak-memory accounting, the FLOP counter's per-op split and kernel switch, and the train-step reference. Fast: fake
devices and constructed modules."""
from __future__ import annotations

import types

import pytest
import torch

from mubench.perf import memory as memory_mod

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


# ---- memory


def test_peak_mb_is_mebibytes():
    """PeakMemory.peak_mb = peak_bytes / 2**20."""
    assert memory_mod.PeakMemory(3 * 2**20, 2**20, 2 * 2**20, "t").peak_mb == 3.0


def test_tensor_bytes_counts_storages_once_buffers_included_meta_never():
    """A buffer and a view of it share one storage: its bytes count once (the whole storage); buffers count; tensors
    on the meta device never count, device given or not."""
    holder = torch.nn.Module()
    whole = torch.zeros(10)
    holder.register_buffer("whole", whole)
    holder.register_buffer("tail", whole[5:])
    assert memory_mod.tensor_bytes([holder]) == 10 * 4
    meta = torch.nn.Linear(4, 4, device="meta")
    assert memory_mod.tensor_bytes([meta]) == 0 and memory_mod.tensor_bytes([meta, holder], CPU) == 10 * 4


def test_held_modules_lists_each_module_once_stops_at_modules_and_walks_sets():
    """A module reachable along two paths is listed once; a module's submodules are not listed (it owns them); the
    items of sets and frozensets are walked."""
    inner = torch.nn.Linear(1, 1)
    outer = torch.nn.Sequential(inner)
    lone = torch.nn.Linear(2, 2)
    root = types.SimpleNamespace(a=outer, b=[outer], c={lone}, d=frozenset([lone]))
    found = memory_mod.held_modules([root])
    assert len(found) == 2 and {id(m) for m in found} == {id(outer), id(lone)}


def test_drop_caches_calls_each_holder_once_from_prepared_and_denoiser_modules():
    """drop_caches() is called once per distinct object held as an attribute by the prepared method or by any module
    of the denoiser (submodules included); a class with a drop_caches function is not called; returns that count."""
    calls = []

    class Cache:
        def __init__(self, name):
            self.name = name

        def drop_caches(self):
            calls.append(self.name)

    shared, on_prepared, on_sub = Cache("shared"), Cache("prepared"), Cache("sub")
    sub = torch.nn.Linear(1, 1)
    sub.cache = on_sub
    sub.again = shared
    denoiser = torch.nn.Sequential(sub, torch.nn.ReLU(), torch.nn.Linear(1, 1))  # five modules, three holders
    prepared = types.SimpleNamespace(cache=on_prepared, shared=shared, cls=Cache)
    assert memory_mod.drop_caches(prepared, denoiser) == 3
    assert sorted(calls) == ["prepared", "shared", "sub"]


def test_peak_memory_on_cuda_counts_device_weights_and_resets_the_peak(monkeypatch):
    """The CUDA branch counts only weights on the GPU (a CPU module's are not) and resets the peak counter before the
    call, so a higher peak left by earlier work is not this call's."""
    counters = {"allocated": 10_000, "max": 90_000}  # a stale peak from earlier work

    def reset(device):
        counters["max"] = counters["allocated"]

    def fn():
        counters["max"] = max(counters["max"], counters["allocated"] + 700)

    monkeypatch.setattr(memory_mod, "synchronize", lambda device: None)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", reset)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: counters["allocated"])
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device: counters["max"])
    peak = memory_mod.peak_memory(fn, CUDA, [torch.nn.Linear(4, 4)])
    assert (peak.peak_bytes, peak.resident_bytes, peak.transient_bytes) == (700, 0, 700)
    assert peak.tool == memory_mod.CUDA_TOOL


def test_peak_memory_on_cpu_adds_the_allocation_peak_to_the_weights(monkeypatch):
    """The CPU branch: peak = weights + the call's allocation peak, with the CPU tool's description."""
    monkeypatch.setattr(memory_mod, "cpu_allocation_peak", lambda fn: 500)
    lin = torch.nn.Linear(4, 4)
    peak = memory_mod.peak_memory(lambda: None, CPU, [lin])
    assert (peak.peak_bytes, peak.resident_bytes, peak.transient_bytes) == (20 * 4 + 500, 20 * 4, 500)
    assert peak.tool == memory_mod.CPU_TOOL


def test_cpu_allocation_peak_sums_cpu_memory_events_in_time_order(monkeypatch):
    """Only '[memory]' events of the CPU count, summed in start-time order (not the order the profiler lists them)."""
    import torch.profiler

    def ev(name, device, start, nbytes):
        return types.SimpleNamespace(name=lambda: name, device_type=lambda: device, start_ns=lambda: start,
                                     nbytes=lambda: nbytes)

    cpu, cuda = torch.autograd.DeviceType.CPU, torch.autograd.DeviceType.CUDA
    events = [ev("[memory]", cpu, 1, 100), ev("[memory]", cpu, 3, 100), ev("[memory]", cuda, 2, 10_000),
              ev("aten::mm", cpu, 2, 5_000), ev("[memory]", cpu, 2, -100)]
    prof = types.SimpleNamespace(profiler=types.SimpleNamespace(kineto_results=types.SimpleNamespace(
        events=lambda: events)))

    class FakeProfile:
        def __init__(self, **kwargs):
            pass

        def __enter__(self):
            return prof

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(torch.profiler, "profile", FakeProfile)
    assert memory_mod.cpu_allocation_peak(lambda: None) == 100  # +100, -100, +100


def test_profiler_chatter_is_held_back_other_stderr_lines_pass(capfd):
    """Lines written to fd 2 meanwhile that carry a known chatter mark are dropped; other lines are passed on."""
    import os

    with memory_mod._without_profiler_chatter():
        os.write(2, b"x SyncActivityProfilerHandler y\na real warning\n")
    err = capfd.readouterr().err
    assert "a real warning" in err and "SyncActivityProfilerHandler" not in err


# ---- FLOPs


def test_count_flops_reports_per_op_counts_that_sum_to_the_total():
    """count_flops returns the FLOPs per aten op next to the total: one mm of 2·m·n·k under its op name."""
    from mubench.perf.flops import count_flops

    a, b = torch.randn(3, 5), torch.randn(5, 7)
    total, per_op = count_flops(lambda: a @ b)
    assert total == 2 * 3 * 5 * 7 and sum(per_op.values()) == total
    assert any("mm" in op for op in per_op)


def test_torch_kernels_switches_only_triton_modules_and_restores_on_error():
    """Only modules with kernel == 'triton' are switched (one with kernel='torch' is left as it is); the names come
    back sorted and once each; the switch is undone even when the body raises."""
    from mubench.perf.flops import torch_kernels

    fused = [torch.nn.Linear(1, 1), torch.nn.ReLU(), torch.nn.Linear(1, 1)]
    for m in fused:
        m.kernel = "triton"
    plain = torch.nn.Linear(1, 1)
    plain.kernel = "torch"
    with pytest.raises(RuntimeError):
        with torch_kernels([*fused, plain]) as switched:
            assert switched == ["Linear", "ReLU"] and all(m.kernel == "torch" for m in fused)
            raise RuntimeError("body failed")
    assert all(m.kernel == "triton" for m in fused) and plain.kernel == "torch"


# ---- train step


def test_full_finetune_copy_is_a_trainable_deep_copy():
    """The full fine-tune reference is a deep copy with every parameter trainable; the base model is not touched."""
    from mubench.perf.train_step import full_finetune_copy

    base = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1)).requires_grad_(False)
    module, params = full_finetune_copy(types.SimpleNamespace(denoiser=base))
    assert module is not base and all(p.requires_grad for p in params)
    assert len(params) == 4 and not any(p.requires_grad for p in base.parameters())
    assert {p.data_ptr() for p in params}.isdisjoint({p.data_ptr() for p in base.parameters()})


def test_make_batch_is_seeded_latents_of_the_codec_shape_in_the_models_dtype():
    """make_batch: len(prompts) latents of the codec's latent shape, seeded (same seed, same latents), in the
    denoiser's dtype, with the prompts' conditioning and the seed kept."""
    from mubench.perf.train_step import make_batch

    seen = []
    bundle = types.SimpleNamespace(
        denoiser=torch.nn.Linear(1, 1).to(torch.float64),
        codec=types.SimpleNamespace(latent_shape=lambda h, w: (4, h // 8, w // 8)),
        conditioner=types.SimpleNamespace(encode=lambda prompts: seen.append(list(prompts)) or "cond"))
    batch = make_batch(bundle, ["a", "b", "c"], 32, seed=9)
    assert batch.x0.shape == (3, 4, 4, 4) and batch.x0.dtype == torch.float64
    assert batch.cond == "cond" and seen == [["a", "b", "c"]] and batch.seed == 9
    assert torch.equal(make_batch(bundle, ["a", "b", "c"], 32, seed=9).x0, batch.x0)
    assert not torch.equal(make_batch(bundle, ["a", "b", "c"], 32, seed=10).x0, batch.x0)


def test_step_fn_redraws_the_same_noise_and_does_not_accumulate_grads():
    """With lr=0 the weights stay put, so every call sees the same timesteps and noise (the generator is reseeded each
    call) and gives the same loss and the same gradients (zeroed each step, not accumulated); the module is left in
    eval mode; no trainable parameters is refused."""
    from mubench.models.base import LoadContext
    from mubench.models.tiny import TinySD, TinySDParams
    from mubench.perf.train_step import full_finetune_copy, make_batch, step_fn

    bundle = TinySD.load(TinySDParams(), LoadContext(CPU, torch.float32))
    batch = make_batch(bundle, ["a photo"], 16, seed=4)
    module, params = full_finetune_copy(bundle)
    with pytest.raises(ValueError, match="no trainable parameters"):
        step_fn(bundle, module, [], batch)
    step = step_fn(bundle, module, params, batch, lr=0.0)
    first = step()
    grads = [p.grad.clone() for p in params]
    assert not module.training
    assert step() == first
    assert all(torch.equal(p.grad, g) for p, g in zip(params, grads))
