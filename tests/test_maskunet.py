"""MaskUNet: the sampler's distribution, faithful vs conditional generators, parameter counts, artifacts."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from mubench.errors import UsageError
from mubench.methods.base import MethodContext
from mubench.methods.hook_args import call_arguments, positional_names
from mubench.methods.maskunet import MaskUNetParams
from mubench.methods.maskunet_method import MaskUNetMethod
from mubench.models.base import ModelBundle


def _ctx(tmp_path: Path, train: str = "never") -> MethodContext:
    return MethodContext(artifacts_dir=tmp_path, train=train, model_name="tiny-sd")


def _build(bundle, tmp_path, **kw):
    method = MaskUNetMethod(MaskUNetParams(**kw), "maskunet")
    return method, method.build(bundle, _ctx(tmp_path))


def test_layer_masks_follow_the_logits_in_the_model(bundle, tmp_path):
    _, prepared = _build(bundle, tmp_path)
    model = prepared.model
    with torch.no_grad():
        for adapter in model.adapters:
            adapter.cols.bias.zero_()  # every logit 0 -> P(keep) = 1 - 1/e
    x, t, ctx = torch.randn(2, 4, 16, 16), torch.tensor([3, 700]), torch.randn(2, 16, 32)
    seen = []
    model.on_mask = lambda i, m: seen.append(m)
    model.row_generators = [torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)]
    with torch.no_grad():
        model(x, t, ctx)
    assert len(seen) == len(model.masked)
    freq = torch.cat([m.float().flatten() for m in seen]).mean().item()
    n = sum(m.numel() for m in seen)
    assert abs(freq - (1 - math.exp(-1))) < 5 * math.sqrt(0.25 / n)


def _train(prepared, steps: int, seed: int = 0):
    """A few AdamW steps of an MSE objective through the masked UNet (global RNG noise, like the trainer)."""
    model = prepared.model
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(seed)
    grads = []
    for _ in range(steps):
        x = torch.randn(4, 4, 16, 16, generator=gen)
        t = torch.randint(0, 1000, (4,), generator=gen)
        ctx = torch.randn(4, 16, 32, generator=gen)
        target = torch.randn(4, 4, 16, 16, generator=gen)
        loss = torch.nn.functional.mse_loss(model(x, t, ctx).sample, target)
        opt.zero_grad()
        loss.backward()
        grads.append({n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p))
                      for n, p in model.generators.named_parameters()})
        opt.step()
    return grads


def _logits_after(model, x, t, ctx) -> list[torch.Tensor]:
    with torch.no_grad():
        model(x, t, ctx)
        return [model.layer_logits(i) for i in range(len(model.masked))]


def _probe(model):
    gen = torch.Generator().manual_seed(123)
    x = torch.randn(1, 4, 16, 16, generator=gen).expand(2, -1, -1, -1).contiguous()
    ctx = torch.randn(1, 16, 32, generator=gen).expand(2, -1, -1).contiguous()
    across_t = _logits_after(model, x, torch.tensor([50, 900]), ctx)
    samples = torch.randn(2, 4, 16, 16, generator=gen)
    across_samples = _logits_after(model, samples, torch.tensor([400, 400]), ctx)
    return across_t, across_samples


def test_faithful_generator_never_learns(bundle, tmp_path):
    _, prepared = _build(bundle, tmp_path, mode="faithful")
    before = {k: v.clone() for k, v in prepared.model.generators.state_dict().items()}
    grads = _train(prepared, steps=4)
    for step in grads:
        for name, g in step.items():
            assert torch.count_nonzero(g) == 0, f"{name} got a gradient"
    after = prepared.model.generators.state_dict()
    # AdamW's weight decay shrinks conv1 / FC_t, but the zero-initialised last conv stays exactly zero
    last = [k for k in before if ".conv2." in k]
    assert last and all(torch.equal(before[k], after[k]) and torch.count_nonzero(after[k]) == 0 for k in last)
    # ...while the adapters did learn something (so the check above is not vacuous)
    assert any(float(a.cols.weight.detach().abs().sum()) > 0 for a in prepared.model.adapters)
    across_t, across_samples = _probe(prepared.model)
    for logits in across_t + across_samples:
        assert torch.equal(logits[0], logits[1])


def test_conditional_generator_learns(bundle, tmp_path):
    _, prepared = _build(bundle, tmp_path, mode="conditional")
    model = prepared.model
    # untrained: every logit is 5 (masks all ones)
    across_t, _ = _probe(model)
    assert all(torch.all(logits == 5.0) for logits in across_t)
    grads = _train(prepared, steps=8)
    assert any(torch.count_nonzero(g) > 0 for step in grads[1:] for g in step.values())
    across_t, across_samples = _probe(model)
    for logits in across_t + across_samples:  # every layer's logits depend on the timestep and on the sample
        diff = (logits[0] - logits[1]).abs().max().item()
        assert diff > 1e-3, diff


def test_gradient_checkpointing_gives_the_same_gradients(bundle, tmp_path):
    def grads(checkpointing: bool):
        _, prepared = _build(bundle, tmp_path)
        model = prepared.model
        torch.manual_seed(1)
        with torch.no_grad():
            for adapter in model.adapters:  # logits near 0 so masks and their gradients are non-trivial
                adapter.cols.bias.fill_(0.5)
                adapter.rows.weight.normal_(0, 0.1)
                adapter.cols.weight.normal_(0, 0.1)
        if checkpointing:
            model.enable_gradient_checkpointing()
        model.train()
        torch.manual_seed(0)
        x, t, ctx = torch.randn(2, 4, 16, 16), torch.tensor([5, 600]), torch.randn(2, 16, 32)
        model(x, t, ctx).sample.square().mean().backward()
        return [p.grad for p in model.trainable_parameters()]

    plain, checkpointed = grads(False), grads(True)
    assert any(g.abs().max() > 0 for g in plain)
    assert all(torch.equal(a, b) for a, b in zip(plain, checkpointed))


def test_deterministic_masks_are_the_logit_sign(bundle, tmp_path):
    _, prepared = _build(bundle, tmp_path, deterministic=True)
    model = prepared.model
    with torch.no_grad():
        for adapter in model.adapters:
            adapter.cols.bias.normal_(0, 1)
    seen = []
    model.on_mask = lambda i, m: seen.append((i, m))
    x, t, ctx = torch.randn(2, 4, 16, 16), torch.tensor([3, 700]), torch.randn(2, 16, 32)
    with torch.no_grad():
        model(x, t, ctx)
        for i, mask in seen:
            assert torch.equal(mask, model.layer_logits(i) > 0)
    assert 0.2 < torch.cat([m.float().flatten() for _, m in seen]).mean().item() < 0.8


def _expected_params(unet, layers, factor=4, hidden=64) -> int:
    total = 0
    blocks = sorted({layer.block for layer in layers})
    for key in blocks:
        block = unet.get_submodule(key)
        conv1 = block.resnets[0].conv1
        cin, cout, temb = conv1.in_channels, conv1.out_channels, block.resnets[0].time_emb_proj.in_features
        go, gi = cout // factor, cin // factor
        total += temb * cin + (cin * hidden + hidden) + (hidden * go * gi + go * gi)
        for layer in layers:
            if layer.block == key:
                out_f, in_f = layer.shape[:2]
                total += (go + 1) * out_f + (gi + 1) * in_f
    return total


def test_parameter_counts_tiny(bundle, tmp_path):
    for mode in ("conditional", "faithful"):
        _, prepared = _build(bundle, tmp_path, mode=mode)
        expected = _expected_params(prepared.model.unet, prepared.model.masked)
        assert prepared.added_params == prepared.trainable_params == expected
        assert sum(p.numel() for p in prepared.trainable_parameters()) == expected
        assert prepared.info["masked_layers"] == 16


def test_sd15_counts_and_the_papers_conv_increment(tmp_path):
    from diffusers import UNet2DConditionModel

    from mubench.models.sd15 import SD15_UNET_CONFIG

    with torch.device("meta"):
        unet = UNet2DConditionModel(**SD15_UNET_CONFIG)
    bundle = ModelBundle("sd15", unet, None, None, {}, 512, "meta")
    _, attn = _build(bundle, tmp_path)
    assert attn.info["masked_layers"] == 72 and attn.info["masked_weights"] == 49_029_120
    # method.md §3.6: 84,551,040 with the released code's unused up_blocks.0 generator (16,752,704), 67,798,336 without
    assert attn.added_params == 67_798_336 == 84_551_040 - 16_752_704
    _, conv = _build(bundle, tmp_path, layers="decoder-attn+conv")
    block0_generator = 16_752_704
    # the paper's conv increment (81.69M - 55.06M) is exactly the factor-4 conv adapters
    assert conv.added_params - attn.added_params - block0_generator == 26_632_000


def test_missing_artifact_is_a_clear_usage_error(bundle, tmp_path):
    method = MaskUNetMethod(MaskUNetParams(), "maskunet")
    with pytest.raises(UsageError, match=r"(?s)no trained artifact for maskunet.*mubench train method=maskunet"):
        method.prepare(bundle, _ctx(tmp_path, "never"))
    # train=auto trains on demand, which needs data (none in the default recipe): the message says how to give it
    with pytest.raises(UsageError, match=r"(?s)needs training data.*method.train.data"):
        method.prepare(bundle, _ctx(tmp_path, "auto"))


def test_artifact_round_trip_and_key(bundle, tmp_path):
    method, prepared = _build(bundle, tmp_path)
    with torch.no_grad():
        for p in prepared.trainable_parameters():
            p.normal_()
    digest = method.save(prepared, bundle, _ctx(tmp_path))
    loaded = method.prepare(bundle, _ctx(tmp_path))
    assert loaded.artifact == digest
    a, b = prepared.artifact_state(), loaded.artifact_state()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # inference-only options share the artifact; training-relevant ones do not
    det = MaskUNetMethod(MaskUNetParams(deterministic=True), "maskunet")
    assert det.artifact_location(bundle, _ctx(tmp_path))[0] == method.artifact_location(bundle, _ctx(tmp_path))[0]
    faithful = MaskUNetMethod(MaskUNetParams(mode="faithful"), "maskunet")
    with pytest.raises(UsageError, match="no trained artifact"):
        faithful.prepare(bundle, _ctx(tmp_path))


def test_each_block_generator_sees_the_rows_own_timestep_embedding():
    """Each block's generator gets each row's own time embedding (a zeroed one would pass
    test_conditional_generator_learns: a new timestep also changes the pooled block features)."""
    import torch

    from mubench.methods.base import MethodContext
    from mubench.methods.maskunet import MaskUNetParams
    from mubench.methods.maskunet_method import MaskUNetMethod
    from mubench.models.base import LoadContext
    from mubench.models.tiny import TinySD, TinySDParams

    bundle = TinySD.load(TinySDParams(), LoadContext(torch.device("cpu"), torch.float32))
    model = MaskUNetMethod(MaskUNetParams(), "maskunet").build(
        bundle, MethodContext(artifacts_dir=".", train="never", model_name="tiny-sd")).model
    seen = []
    for gen in model.generators.values():
        gen.register_forward_pre_hook(lambda module, args: seen.append(args[1].detach().clone()))
    x = torch.randn(1, 4, 16, 16).expand(2, -1, -1, -1).contiguous()
    ctx = torch.randn(1, 16, 32).expand(2, -1, -1).contiguous()
    with torch.no_grad():
        model(x, torch.tensor([50, 900]), ctx)
    assert seen
    for temb in seen:  # [rows, temb_dim]: the two rows' timesteps differ, so must their embeddings
        assert temb.abs().sum() > 0 and not torch.allclose(temb[0], temb[1])


def test_inference_only_options_stay_out_of_the_training_spec():
    """Inference-only options stay out of the training spec: a mask_scope=image run shares the row-scope artifact
    instead of looking for, or training, its own."""
    from mubench.methods.maskunet import MaskUNetParams

    base = MaskUNetParams().training_spec()
    for kw in ({"mask_scope": "image"}, {"noise": "counter"}, {"deterministic": True},
               {"noise": "counter", "kernel": "triton"}):
        assert MaskUNetParams(**kw).training_spec() == base, kw


def test_tau_is_part_of_the_maskunet_artifact_key(bundle, tmp_path):
    """The temperature shapes the training gradient, so a different tau is another trained artifact."""
    base = MaskUNetMethod(MaskUNetParams(), "maskunet")
    other = MaskUNetMethod(MaskUNetParams(tau=4.0), "maskunet")
    assert other.params.training_spec()["tau"] == 4.0
    assert (base.artifact_location(bundle, _ctx(tmp_path))[0]
            != other.artifact_location(bundle, _ctx(tmp_path))[0])


def test_the_models_tau_shapes_its_training_gradient(bundle, tmp_path):
    """In training (gradients on), the masked UNet's straight-through masks use the method's tau: the same Gumbel
    draws give the same output but other adapter gradients."""
    x = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    ctx = torch.randn(2, 16, 32, generator=torch.Generator().manual_seed(1))
    results = []
    for tau in (1.0, 4.0):
        model = MaskUNetMethod(MaskUNetParams(tau=tau, adapter_bias=0.5), "maskunet").build(
            bundle, _ctx(tmp_path)).model
        torch.manual_seed(3)
        out = model(x, torch.tensor([100, 700]), ctx).sample
        out.square().sum().backward()
        grads = torch.cat([p.grad.flatten() for p in model.adapters.parameters() if p.grad is not None])
        results.append((out.detach(), grads))
    (o1, g1), (o2, g2) = results
    assert torch.equal(o1, o2)
    assert g1.abs().sum() > 0 and not torch.allclose(g1, g2)


def test_up_block_generators_read_the_skip_the_first_resnet_consumes(bundle, tmp_path):
    """An up block's generator pools its input features concatenated with the last skip connection of the tuple
    (the one its first resnet concatenates), not another skip."""
    model = MaskUNetMethod(MaskUNetParams(), "maskunet").build(bundle, _ctx(tmp_path)).model
    up_keys = [k for k in model.blocks if k.startswith("up_blocks")]
    assert up_keys
    captured: dict[str, tuple] = {}
    fed: dict[str, torch.Tensor] = {}
    for key in up_keys:
        block = model.unet.get_submodule(key)
        block.register_forward_pre_hook(
            lambda m, a, kw, key=key: captured.__setitem__(key, (a, kw)), with_kwargs=True)
        model.generators[key.replace(".", "-")].register_forward_pre_hook(
            lambda m, a, key=key: fed.__setitem__(key, a[0].detach().clone()))
    x = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    ctx = torch.randn(1, 16, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        model(x, torch.tensor([300]), ctx)
    for key in up_keys:
        args, kwargs = captured[key]
        bound = call_arguments(positional_names(model.unet.get_submodule(key).forward), args, kwargs)
        h, skips = bound["hidden_states"], bound["res_hidden_states_tuple"]
        expected = torch.cat([torch.nn.functional.adaptive_avg_pool2d(h, 1),
                              torch.nn.functional.adaptive_avg_pool2d(skips[-1], 1)], 1)
        assert torch.allclose(fed[key], expected), key


def test_maskunet_artifact_restores_every_trained_parameter(bundle, tmp_path):
    """Saving and loading the artifact restores the generators as well as the adapters: every trainable
    parameter of the loaded model equals the saved one."""
    method = MaskUNetMethod(MaskUNetParams(), "maskunet")
    prepared = method.build(bundle, _ctx(tmp_path))
    with torch.no_grad():
        for p in prepared.trainable_parameters():
            p.normal_()
    method.save(prepared, bundle, _ctx(tmp_path))
    loaded = method.prepare(bundle, _ctx(tmp_path))
    saved, back = prepared.model.trainable_parameters(), loaded.model.trainable_parameters()
    assert len(saved) == len(back) and len(list(prepared.model.generators.parameters())) > 0
    assert all(torch.equal(a, b) for a, b in zip(saved, back))

