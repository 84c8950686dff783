"""The efficiency suite and its measuring helpers: figures present and honest (the mask path is in the FLOPs, the CPU
attention is counted, memory peaks add up), results.json's schema kept, the sd15-reduced model's layout."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from mubench.config import resolve
from mubench.perf.flops import count_flops
from mubench.perf.memory import cpu_allocation_peak, tensor_bytes
from mubench.perf.timing import interleaved, median_ci, ratio_ci, resolve_clock
from mubench.outputs import record_in_store, write_outputs
from mubench.runner import Runner

FAST = ["suite.repeats=3", "suite.warmup=0", "suite.forward_repeats=3", "suite.sampler.steps=2",
        "suite.train_batch_size=1", "suite.train_repeats=3", "suite.train_warmup=0", "device=cpu", "model=tiny-sd"]


def _run(regs, tmp_path, *args):
    cfg = resolve(["suite=efficiency", *FAST, f"cache={tmp_path / 'cache'}", *args], regs)
    return Runner(cfg, regs).execute()


def _mask_path_flops(prepared) -> int:
    """FLOPs of MaskUNet's generators and adapters for one row, by hand (2 per multiply-add)."""
    model = prepared.model
    total = 0
    for key in model.blocks:
        gen = model.generators[key.replace(".", "-")]
        temb = gen.fc_t.in_features
        total += 2 * (temb * gen.in_ch + gen.in_ch * gen.conv1.out_channels + gen.conv1.out_channels * gen.go * gen.gi)
    for layer, adapter in zip(model.masked, model.adapters):
        out_f, in_f = layer.shape[:2]
        go, gi = adapter.rows.in_features, adapter.cols.in_features
        total += 2 * (out_f * go * gi + out_f * gi * in_f)
    return total


def test_maskunet_figures_schema_and_store(regs, tmp_path):
    output = _run(regs, tmp_path, "method=maskunet")
    res = output.results
    m = res["metrics"]
    for name in ("added_params", "trainable_params", "gmacs", "gflops", "latency_s", "latency_ratio",
                 "peak_memory_mb", "peak_memory_ratio", "train_step_ratio", "forward_ratio", "base_latency_s"):
        assert name in m, name
        assert set(m[name]) == {"value", "ci_low", "ci_high", "n", "higher_is_better"}
        assert math.isfinite(m[name]["value"]) and m[name]["value"] > 0 and m[name]["higher_is_better"] is False
    assert m["gflops"]["value"] == pytest.approx(2 * m["gmacs"]["value"])
    assert m["latency_s"]["n"] == 3 and m["latency_s"]["ci_low"] <= m["latency_s"]["value"] <= m["latency_s"]["ci_high"]
    assert m["latency_ratio"]["value"] == pytest.approx(m["latency_s"]["value"] / m["base_latency_s"]["value"])
    assert m["train_step_ratio"]["n"] == 3
    # the mask path is counted: method - base = the generators' and adapters' GEMMs of one row, exactly
    from mubench.methods.maskunet import MaskUNetParams
    from mubench.methods.maskunet_method import MaskUNetMethod
    prepared = MaskUNetMethod(MaskUNetParams(), "maskunet").build(_bundle(regs), _ctx(tmp_path))
    extra = (m["gflops"]["value"] - m["base_gflops"]["value"]) * 1e9
    assert extra == pytest.approx(_mask_path_flops(prepared), rel=1e-6)
    assert m["added_params"]["value"] == prepared.added_params
    # protocol and raw measurements recorded; no samples; the store takes it
    eff = res["protocol"]["efficiency"]
    for key in ("device", "threads", "clock", "warmup", "repeats", "flops_tool", "memory_tool", "base_sampler"):
        assert key in eff
    assert "FlopCounterMode" in eff["flops_tool"] and eff["device"] == "cpu"
    assert len(res["measurements"]["latency"]["base"]["wall_s"]) == 3
    assert output.samples == [] and res["method_info"]["change"] == "maskunet"
    write_outputs(tmp_path / "out", output)
    assert json.loads((tmp_path / "out" / "results.json").read_text())["suite"] == "efficiency"
    record_in_store(str(tmp_path / "store.sqlite"), output)


def test_images_per_call_measures_a_chunk(regs, tmp_path, monkeypatch):
    import mubench.sampler as sampler_mod

    rows: list[int] = []
    real = sampler_mod.call_denoiser

    def spy(bundle, denoiser, x, *args, **kwargs):
        rows.append(x.shape[0])
        return real(bundle, denoiser, x, *args, **kwargs)

    monkeypatch.setattr(sampler_mod, "call_denoiser", spy)
    keys = ("method=maskunet", "suite.train_step=never")
    one = _run(regs, tmp_path / "one", *keys).results
    assert set(rows) == {1, 2}  # FLOPs count one row; latency, forward and memory one image's CFG pair
    rows.clear()
    three = _run(regs, tmp_path / "three", *keys, "suite.images=3").results
    assert set(rows) == {1, 6}  # ... and here three images' CFG rows in one call
    eff = three["protocol"]["efficiency"]
    assert "one call of 3 image(s)" in eff["latency"] and "6 rows" in eff["forward"]
    assert three["protocol_hash"] != one["protocol_hash"]
    m1, m3 = one["metrics"], three["metrics"]
    assert m3["gflops"]["value"] == m1["gflops"]["value"]  # per forward of one row, whatever the chunk
    assert m3["gflops_per_image"]["value"] == pytest.approx(m1["gflops_per_image"]["value"], rel=1e-9)
    assert m3["peak_memory_mb"]["value"] > m1["peak_memory_mb"]["value"]
    with pytest.raises(Exception, match="images must be >= 1"):
        _run(regs, tmp_path / "zero", *keys, "suite.images=0")


def test_flops_are_counted_on_the_eager_call_under_compile(regs, tmp_path, monkeypatch):
    """``compile=``: FlopCounterMode counts aten ops, which a compiled graph's kernels are not; so FLOPs come from the
    eager call (the same model and the same count), whatever the timed calls run."""
    def refuse(*args, **kwargs):
        raise AssertionError("FLOPs were counted through torch.compile")

    monkeypatch.setattr(torch, "compile", refuse)
    keys = ("method=random-mask", "suite.latency=false", "suite.forward_repeats=0", "suite.memory=false")
    eager = _run(regs, tmp_path / "eager", *keys).results
    compiled = _run(regs, tmp_path / "compiled", *keys, "compile=default").results
    for name in ("gflops", "base_gflops", "gflops_per_image", "base_gflops_per_image"):
        assert compiled["metrics"][name] == eager["metrics"][name], name
    assert compiled["protocol"]["sampler"]["compile"] == "default"  # ... and the protocol still says compiled


def _bundle(regs):
    from mubench.models.base import LoadContext

    cls = regs.models.get("tiny-sd")
    return cls.load(cls.Params(), LoadContext(torch.device("cpu"), torch.float32))


def _ctx(tmp_path):
    from mubench.methods.base import MethodContext

    return MethodContext(artifacts_dir=tmp_path, train="never")


def test_base_model_against_itself_and_no_train_step_for_sd(regs, tmp_path):
    res = _run(regs, tmp_path, "method=sd", "suite.image_flops=false").results
    m = res["metrics"]
    assert m["added_params"]["value"] == 0 and m["gflops_ratio"]["value"] == 1.0
    assert m["peak_memory_ratio"]["value"] == pytest.approx(1.0, abs=0.02)
    assert "train_step_ratio" not in m and "gflops_per_image" not in m
    assert any("not trainable" in n for n in res["measurements"]["notes"])


def test_training_free_method_at_its_own_protocol(regs, tmp_path):
    res = _run(regs, tmp_path, "method=maskunet-free", "weights=random", "suite.memory=false",
               "method.rewards=[{scorer: micro-clip, weight: 5.0, target: 1.0}]", "method.early_steps=1",
               "method.late_updates=2", "method.sampler.steps=3").results
    m = res["metrics"]
    assert res["protocol"]["sampler"]["scheduler"] == "dpmsolver++1" and res["protocol"]["sampler"]["steps"] == 3
    assert res["protocol"]["efficiency"]["base_sampler"]["steps"] == 2
    # one masked forward counts like the base (the masks are elementwise); the whole image counts its updates
    assert m["gflops_ratio"]["value"] == pytest.approx(1.0)
    assert m["gflops_per_image"]["value"] > 3 * m["base_gflops_per_image"]["value"]
    assert m["trainable_params"]["value"] == 0 and "train_step_ratio" not in m


def test_guidance_off_is_refused(regs, tmp_path):
    from mubench.errors import UsageError

    with pytest.raises(UsageError, match="guidance"):
        _run(regs, tmp_path, "method=sd", "suite.sampler.guidance=1.0")


def test_cpu_attention_is_counted():
    q, k, v = torch.randn(2, 4, 64, 16), torch.randn(2, 4, 10, 16), torch.randn(2, 4, 10, 16)
    total, per_op = count_flops(lambda: F.scaled_dot_product_attention(q, k, v))
    assert total == 2 * (2 * 2 * 4 * 64 * 10 * 16)  # QK^T and AV, 2 FLOPs per multiply-add
    lin = torch.nn.Linear(16, 8)
    assert count_flops(lambda: lin(torch.randn(5, 16)))[0] == 2 * 5 * 16 * 8


def test_cpu_allocation_peak_and_tensor_bytes():
    def work():
        a = torch.empty(1024, 1024)  # 4 MiB
        b = torch.empty(2048, 1024)  # 8 MiB
        del a
        c = torch.empty(1024, 1024)  # 4 MiB: peak stays 12 MiB
        return b, c

    peak = cpu_allocation_peak(work)
    assert 12 * 2**20 <= peak < 12 * 2**20 + 64 * 1024
    lin = torch.nn.Linear(100, 10)
    shared = torch.nn.Sequential(lin, lin)  # shared storages counted once
    assert tensor_bytes([lin, shared]) == (100 * 10 + 10) * 4


def test_interleaved_rounds_and_summaries():
    calls = []
    times = interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, torch.device("cpu"),
                        warmup=1, repeats=6, seed=3)
    assert len(calls) == 14 and len(times["a"]) == len(times["b"]) == 6
    orders = {tuple(calls[i:i + 2]) for i in range(0, 14, 2)}
    assert orders == {("a", "b"), ("b", "a")}  # shuffled every round
    value, lo, hi = ratio_ci([2.0, 2.2, 1.8, 2.0], [1.0, 1.1, 0.9, 1.0])
    assert value == pytest.approx(2.0) and lo == pytest.approx(2.0) and hi == pytest.approx(2.0)  # paired: exact
    med, lo, hi = median_ci([1.0, 2.0, 3.0, 4.0, 100.0])
    assert med == 3.0 and lo <= med <= hi
    assert median_ci([1.0, 2.0])[1] is None
    assert resolve_clock("wall", torch.device("cpu")) == "wall"


def test_sd15_reduced_is_sd15s_layout_at_reduced_width(regs):
    from mubench.methods.masking import install_masked_layers
    from mubench.models.base import LoadContext

    cls = regs.models.get("sd15-reduced")
    bundle = cls.load(cls.Params(), LoadContext(torch.device("meta"), torch.float32))
    unet = bundle.denoiser
    assert list(unet.config.block_out_channels) == [64, 128, 256, 256]
    assert unet.config.cross_attention_dim == 768 and unet.config.layers_per_block == 2
    assert tuple(unet.config.up_block_types) == ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                                                 "CrossAttnUpBlock2D")
    _, layers = install_masked_layers(unet, "decoder-attn")
    assert len(layers) == 72 and sum(layer.numel for layer in layers) == 3_612_672
    assert bundle.codec.latent_shape(256, 256) == (4, 32, 32)


def test_sd15_counts_on_the_meta_device(regs, tmp_path):
    """The SD 1.5 architecture without weights: parameters and per-forward FLOPs, mask path included."""
    cfg = resolve(["suite=efficiency", "method=maskunet", "model=sd15", "weights=random", "device=meta",
                   f"cache={tmp_path / 'cache'}"], regs)
    res = Runner(cfg, regs).execute().results
    m = {k: v["value"] for k, v in res["metrics"].items()}
    assert set(m) == {"added_params", "trainable_params", "gflops", "gmacs", "base_gflops", "base_gmacs",
                      "gflops_ratio"}
    assert m["added_params"] == 67_798_336  # method.md §3.6 without the unused up_blocks.0 generator
    assert m["base_gmacs"] == pytest.approx(401.64, abs=0.01)  # one row at 64x64 latents
    # the adapters' ~36 GMACs per row and forward (method.md §3.7) plus the generators' 0.03
    assert m["gmacs"] - m["base_gmacs"] == pytest.approx(36.04, abs=0.01)


def test_generating_suites_refuse_the_meta_device(regs, tmp_path):
    from mubench.errors import UsageError

    cfg = resolve(["suite=toy", "method=sd", "model=tiny-sd", "device=meta", f"cache={tmp_path / 'c'}"], regs)
    with pytest.raises(UsageError, match="device=meta"):
        Runner(cfg, regs).execute()


def test_every_subpackage_is_shipped():
    """A non-editable install only has the packages pyproject lists (mubench.perf was once missing)."""
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(root).parts) for p in (root / "mubench").rglob("__init__.py")}
    assert found <= listed, sorted(found - listed)


def test_flop_ratio_and_base_macs_follow_the_counts(regs, tmp_path):
    """gflops_ratio = gflops / base_gflops (a method that adds work has a ratio above 1), and base_gmacs is half of
    base_gflops (one multiply-add = 2 FLOPs), as for the method's own figures."""
    flops_only = ["suite.latency=false", "suite.forward_repeats=0", "suite.memory=false", "suite.image_flops=false",
                  "suite.train_step=never", "suite.sampler.steps=2", "device=cpu", "model=tiny-sd"]
    cfg = resolve(["suite=efficiency", "method=maskunet", *flops_only, f"cache={tmp_path / 'cache'}"], regs)
    m = Runner(cfg, regs).execute().results["metrics"]
    assert m["gflops"]["value"] > m["base_gflops"]["value"] > 0
    assert m["gflops_ratio"]["value"] == pytest.approx(m["gflops"]["value"] / m["base_gflops"]["value"], rel=1e-9)
    assert m["gflops_ratio"]["value"] > 1
    assert m["base_gflops"]["value"] == pytest.approx(2 * m["base_gmacs"]["value"], rel=1e-12)
    assert m["gflops"]["value"] == pytest.approx(2 * m["gmacs"]["value"], rel=1e-12)
