"""Issue 16: counter-based mask noise (Philox in PyTorch) and the fused Triton masked-weights kernel.

The kernel runs here in Triton's interpreter (``TRITON_INTERPRET=1``, numpy on the CPU): the same kernel source a
GPU compiles, so its indexing, masking at the tile edges, Philox counters and threshold are what is tested; its speed
is measured only on a GPU (``benchmarks/efficiency_sd15.py``).
"""
from __future__ import annotations

import pytest
import torch

from mubench.errors import UsageError
from mubench.kernels.masked_weights import masked_weights_reference, masked_weights_triton, triton_unavailable
from mubench.kernels.philox import counter_exponential, counter_uniform
from mubench.methods.base import MethodContext
from mubench.methods.maskunet import MaskUNetParams
from mubench.methods.maskunet_method import MaskUNetMethod

triton = pytest.importorskip("triton", reason="the Triton kernel tests need the triton package")


@pytest.fixture
def interpret():
    from mubench.kernels.masked_weights import interpreter_on

    if not interpreter_on():
        pytest.skip("the kernel runs on CPU tensors in Triton's interpreter: TRITON_INTERPRET=1 (tests/conftest.py) "
                    "must be set before triton is imported")


def _prepared(bundle, tmp_path, **kw):
    method = MaskUNetMethod(MaskUNetParams(**kw), "maskunet")
    prepared = method.build(bundle, MethodContext(artifacts_dir=tmp_path, train="never", model_name="tiny-sd"))
    with torch.no_grad():  # spread the logits around 0 so masks are far from all-ones
        for adapter in prepared.model.adapters:
            adapter.cols.bias.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(7))
    return prepared


@pytest.mark.parametrize("deterministic", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_fused_kernel_equals_the_reference_bit_for_bit(interpret, deterministic, dtype):
    g = torch.Generator().manual_seed(0)
    G, OUT, IN, GI = 3, 40, 72, 18  # not multiples of the 32 x 32 tiles or the 16-wide K step
    # eighths of small integers: every product and sum of the logits GEMM is exact in fp32, in any order
    h = torch.randint(-4, 5, (G, OUT, GI), generator=g).float() / 8
    a_in = torch.randint(-4, 5, (IN, GI), generator=g).float() / 8
    b_in = torch.randint(-4, 5, (IN,), generator=g).float() / 8
    weight = torch.randn(OUT, IN, generator=g).to(dtype)
    keys = torch.randint(0, 2**62, (G,), generator=g)
    slots = torch.tensor([0, 1, 0])
    ref = masked_weights_reference(h, a_in, b_in, weight, keys, slots, 5, deterministic)
    out = masked_weights_triton(h, a_in, b_in, weight, keys, slots, 5, deterministic)
    assert out.dtype == dtype and out.shape == (G, OUT, IN)
    assert torch.equal(out, ref)
    kept = (ref != 0).float().mean().item()
    assert 0.2 < kept < 0.9  # masks far from trivial
    if not deterministic:  # rows with other keys or slots get other masks
        assert not torch.equal(ref[0] != 0, ref[1] != 0) and not torch.equal(ref[0] != 0, ref[2] != 0)


def test_a_groups_kernel_calls_key_each_layer_by_its_model_index(interpret):
    """``masked_group_weights`` (the one call per group the model makes, an operator under ``compile=``): slice ``k``
    is layer ``layers[k]``'s masked weights, its noise keyed by that layer's index among the model's masked layers,
    not by its place in the group (on SD 1.5 most groups hold one layer, so a place would key every one as 0)."""
    from mubench.kernels.masked_weights import masked_group_weights

    g = torch.Generator().manual_seed(1)
    L, G, OUT, IN, GI = 2, 2, 24, 40, 10
    h = torch.randint(-4, 5, (L, G, OUT, GI), generator=g).float() / 8  # exact in fp32, as above
    a_in = torch.randint(-4, 5, (L, IN, GI), generator=g).float() / 8
    b_in = torch.randint(-4, 5, (L, IN), generator=g).float() / 8
    weight = torch.randn(L, OUT, IN, generator=g)
    keys, slots = torch.randint(0, 2**62, (G,), generator=g), torch.tensor([0, 1])
    out = masked_group_weights(h, a_in, b_in, weight, keys, slots, [7, 3])
    assert out.shape == (L, G, OUT, IN)
    for k, layer in enumerate([7, 3]):
        assert torch.equal(out[k], masked_weights_reference(h[k], a_in[k], b_in[k], weight[k], keys, slots, layer))
    assert not torch.equal(out[1], masked_weights_reference(h[1], a_in[1], b_in[1], weight[1], keys, slots, 1))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (run with TRITON_INTERPRET=0)")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_compiled_kernel_on_cuda_equals_the_reference(dtype):
    from mubench.kernels.masked_weights import interpreter_on

    if interpreter_on():
        pytest.skip("TRITON_INTERPRET is set: run with TRITON_INTERPRET=0 to test the compiled kernel")
    g = torch.Generator().manual_seed(0)
    G, OUT, IN, GI = 4, 320, 640, 160  # an SD 1.5 cross-attention k/v shape
    h = (torch.randint(-4, 5, (G, OUT, GI), generator=g).float() / 64).cuda()
    a_in = (torch.randint(-4, 5, (IN, GI), generator=g).float() / 64).cuda()
    b_in = (torch.randint(-4, 5, (IN,), generator=g).float() / 8).cuda()
    weight = torch.randn(OUT, IN, generator=g).to(dtype).cuda()
    keys, slots = torch.randint(0, 2**62, (G,), generator=g).cuda(), torch.tensor([0, 1, 0, 1]).cuda()
    for det, layer in ((False, 9), (False, 1), (False, 0), (True, 9)):  # 1: Triton passes it as a constant
        ref = masked_weights_reference(h, a_in, b_in, weight, keys, slots, layer, det)
        out = masked_weights_triton(h, a_in, b_in, weight, keys, slots, layer, det)
        assert (out != ref).float().mean().item() <= 1e-6  # exp/log may round differently on the device


AOT_COMPILE = """
import sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from mubench.kernels import masked_weights as mw
from mubench.kernels.philox import KEY_A, KEY_B, ROUND_A, ROUND_B

layer = int(sys.argv[1])
launch = mw._kernel(False)
jit = next(c.cell_contents for c in launch.__closure__ if isinstance(c.cell_contents, triton.runtime.jit.JITFunction))
pointers = {"h_ptr": "*fp16", "a_ptr": "*fp16", "b_ptr": "*fp16", "w_ptr": "*fp16", "keys_ptr": "*i64",
            "slots_ptr": "*i64", "out_ptr": "*fp16"}
constants = dict(DETERMINISTIC=False, BO=32, BI=32, BK=16, SHIFT=8, INV=1.0 / 2 ** 24, ROUND_A=ROUND_A,
                 ROUND_B=ROUND_B, KEY_A=KEY_A, KEY_B=KEY_B)
ones = {"s_hk", "s_ak", "s_wi", "s_oi"} | ({"layer"} if layer == 1 else set())  # as Triton's launcher specialises
signature = {}
for name in jit.arg_names:
    if name in pointers:
        signature[name] = pointers[name]
    elif name in constants:
        signature[name] = "constexpr"
    elif name in ones:
        signature[name], constants[name] = "constexpr", 1
    else:
        signature[name] = "i32"
compiled = triton.compile(ASTSource(jit, signature, constants), target=GPUTarget("cuda", 90, 32))
print("cubin bytes", len(compiled.asm["cubin"]))
"""


@pytest.mark.parametrize("layer", [0, 1, 9])
def test_kernel_compiles_for_a_hopper_gpu(layer, tmp_path):
    """Ahead-of-time compilation for sm_90 (Triton's compiler and its ptxas: no GPU needed), in a process without
    the interpreter, with the arguments specialised as Triton's launcher does (an int equal to 1 becomes a constant:
    layer 1 failed to compile for the GPU while the interpreter, which passes every scalar as a tensor, was exact)."""
    import os
    import subprocess
    import sys

    from conftest import REPO

    env = {**os.environ, "TRITON_INTERPRET": "0", "TRITON_CACHE_DIR": str(tmp_path), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", AOT_COMPILE, str(layer)], capture_output=True, text=True, env=env,
                          timeout=300)
    if proc.returncode != 0 and any(w in proc.stderr for w in ("ImportError", "ModuleNotFoundError", "ptxas not")):
        pytest.skip(f"no ahead-of-time CUDA compiler here: {proc.stderr.strip().splitlines()[-1]}")
    assert proc.returncode == 0 and "cubin bytes" in proc.stdout, proc.stderr[-2000:]


def test_kernel_with_real_valued_inputs_agrees_within_rounding(interpret):
    g = torch.Generator().manual_seed(1)
    G, OUT, IN, GI = 2, 64, 48, 12
    h, a_in, b_in = torch.randn(G, OUT, GI, generator=g), torch.randn(IN, GI, generator=g), torch.randn(IN, generator=g)
    weight = torch.randn(OUT, IN, generator=g)
    keys, slots = torch.tensor([3, 4]), torch.tensor([0, 1])
    ref = masked_weights_reference(h, a_in, b_in, weight, keys, slots, 0)
    out = masked_weights_triton(h, a_in, b_in, weight, keys, slots, 0)
    # a mask bit may flip only where the noise sits within the GEMM's rounding of its threshold
    assert (out != ref).float().mean().item() <= 1e-3


def _inputs(rows: int, seed: int = 3, context: int = 32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, 4, 16, 16, generator=g), torch.tensor([900, 400, 20, 7][:rows]), \
        torch.randn(rows, 16, context, generator=g)


def _forward(model, rows: int, seed: int = 3, context: int = 32):
    """One denoiser call with counter noise: every row its own key, slots as for CFG pairs."""
    model.row_keys = torch.randint(0, 2**62, (rows,), generator=torch.Generator().manual_seed(seed + 1))
    model.row_slots = torch.arange(rows) % 2
    with torch.no_grad():
        return model(*_inputs(rows, seed, context)).sample


@pytest.mark.parametrize("rows,two_groups", [(1, False), (3, False), (2, True)])
def test_counter_noise_masks_are_the_same_on_the_grouped_and_per_layer_paths(request, tmp_path, rows, two_groups):
    """The grouped path gives the per-layer path's masks and outputs. With two groups (a block with two weight
    shapes: its square linears, then its cross-attention k/v) a grouped layer's counter noise is keyed by its index
    among the model's masked layers, not by its place in its group."""
    bundle = request.getfixturevalue("two_group_bundle" if two_groups else "bundle")
    context = 48 if two_groups else 32
    model = _prepared(bundle, tmp_path, noise="counter").model
    if two_groups:
        assert len(model._fused.groups) == 2 and model._fused.groups[1].layers[0] > 0
    grouped = []
    model.on_mask = lambda i, m: grouped.append((i, m))
    fast = _forward(model, rows, context=context)
    fused, model._fused = model._fused, None  # the plain per-layer computation
    try:
        plain = []
        model.on_mask = lambda i, m: plain.append((i, m))
        ref = _forward(model, rows, context=context)
    finally:
        model._fused = fused
    assert [i for i, _ in grouped] == [i for i, _ in plain] == list(range(len(model.masked)))
    for (_, a), (_, b) in zip(grouped, plain):
        assert torch.equal(a, b)
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scope", ["row", "image"])
def test_the_triton_path_gives_the_torch_paths_denoiser_output(bundle, tmp_path, interpret, scope):
    from mubench.methods.masking import RowGroups

    outs = {}
    for kernel in ("torch", "triton"):
        model = _prepared(bundle, tmp_path, noise="counter", kernel=kernel, mask_scope=scope).model
        if scope == "image":  # rows 0, 1 are one image's CFG pair, row 2 another image
            model.share = ([0, 2], RowGroups([0, 0, 1]))
        outs[kernel] = _forward(model, 3)
    torch.testing.assert_close(outs["triton"], outs["torch"], rtol=1e-4, atol=1e-5)
    model = _prepared(bundle, tmp_path, noise="stream").model
    model.row_generators = [torch.Generator().manual_seed(r) for r in range(3)]
    with torch.no_grad():
        stream = model(*_inputs(3)).sample
    assert (stream - outs["torch"]).abs().max() > 1e-4  # another noise gives other masks (the switch matters)


def test_the_kernel_path_holds_one_copy_of_each_layers_input_factors(bundle, tmp_path, interpret, monkeypatch):
    """kernel: triton caches each layer's A_in and b_in once, whatever the row count (the torch path's batched GEMM
    needs them copied per row; the kernel reads them tile by tile for every row), and hands the kernel A_in as it is
    stacked, contiguous, so that no call copies it again; the next call finds them in the cache."""
    from mubench.kernels import masked_weights

    seen = []
    launch = masked_weights.masked_weights_triton

    def recording(h, a_in, *rest, **kw):
        seen.append(a_in)
        return launch(h, a_in, *rest, **kw)

    monkeypatch.setattr(masked_weights, "masked_weights_triton", recording)
    model = _prepared(bundle, tmp_path, noise="counter", kernel="triton").model
    _forward(model, 3)
    fused = model._fused
    assert sorted(fused._stacked) == [(g, 3, True) for g in range(len(fused.groups))]
    for (g, _, _), (_, packed) in fused._stacked.items():
        L, (_, in_f), gi = len(fused.groups[g].layers), fused.groups[g].shape, packed.a_in.shape[-1]
        assert packed.a_in.shape == (L, in_f, gi) and packed.b_in.shape == (L, in_f)
    assert len(seen) == len(model.masked) and all(a.is_contiguous() for a in seen)
    first = {key: packed for key, (_, packed) in fused._stacked.items()}
    _forward(model, 3, seed=4)
    assert all(fused._stacked[key][1] is packed for key, packed in first.items())  # cached, not packed again


def test_sampling_with_the_kernel_matches_the_torch_path(bundle, tmp_path, interpret):
    from mubench.sampler import SamplerConfig, sample_images

    cfg = SamplerConfig(scheduler="ddim", steps=3, guidance=3.0, resolution=32)
    images = {}
    for kernel in ("torch", "triton"):
        prepared = _prepared(bundle, tmp_path, noise="counter", kernel=kernel)
        images[kernel] = sample_images(bundle, prepared, ["a red circle", "two stars"], [5, 6], cfg)
    torch.testing.assert_close(images["triton"], images["torch"], rtol=1e-4, atol=1e-5)


def test_options_are_validated_and_recorded(bundle, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="noise=counter"):
        MaskUNetParams(kernel="triton").validate()
    MaskUNetParams(kernel="triton", deterministic=True).validate()  # no noise: any
    with pytest.raises(ValueError, match="noise must be"):
        MaskUNetParams(noise="philox").validate()
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert "CUDA" in triton_unavailable(torch.device("cpu"))
    with pytest.raises(UsageError, match="TRITON_INTERPRET"):
        _prepared(bundle, tmp_path, noise="counter", kernel="triton")
    info = _prepared(bundle, tmp_path, noise="counter").info
    assert info["kernel"] == "torch" and "Philox" in info["noise"]
    # inference-only options: one trained artifact serves every setting
    spec = MaskUNetParams(noise="counter").training_spec()
    assert spec == MaskUNetParams().training_spec() and "noise" not in spec and "kernel" not in spec


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
def test_the_kernel_stays_inside_one_compiled_graph(bundle, tmp_path, interpret, monkeypatch, backend):
    """``kernel: triton`` under ``compile=``: each group's kernel calls are one ``mubench::masked_group_weights``
    operator, which dynamo keeps in its graph (traced through its fake implementation) instead of breaking the graph
    at Triton's Python launcher (20 graphs for this sampling before): one graph, no break, no recompilation for other
    keys, and the eager images bit for bit (``aot_eager`` adds AOT autograd's functional trace of the operator)."""
    from method_cases import traced_like_eager
    from mubench.sampler import SamplerConfig

    prepared = _prepared(bundle, tmp_path, noise="counter", kernel="triton")
    cfg = SamplerConfig(scheduler="ddim", steps=2, guidance=3.0, resolution=32, chunk=2)
    traced_like_eager(bundle, prepared, cfg, monkeypatch, backend)


def test_kernel_on_a_cuda_device_needs_no_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert triton_unavailable(torch.device("cuda")) is None
    assert "TRITON_INTERPRET=1" in triton_unavailable(torch.device("cpu"))


@pytest.mark.parametrize("deterministic", [False, True])
def test_kernel_takes_strided_inputs_and_a_last_k_step_of_one(interpret, deterministic):
    """The kernel's result does not depend on how its inputs lie in memory (``b_in``, ``keys`` and ``slots`` given
    as strided views) nor on a reduction width one past the 16-wide K step (``gi = 17``)."""
    g = torch.Generator().manual_seed(2)
    G, OUT, IN, GI = 2, 24, 40, 17
    h = torch.randint(-4, 5, (G, OUT, GI), generator=g).float() / 8  # exact in fp32 in any order, as above
    a_in = torch.randint(-4, 5, (IN, GI), generator=g).float() / 8
    b_in = (torch.randint(-4, 5, (2 * IN,), generator=g).float() / 8)[::2]
    weight = torch.randn(OUT, IN, generator=g)
    keys = torch.randint(0, 2**62, (2 * G,), generator=g)[::2]
    slots = torch.tensor([1, 0, 0, 0])[::2]
    assert not (b_in.is_contiguous() or keys.is_contiguous() or slots.is_contiguous())
    ref = masked_weights_reference(h, a_in, b_in, weight, keys, slots, 4, deterministic)
    out = masked_weights_triton(h, a_in, b_in, weight, keys, slots, 4, deterministic)
    assert torch.equal(out, ref)
    assert 0.2 < (ref != 0).float().mean().item() < 0.9
    # the last K column matters: without it the logits (and so the masks) would differ
    short = masked_weights_reference(h[..., :16], a_in[:, :16], b_in, weight, keys, slots, 4, deterministic)
    assert not torch.equal(short, ref)


def test_noise_on_the_threshold_drops_the_weight_in_the_reference_and_the_kernel(interpret):
    """Keep only where ``E < e^ℓ``, strictly (as the torch paths do): logits set so that ``e^ℓ`` equals the noise
    exactly drop every such weight."""
    import numpy as np

    keys, slots = torch.tensor([99]), torch.tensor([0])
    OUT, IN, GI = 1, 64, 16
    noise = counter_exponential(keys, slots, 2, (OUT, IN))[0, 0]
    b_in = torch.log(noise)
    tie = torch.exp(b_in) == noise  # where exp(log E) gives E back exactly
    assert tie.sum() > 8
    h, a_in = torch.zeros(1, OUT, GI), torch.zeros(IN, GI)
    weight = torch.ones(OUT, IN)
    ref = masked_weights_reference(h, a_in, b_in, weight, keys, slots, 2)
    assert (ref[0, 0][tie] == 0).all()
    out = masked_weights_triton(h, a_in, b_in, weight, keys, slots, 2)
    # the kernel draws its own noise in numpy (the interpreter): its ties are where numpy's exp and log agree too
    u = counter_uniform(keys, slots, 2, IN)[0].numpy()
    kernel_noise = -np.log(np.float32(1.0) - u)
    kernel_tie = tie & torch.from_numpy(np.exp(b_in.numpy()) == kernel_noise)
    assert kernel_tie.sum() > 8 and (out[0, 0][kernel_tie] == 0).all()


def test_the_triton_path_serves_deterministic_masks_and_mask_observers(bundle, tmp_path, interpret):
    """``kernel: triton`` with ``deterministic`` gives the torch path's output (masks ``ℓ > 0``, no noise); with an
    observer of the masks (``on_mask``) the model computes bool masks with tensor operations instead of the kernel,
    and reports the torch path's masks and output."""
    outs, masks = {}, {}
    for kernel in ("torch", "triton"):
        model = _prepared(bundle, tmp_path, deterministic=True, kernel=kernel).model
        with torch.no_grad():
            outs[kernel] = model(*_inputs(2)).sample
    assert torch.equal(outs["triton"], outs["torch"])
    for kernel in ("torch", "triton"):
        model = _prepared(bundle, tmp_path, noise="counter", kernel=kernel).model
        seen = []
        model.on_mask = lambda i, m: seen.append((i, m))
        outs[kernel] = _forward(model, 2)
        masks[kernel] = seen
    assert [i for i, _ in masks["triton"]] == list(range(len(masks["torch"])))
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(masks["triton"], masks["torch"]))
    assert torch.equal(outs["triton"], outs["torch"])

