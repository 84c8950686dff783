"""``random-mask``: the ratio is the fraction zeroed, resampling policies, masks per image, spec validation."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mubench.config import resolve_component
from mubench.errors import UsageError
from mubench.methods.base import MethodContext, RowInfo, StepState
from mubench.methods.random_mask import RandomMask, RandomMaskParams
from mubench.registry import load_registries
from mubench.sampler import SamplerConfig, sample_images
from mubench.seeding import image_generator


@pytest.fixture(scope="module")
def bundle():
    from mubench.models.base import LoadContext
    from mubench.models.tiny import TinySD, TinySDParams

    return TinySD.load(TinySDParams(), LoadContext(torch.device("cpu"), torch.float32))


def _prepare(bundle, **kw):
    return RandomMask(RandomMaskParams(**kw), "random-mask").prepare(bundle, MethodContext(Path(".")))


def _masked_weights(prepared, images: list[int], step: int, generators):
    """Run the hooks for one call holding ``images`` (CFG rows) and return each layer's MaskedWeights."""
    rows = [RowInfo(i, False) for i in images] + [RowInfo(i, True) for i in images]
    prepared.before_step(StepState(step, 3, torch.tensor(500), torch.zeros(len(images), 4, 16, 16), rows, generators))
    return [layer.module.mask_fn(layer.module) for layer in prepared.masked]


def _zeroed(prepared, mws) -> torch.Tensor:
    """Per mask: fraction of weights zeroed (base weights are never exactly 0)."""
    return torch.stack([torch.stack([(w == 0).float().sum() for w in mw.weight]) for mw in mws]).sum(0) / \
        sum(layer.numel for layer in prepared.masked)


@pytest.mark.parametrize("ratio", [0.1, 0.5, 0.9])
def test_ratio_is_the_fraction_zeroed(bundle, ratio):
    prepared = _prepare(bundle, ratio=ratio)
    gens = [image_generator(s) for s in (1, 2)]
    prepared.begin_batch(gens, [])
    mws = _masked_weights(prepared, [0, 1], 0, gens)
    n = sum(layer.numel for layer in prepared.masked)
    frac = _zeroed(prepared, mws)
    assert torch.all((frac - ratio).abs() < 5 * (ratio * (1 - ratio) / n) ** 0.5), frac
    # both CFG rows of an image share its mask: 2 images -> 2 masks for 4 rows, grouped [0, 1, 0, 1]
    assert all(mw.weight.shape[0] == 2 and mw.groups.index.tolist() == [0, 1, 0, 1] for mw in mws)
    # the two images' masks differ
    assert not torch.equal(mws[0].weight[0] == 0, mws[0].weight[1] == 0)
    assert prepared.info["ratio"] == ratio and prepared.info["masked_layers"] == 16


@pytest.mark.parametrize("resample", ["step", "image"])
def test_resampling_policy(bundle, resample):
    prepared = _prepare(bundle, ratio=0.5, resample=resample)
    gens = [image_generator(7)]
    prepared.begin_batch(gens, [RowInfo(0, False), RowInfo(0, True)])
    first = [mw.weight.clone() for mw in _masked_weights(prepared, [0], 0, gens)]
    second = [mw.weight.clone() for mw in _masked_weights(prepared, [0], 1, gens)]
    same = all(torch.equal(a, b) for a, b in zip(first, second))
    assert same == (resample == "image")
    assert prepared.info["resample"] == resample


def test_extreme_ratios_on_images(bundle):
    cfg = SamplerConfig(steps=2, guidance=3.0, resolution=32)
    from mubench.methods.base import Prepared

    base = sample_images(bundle, Prepared(bundle.denoiser), ["a red circle"], [5], cfg)
    keep_all = sample_images(bundle, _prepare(bundle, ratio=0.0), ["a red circle"], [5], cfg)
    assert torch.equal(base, keep_all)
    drop_all = sample_images(bundle, _prepare(bundle, ratio=1.0), ["a red circle"], [5], cfg)
    assert not torch.equal(base, drop_all)


def test_masks_are_inactive_outside_the_sampler(bundle):
    prepared = _prepare(bundle, ratio=0.9)
    x, t, ctx = torch.randn(1, 4, 16, 16), torch.tensor([10]), torch.randn(1, 16, 32)
    with torch.no_grad():
        assert torch.equal(prepared.denoiser(x, t, ctx).sample, bundle.denoiser(x, t, ctx).sample)


def test_spec_and_validation():
    regs = load_registries(plugins=False)
    comp = resolve_component("method", "random-mask", {}, regs)
    assert comp.kind == "random-mask" and comp.params.resample in ("step", "image")
    for bad in ({"ratio": 1.5}, {"resample": "never"}, {"layers": "encoder"}):
        with pytest.raises(UsageError):
            resolve_component("method", "random-mask", bad, regs)


def test_the_layer_set_decides_which_layers_are_masked(bundle):
    """`layers=` reaches the masked-layer install (the contract test's conv case never counts the layers)."""
    attn = _prepare(bundle)
    conv = _prepare(bundle, layers="decoder-attn+conv")
    assert 0 < attn.info["masked_layers"] < conv.info["masked_layers"]
    assert attn.info["masked_weights"] < conv.info["masked_weights"]


def test_ratio_zero_and_one_are_valid_and_outside_is_not():
    for ok in (0.0, 1.0):
        RandomMaskParams(ratio=ok).validate()
    for bad in (-0.01, 1.01):
        with pytest.raises(ValueError, match=r"ratio must be in \[0, 1\]"):
            RandomMaskParams(ratio=bad).validate()


def _row_weights(bundle, images: list[int]) -> dict[int, list[torch.Tensor]]:
    """Each image's masked weight per layer, for one call whose rows hold ``images`` in this order (CFG rows)."""
    prepared = RandomMask(RandomMaskParams(ratio=0.5), "random-mask").prepare(bundle, MethodContext(Path(".")))
    gens = {i: image_generator(100 + i) for i in images}
    generators = [gens[i] for i in sorted(gens)]
    rows = [RowInfo(i, False) for i in images] + [RowInfo(i, True) for i in images]
    prepared.begin_batch(generators, rows)
    prepared.before_step(StepState(0, 3, torch.tensor(500), torch.zeros(len(images), 4, 16, 16), rows, generators))
    out: dict[int, list[torch.Tensor]] = {}
    for layer in prepared.masked:
        mw = layer.module.mask_fn(layer.module)
        index = mw.groups.index.tolist()
        for r, row in enumerate(rows):
            per_image = out.setdefault(row.image, [])
            w = mw.weight[index[r]]
            if row.cond:
                assert torch.equal(w, per_image[-1])  # both CFG rows of an image share its mask
            else:
                per_image.append(w.clone())
    prepared.end_batch()
    return out


def test_random_mask_rows_get_their_own_images_mask_in_any_row_order(bundle):
    """The masks are grouped by image in the order images appear in the call; a call whose rows list the images in
    another order still gives every image the mask drawn from its own stream."""
    forward = _row_weights(bundle, [0, 1])
    backward = _row_weights(bundle, [1, 0])
    for image in (0, 1):
        assert all(torch.equal(a, b) for a, b in zip(forward[image], backward[image])), image
    assert not torch.equal(forward[0][0], forward[1][0])


def test_random_mask_layers_are_the_base_again_after_a_batch(bundle):
    """After ``end_batch`` the masked layers behave as the base model (no stale masks of the last call)."""
    prepared = RandomMask(RandomMaskParams(ratio=0.5), "random-mask").prepare(bundle, MethodContext(Path(".")))
    gens = [image_generator(1)]
    rows = [RowInfo(0, False), RowInfo(0, True)]
    prepared.begin_batch(gens, rows)
    prepared.before_step(StepState(0, 3, torch.tensor(500), torch.zeros(1, 4, 16, 16), rows, gens))
    assert all(layer.module.mask_fn(layer.module) is not None for layer in prepared.masked)
    prepared.end_batch()
    assert all(layer.module.mask_fn(layer.module) is None for layer in prepared.masked)


def test_random_mask_defaults_are_the_documented_negative_control():
    """`method=random-mask` with no overrides is the documented negative control: half the weights zeroed, a fresh
    mask every step, over the decoder attention layers."""
    p = RandomMaskParams()
    assert (p.ratio, p.resample, p.layers) == (0.5, "step", "decoder-attn")


def test_each_layer_gets_its_own_mask(bundle):
    """Every masked layer draws its own Bernoulli mask: two layers of the same shape do not share a zero pattern."""
    prepared = _prepare(bundle, ratio=0.5)
    gens = [image_generator(3)]
    prepared.begin_batch(gens, [])
    mws = _masked_weights(prepared, [0], 0, gens)
    by_shape: dict = {}
    for layer, mw in zip(prepared.masked, mws):
        by_shape.setdefault(tuple(layer.shape), []).append(mw.weight[0] == 0)
    pairs = [zs for zs in by_shape.values() if len(zs) > 1]
    assert pairs, "the tiny model has no two masked layers of one shape"
    for zs in pairs:
        assert not torch.equal(zs[0], zs[1])


def test_per_image_masks_without_classifier_free_guidance(bundle):
    """Without CFG a call holds only the conditional rows; `resample: image` still gives each image one mask that
    stays the same across steps."""
    prepared = _prepare(bundle, ratio=0.5, resample="image")
    gens = [image_generator(11), image_generator(12)]
    rows = [RowInfo(0, True), RowInfo(1, True)]
    prepared.begin_batch(gens, rows)
    weights = []
    for step in (0, 1):
        prepared.before_step(StepState(step, 3, torch.tensor(500), torch.zeros(2, 4, 16, 16), rows, gens))
        mws = [layer.module.mask_fn(layer.module) for layer in prepared.masked]
        assert all(mw.groups.index.tolist() == [0, 1] for mw in mws)
        weights.append([mw.weight.clone() for mw in mws])
    assert all(torch.equal(a, b) for a, b in zip(*weights))
    assert not torch.equal(weights[0][0][0] == 0, weights[0][0][1] == 0)
    prepared.end_batch()


def test_info_counts_every_masked_weight(bundle):
    """`masked_weights` in the info is the number of weights in all the masked layers."""
    prepared = _prepare(bundle)
    assert prepared.info["masked_weights"] == sum(layer.module.weight.numel() for layer in prepared.masked)
    assert prepared.info["masked_layers"] == len(prepared.masked)
