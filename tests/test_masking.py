"""The shared masking machinery: layer sets (on SD 1.5's architecture, built on the meta device) and masked layers."""
from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mubench.methods.masking import (MaskedConv2d, MaskedLinear, MaskedWeights, RowGroups, install_masked_layers,
                                     masked_conv2d, masked_linear, select_layers)


@pytest.fixture(scope="module")
def sd15_meta():
    from diffusers import UNet2DConditionModel

    from mubench.models.sd15 import SD15_UNET_CONFIG

    with torch.device("meta"):
        return UNet2DConditionModel(**SD15_UNET_CONFIG)


@pytest.fixture(scope="module")
def tiny_unet():
    from diffusers import UNet2DConditionModel

    from mubench.models.tiny import tiny_unet_config

    torch.manual_seed(0)
    return UNet2DConditionModel(**tiny_unet_config()).eval().requires_grad_(False)


def test_decoder_attn_is_the_papers_72_layers(sd15_meta):
    layers = select_layers(sd15_meta, "decoder-attn")
    names = [n for n, _ in layers]
    assert len(names) == 72
    assert sum(m.weight.numel() for _, m in layers) == 49_029_120
    pattern = re.compile(r"^up_blocks\.[123]\.attentions\.[012]\.transformer_blocks\.0\.attn[12]\.(to_q|to_k|to_v|to_out\.0)$")
    assert all(pattern.match(n) for n in names), [n for n in names if not pattern.match(n)]
    assert len(set(names)) == 72
    # cross-attention k/v read the 768-d text states; everything else is C x C
    kv = [m for n, m in layers if re.search(r"attn2\.to_[kv]$", n)]
    assert len(kv) == 18 and all(m.in_features == 768 for m in kv)


def test_wider_layer_sets_follow_the_same_exclusions(sd15_meta):
    attn = {n for n, _ in select_layers(sd15_meta, "decoder-attn")}
    conv = select_layers(sd15_meta, "decoder-attn+conv")
    every = select_layers(sd15_meta, "all")
    conv_names = {n for n, _ in conv}
    assert attn < conv_names
    extra = conv_names - attn
    assert extra and all(re.search(r"(resnets\.\d+\.conv[12]|upsamplers\.0\.conv)$", n) for n in extra)
    # 4 decoder blocks x 3 resnets x 2 convs + 3 upsamplers
    assert len(extra) == 27
    every_names = {n for n, _ in every}
    assert conv_names < every_names
    assert any(n.startswith("down_blocks.") for n in every_names) and any(n.startswith("mid_block.") for n in every_names)
    for name in every_names:
        assert not any(s in name for s in ("time_emb_proj", "ff.", "conv_shortcut", "proj_in", "proj_out"))
    assert "conv_in" not in every_names and "conv_out" not in every_names


def test_unknown_layer_set(tiny_unet):
    with pytest.raises(ValueError, match="unknown layer set"):
        select_layers(tiny_unet, "encoder")


def test_clone_shares_parameters_and_leaves_the_original_alone(tiny_unet):
    clone, layers = install_masked_layers(tiny_unet, "decoder-attn+conv")
    orig = dict(tiny_unet.named_parameters())
    for name, p in clone.named_parameters():
        assert p is orig[name]
    assert all(type(m) in (nn.Linear, nn.Conv2d) for n, m in tiny_unet.named_modules()
               if n in {layer.name for layer in layers})
    assert {type(layer.module) for layer in layers} == {MaskedLinear, MaskedConv2d}
    assert set(clone.state_dict()) == set(tiny_unet.state_dict())
    # no mask set: bitwise the base model
    torch.manual_seed(1)
    x, t, ctx = torch.randn(2, 4, 16, 16), torch.tensor([10, 500]), torch.randn(2, 16, 32)
    with torch.no_grad():
        assert torch.equal(clone(x, t, ctx).sample, tiny_unet(x, t, ctx).sample)


def _reference_linear(x, weights, bias, index):
    return torch.stack([F.linear(x[r], weights[index[r]], bias) for r in range(x.shape[0])])


@pytest.mark.parametrize("index", [[0, 1, 2, 3], [0, 1, 0, 1], [1, 0, 1, 0], [0, 0, 1, 2], [0, 0, 0, 0],
                                   [0, 1, 2, 3, 0, 1, 2, 3], [0, 0, 1, 1]])
@pytest.mark.parametrize("with_bias", [True, False])
def test_masked_linear_matches_a_per_row_loop(index, with_bias):
    torch.manual_seed(0)
    lin = nn.Linear(12, 7, bias=with_bias)
    x = torch.randn(len(index), 5, 12)
    count = max(index) + 1
    masks = torch.rand(count, 7, 12) > 0.4
    w = lin.weight * masks
    groups = None if index == list(range(len(index))) else RowGroups(index)
    got = masked_linear(x, MaskedWeights(w[:count], groups), lin.bias)
    want = _reference_linear(x, w, lin.bias, index)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # sampling (no autograd) takes the same layouts' other code path: the same numbers
        assert torch.equal(masked_linear(x, MaskedWeights(w[:count], groups), lin.bias), got)
    if with_bias:  # the bias is added unmasked: an all-zero mask leaves exactly the bias
        zero = masked_linear(x, MaskedWeights(torch.zeros(count, 7, 12), groups), lin.bias)
        torch.testing.assert_close(zero, lin.bias.expand_as(zero))


def test_masked_linear_2d_input_and_layout_errors():
    torch.manual_seed(0)
    w = torch.randn(3, 6, 4)
    x = torch.randn(3, 4)
    got = masked_linear(x, MaskedWeights(w), None)
    torch.testing.assert_close(got, torch.stack([w[i] @ x[i] for i in range(3)]))
    with pytest.raises(RuntimeError, match="rows"):
        masked_linear(torch.randn(2, 4), MaskedWeights(w), None)


@pytest.mark.parametrize("index", [[0, 1, 2], [0, 0, 1], [0, 1, 0, 1], [0, 1, 2, 0, 1, 2]])
def test_masked_conv_matches_a_per_row_loop(index):
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 5, 3, padding=1, stride=2)
    x = torch.randn(len(index), 6, 9, 9)
    count = max(index) + 1
    w = conv.weight * (torch.rand(count, *conv.weight.shape) > 0.5)
    groups = None if index == [0, 1, 2] else RowGroups(index)
    got = masked_conv2d(conv, x, MaskedWeights(w, groups))
    want = torch.cat([F.conv2d(x[r:r + 1], w[index[r]], conv.bias, 2, 1) for r in range(len(index))])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_row_groups_layouts():
    assert RowGroups([0, 1, 2]).identity
    cfg = RowGroups.by_key([4, 9, 4, 9])  # [uncond a, uncond b, cond a, cond b]
    assert cfg.even and not cfg.identity and cfg.count == 2
    assert cfg.index.tolist() == [0, 1, 0, 1]
    assert cfg.tiled  # [uncond rows; cond rows] sharing one mask per image: one GEMM per half, no gathers
    assert RowGroups([0, 0, 1, 1]).even and not RowGroups([0, 0, 1, 1]).tiled
    assert not RowGroups([0, 1, 2]).tiled and not RowGroups([1, 0, 1, 0]).tiled and RowGroups([0, 0]).tiled
    with pytest.raises(ValueError):
        RowGroups([0, 2])


def test_noise_equal_to_the_threshold_drops_the_weight_on_both_paths():
    from mubench.methods.masking import keep_mask, thresholded_product

    logits = torch.tensor([0.0, 0.5, -1.0])
    noise = logits.exp()  # ties: keep only where noise < e^logits, strictly
    assert not keep_mask(logits.clone(), noise).any()
    assert torch.equal(thresholded_product(torch.ones(3), logits.clone(), noise), torch.zeros(3))


def test_mask_noise_seeds_are_pinned_63_bit_draws_of_the_image_stream():
    from mubench.methods.masking import derived_seed

    g = torch.Generator().manual_seed(0)
    seeds = [derived_seed(g) for _ in range(64)]
    assert seeds[0] == 900450186894289456  # golden: a change here changes every masked image
    assert 2**62 <= max(seeds) < 2**63


def test_one_masked_weight_serves_every_row():
    import torch.nn.functional as F

    from mubench.methods.masking import MaskedWeights, masked_linear

    torch.manual_seed(0)
    w, b, x = torch.randn(1, 6, 4), torch.randn(6), torch.randn(3, 5, 4)
    assert torch.equal(masked_linear(x, MaskedWeights(w), b), F.linear(x, w[0], b))  # G == 1: the whole batch
