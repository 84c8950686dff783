"""The fast masking paths give the outputs of the plain computation on fixed seeds.

The reference below is the plain (released-style) computation, written out here on purpose: for every masked layer it
re-runs the block's mask generator on the block's raw features, runs the adapter, draws the layer's noise from each
row's stream with the same generator calls, forms a float mask from the single-Gumbel event, multiplies ``W ⊙ M`` in
float and applies it row by row with ``F.linear``. The optimised path (generator once per block, in-place noise and
threshold, bool masks, one batched GEMM) must produce bitwise the same masks and the same outputs.
"""
from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mubench.methods.base import MethodContext
from mubench.methods.maskunet import MaskUNetMethod, MaskUNetParams, exponential_noise, keep_probability


@pytest.fixture(scope="module")
def tiny_bundle():
    from mubench.models.base import LoadContext
    from mubench.models.tiny import TinySD, TinySDParams

    return TinySD.load(TinySDParams(), LoadContext(torch.device("cpu"), torch.float32))


def _prepared(bundle, tmp_path: Path, **kw):
    method = MaskUNetMethod(MaskUNetParams(**kw), "maskunet")
    prepared = method.build(bundle, MethodContext(artifacts_dir=tmp_path, train="never", model_name="tiny-sd"))
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():  # trained-looking adapters: logits spread around 0, so masks really vary
        for adapter in prepared.model.adapters:
            for lin in (adapter.rows, adapter.cols):
                lin.weight.copy_(torch.randn(lin.weight.shape, generator=gen) * 0.3)
                lin.bias.copy_(torch.randn(lin.bias.shape, generator=gen) * 0.5)
        for g in prepared.model.generators.values():
            g.conv2.weight.copy_(torch.randn(g.conv2.weight.shape, generator=gen) * 0.2)
    return prepared


def _noise_groups(model) -> list[list[int]]:
    """The documented draw order: the linears of one UNet block with one weight shape draw their noise together
    (``[layers, rows of the image, out, in]``), when the first of them runs (small models: no group is split)."""
    groups: dict[tuple, list[int]] = {}
    for i, layer in enumerate(model.masked):
        groups.setdefault((layer.block, tuple(layer.shape)), []).append(i)
    return list(groups.values())


class PlainMasks:
    """The plain computation as a mask function: per-layer generator re-run, float masks, per-row linear."""

    def __init__(self, model, tau: float = 1.0) -> None:
        self.model = model
        self.tau = tau
        self.raw: dict[str, tuple] = {}
        self.masks: list[torch.Tensor] = []
        self.handles = []
        self.first_of_group = {g[0]: g for g in _noise_groups(model)}
        self.noise: dict[int, torch.Tensor] = {}
        for key in model.blocks:
            block = model.unet.get_submodule(key)
            sig = inspect.signature(block.forward)
            self.handles.append(block.register_forward_pre_hook(self._capture(key, sig), with_kwargs=True))

    def _capture(self, key, sig):
        def hook(module, args, kwargs):
            bound = sig.bind_partial(*args, **kwargs).arguments
            skips = bound.get("res_hidden_states_tuple")
            self.raw[key] = (bound["hidden_states"], skips[-1] if skips else None, bound["temb"])
        return hook

    def logits(self, i: int) -> torch.Tensor:
        layer = self.model.masked[i]
        h, skip, temb = self.raw[layer.block]
        feats = [h] if skip is None else [h, skip]
        pooled = torch.cat([F.adaptive_avg_pool2d(f, (1, 1)) for f in feats], 1)
        grid = self.model.generators[layer.block.replace(".", "-")](pooled, temb)  # re-run for every layer
        adapter = self.model.adapters[i]
        h_rows = F.linear(grid.transpose(-1, -2), adapter.rows.weight, adapter.rows.bias).transpose(-1, -2)
        return F.linear(h_rows, adapter.cols.weight, adapter.cols.bias)

    def draw(self, group: list[int], rows: int) -> None:
        """E = -log(1 - U) for every layer of the group: each image's stream draws [layers, its rows, out, in]."""
        gens = self.model.row_generators
        streams: dict[int, list[int]] = {}
        for r in range(rows):
            streams.setdefault(id(gens[r]), []).append(r)
        shape = tuple(self.model.masked[group[0]].shape)
        for row_ids in streams.values():
            u = torch.empty(len(group), len(row_ids), *shape).uniform_(0.0, 1.0, generator=gens[row_ids[0]])
            e = -torch.log1p(-u)
            for k, i in enumerate(group):
                self.noise.setdefault(i, torch.empty(rows, *shape))[row_ids] = e[k]

    def forward_layer(self, i: int, module, x: torch.Tensor) -> torch.Tensor:
        logits = self.logits(i)
        if i in self.first_of_group:
            self.draw(self.first_of_group[i], x.shape[0])
        noise = self.noise.pop(i)
        mask = (noise < torch.exp(logits)).float()
        self.masks.append(mask.bool())
        w = module.weight * mask
        return torch.stack([F.linear(x[r], w[r], module.bias) for r in range(x.shape[0])])

    def install(self):
        for i, layer in enumerate(self.model.masked):
            module = layer.module
            module.forward = (lambda x, i=i, module=module: self.forward_layer(i, module, x))

    def remove(self):
        for layer in self.model.masked:
            del layer.module.forward
        for h in self.handles:
            h.remove()


def _unmasked(model, x, t, ctx) -> torch.Tensor:
    """The UNet's output with every mask taken off (the model is unmasked afterwards)."""
    from mubench.methods.masking import set_mask_fn

    set_mask_fn(model.masked, None)
    with torch.no_grad():
        return model.unet(x, t, ctx).sample


def _streams(n: int, seed: int):
    return [torch.Generator().manual_seed(seed + r) for r in range(n)]


def _fast_and_plain(model, x, t, ctx, streams):
    """One call through the grouped path and one through :class:`PlainMasks`, each with fresh generators from
    ``streams()``: (grouped output, its masks, plain output, plain masks)."""
    fast_masks = []
    model.on_mask = lambda i, m: fast_masks.append(m)
    with torch.no_grad():
        model.row_generators = streams()
        fast = model(x, t, ctx).sample
        plain = PlainMasks(model)
        plain.install()
        try:
            model.row_generators = streams()
            model.on_mask = None
            ref = model(x, t, ctx).sample
        finally:
            plain.remove()
    return fast, fast_masks, ref, plain.masks


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
def test_fast_masks_equal_the_plain_computation(tiny_bundle, tmp_path, rows):
    model = _prepared(tiny_bundle, tmp_path).model
    g = torch.Generator().manual_seed(3)
    x = torch.randn(rows, 4, 16, 16, generator=g)
    t = torch.tensor([900, 400, 20][:rows])
    ctx = torch.randn(rows, 16, 32, generator=g)
    fast, fast_masks, ref, plain_masks = _fast_and_plain(model, x, t, ctx, lambda: _streams(rows, 11))
    assert len(fast_masks) == len(plain_masks) == len(model.masked)
    for a, b in zip(fast_masks, plain_masks):
        assert a.dtype == torch.bool and torch.equal(a, b)
    kept = torch.cat([m.flatten().float() for m in fast_masks]).mean().item()
    assert 0.2 < kept < 0.95  # the masks are far from trivial, so the comparison means something
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-5)
    # and the masks matter: the unmasked model gives something else
    assert (_unmasked(model, x, t, ctx) - fast).abs().max() > 1e-3


def test_sampling_through_the_sampler_matches_the_plain_computation(tiny_bundle, tmp_path):
    from mubench.sampler import SamplerConfig, sample_images

    prepared = _prepared(tiny_bundle, tmp_path)
    cfg = SamplerConfig(scheduler="ddim", steps=3, guidance=3.0, resolution=32)
    fast = sample_images(tiny_bundle, prepared, ["a red circle", "two stars"], [5, 6], cfg)
    plain = PlainMasks(prepared.model)
    plain.install()
    try:
        ref = sample_images(tiny_bundle, prepared, ["a red circle", "two stars"], [5, 6], cfg)
    finally:
        plain.remove()
    assert len(plain.masks) == 3 * 2 * len(prepared.model.masked)  # 3 steps x 2 images, one CFG call each
    torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-5)


def test_deterministic_and_training_paths_are_untouched(tiny_bundle, tmp_path):
    model = _prepared(tiny_bundle, tmp_path, deterministic=True).model
    seen = []
    model.on_mask = lambda i, m: seen.append((i, m))
    x, t, ctx = torch.randn(2, 4, 16, 16), torch.tensor([3, 700]), torch.randn(2, 16, 32)
    with torch.no_grad():
        model(x, t, ctx)
        for i, m in seen:
            assert torch.equal(m, model.layer_logits(i) > 0)
    # with gradients the straight-through float mask is used, and the noise is drawn from the global RNG
    model = _prepared(tiny_bundle, tmp_path).model
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


def test_the_sampler_uses_the_grouped_path(tiny_bundle, tmp_path, monkeypatch):
    from mubench.methods import maskunet_fast
    from mubench.sampler import SamplerConfig, sample_images

    prepared = _prepared(tiny_bundle, tmp_path)
    fused = prepared.model._fused
    assert fused is not None and len(fused.groups) < len(prepared.model.masked)
    calls = []
    original = maskunet_fast.FusedMasks._compute
    monkeypatch.setattr(maskunet_fast.FusedMasks, "_compute", lambda self, g: (calls.append(g), original(self, g)))
    sample_images(tiny_bundle, prepared, ["a red circle"], [1], SamplerConfig("ddim", 2, 3.0, 32))
    assert len(calls) == 2 * len(fused.groups)  # every group once per denoiser call, never per layer


def test_image_scope_shares_the_conditional_rows_mask(tiny_bundle, tmp_path):
    from mubench.methods.base import RowInfo, StepState

    # deterministic: the shared mask is exactly the sign of the conditional row's logits
    prepared = _prepared(tiny_bundle, tmp_path, deterministic=True, mask_scope="image")
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
        shared = model(x, torch.tensor([500, 500]), ctx).sample
        per_layer = [model.layer_logits(i) for i in range(len(model.masked))]
    prepared.end_batch()
    assert len(seen) == len(model.masked)
    for (i, m), logits in zip(seen, per_layer):
        assert m.shape[0] == 1 and torch.equal(m[0], logits[1] > 0)  # one mask, from row 1 (the cond row)
    # stochastic: one mask per image whatever the rows, and the result differs from per-row masks
    prepared = _prepared(tiny_bundle, tmp_path, mask_scope="image")
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
def test_the_sampling_path_gives_the_mask_observing_paths_outputs_bitwise(tiny_bundle, tmp_path, layers,
                                                                           deterministic):
    # with on_mask set the grouped and per-layer (conv) paths keep bool masks (masked_product); without it they
    # threshold over the logits (thresholded_product): the same weights, so the same outputs to the bit
    model = _prepared(tiny_bundle, tmp_path, layers=layers, deterministic=deterministic).model
    assert any(layer.kind == "conv" for layer in model.masked) == (layers != "decoder-attn")
    g = torch.Generator().manual_seed(4)
    x, ctx = torch.randn(3, 4, 16, 16, generator=g), torch.randn(3, 16, 32, generator=g)
    t = torch.tensor([900, 400, 20])
    outs = []
    for observe in (False, True):
        model.on_mask = (lambda i, m: None) if observe else None
        model.row_generators = _streams(3, 11)
        with torch.no_grad():
            outs.append(model(x, t, ctx).sample)
    model.on_mask = None
    assert torch.equal(outs[0], outs[1])
    assert (_unmasked(model, x, t, ctx) - outs[0]).abs().max() > 1e-3


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


def _fresh_output(bundle, tmp_path, x, t, ctx, seed: int = 11, **kw) -> torch.Tensor:
    """The output of a newly built model (nothing cached) for one call with stream noise."""
    model = _prepared(bundle, tmp_path, **kw).model
    model.row_generators = _streams(x.shape[0], seed)
    with torch.no_grad():
        return model(x, t, ctx).sample


def test_a_group_holds_exactly_its_weight_cap():
    """``max_weights`` is the most a group may hold: layers whose weights fill it exactly stay in one group."""
    from mubench.methods.masking import MaskedLayer
    from mubench.methods.maskunet_fast import plan_groups

    def layer(block, shape, kind="linear"):
        module = (torch.nn.Linear(shape[1], shape[0], bias=False, device="meta") if kind == "linear"
                  else torch.nn.Conv2d(shape[1], shape[0], 1, bias=False, device="meta"))
        return MaskedLayer(name=f"{block}.x", module=module, block=block, kind=kind)

    layers = [layer("up.1", (4, 8)), layer("up.1", (4, 8)), layer("up.1", (4, 8), "conv"),
              layer("up.1", (4, 8)), layer("up.2", (4, 8)), layer("up.1", (8, 4))]
    groups = plan_groups(layers, max_weights=2 * 4 * 8)
    assert [(g.block, g.shape, g.layers) for g in groups] == [
        ("up.1", (4, 8), [0, 1]), ("up.1", (4, 8), [3]), ("up.2", (4, 8), [4]), ("up.1", (8, 4), [5])]
    assert [g.layers for g in plan_groups(layers, max_weights=2 * 4 * 8 - 1)] == [[0], [1], [3], [4], [5]]


def test_row_streams_must_match_the_rows():
    """One generator per row: rows sharing a generator object share its stream (in order of first use); a count
    that does not match the batch is an error, not a silent reuse."""
    from mubench.methods.maskunet_fast import streams_of_rows

    a, b = torch.Generator(), torch.Generator()
    assert [(g is a, rows) for g, rows in streams_of_rows([a, b, a], 3)] == [(True, [0, 2]), (False, [1])]
    assert streams_of_rows(None, 2) == [(None, [0, 1])]
    with pytest.raises(RuntimeError, match="2 row generators for a batch of 3 rows"):
        streams_of_rows([a, b], 3)


def test_stacked_parameters_follow_updates_of_the_adapters_and_weights(tiny_bundle, tmp_path):
    """The grouped path caches its stacked adapter factors and layer weights between calls; an in-place update of
    an adapter or of a masked layer's weight (an optimiser step, an artifact copied in), or new tensors of the same
    version put in place of the old ones (a state dict loaded with ``assign``), gives the masks and outputs of a
    model built with those values, never the cached ones."""
    g = torch.Generator().manual_seed(3)
    x, t, ctx = torch.randn(2, 4, 16, 16, generator=g), torch.tensor([900, 20]), torch.randn(2, 16, 32, generator=g)
    model = _prepared(tiny_bundle, tmp_path).model
    unet_weight = model.masked[3].module.weight
    saved = unet_weight.detach().clone()

    def call() -> torch.Tensor:
        model.row_generators = _streams(2, 11)
        with torch.no_grad():
            return model(x, t, ctx).sample

    def uncached() -> torch.Tensor:
        fused = model._fused
        model._fused = type(fused)(model)  # a new grouped path: nothing stacked yet
        try:
            return call()
        finally:
            model._fused = fused

    try:
        for update in (lambda: model.adapters[5].cols.bias.add_(2.0), lambda: unet_weight.mul_(-1.0)):
            before = call()
            with torch.no_grad():  # in place: same tensors, new values
                update()
            after = call()
            assert (after - before).abs().max() > 1e-4
            assert torch.equal(after, uncached())
        # other tensors in place of the adapters' (each a fresh tensor: version 0, like the ones they replace)
        fresh = {k: torch.randn(v.shape, generator=g) * 0.5 for k, v in model.adapters.state_dict().items()}
        model.adapters.load_state_dict({k: v.clone() for k, v in fresh.items()}, assign=True)
        first = call()
        model.adapters.load_state_dict({k: -v for k, v in fresh.items()}, assign=True)
        second = call()
        assert (second - first).abs().max() > 1e-4
        assert torch.equal(second, uncached())
    finally:
        with torch.no_grad():
            unet_weight.copy_(saved)  # the bundle is shared by the module's tests


def test_one_model_serves_calls_of_any_row_count(tiny_bundle, tmp_path):
    """The cache of stacked parameters is kept per row count: calls of 2, then 3, then 2 rows on one model give
    what a new model gives for each."""
    g = torch.Generator().manual_seed(6)
    x, ctx = torch.randn(3, 4, 16, 16, generator=g), torch.randn(3, 16, 32, generator=g)
    t = torch.tensor([900, 400, 20])
    model = _prepared(tiny_bundle, tmp_path).model
    for rows in (2, 3, 2):
        model.row_generators = _streams(rows, 11)
        with torch.no_grad():
            out = model(x[:rows], t[:rows], ctx[:rows]).sample
        assert torch.equal(out, _fresh_output(tiny_bundle, tmp_path, x[:rows], t[:rows], ctx[:rows]))


def test_a_call_leaves_no_masked_weights_behind(tiny_bundle, tmp_path):
    """Per-call state is empty after every call (each group's masked weights and masks are let go with the last
    layer that uses them), with and without an observer of the masks."""
    g = torch.Generator().manual_seed(2)
    x, t, ctx = torch.randn(2, 4, 16, 16, generator=g), torch.tensor([900, 20]), torch.randn(2, 16, 32, generator=g)
    model = _prepared(tiny_bundle, tmp_path).model
    for observer in (None, lambda i, m: None):
        model.on_mask = observer
        model.row_generators = _streams(2, 11)
        with torch.no_grad():
            model(x, t, ctx)
        assert model._fused._weights == {} and model._fused._masks == {}


def test_a_call_interrupted_midway_does_not_leak_into_the_next(tiny_bundle, tmp_path):
    """A call stopped inside a group (an exception from a layer) leaves that group's masked weights computed but
    unused; the next call, on other inputs, computes its own masks from its own features."""
    g = torch.Generator().manual_seed(8)
    x, t, ctx = torch.randn(2, 4, 16, 16, generator=g), torch.tensor([900, 20]), torch.randn(2, 16, 32, generator=g)
    x2, t2, ctx2 = torch.randn(2, 4, 16, 16, generator=g), torch.tensor([300, 600]), torch.randn(2, 16, 32, generator=g)
    model = _prepared(tiny_bundle, tmp_path).model

    def stop(i, m):
        raise KeyboardInterrupt

    model.on_mask = stop
    model.row_generators = _streams(2, 5)
    with pytest.raises(KeyboardInterrupt), torch.no_grad():
        model(x, t, ctx)
    model.on_mask = None
    model.row_generators = _streams(2, 11)
    with torch.no_grad():
        out = model(x2, t2, ctx2).sample
    assert torch.equal(out, _fresh_output(tiny_bundle, tmp_path, x2, t2, ctx2))


def test_noise_drawn_before_the_call_is_the_noise_drawn_during_it(two_group_bundle, tmp_path):
    """``predraw`` (what a compiled call reads instead of generators) draws every group's noise in the order the
    call would, so a call on the predrawn noise gives the eager call's output bit for bit; here on a UNet whose
    masked block has two weight shapes (two groups: its square linears and its cross-attention k/v). Predrawn noise
    of the wrong shape for a group is refused."""
    model = _prepared(two_group_bundle, tmp_path).model
    fused = model._fused
    assert len(fused.groups) == 2 and fused.covers_every_layer
    g = torch.Generator().manual_seed(4)
    x, t, ctx = torch.randn(2, 4, 16, 16, generator=g), torch.tensor([900, 20]), torch.randn(2, 16, 48, generator=g)
    gens = [torch.Generator().manual_seed(1)] * 2  # one image's CFG pair: one stream for both rows
    model.row_generators = [torch.Generator().manual_seed(1)] * 2
    with torch.no_grad():
        eager = model(x, t, ctx).sample
    model.row_generators = gens
    fused.predrawn = fused.predraw()
    model.row_generators = None
    try:
        with torch.no_grad():
            predrawn = model(x, t, ctx).sample
        assert torch.equal(predrawn, eager)
        fused.predrawn = [n[:, :1] for n in fused.predrawn]  # drawn for one row, called with two
        with pytest.raises(RuntimeError, match="noise drawn before the call"), torch.no_grad():
            model(x, t, ctx)
    finally:
        fused.predrawn = None
    # conv layers are masked one at a time: the grouped path then does not cover every layer
    assert not _prepared(two_group_bundle, tmp_path, layers="decoder-attn+conv").model._fused.covers_every_layer


def test_the_same_generator_gives_the_same_exponential_noise():
    """``exponential_noise`` draws from the generator it is given (a seeded stream), not the global RNG."""
    torch.manual_seed(0)
    a = exponential_noise(torch.empty(1000), torch.Generator().manual_seed(5))
    torch.manual_seed(1)
    b = exponential_noise(torch.empty(1000), torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert not torch.equal(a, exponential_noise(torch.empty(1000), torch.Generator().manual_seed(6)))


def test_images_sharing_a_call_draw_their_noise_in_the_documented_layout(tiny_bundle, tmp_path):
    """Two images in one call, their CFG rows interleaved as the sampler lays them out (uncond rows, then cond
    rows): each image's stream draws ``[layers, its rows, out, in]`` in memory order, so the masks and outputs are
    those of the plain per-layer computation (which draws exactly that) and do not depend on the other image."""
    model = _prepared(tiny_bundle, tmp_path).model
    g = torch.Generator().manual_seed(9)
    x, ctx = torch.randn(4, 4, 16, 16, generator=g), torch.randn(4, 16, 32, generator=g)
    t = torch.tensor([500, 500, 500, 500])

    def streams():
        a, b = torch.Generator().manual_seed(21), torch.Generator().manual_seed(22)
        return [a, b, a, b]

    fast, fast_masks, ref, plain_masks = _fast_and_plain(model, x, t, ctx, streams)
    assert len(fast_masks) == len(plain_masks) == len(model.masked)
    assert all(torch.equal(a, b) for a, b in zip(fast_masks, plain_masks))
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-5)
