"""LoRA ``merge``: the factors folded into private copies of the target weights for sampling (issue 16, item 3).

Merged and unmerged runs load one trained artifact, differ only by rounding, and the base bundle's shared weights
are never touched by the merge.
"""
from __future__ import annotations

import pytest
import torch

from method_cases import Case, context, fake_training, method_of
from mubench.config import resolve_component


def _lora(regs, bundle, artifacts, merge: bool):
    method = method_of(regs, Case("lora-micro", {"merge": merge}))
    if not method.artifact_location(bundle, context(artifacts))[1].exists():
        built = method.build(bundle, context(artifacts))
        fake_training(built)
        method.save(built, bundle, context(artifacts))
    return method, method.prepare(bundle, context(artifacts))


def _call(denoiser, bundle):
    gen = torch.Generator().manual_seed(3)
    cfg = bundle.denoiser.config
    x = torch.randn(2, cfg.in_channels, 8, 8, generator=gen)
    text = torch.randn(2, 4, cfg.cross_attention_dim, generator=gen)
    with torch.no_grad():
        return denoiser(x, torch.tensor([10, 500]), encoder_hidden_states=text).sample


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    return tmp_path_factory.mktemp("lora-merge")


def test_merged_matches_unmerged_and_leaves_the_base_alone(regs, bundle, artifacts):
    before = {n: p.detach().clone() for n, p in bundle.denoiser.named_parameters()}
    base_out = _call(bundle.denoiser, bundle)
    _, unmerged = _lora(regs, bundle, artifacts, merge=False)
    _, merged = _lora(regs, bundle, artifacts, merge=True)
    assert merged.info["merged_layers"] == merged.info["lora_layers"] > 0 and unmerged.info["merged_layers"] == 0
    out_u, out_m = _call(unmerged.denoiser, bundle), _call(merged.denoiser, bundle)
    assert not torch.allclose(out_u, base_out, atol=1e-4)  # the (fake-)trained factors change the model
    torch.testing.assert_close(out_m, out_u, rtol=0, atol=1e-5)  # only rounding differs
    after = dict(bundle.denoiser.named_parameters())
    assert all(torch.equal(before[n], after[n]) for n in before)  # the shared base weights are untouched
    torch.testing.assert_close(_call(bundle.denoiser, bundle), base_out, rtol=0, atol=0)
    assert not any(p.requires_grad for p in merged.denoiser.parameters())
    # a merged layer runs the plain linear: its forward no longer reads the factors
    with torch.no_grad():
        for p in merged.trainable_parameters():
            p.zero_()
    torch.testing.assert_close(_call(merged.denoiser, bundle), out_m, rtol=0, atol=0)


def test_merge_is_in_the_protocol_but_not_in_the_artifact_key(regs, bundle, artifacts):
    m_true, m_false = (method_of(regs, Case("lora-micro", {"merge": v})) for v in (True, False))
    assert m_true.artifact_location(bundle, context(artifacts)) == m_false.artifact_location(bundle,
                                                                                            context(artifacts))
    fp = {v: resolve_component("method", "lora-micro", {"merge": v}, regs).fingerprint() for v in (True, False)}
    assert fp[True] != fp[False]
    assert resolve_component("method", "lora", {}, regs).params.merge is True  # the sampling default


@pytest.mark.parametrize("merge", [True, False])
def test_the_efficiency_suite_times_the_sampling_form(regs, tmp_path, merge):
    # the suite builds a method (no artifact) and must still time what a run samples with: merged factors
    from mubench.config import resolve
    from mubench.runner import Runner

    cfg = resolve(["suite=efficiency", "model=tiny-sd", "device=cpu", "method=lora-micro", f"method.merge={merge}",
                   "suite.repeats=1", "suite.warmup=0", "suite.forward_repeats=1", "suite.sampler.steps=1",
                   "suite.memory=false", "suite.image_flops=false", "suite.train_step=never",
                   f"cache={tmp_path / 'cache'}"], regs)
    info = Runner(cfg, regs).execute().results["method_info"]
    assert info["merged_layers"] == (info["lora_layers"] if merge else 0) and info["lora_layers"] > 0


def _lora_build(**kw):
    import torch

    from mubench.methods.base import MethodContext
    from mubench.methods.lora import LoRAMethod, LoRAParams
    from mubench.models.base import LoadContext
    from mubench.models.tiny import TinySD, TinySDParams

    bundle = TinySD.load(TinySDParams(), LoadContext(torch.device("cpu"), torch.float32))
    return LoRAMethod(LoRAParams(**kw), "lora").build(
        bundle, MethodContext(artifacts_dir=".", train="never", model_name="tiny-sd"))


def test_lora_scale_is_alpha_over_r():
    """LoRA's scale is alpha / r (the paper's 512 / 256 = 2), not 1."""
    from peft.tuners.lora import LoraLayer

    prepared = _lora_build(r=4, alpha=12.0)
    layers = [m for m in prepared.denoiser.modules() if isinstance(m, LoraLayer)]
    assert layers and all(m.scaling["default"] == 3.0 for m in layers)


def test_lora_init_gaussian_vs_default():
    """Each init is the one named: gaussian A ~ N(0, 1/r), default A kaiming-uniform within
    1/sqrt(fan_in); B = 0 for both."""
    import math

    from peft.tuners.lora import LoraLayer

    for init in ("gaussian", "default"):
        prepared = _lora_build(r=2, alpha=4.0, init=init)
        for m in prepared.denoiser.modules():
            if isinstance(m, LoraLayer):
                a, b = m.lora_A["default"].weight.detach(), m.lora_B["default"].weight.detach()
                assert float(b.abs().max()) == 0.0
                bound = 1 / math.sqrt(a.shape[1])
                if init == "default":
                    assert float(a.abs().max()) <= bound + 1e-6
                else:  # std 1/r = 0.5, well above the kaiming bound of these layers
                    assert float(a.abs().max()) > bound
