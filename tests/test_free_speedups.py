"""maskunet-free's fast paths give the plain computation's results on fixed seeds: the one-node straight-through
mask (forward and gradient of the released estimator), the replayed unmasked front of the UNet across inner updates
(bitwise the same), and whole images through the sampler."""
from __future__ import annotations

from conftest import prepare_free


import pytest
import torch

from mubench.methods import maskunet_free
from mubench.methods.maskunet import sample_hard_mask
from mubench.methods.prefix_cache import PrefixCache, unmasked_candidates
from mubench.sampler import SamplerConfig, sample_images

SAMPLER = SamplerConfig(scheduler="dpmsolver++1", steps=3, guidance=3.0, resolution=32)


def _prepared(regs, bundle, **overrides):
    return prepare_free(regs, bundle, early_steps=1, **overrides)


def test_straight_through_node_matches_the_released_estimator():
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(7, 9, generator=gen)
    for tau in (1.0, 0.5):
        logits = (torch.randn(3, 7, 9, generator=gen) * 2).requires_grad_(True)
        noise = torch.empty(3, 7, 9).exponential_(generator=gen)
        upstream = torch.randn(3, 7, 9, generator=gen)
        released = weight * sample_hard_mask(logits, noise, tau, straight_through=True)
        (released * upstream).sum().backward()
        want = logits.grad.clone()
        logits.grad = None
        masked, hard = maskunet_free.StraightThroughMaskedWeight.apply(logits, noise, weight, tau)
        (masked * upstream).sum().backward()
        assert torch.equal(hard, torch.sigmoid((logits.detach() - noise.log()) / tau) > 0.5)
        assert torch.equal(masked.detach(), torch.where(hard, weight, 0.0))
        torch.testing.assert_close(masked.detach(), released.detach(), rtol=0, atol=1e-6)
        torch.testing.assert_close(logits.grad, want, rtol=1e-5, atol=1e-7)
        assert want.abs().max() > 0


def test_unmasked_front_of_a_unet(bundle):
    from mubench.methods.masking import install_masked_layers

    unet, layers = install_masked_layers(bundle.denoiser, "decoder-attn")
    names = [n for n, _ in unmasked_candidates(unet, [layer.module for layer in layers])]
    assert "conv_in" in names and "time_embedding" in names and "mid_block" in names
    assert {n for n in names if n.startswith("down_blocks.")} == {f"down_blocks.{i}" for i in
                                                                   range(len(unet.down_blocks))}
    assert "up_blocks.1" not in names and "up_blocks.1.resnets.0" in names  # inside a masked block: its parts
    # record then replay: same outputs, the encoder not run again
    cache = PrefixCache(unet, [layer.module for layer in layers])
    x, t, ctx = torch.randn(2, 4, 16, 16), torch.tensor([10, 600]), torch.randn(2, 16, 32)
    with torch.no_grad():
        with cache.record():
            a = unet(x, t, ctx).sample
        # kept: what ran before the first masked linear (the encoder, the attention-free up_blocks.0, the first
        # resnet of the masked block); not kept: anything after it
        assert {"conv_in", "mid_block", "down_blocks.0", "up_blocks.0", "up_blocks.1.resnets.0"} <= set(cache.outputs)
        assert not {"up_blocks.1.resnets.1", "conv_out", "conv_norm_out"} & set(cache.outputs)
        runs = []
        hook = unet.down_blocks[0].resnets[0].register_forward_hook(lambda *a: runs.append(1))
        with cache.replay():
            b = unet(x, t, ctx).sample
        hook.remove()
        assert torch.equal(a, b) and runs == []
        assert "forward" not in vars(unet.down_blocks[0])  # the patch is gone afterwards


def test_replaying_the_front_changes_no_image(regs, bundle):
    fast = sample_images(bundle, _prepared(regs, bundle), ["a red circle"], [3], SAMPLER)
    plain = sample_images(bundle, _prepared(regs, bundle, reuse_unmasked=False), ["a red circle"], [3], SAMPLER)
    assert torch.equal(fast, plain)


def test_images_match_the_plain_computation(regs, bundle, monkeypatch):
    """The released formulation (float straight-through mask, W * mask, single-tensor AdamW) on the same noise."""
    prepared = _prepared(regs, bundle)
    fast = sample_images(bundle, prepared, ["two blue squares"], [4], SAMPLER)
    fast_losses = list(prepared.last_losses)

    class Released(torch.autograd.Function):
        @staticmethod
        def apply(logits, noise, weight, tau):
            mask = sample_hard_mask(logits, noise, tau, straight_through=True)
            return weight * mask, mask.detach() > 0.5

    monkeypatch.setattr(maskunet_free, "StraightThroughMaskedWeight", Released)
    original = torch.optim.AdamW.__init__
    monkeypatch.setattr(torch.optim.AdamW, "__init__",
                        lambda self, params, **kw: original(self, params, **{**kw, "foreach": False}))
    plain_prepared = _prepared(regs, bundle, reuse_unmasked=False)
    plain = sample_images(bundle, plain_prepared, ["two blue squares"], [4], SAMPLER)
    assert len(fast_losses) == 3 and fast_losses == pytest.approx(plain_prepared.last_losses, rel=1e-4)
    torch.testing.assert_close(fast, plain, rtol=0, atol=2e-4)


def test_hpsv2_reuses_the_prompts_text_features(tmp_path):
    pytest.importorskip("open_clip")
    import json

    from mubench.scorers.base import ScorerContext
    from mubench.scorers.hpsv2 import HPSv2Params, HPSv2Scorer

    config = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16,
                                              "patch_size": 16},
              "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    path = tmp_path / "tiny-clip.json"
    path.write_text(json.dumps(config))
    scorer = HPSv2Scorer(HPSv2Params(model_config=str(path)),
                         ScorerContext(torch.device("cpu"), torch.float32, "random"), "hpsv2")
    calls = []
    original = scorer.model.encode_text
    scorer.model.encode_text = lambda *a, **k: (calls.append(1), original(*a, **k))[1]
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0), requires_grad=True)
    first = scorer.reward(images, ["a red circle", "two squares"])
    again = scorer.reward(images, ["a red circle", "two squares"])
    other = scorer.reward(images, ["a blue circle", "two squares"])
    assert len(calls) == 2  # encoded once per distinct prompt list
    assert torch.equal(first, again) and not torch.equal(first, other)
    again.sum().backward()  # still differentiable w.r.t. the images
    assert images.grad.abs().sum() > 0


class _Counting(torch.nn.Linear):
    """A linear that counts the times its own forward runs."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.runs = 0

    def forward(self, x):
        self.runs += 1
        return super().forward(x)


class _Front(torch.nn.Module):
    """A toy denoiser: a module used twice, a ModuleDict, a parameter-free activation, then the masked layer."""

    def __init__(self) -> None:
        super().__init__()
        self.shared = _Counting(4, 4)
        self.parts = torch.nn.ModuleDict({"a": _Counting(4, 4), "b": _Counting(4, 4)})
        self.act = torch.nn.SiLU()
        self.masked = torch.nn.Linear(4, 4)
        self.after = _Counting(4, 4)

    def forward(self, x):
        first = self.shared(x)
        twice = self.shared(first)  # a second call on another input: its output differs from the first
        h = self.act(self.parts["a"](x)) + first + twice
        return self.after(self.parts["b"](self.masked(h)))


def test_prefix_cache_replays_only_modules_that_ran_once_before_the_masked_layer():
    """Candidates are the parameter-holding submodules without a masked layer, the children of a ModuleDict taken one
    by one (parameter-free modules are left to run). Recording keeps the outputs of the candidates that ran exactly
    once before the first masked layer (a module called twice is not replayed: one recorded output cannot stand for
    two calls), and leaves no hooks behind; a replay gives the plain output without running the recorded modules;
    after ``clear`` a replay runs everything."""
    torch.manual_seed(0)
    net = _Front()
    names = [n for n, _ in unmasked_candidates(net, [net.masked])]
    assert names == ["shared", "parts.a", "parts.b", "after"]
    cache = PrefixCache(net, [net.masked])
    x = torch.randn(3, 4)
    with torch.no_grad():
        plain = net(x)
        with cache.record():
            recorded = net(x)
        assert torch.equal(recorded, plain)
        assert set(cache.outputs) == {"parts.a"}
        assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())
        runs = {name: m.runs for name, m in net.named_modules() if isinstance(m, _Counting)}
        with cache.replay():
            replayed = net(x)
        assert torch.equal(replayed, plain)
        assert net.parts["a"].runs == runs["parts.a"] and net.shared.runs == runs["shared"] + 2
        cache.clear()
        assert cache.outputs == {}
        with cache.replay():
            assert torch.equal(net(x), plain)
        assert net.parts["a"].runs == runs["parts.a"] + 1
