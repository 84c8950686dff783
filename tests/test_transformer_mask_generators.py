"""MaskUNet on transformer denoisers (:mod:`mubench.methods.transformer_masks`), what the other tests leave open: the
generator of a block reads the mean of *all* the tokens entering it (of the latest call) plus FC_t of the block's
conditioning, and gradients reach it through those tokens; the method's options reach the generators and adapters;
non-transformers, non-linear layers and blocks without a conditioning are refused; ``train()`` leaves the frozen
transformer in eval mode; the generator names (the artifact's keys) follow the block paths."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from mubench.errors import UsageError
from mubench.methods.hook_args import call_arguments, positional_names
from mubench.methods.masking import install_masked_layers
from mubench.methods.maskunet import MaskUNetParams
from mubench.methods.transformer_masks import TransformerMaskUNet, conditioning_source
from transformer_cases import method_from_spec, perturb, untrained_ctx


def _kwargs(bundle, labels):
    """The conditioning keyword arguments of one denoiser call (DiT: class labels; PixArt: encoded prompts)."""
    if bundle.conditioning_kind == "class":
        return {"class_labels": torch.tensor(labels)}
    cond = bundle.conditioner.encode([str(v) for v in labels])
    return {"encoder_hidden_states": cond.hidden_states, "encoder_attention_mask": cond.attention_mask,
            "added_cond_kwargs": {"resolution": None, "aspect_ratio": None}}


def _build(regs, bundle, tmp_path, **overrides):
    return method_from_spec(regs, "maskunet", **overrides).build(bundle, untrained_ctx(tmp_path))


def _silent_perturbation(model, seed=0):
    """Perturb the adapters only (so their logits read the grid) and leave the generators as built."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.adapters.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.5)


@pytest.mark.parametrize("which", ["dit", "pixart"])
def test_generator_reads_the_mean_of_all_tokens_and_the_blocks_conditioning_of_the_latest_call(
        which, regs, dit, pixart, tmp_path):
    """Per masked block: logits = adapter(generator(mean over the sequence of the tokens entering the block,
    conditioning)), the conditioning being DiT's norm1.emb (timestep + class) or PixArt's adaLN-single embedded
    timestep; after a second call the masks come from the second call's features (no stale grid)."""
    bundle = {"dit": dit, "pixart": pixart}[which]
    prepared = _build(regs, bundle, tmp_path)
    perturb(prepared)
    model = prepared.model
    model.deterministic = True
    unet = model.unet
    seen, handles = {}, []
    for key in dict.fromkeys(layer.block for layer in model.masked):
        block = unet.get_submodule(key)
        names = positional_names(block.forward)

        def pre(module, args, kwargs, key=key, names=names):
            seen[("h", key)] = call_arguments(names, args, kwargs)["hidden_states"].detach().clone()

        handles.append(block.register_forward_pre_hook(pre, with_kwargs=True))
        if which == "dit":
            handles.append(block.norm1.emb.register_forward_hook(
                lambda m, a, out, key=key: seen.__setitem__(("c", key), out.detach().clone())))
    if which == "pixart":
        handles.append(unet.adaln_single.register_forward_hook(
            lambda m, a, out: seen.__setitem__("c", out[1].detach().clone())))
    g = torch.Generator().manual_seed(0)
    try:
        with torch.no_grad():
            model(torch.randn(2, 4, 8, 8, generator=g), timestep=torch.tensor([900, 20]), **_kwargs(bundle, [5, 6]))
            model(torch.randn(2, 4, 8, 8, generator=g), timestep=torch.tensor([10, 500]), **_kwargs(bundle, [1, 2]))
            checked = 0
            for i, layer in enumerate(model.masked):
                h = seen[("h", layer.block)]
                c = seen[("c", layer.block)] if which == "dit" else seen["c"]
                assert h.ndim == 3 and h.shape[1] > 1  # [B, tokens, D]: more than one token to pool
                gen = model.generators[layer.block.replace(".", "-")]
                want = model.adapters[i](gen(h.mean(dim=1)[:, :, None, None], c))
                torch.testing.assert_close(model.layer_logits(i), want)
                checked += 1
            assert checked == len(model.masked)
    finally:
        for handle in handles:
            handle.remove()
    assert ("class_emb" in prepared.info["generator_conditioning"]) == (which == "dit")


def test_generator_gradients_flow_through_the_pooled_tokens(regs, dit, tmp_path):
    """Training end to end: a loss on the masks of the last masked block reaches the earlier block's adapters
    through the tokens that block's masked attention produced (the generator input is not detached)."""
    prepared = _build(regs, dit, tmp_path)
    perturb(prepared)
    model = prepared.model
    model.train()
    first, last = model.masked[0].block, model.masked[-1].block
    assert first != last
    torch.manual_seed(0)  # training: the Gumbel noise comes from the global RNG
    model(torch.randn(2, 4, 8, 8), timestep=torch.tensor([10, 500]), class_labels=torch.tensor([1, 2]))
    i_last = len(model.masked) - 1
    model.layer_logits(i_last).sum().backward()
    earlier = [a for a, layer in zip(model.adapters, model.masked) if layer.block == first]
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for a in earlier for p in a.parameters())


@pytest.mark.parametrize("overrides", [{"mode": "faithful"}, {"init_std": 0.0}], ids=["faithful", "init_std0"])
def test_mode_and_init_std_reach_the_transformer_generators(overrides, regs, dit, tmp_path):
    """A faithful generator (zero last conv + ReLU), like a conditional one started with init_std=0, outputs exactly
    0: the logits are the same for every timestep, class and input; a conditional one with init_std > 0 is not."""
    def rows_equal(model):
        x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            model(x, timestep=torch.tensor([10, 900]), class_labels=torch.tensor([1, 7]))
            logits = model.layer_logits(len(model.masked) - 1)
        return torch.equal(logits[0], logits[1])

    silent = _build(regs, dit, tmp_path, **overrides).model
    _silent_perturbation(silent)
    assert rows_equal(silent)
    live = _build(regs, dit, tmp_path, init_std=0.1).model
    _silent_perturbation(live)
    assert not rows_equal(live)


def test_adapter_bias_is_every_initial_logit(regs, pixart, tmp_path):
    """Adapters start with zero weights and bias ``adapter_bias``: every weight's initial logit is that bias."""
    model = _build(regs, pixart, tmp_path, adapter_bias=2.5).model
    cond = pixart.conditioner.encode(["a", "b"])
    with torch.no_grad():
        model(torch.randn(2, 4, 8, 8), timestep=torch.tensor([10, 500]), encoder_hidden_states=cond.hidden_states,
              encoder_attention_mask=cond.attention_mask, added_cond_kwargs={"resolution": None, "aspect_ratio": None})
        for i in range(len(model.masked)):
            assert torch.equal(model.layer_logits(i), torch.full_like(model.layer_logits(i), 2.5))


def test_feed_forward_layers_get_logits_of_their_own_shape(regs, dit, tmp_path):
    """decoder-attn+ff masks non-square linears (ff.net.0.proj, ff.net.2): every adapter yields [B, out, in] of its
    layer, and the masked model runs."""
    prepared = _build(regs, dit, tmp_path, layers="decoder-attn+ff")
    model = prepared.model
    assert any(layer.shape[0] != layer.shape[1] for layer in model.masked)
    with torch.no_grad():
        out = model(torch.randn(2, 4, 8, 8), timestep=torch.tensor([10, 500]), class_labels=torch.tensor([1, 2]))
        for i, layer in enumerate(model.masked):
            assert tuple(model.layer_logits(i).shape) == (2, *layer.shape)
    assert torch.isfinite(out.sample).all()


class _Block(nn.Module):
    def __init__(self, emb: bool) -> None:
        super().__init__()
        self.norm1 = nn.Module()
        self.norm1.emb = nn.Linear(2, 2) if emb else None


class _Stack(nn.Module):
    def __init__(self, *embs: bool) -> None:
        super().__init__()
        self.transformer_blocks = nn.ModuleList(_Block(e) for e in embs)


def test_conditioning_source_needs_every_blocks_conditioning(dit, pixart):
    """DiT → class-emb, PixArt → adaln-single; a stack where some or all blocks lack norm1.emb (and no adaLN-single)
    is refused by name rather than masked with a generator that cannot find its conditioning."""
    assert conditioning_source(dit.denoiser) == "class-emb"
    assert conditioning_source(pixart.denoiser) == "adaln-single"
    assert conditioning_source(_Stack(True, True)) == "class-emb"
    for stack in (_Stack(True, False), _Stack(False, False)):
        with pytest.raises(UsageError, match="cannot find the timestep conditioning"):
            conditioning_source(stack)


def test_transformer_mask_model_refuses_a_non_transformer_and_non_linear_layers(dit):
    """The transformer mask model is refused (UsageError, by name) on a denoiser that is not a transformer and for a
    layer that is not a linear (its generators and adapters only know linears)."""
    with pytest.raises(UsageError, match="not a transformer"):
        TransformerMaskUNet(nn.Linear(2, 2), [], MaskUNetParams())
    unet, layers = install_masked_layers(dit.denoiser, "decoder-attn")
    layers[0] = replace(layers[0], kind="conv")
    with pytest.raises(UsageError, match="linears only"):
        TransformerMaskUNet(unet, layers, MaskUNetParams())


def test_train_keeps_the_transformer_in_eval_mode(regs, dit, tmp_path):
    """train() switches the generators and adapters only: the frozen DiT stays in eval mode, so a label dropout of
    its own (here forced to 1 on the clone) never fires; eval() switches the trainable parts back."""
    model = _build(regs, dit, tmp_path).model
    for m in model.unet.modules():
        if hasattr(m, "dropout_prob"):
            m.dropout_prob = 1.0  # in training mode every class label would be dropped
    model.train()
    assert model.training and model.generators.training and model.adapters.training
    assert not any(m.training for m in model.unet.modules())
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = model(x, timestep=torch.tensor([10]), class_labels=torch.tensor([1])).sample
        b = model(x, timestep=torch.tensor([10]), class_labels=torch.tensor([2])).sample
    assert not torch.equal(a, b)  # the class still reaches the model
    model.eval()
    assert not model.training and not model.generators.training and not model.adapters.training


def test_generator_names_follow_the_block_paths(regs, dit, tmp_path):
    """The artifact's keys: one generator per masked block, named by its module path with '.' → '-'
    (``generators.transformer_blocks-<i>.…``), so saved transformer masks load again; the method info records the
    stack's block count and the masked (decoder) block range."""
    prepared = _build(regs, dit, tmp_path)
    model = prepared.model
    blocks = list(dict.fromkeys(layer.block for layer in model.masked))
    assert blocks and sorted(model.generators) == sorted(b.replace(".", "-") for b in blocks)
    assert all(b.startswith("transformer_blocks.") for b in blocks)
    keys = model.trainable_state_dict()
    assert {k.split(".")[1] for k in keys if k.startswith("generators.")} == set(model.generators)
    index = [int(b.split(".")[1]) for b in blocks]
    assert prepared.info["blocks"] == len(dit.denoiser.transformer_blocks)
    assert prepared.info["decoder_blocks"] == f"{min(index)}-{max(index)}"
