"""MaskUNet's learned parts on their own: the block generator, the factorised adapter, the hard-mask sampler and its
keep probability (method.md §3.1-3.2), without the UNet wiring (test_maskunet.py)."""
from __future__ import annotations

import math

import pytest
import torch

from mubench.errors import UsageError
from mubench.methods.mask_generator import FactorisedAdapter, MaskGenerator, keep_probability, sample_hard_mask


def test_sampler_keep_probability_is_one_minus_exp_minus_exp_logit():
    gen = torch.Generator().manual_seed(0)
    values = torch.tensor([-3.0, -1.5, -0.5, 0.0, 0.5, 1.0, 2.0])
    n = 200_000
    logits = values[:, None].expand(-1, n)
    noise = torch.empty(logits.shape).exponential_(generator=gen)
    fast = sample_hard_mask(logits, noise, straight_through=False)
    assert fast.dtype == torch.bool
    freq = fast.float().mean(1)
    p = keep_probability(values)
    sigma = torch.sqrt(p * (1 - p) / n)
    assert torch.all((freq - p).abs() < 5 * sigma), (freq, p)
    # not the logistic (two-Gumbel) sampler: at logit 0 that would keep half the weights
    assert abs(freq[3].item() - (1 - math.exp(-1))) < 0.005 and abs(freq[3].item() - 0.5) > 0.1
    # the released formulation on the same noise: hard = 1[sigmoid((l - log E)/tau) > 0.5], straight-through
    released = (torch.sigmoid(logits - torch.log(noise)) > 0.5)
    assert (released == fast).float().mean().item() > 0.99999
    st_logits = logits.clone().requires_grad_(True)
    st = sample_hard_mask(st_logits, noise, straight_through=True)
    assert torch.equal(st.detach() > 0.5, released)
    st.sum().backward()
    assert st_logits.grad is not None and st_logits.grad.abs().sum() > 0


def test_paper_initial_logits():
    # logit 5 (training init): P(zero) ~ 3.5e-65; logit 1 (training-free init): P(zero) = e^-e ~ 6.60%
    assert 1 - keep_probability(torch.tensor(5.0, dtype=torch.float64)).item() < 1e-60
    assert abs(1 - keep_probability(torch.tensor(1.0)).item() - 0.0660) < 1e-4


def test_conditional_generator_grid_depends_on_both_the_timestep_and_the_sample():
    """The conditional generator's grid depends on the timestep embedding and on the sample
    (test_conditional_generator_learns checks that weights move, not what they condition on)."""
    torch.manual_seed(0)
    gen = MaskGenerator(in_ch=8, out_ch=8, temb_dim=6, hidden=16, factor=4, mode="conditional", init_std=0.1)
    pooled, temb = torch.randn(1, 8, 1, 1), torch.randn(1, 6)
    with torch.no_grad():
        base = gen(pooled, temb)
        assert base.shape == (1, 2, 2)
        assert not torch.allclose(base, gen(pooled, temb + 1.0))  # another timestep embedding
        assert not torch.allclose(base, gen(pooled + 1.0, temb))  # another sample


def test_conditional_generator_has_no_final_relu_and_faithful_has_one():
    """Only the faithful generator ends in a ReLU: the conditional one's grid takes both signs, so its logits can
    move either way from the bias."""
    torch.manual_seed(0)
    cond = MaskGenerator(8, 8, 6, 16, 4, mode="conditional", init_std=0.5)
    faithful = MaskGenerator(8, 8, 6, 16, 4, mode="faithful", init_std=0.5)
    assert not cond.final_relu and faithful.final_relu
    with torch.no_grad():
        grid = cond(torch.randn(16, 8, 1, 1), torch.randn(16, 6))
    assert (grid < 0).any() and (grid > 0).any()


def test_tau_shapes_the_straight_through_gradient():
    """tau changes the straight-through gradient, not the forward mask."""
    noise = torch.tensor([0.5, 1.0, 2.0])

    def grad(tau):
        logits = torch.tensor([0.1, -0.2, 0.3], requires_grad=True)
        mask = sample_hard_mask(logits, noise, tau, straight_through=True)
        mask.sum().backward()
        return mask.detach(), logits.grad

    (m1, g1), (m2, g2) = grad(1.0), grad(4.0)
    assert torch.equal(m1, m2)
    assert not torch.allclose(g1, g2)


def test_generator_refuses_channels_not_divisible_by_the_factor():
    """Both block channel counts must divide by the grid factor (grid = out/factor × in/factor)."""
    for in_ch, out_ch in ((6, 8), (8, 6)):
        with pytest.raises(UsageError, match="not divisible"):
            MaskGenerator(in_ch, out_ch, 6, 16, 4, mode="conditional", init_std=0.1)
    MaskGenerator(8, 12, 6, 16, 4, mode="conditional", init_std=0.1)  # both divisible: fine


def test_kernel_sized_grids_are_computed_per_position():
    """For conv layers the generator and the adapter run on a k×k pooled map: both are 1×1 convs, so every
    kernel position (i, j) of the result is what the 1×1 case gives for that position's features alone."""
    torch.manual_seed(0)
    gen = MaskGenerator(8, 12, 6, 16, 4, mode="conditional", init_std=0.5)
    adapter = FactorisedAdapter(gen.go, gen.gi, 5, 7, bias=0.0)
    with torch.no_grad():
        for lin in (adapter.rows, adapter.cols):
            lin.weight.normal_()
            lin.bias.normal_()
        pooled, temb = torch.randn(2, 8, 3, 3), torch.randn(2, 6)
        grid = gen(pooled, temb)
        logits = adapter(grid)
        assert grid.shape == (2, 3, 2, 3, 3) and logits.shape == (2, 5, 7, 3, 3)
        for i in range(3):
            for j in range(2):  # (0, 1) and (1, 0) differ: the spatial axes are not swapped
                one = gen(pooled[:, :, i:i + 1, j:j + 1], temb)
                assert torch.allclose(grid[..., i, j], one, atol=1e-6)
                assert torch.allclose(logits[..., i, j], adapter(one), atol=1e-5)


def test_straight_through_gradient_is_the_tempered_sigmoids():
    """The straight-through mask's gradient is that of s = σ((ℓ + g)/τ), g = −log E: σ'((ℓ + g)/τ) / τ."""
    noise = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    for tau in (1.0, 4.0):
        logits = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64, requires_grad=True)
        sample_hard_mask(logits, noise, tau, straight_through=True).sum().backward()
        s = torch.sigmoid((logits.detach() - torch.log(noise)) / tau)
        assert torch.allclose(logits.grad, s * (1 - s) / tau)


def test_straight_through_default_follows_gradient_recording():
    """By default the straight-through float mask is used only while gradients are recorded for the logits;
    otherwise (no_grad, or logits without requires_grad) the bool event comes back."""
    noise = torch.tensor([0.5, 1.0, 2.0])
    logits = torch.tensor([0.1, -0.2, 0.3], requires_grad=True)
    assert sample_hard_mask(logits, noise).dtype == torch.float32
    assert sample_hard_mask(logits.detach(), noise).dtype == torch.bool
    with torch.no_grad():
        assert sample_hard_mask(logits, noise).dtype == torch.bool


def test_generator_has_a_hidden_nonlinearity():
    """The two 1×1 convs have a ReLU between them: the conditional grid is not an affine function of the pooled
    features (an affine map h gives h(a) + h(b) − h(0) = h(a + b))."""
    torch.manual_seed(0)
    gen = MaskGenerator(8, 8, 6, 16, 4, mode="conditional", init_std=0.5)
    a, b, temb = torch.randn(4, 8, 1, 1), torch.randn(4, 8, 1, 1), torch.randn(4, 6)
    with torch.no_grad():
        affine_guess = gen(a, temb) + gen(b, temb) - gen(torch.zeros_like(a), temb)
        assert not torch.allclose(affine_guess, gen(a + b, temb), atol=1e-4)


def test_conditional_generator_starts_from_init_std():
    """The conditional generator's output conv starts from N(0, init_std²) weights and zero biases (the faithful one
    from zeros), so ``init_std`` sets how far the first masks are from the adapters' bias alone."""
    torch.manual_seed(0)
    for std in (0.02, 0.5):
        gen = MaskGenerator(64, 64, 6, 64, 4, mode="conditional", init_std=std)
        assert abs(gen.conv2.weight.std().item() - std) < 0.05 * std  # 16,384 draws
        assert not gen.conv2.bias.any()
    assert not MaskGenerator(64, 64, 6, 64, 4, mode="faithful", init_std=0.5).conv2.weight.any()


def test_generator_starts_as_the_released_code():
    """method.md §3.1: ``FC_t`` has no bias; the first 1×1 conv starts from Kaiming-normal weights for its fan-in
    (std √(2 / in_ch) for a 1×1 kernel) and zero biases."""
    torch.manual_seed(0)
    gen = MaskGenerator(64, 64, 6, 256, 4, mode="faithful", init_std=0.5)
    assert gen.fc_t.bias is None
    assert not gen.conv1.bias.any()
    expected = math.sqrt(2 / 64)  # fan-out (256 hidden channels) would give half of it
    assert abs(gen.conv1.weight.std().item() - expected) < 0.05 * expected  # 16,384 draws
    assert abs(gen.conv1.weight.mean().item()) < 0.05 * expected


def test_adapter_starts_with_zero_weights_and_the_bias_on_both_convs():
    """method.md §3.2: both 1×1 convs start from weights 0 and the bias (5 in training), so every logit starts at the
    bias whatever the grid, and the rows conv's bias is what the cols conv's weights see once they move."""
    adapter = FactorisedAdapter(3, 4, 5, 7, bias=5.0)
    for lin in (adapter.rows, adapter.cols):
        assert not lin.weight.any()
        assert torch.equal(lin.bias, torch.full_like(lin.bias, 5.0))
    with torch.no_grad():
        assert torch.equal(adapter(torch.randn(2, 3, 4)), torch.full((2, 5, 7), 5.0))
        adapter.cols.weight.fill_(1.0)  # each logit: the sum of its row's 4 grid-conv outputs (5 each) + 5
        assert torch.equal(adapter(torch.zeros(1, 3, 4)), torch.full((1, 5, 7), 25.0))


def test_a_tie_drops_the_weight_in_both_modes():
    """The hard value is 1[s > 0.5] = 1[ℓ + g > 0], strict (method.md §3.2): where the noise makes ℓ + g exactly 0
    (ℓ = 0, E = 1) the weight is dropped, by the bool event and by the straight-through mask alike."""
    logits, noise = torch.tensor([0.0, 0.0, 0.0]), torch.tensor([1.0, 0.5, 2.0])
    assert sample_hard_mask(logits, noise, straight_through=False).tolist() == [False, True, False]
    st = sample_hard_mask(logits.clone().requires_grad_(True), noise, straight_through=True)
    assert st.detach().tolist() == [0.0, 1.0, 0.0]
