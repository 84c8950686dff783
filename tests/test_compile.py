"""``compile=``: the denoiser call through ``torch.compile`` (issue 16, item 4), on the tiny random SD-style bundle.

The mode is part of the protocol (eager runs keep their hashes), a compiled run makes the eager images to within
compiled rounding and the same bits from call to call and whatever ``batch_size`` is, and a method whose masks come
from Python hooks refuses it with a clear message before any image is made. Speed is measured by
benchmarks/compile_denoiser.py, not here.
"""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from method_cases import (CASES, SAMPLER, Case, context, fake_training, method_of, prepared_case,
                          traced_like_eager)
from mubench.config import resolve
from mubench.errors import UsageError
from mubench.methods.base import Prepared
from mubench.runner import Runner
from mubench.sampler import (check_compilable, compile_toolchain_missing, denoiser_of, resolve_sampler,
                             sample_latents)

needs_compiler = pytest.mark.skipif(compile_toolchain_missing(torch.device("cpu")) is not None,
                                    reason="torch.compile on a CPU needs a C++ compiler (inductor's kernels)")


def test_compile_is_part_of_the_protocol_and_checked(regs, bundle):
    eager, compiled = resolve_sampler(bundle, None), resolve_sampler(bundle, None, compile="default")
    assert "compile" not in eager.as_dict()  # eager runs keep the hashes they had before the option existed
    assert compiled.as_dict()["compile"] == "default"
    assert denoiser_of(Prepared(bundle.denoiser), eager) is bundle.denoiser
    with pytest.raises(UsageError, match="unknown compile mode"):
        resolve_sampler(bundle, None, compile="fast")
    with pytest.raises(UsageError, match="compile"):
        resolve(["suite=toy", "model=tiny-sd", "compile=fast"], regs)

    def keys(*extra: str) -> set[str]:
        cfg = resolve(["suite=toy", "model=tiny-sd", "limit=2", "chunk=4", *extra], regs)
        runner = Runner(cfg, regs)
        sampler = resolve_sampler(bundle, None, chunk=4, compile=cfg.run.compile)
        return {p.key for p in runner.plan(bundle, runner.prepare(bundle), sampler, runner.items())}

    assert keys().isdisjoint(keys("compile=default"))  # compiled images are other images in the cache


# cases whose denoiser call dynamo cannot trace: stream noise drawn inside masked conv layers (maskunet's stream noise
# is drawn before a compiled call only where its fused linears cover every masked layer), or masks optimised inside
# predict (maskunet-free)
REFUSED = {"maskunet-conv", "maskunet-free"}


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    return tmp_path_factory.mktemp("artifacts")


@pytest.mark.parametrize("name", list(CASES))
def test_exactly_the_methods_dynamo_cannot_trace_refuse_compile(name, regs, bundle, artifacts):
    method, prepared = prepared_case(regs, bundle, artifacts, name)
    spec = CASES[name].spec
    assert method.compile_safe == prepared.compile_safe == (name not in REFUSED)  # the runner's early check
    assert method.compiles_on(bundle) == prepared.compile_safe  # and its check once the model is loaded
    check_compilable(prepared, SAMPLER, spec)  # eager: every method
    if name in REFUSED:
        with pytest.raises(UsageError, match=f"compile=default: {spec} does what torch.compile cannot trace.*"
                                             "maskunet compiles with its default layers"):
            check_compilable(prepared, replace(SAMPLER, compile="default"), spec)
    else:
        check_compilable(prepared, replace(SAMPLER, compile="default"), spec)


def test_a_refused_run_stops_before_making_images(regs, tmp_path):
    cfg = resolve(["suite=toy", "model=tiny-sd", "method=maskunet", "method.layers=decoder-attn+conv",
                   "weights=random", "limit=2", "compile=reduce-overhead", f"cache={tmp_path / 'cache'}",
                   f"store={tmp_path / 'store.sqlite'}"], regs)
    runner = Runner(cfg, regs)
    runner.load_model = None  # refused before the model is loaded (calling this would fail the test)
    with pytest.raises(UsageError, match="else run with compile=none"):
        runner.execute()
    assert not list((tmp_path / "cache").rglob("*.png"))


@pytest.mark.parametrize("name", ["maskunet", "maskunet-faithful", "maskunet-image", "maskunet-counter",
                                  "maskunet-deterministic", "maskunet-image-counter", "random-mask-step",
                                  "random-mask-conv"])
def test_masked_methods_trace_into_one_graph_and_make_the_eager_images(name, regs, bundle, artifacts, monkeypatch):
    """The masks of these methods are computed inside the denoiser call (maskunet: hooks on every block and masked
    layer) from tensors only — maskunet's stream noise is drawn before a compiled call, from the same generators in
    the same order — so dynamo takes the whole call as one graph: no graph break, no recompilation when the keys,
    the images or the step change. Run through dynamo's ``eager`` backend, the graph makes the eager images bit for
    bit (inductor's rounding is the next test's business)."""
    case = CASES.get(name) or Case("maskunet", {"noise": "counter", "mask_scope": "image"})
    method = method_of(regs, case)
    if method.trainable:
        built = method.build(bundle, context(artifacts))
        fake_training(built)
        method.save(built, bundle, context(artifacts))
    traced_like_eager(bundle, method.prepare(bundle, context(artifacts)), replace(SAMPLER, chunk=2), monkeypatch)


@needs_compiler
def test_counter_noise_keeps_its_bits_under_inductor(monkeypatch):
    """The Philox words are integer arithmetic, so a compiled graph draws the eager uniforms bit for bit; only
    ``−log(1 − U)`` may round differently (inductor's ``log``), by an ulp or so: a compiled maskunet's mask can only
    differ from the eager one where the noise lies within that of its threshold."""
    from mubench.kernels import philox
    from mubench.kernels.philox import counter_exponential, counter_uniform

    monkeypatch.setattr(philox, "BLOCK", 1000)  # eager: three blocks and a ragged one; compiled: one pass
    keys, slots = torch.tensor([123456789012345, 42, 7]), torch.tensor([0, 1, 0])
    numel = 3500

    def draw(k, s):
        return counter_uniform(k, s, 3, numel), counter_exponential(k, s, 3, (numel,))

    u, e = draw(keys, slots)
    cu, ce = torch.compile(draw, dynamic=False)(keys, slots)
    assert torch.equal(cu, u)
    torch.testing.assert_close(ce, e, rtol=2.5e-7, atol=0)


@needs_compiler
def test_compiled_images_match_eager_and_are_stable(bundle):
    prepared = Prepared(bundle.denoiser)
    sampler = replace(SAMPLER, chunk=2)
    compiled = replace(sampler, compile="default")
    prompts, seeds = ["a red circle", "a blue square", "two green dots"], [0, 1, 2]
    eager = sample_latents(bundle, prepared, prompts, seeds, sampler)
    from torch._dynamo.utils import counters

    counters.clear()
    first = sample_latents(bundle, prepared, prompts, seeds, compiled)
    assert counters["stats"]["unique_graphs"] >= 1  # the denoiser really went through dynamo
    again = sample_latents(bundle, prepared, prompts, seeds, compiled)
    assert torch.equal(first, again)  # stable from call to call
    # one call over both chunks = one call per chunk (batch-size invariance holds compiled too)
    split = torch.cat([sample_latents(bundle, prepared, prompts[:2], seeds[:2], compiled),
                       sample_latents(bundle, prepared, prompts[2:], seeds[2:], compiled)])
    assert torch.equal(first, split)
    # the same images up to compiled rounding (inductor fuses and reorders float arithmetic)
    torch.testing.assert_close(first, eager, rtol=1e-4, atol=1e-4)


def test_the_report_footnote_names_chunk_and_compile():
    from mubench.protocols import describe_protocol

    proto = {"sampler": {"scheduler": "ddim", "steps": 20, "guidance": 4.0, "resolution": 32, "eta": 0.0, "chunk": 8,
                         "compile": "reduce-overhead"}, "seed": 0}
    line = describe_protocol([proto], "abc")
    assert line.startswith("ddim 20 steps, guidance 4.0, 32 px, chunk 8, torch.compile reduce-overhead;"), line
    del proto["sampler"]["compile"]
    assert "compile" not in describe_protocol([proto], "abc")


def test_a_machine_without_a_compiler_is_told_before_anything_loads(regs, tmp_path, monkeypatch):
    import shutil

    monkeypatch.setenv("CXX", "no-such-compiler-here")
    assert "no-such-compiler-here" in compile_toolchain_missing(torch.device("cpu"))
    monkeypatch.delenv("CXX")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    cfg = resolve(["suite=toy", "model=tiny-sd", "weights=random", "limit=2", "compile=default",
                   f"cache={tmp_path / 'cache'}", f"store={tmp_path / 'store.sqlite'}"], regs)
    runner = Runner(cfg, regs)
    runner.load_model = None  # refused before the model is loaded
    with pytest.raises(UsageError, match="needs a C\\+\\+ compiler"):
        runner.execute()
    cfg.run.compile = "none"
    Runner(cfg, regs).refuse_compile()  # eager needs nothing
