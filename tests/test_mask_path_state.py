"""The grouped mask path's state between and within calls: its cached stacked parameters, row counts, leftovers of
interrupted calls, the group cap, and when and in which layout each row's noise is drawn."""
from __future__ import annotations

import pytest
import torch

from mask_reference import fast_and_plain, fresh_output, prepared_maskunet, row_streams
from mubench.methods.maskunet import exponential_noise


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


def test_stacked_parameters_follow_updates_of_the_adapters_and_weights(bundle, tmp_path):
    """The grouped path caches its stacked adapter factors and layer weights between calls; an in-place update of
    an adapter or of a masked layer's weight (an optimiser step, an artifact copied in), or new tensors of the same
    version put in place of the old ones (a state dict loaded with ``assign``), gives the masks and outputs of a
    model built with those values, never the cached ones."""
    g = torch.Generator().manual_seed(3)
    x, t, ctx = torch.randn(2, 4, 16, 16, generator=g), torch.tensor([900, 20]), torch.randn(2, 16, 32, generator=g)
    model = prepared_maskunet(bundle, tmp_path).model
    unet_weight = model.masked[3].module.weight
    saved = unet_weight.detach().clone()

    def call() -> torch.Tensor:
        model.row_generators = row_streams(2, 11)
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


def test_one_model_serves_calls_of_any_row_count(bundle, tmp_path):
    """The cache of stacked parameters is kept per row count: calls of 2, then 3, then 2 rows on one model give
    what a new model gives for each."""
    g = torch.Generator().manual_seed(6)
    x, ctx = torch.randn(3, 4, 16, 16, generator=g), torch.randn(3, 16, 32, generator=g)
    t = torch.tensor([900, 400, 20])
    model = prepared_maskunet(bundle, tmp_path).model
    for rows in (2, 3, 2):
        model.row_generators = row_streams(rows, 11)
        with torch.no_grad():
            out = model(x[:rows], t[:rows], ctx[:rows]).sample
        assert torch.equal(out, fresh_output(bundle, tmp_path, x[:rows], t[:rows], ctx[:rows]))


def test_a_call_leaves_no_masked_weights_behind(bundle, tmp_path):
    """Per-call state is empty after every call (each group's masked weights and masks are let go with the last
    layer that uses them), with and without an observer of the masks."""
    g = torch.Generator().manual_seed(2)
    x, t, ctx = torch.randn(2, 4, 16, 16, generator=g), torch.tensor([900, 20]), torch.randn(2, 16, 32, generator=g)
    model = prepared_maskunet(bundle, tmp_path).model
    for observer in (None, lambda i, m: None):
        model.on_mask = observer
        model.row_generators = row_streams(2, 11)
        with torch.no_grad():
            model(x, t, ctx)
        assert model._fused._weights == {} and model._fused._masks == {}


def test_a_call_interrupted_midway_does_not_leak_into_the_next(bundle, tmp_path):
    """A call stopped inside a group (an exception from a layer) leaves that group's masked weights computed but
    unused; the next call, on other inputs, computes its own masks from its own features."""
    g = torch.Generator().manual_seed(8)
    x, t, ctx = torch.randn(2, 4, 16, 16, generator=g), torch.tensor([900, 20]), torch.randn(2, 16, 32, generator=g)
    x2, t2, ctx2 = torch.randn(2, 4, 16, 16, generator=g), torch.tensor([300, 600]), torch.randn(2, 16, 32, generator=g)
    model = prepared_maskunet(bundle, tmp_path).model

    def stop(i, m):
        raise KeyboardInterrupt

    model.on_mask = stop
    model.row_generators = row_streams(2, 5)
    with pytest.raises(KeyboardInterrupt), torch.no_grad():
        model(x, t, ctx)
    model.on_mask = None
    model.row_generators = row_streams(2, 11)
    with torch.no_grad():
        out = model(x2, t2, ctx2).sample
    assert torch.equal(out, fresh_output(bundle, tmp_path, x2, t2, ctx2))


def test_noise_drawn_before_the_call_is_the_noise_drawn_during_it(two_group_bundle, tmp_path):
    """``predraw`` (what a compiled call reads instead of generators) draws every group's noise in the order the
    call would, so a call on the predrawn noise gives the eager call's output bit for bit; here on a UNet whose
    masked block has two weight shapes (two groups: its square linears and its cross-attention k/v). Predrawn noise
    of the wrong shape for a group is refused."""
    model = prepared_maskunet(two_group_bundle, tmp_path).model
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
    assert not prepared_maskunet(two_group_bundle, tmp_path, layers="decoder-attn+conv").model._fused.covers_every_layer


def test_the_same_generator_gives_the_same_exponential_noise():
    """``exponential_noise`` draws from the generator it is given (a seeded stream), not the global RNG."""
    torch.manual_seed(0)
    a = exponential_noise(torch.empty(1000), torch.Generator().manual_seed(5))
    torch.manual_seed(1)
    b = exponential_noise(torch.empty(1000), torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert not torch.equal(a, exponential_noise(torch.empty(1000), torch.Generator().manual_seed(6)))


def test_images_sharing_a_call_draw_their_noise_in_the_documented_layout(bundle, tmp_path):
    """Two images in one call, their CFG rows interleaved as the sampler lays them out (uncond rows, then cond
    rows): each image's stream draws ``[layers, its rows, out, in]`` in memory order, so the masks and outputs are
    those of the plain per-layer computation (which draws exactly that) and do not depend on the other image."""
    model = prepared_maskunet(bundle, tmp_path).model
    g = torch.Generator().manual_seed(9)
    x, ctx = torch.randn(4, 4, 16, 16, generator=g), torch.randn(4, 16, 32, generator=g)
    t = torch.tensor([500, 500, 500, 500])

    def streams():
        a, b = torch.Generator().manual_seed(21), torch.Generator().manual_seed(22)
        return [a, b, a, b]

    fast, fast_masks, ref, plain_masks = fast_and_plain(model, x, t, ctx, streams)
    assert len(fast_masks) == len(plain_masks) == len(model.masked)
    assert all(torch.equal(a, b) for a, b in zip(fast_masks, plain_masks))
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-5)
