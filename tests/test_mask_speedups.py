"""The fast masking paths give the outputs of the plain computation on fixed seeds.

The reference is the plain (released-style) computation, :class:`mask_reference.PlainMasks`. The optimised path
(generator once per block, in-place noise and threshold, bool masks, one batched GEMM) must produce bitwise the same
masks and the same outputs.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mask_reference import PlainMasks, fast_and_plain, prepared_maskunet, row_streams, unmasked_output
from mubench.methods.maskunet import exponential_noise, keep_probability


def test_exponential_noise_has_the_exponential_law():
    n = 400_000
    e = exponential_noise(torch.empty(n), torch.Generator().manual_seed(0))
    assert torch.isfinite(e).all() and (e >= 0).all()
    # mean 1, variance 1, P(E > 2) = e^-2
    assert abs(e.mean().item() - 1) < 5 / n ** 0.5
    assert abs(e.var().item() - 1) < 15 / n ** 0.5
    assert abs((e > 2).float().mean().item() - torch.exp(torch.tensor(-2.0)).item()) < 0.003
    # the event E < e^l keeps with probability 1 - exp(-e^l) (the released single-Gumbel sampler)
    logits = torch.tensor([-2.0, 0.0, 1.0])[:, None].expand(-1, n)
    keep = (exponential_noise(torch.empty(logits.shape), torch.Generator().manual_seed(1)) < logits.exp())
    torch.testing.assert_close(keep.float().mean(1), keep_probability(logits[:, 0]), atol=4e-3, rtol=0)


@pytest.mark.parametrize("rows", [1, 2, 3])
def test_fast_masks_equal_the_plain_computation(bundle, tmp_path, rows):
    model = prepared_maskunet(bundle, tmp_path).model
    g = torch.Generator().manual_seed(3)
    x = torch.randn(rows, 4, 16, 16, generator=g)
    t = torch.tensor([900, 400, 20][:rows])
    ctx = torch.randn(rows, 16, 32, generator=g)
    fast, fast_masks, ref, plain_masks = fast_and_plain(model, x, t, ctx, lambda: row_streams(rows, 11))
    assert len(fast_masks) == len(plain_masks) == len(model.masked)
    for a, b in zip(fast_masks, plain_masks):
        assert a.dtype == torch.bool and torch.equal(a, b)
    kept = torch.cat([m.flatten().float() for m in fast_masks]).mean().item()
    assert 0.2 < kept < 0.95  # the masks are far from trivial, so the comparison means something
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-5)
    # and the masks matter: the unmasked model gives something else
    assert (unmasked_output(model, x, t, ctx) - fast).abs().max() > 1e-3


def test_sampling_through_the_sampler_matches_the_plain_computation(bundle, tmp_path):
    from mubench.sampler import SamplerConfig, sample_images

    prepared = prepared_maskunet(bundle, tmp_path)
    cfg = SamplerConfig(scheduler="ddim", steps=3, guidance=3.0, resolution=32)
    fast = sample_images(bundle, prepared, ["a red circle", "two stars"], [5, 6], cfg)
    plain = PlainMasks(prepared.model)
    plain.install()
    try:
        ref = sample_images(bundle, prepared, ["a red circle", "two stars"], [5, 6], cfg)
    finally:
        plain.remove()
    assert len(plain.masks) == 3 * 2 * len(prepared.model.masked)  # 3 steps x 2 images, one CFG call each
    torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-5)


def test_deterministic_and_training_paths_are_untouched(bundle, tmp_path):
    model = prepared_maskunet(bundle, tmp_path, deterministic=True).model
    seen = []
    model.on_mask = lambda i, m: seen.append((i, m))
    x, t, ctx = torch.randn(2, 4, 16, 16), torch.tensor([3, 700]), torch.randn(2, 16, 32)
    with torch.no_grad():
        model(x, t, ctx)
        for i, m in seen:
            assert torch.equal(m, model.layer_logits(i) > 0)
    # with gradients the straight-through float mask is used, and the noise is drawn from the global RNG
    model = prepared_maskunet(bundle, tmp_path).model
    model.train()
    torch.manual_seed(0)
    model(x, t, ctx).sample.square().mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.trainable_parameters())


def test_groups_on_sd15_cover_every_linear_once_and_respect_the_cap():
    from diffusers import UNet2DConditionModel

    from mubench.methods.masking import install_masked_layers
    from mubench.methods.maskunet_fast import MAX_GROUP_WEIGHTS, plan_groups
    from mubench.models.sd15 import SD15_UNET_CONFIG

    with torch.device("meta"):
        unet = UNet2DConditionModel(**SD15_UNET_CONFIG)
    _, layers = install_masked_layers(unet, "decoder-attn")
    groups = plan_groups(layers)
    covered = sorted(i for g in groups for i in g.layers)
    assert covered == list(range(72))
    for g in groups:
        assert len({layers[i].block for i in g.layers}) == 1
        assert all(tuple(layers[i].shape) == g.shape for i in g.layers)
        assert len(g.layers) == 1 or len(g.layers) * g.shape[0] * g.shape[1] <= MAX_GROUP_WEIGHTS
        assert g.layers == sorted(g.layers)
    # with room enough, up_blocks.3 (320 wide) makes one group of its 18 square linears and one of its 6 k/v
    large = plan_groups(layers, max_weights=2**24)
    assert sorted(len(g.layers) for g in large if g.block == "up_blocks.3") == [6, 18]
    # a tighter cap splits groups, never mixing blocks or shapes; SD 1.5's layers are larger than the default cap
    small = plan_groups(layers, max_weights=2 * 1280 * 1280)
    assert all(len(g.layers) <= 2 for g in small if g.shape == (1280, 1280)) and len(large) < len(small)
    assert all(len(g.layers) == 1 for g in groups)


def test_the_sampler_uses_the_grouped_path(bundle, tmp_path, monkeypatch):
    from mubench.methods import maskunet_fast
    from mubench.sampler import SamplerConfig, sample_images

    prepared = prepared_maskunet(bundle, tmp_path)
    fused = prepared.model._fused
    assert fused is not None and len(fused.groups) < len(prepared.model.masked)
    calls = []
    original = maskunet_fast.FusedMasks._compute
    monkeypatch.setattr(maskunet_fast.FusedMasks, "_compute", lambda self, g: (calls.append(g), original(self, g)))
    sample_images(bundle, prepared, ["a red circle"], [1], SamplerConfig("ddim", 2, 3.0, 32))
    assert len(calls) == 2 * len(fused.groups)  # every group once per denoiser call, never per layer


def test_image_scope_shares_the_conditional_rows_mask(bundle, tmp_path):
    from mubench.methods.base import RowInfo, StepState

    # deterministic: the shared mask is exactly the sign of the conditional row's logits
    prepared = prepared_maskunet(bundle, tmp_path, deterministic=True, mask_scope="image")
    model = prepared.model
    g = torch.Generator().manual_seed(5)
    x, ctx = torch.randn(2, 4, 16, 16, generator=g), torch.randn(2, 16, 32, generator=g)
    rows = [RowInfo(0, False), RowInfo(0, True)]  # [uncond, cond] of one image
    seen = []
    model.on_mask = lambda i, m: seen.append((i, m))
    gens = [torch.Generator().manual_seed(1)]
    prepared.begin_batch(gens, rows)
    prepared.before_step(StepState(0, 1, torch.tensor(500), x[:1], rows, gens))
    with torch.no_grad():
        model(x, torch.tensor([500, 500]), ctx)
        per_layer = [model.layer_logits(i) for i in range(len(model.masked))]
    prepared.end_batch()
    assert len(seen) == len(model.masked)
    for (i, m), logits in zip(seen, per_layer):
        assert m.shape[0] == 1 and torch.equal(m[0], logits[1] > 0)  # one mask, from row 1 (the cond row)
    # stochastic: one mask per image whatever the rows
    prepared = prepared_maskunet(bundle, tmp_path, mask_scope="image")
    rows2 = [RowInfo(0, False), RowInfo(1, False), RowInfo(0, True), RowInfo(1, True)]
    seen.clear()
    prepared.model.on_mask = lambda i, m: seen.append(m)
    gens2 = [torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)]
    prepared.begin_batch(gens2, rows2)
    prepared.before_step(StepState(0, 1, torch.tensor(500), x, rows2, gens2))
    assert prepared.model.share[0] == [2, 3]
    with torch.no_grad():
        prepared.model(torch.cat([x, x]), torch.tensor([500] * 4), torch.cat([ctx, ctx]))
    prepared.end_batch()
    assert all(m.shape[0] == 2 for m in seen) and prepared.model.share is None
    assert prepared.info["mask_scope"].startswith("per image")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("noisy", [True, False])
def test_thresholded_product_is_the_bool_mask_product_bit_for_bit(dtype, noisy):
    from mubench.methods.masking import masked_product, thresholded_product

    g = torch.Generator().manual_seed(0)
    weight = torch.randn(3, 1, 16, 24, generator=g).to(dtype)
    weight[0, 0, 0, :4] = torch.tensor([0.0, -0.0, -1.5, 2.0])  # signed zeros and negatives that get dropped
    logits = torch.randn(3, 2, 16, 24, generator=g) * 3
    logits[1, 1, 2, :3] = torch.tensor([100.0, float("-inf"), 0.0])  # e^l overflows to inf, underflows to 0; l = 0
    noise = exponential_noise(torch.empty(logits.shape), torch.Generator().manual_seed(1)) if noisy else None
    keep = torch.lt(noise, logits.exp()) if noisy else logits > 0
    ref = masked_product(weight, keep)
    out = thresholded_product(weight, logits.clone(), noise)
    assert out.dtype == ref.dtype == dtype and out.shape == ref.shape
    assert torch.equal(out.view(torch.int16 if dtype == torch.bfloat16 else torch.int32),
                       ref.view(torch.int16 if dtype == torch.bfloat16 else torch.int32))  # +0 for dropped, bits
    assert 0.1 < keep.float().mean().item() < 0.9 and (ref[keep.logical_not()] == 0).all()
    assert not torch.signbit(ref[keep.logical_not().expand_as(ref)]).any()


@pytest.mark.parametrize("layers,deterministic", [("decoder-attn", False), ("decoder-attn+conv", False),
                                                   ("decoder-attn+conv", True)])
def test_the_sampling_path_gives_the_mask_observing_paths_outputs_bitwise(bundle, tmp_path, layers,
                                                                           deterministic):
    # with on_mask set the grouped and per-layer (conv) paths keep bool masks (masked_product); without it they
    # threshold over the logits (thresholded_product): the same weights, so the same outputs to the bit
    model = prepared_maskunet(bundle, tmp_path, layers=layers, deterministic=deterministic).model
    assert any(layer.kind == "conv" for layer in model.masked) == (layers != "decoder-attn")
    g = torch.Generator().manual_seed(4)
    x, ctx = torch.randn(3, 4, 16, 16, generator=g), torch.randn(3, 16, 32, generator=g)
    t = torch.tensor([900, 400, 20])
    outs = []
    for observe in (False, True):
        model.on_mask = (lambda i, m: None) if observe else None
        model.row_generators = row_streams(3, 11)
        with torch.no_grad():
            outs.append(model(x, t, ctx).sample)
    model.on_mask = None
    assert torch.equal(outs[0], outs[1])
    assert (unmasked_output(model, x, t, ctx) - outs[0]).abs().max() > 1e-3


def test_the_stage_benchmark_runs_on_a_tiny_model():
    # benchmarks/mask_stages.py reaches into the grouped path (its groups, stacked parameters and stages): run it
    import json
    import subprocess
    import sys

    repo = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "benchmarks/mask_stages.py", "--model", "tiny-sd", "--repeats", "2",
                           "--warmup", "0"], cwd=repo, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    line = json.loads(done.stdout.strip().splitlines()[-1])
    assert line["groups"] >= 1 and line["rows"] == 2 and line["base_ms"] > 0
    assert set(line["stages"]) == {"adapter_h", "adapter_logits", "uniform", "to_exponential", "threshold",
                                   "threshold_bool_mask"}
    assert all(s["ms"] > 0 for s in line["stages"].values())
    floor = 1 + sum(line["stages"][k]["ms"] for k in ("adapter_h", "adapter_logits", "uniform")) / line["base_ms"]
    assert abs(line["floor_ratio"] - floor) < 2e-3

