"""What the efficiency suite's figures leave out and must not: the GEMMs inside a Triton kernel (FLOPs), attention's
backward on a CPU (FLOPs), the caches a method keeps and the reward models it holds (memory), what else sits on a GPU
(memory); and the grouped mask path's packing, which keeps no second copy of a lone layer's weights."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mubench.config import resolve
from mubench.methods.base import MethodContext, Prepared
from mubench.perf import memory as memory_mod
from mubench.perf.flops import count_flops
from mubench.runner import Runner

QUICK = ["suite=efficiency", "device=cpu", "model=tiny-sd", "suite.sampler.steps=2", "suite.warmup=0",
         "suite.repeats=1", "suite.train_step=never"]
ONLY_FLOPS = ["suite.latency=false", "suite.forward_repeats=0", "suite.memory=false"]


def _run(regs, tmp_path, *args):
    cfg = resolve([*QUICK, f"cache={tmp_path / 'cache'}", *args], regs)
    return Runner(cfg, regs).execute().results


# ---- FLOPs


def test_triton_kernel_counts_the_flops_of_the_torch_kernel(regs, tmp_path):
    """kernel=triton computes the logits GEMM h·A_inᵀ inside the kernel, which FlopCounterMode cannot see: the suite
    counts it through the torch path (the same arithmetic), so both kernels give the same FLOPs."""
    pytest.importorskip("triton")
    from mubench.kernels.masked_weights import triton_unavailable

    if triton_unavailable(torch.device("cpu")):
        pytest.skip("the Triton kernel runs on CPU tensors only in its interpreter (TRITON_INTERPRET=1)")
    keys = ("method=maskunet", "method.noise=counter", *ONLY_FLOPS)
    plain = _run(regs, tmp_path / "torch", *keys, "method.kernel=torch")
    fused = _run(regs, tmp_path / "triton", *keys, "method.kernel=triton")
    assert fused["method_info"]["kernel"] == "triton"
    for name in ("gflops", "base_gflops", "gflops_per_image", "base_gflops_per_image"):
        assert fused["metrics"][name]["value"] == plain["metrics"][name]["value"], name
    assert fused["metrics"]["gflops"]["value"] > fused["metrics"]["base_gflops"]["value"]
    assert any("kernel=torch" in note for note in fused["measurements"]["notes"])
    assert not any("kernel=torch" in note for note in plain["measurements"]["notes"])


def test_triton_kernel_switch_is_restored():
    from mubench.perf.flops import torch_kernels

    fused, plain = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    fused.kernel = "triton"
    with torch_kernels([fused, plain]) as switched:
        assert fused.kernel == "torch" and switched == ["Linear"]
    assert fused.kernel == "triton" and not hasattr(plain, "kernel")


def test_cpu_attention_backward_is_counted():
    from torch.utils.flop_counter import sdpa_backward_flop_count

    q, k, v = (torch.randn(2, 4, s, 16, requires_grad=True) for s in (64, 10, 10))
    forward = count_flops(lambda: F.scaled_dot_product_attention(q, k, v))[0]
    total, per_op = count_flops(lambda: F.scaled_dot_product_attention(q, k, v).sum().backward())
    assert total > forward
    assert total == forward + sdpa_backward_flop_count(q.shape, q.shape, k.shape, v.shape)  # scores + 4 gradients


# ---- memory


def test_maskunet_peak_memory_does_not_depend_on_what_ran_before(regs, tmp_path):
    """MaskUNet keeps its stacked adapter weights from its first call on (per row count): measured first, the memory
    run allocated them; after latency and a one-row FLOP count it found them built and left them out."""
    skip = ("suite.image_flops=false",)
    cold = _run(regs, tmp_path / "cold", "method=maskunet", *skip, "suite.latency=false", "suite.forward_repeats=0",
                "suite.flops=false")
    warm = _run(regs, tmp_path / "warm", "method=maskunet", *skip, "suite.forward_repeats=1")
    assert "latency_s" in warm["metrics"] and "gflops" in warm["metrics"]
    c, w = cold["measurements"]["memory"]["method"], warm["measurements"]["memory"]["method"]
    assert c["resident_bytes"] == w["resident_bytes"]
    assert w["peak_bytes"] == c["peak_bytes"], (c, w)


def test_reward_models_of_a_training_free_method_are_resident(regs, bundle, tmp_path):
    from mubench.config import build_params
    from mubench.methods.maskunet_free import MaskUNetFree, MaskUNetFreeParams
    from mubench.suites.efficiency_probes import pipeline_modules

    params = build_params(MaskUNetFreeParams, {"rewards": [{"scorer": "micro-clip", "weight": 5.0, "target": 1.0}]},
                          where="")
    prepared = MaskUNetFree(params, "maskunet-free").build(
        bundle, MethodContext(artifacts_dir=tmp_path, train="never", weights="random"))
    scorer = prepared.rewards[0][1]
    reward = getattr(scorer, "model", None) or scorer.encoder.model
    assert isinstance(reward, torch.nn.Module) and memory_mod.tensor_bytes([reward]) > 0
    modules = pipeline_modules(bundle, prepared)
    assert any(m is reward for m in modules)
    base = memory_mod.tensor_bytes(pipeline_modules(bundle, Prepared(bundle.denoiser)))
    assert memory_mod.tensor_bytes(modules) >= base + memory_mod.tensor_bytes([reward])


def test_held_modules_walks_plain_objects_and_containers():
    class Holder:
        def __init__(self, **values):
            self.__dict__.update(values)

    a, b, c = torch.nn.Linear(1, 1), torch.nn.Linear(2, 2), torch.nn.Linear(3, 3)
    root = Holder(pairs=[("term", Holder(encoder=Holder(model=a)))], table={"x": (b,)}, same=a, text="model",
                  tensor=torch.zeros(2), deep=Holder(x=Holder(y=Holder(z=c))))
    found = memory_mod.held_modules([root], depth=3)
    assert len(found) == 2 and {id(m) for m in found} == {id(a), id(b)}  # each once; c is 4 steps away
    assert {id(m) for m in memory_mod.held_modules([root])} == {id(a), id(b), id(c)}


def test_gpu_peak_counts_this_variants_weights_and_the_calls_own_peak():
    peak = memory_mod.gpu_peak(resident=300, allocated_before=5_000, max_allocated=5_450)
    assert (peak.peak_bytes, peak.resident_bytes, peak.transient_bytes) == (750, 300, 450)
    assert memory_mod.gpu_peak(300, 5_000, 4_000).peak_bytes == 300  # nothing allocated by the call


def test_peak_memory_on_cuda_subtracts_what_was_allocated_before(monkeypatch):
    """The CUDA branch, with CUDA's counters faked: another variant's 10 kB on the device are not this one's."""
    counters = {"allocated": 10_000, "max": 10_000}

    def fn():
        counters["max"] = counters["allocated"] + 700

    monkeypatch.setattr(memory_mod, "synchronize", lambda device: None)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device: None)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: counters["allocated"])
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device: counters["max"])
    monkeypatch.setattr(memory_mod, "tensor_bytes", lambda modules, device=None: 2_000)
    peak = memory_mod.peak_memory(fn, torch.device("cuda"), [])
    assert (peak.peak_bytes, peak.resident_bytes, peak.transient_bytes) == (2_700, 2_000, 700)


def test_tensor_bytes_on_one_device():
    lin = torch.nn.Linear(4, 4)
    assert memory_mod.tensor_bytes([lin], torch.device("cpu")) == 20 * 4
    assert memory_mod.tensor_bytes([lin], torch.device("cuda")) == 0


# ---- the grouped mask path's packing


def test_a_lone_layer_is_packed_without_a_copy_and_outputs_stay_bitwise(bundle, tmp_path, monkeypatch):
    from mubench.methods import maskunet_fast
    from mubench.methods.maskunet import MaskUNetParams
    from mubench.methods.maskunet_method import MaskUNetMethod

    prepared = MaskUNetMethod(MaskUNetParams(), "maskunet").build(
        bundle, MethodContext(artifacts_dir=tmp_path, train="never", model_name="tiny-sd"))
    model = prepared.model
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():  # logits spread around 0, so masks really vary
        for adapter in model.adapters:
            for lin in (adapter.rows, adapter.cols):
                lin.weight.copy_(torch.randn(lin.weight.shape, generator=gen) * 0.3)
                lin.bias.copy_(torch.randn(lin.bias.shape, generator=gen) * 0.5)
    plan = maskunet_fast.plan_groups
    monkeypatch.setattr(maskunet_fast, "plan_groups", lambda layers: plan(layers, max_weights=1))  # one per group
    model._fused = maskunet_fast.FusedMasks(model)
    assert all(len(group.layers) == 1 for group in model._fused.groups)
    g = torch.Generator().manual_seed(3)
    x, t, ctx = torch.randn(2, 4, 16, 16, generator=g), torch.tensor([900, 20]), torch.randn(2, 16, 32, generator=g)

    def forward() -> torch.Tensor:
        model.row_generators = [torch.Generator().manual_seed(s) for s in (11, 12)]
        with torch.no_grad():
            return model(x, t, ctx).sample

    viewed = forward()
    weight = model.masked[model._fused.groups[0].layers[0]].module.weight

    def packed_is_the_weight() -> bool:
        packed = model._fused._stacked[(0, 2, False)][1]
        return packed.weight.untyped_storage().data_ptr() == weight.untyped_storage().data_ptr()

    assert packed_is_the_weight()  # a view of the layer's weight, no copy
    monkeypatch.setattr(maskunet_fast, "_stack", lambda tensors: torch.stack(list(tensors)))  # as before
    model._fused.drop_caches()
    stacked = forward()
    assert not packed_is_the_weight()
    assert torch.equal(viewed, stacked)
    assert (viewed - stacked).abs().max() == 0 and viewed.abs().max() > 0


def test_use_artifact_finds_the_artifact_of_the_process_thread_count(tmp_path):
    """suite.threads= sets the measurement's threads; the trained artifact is the one runs at the process's count use
    (the count is part of a CPU artifact's address), so train=never finds what `mubench train` made."""
    from conftest import run_cli

    train = ["method=lora-micro", "model=micro", "method.train.steps=1", "method.train.batch_size=2"]
    made = run_cli("train", *train, env={"OMP_NUM_THREADS": "2"})
    assert made.returncode == 0, made.stderr[-2000:]
    proc = run_cli("run", "suite=efficiency", *train, "suite.use_artifact=true", "suite.threads=1", "train=never",
                   "suite.latency=false", "suite.forward_repeats=0", "suite.memory=false", "suite.image_flops=false",
                   "suite.train_step=never", "--no-progress", f"out={tmp_path / 'eff'}", env={"OMP_NUM_THREADS": "2"})
    assert proc.returncode == 0, proc.stderr[-2000:]
