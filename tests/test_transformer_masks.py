"""Masking methods on transformer denoisers (DiT, PixArt-α) with tiny random configs, and the full-size layer sets.

What must hold: the default layer sets are the attention q/k/v/o of the second half of the blocks (DiT: self-attention;
PixArt: self- and cross-attention) and nothing else, counts are right (checked against closed-form numbers for
DiT-XL/2 and PixArt-α), masks change exactly those layers, the maskunet generator sees the timestep (and DiT's class),
sampling through the shared sampler is per-seed reproducible and batch invariant, the learned-variance DDPM path and
DiT's 3-channel guidance work, and the trainer steps and resumes bitwise on them.
"""
from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

from mubench.errors import UsageError
from mubench.methods.base import Prepared
from mubench.methods.masking import MaskedLinear, select_layers
from mubench.models.base import LoadContext
from mubench.sampler import SamplerConfig, _guide, sample_images, uses_learned_variance
from transformer_cases import method_from_spec, perturb, untrained_ctx

DIT_SAMPLER = SamplerConfig(scheduler="ddpm", steps=4, guidance=1.5, resolution=16)
PIX_SAMPLER = SamplerConfig(scheduler="dpmsolver++", steps=3, guidance=4.5, resolution=16)
PROMPTS = {"dit": [3, 7, 0], "pixart": ["a red circle", "two dogs", "x"]}
SEEDS = [11, 22, 33]


# ---------------------------------------------------------------------------------------------- layer sets


def _names(model, layer_set):
    return [n for n, _ in select_layers(model, layer_set)]


def test_default_layer_sets_are_the_second_half_attention(dit, pixart):
    attn = ("to_q", "to_k", "to_v", "to_out.0")
    assert _names(dit.denoiser, "decoder-attn") == [f"transformer_blocks.{b}.attn1.{p}" for b in (2, 3) for p in attn]
    assert _names(pixart.denoiser, "decoder-attn") == [f"transformer_blocks.{b}.{a}.{p}" for b in (2, 3)
                                                       for a in ("attn1", "attn2") for p in attn]
    assert _names(pixart.denoiser, "decoder-self-attn") == [n for n in _names(pixart.denoiser, "decoder-attn")
                                                            if ".attn1." in n]
    assert _names(pixart.denoiser, "decoder-cross-attn") == [n for n in _names(pixart.denoiser, "decoder-attn")
                                                             if ".attn2." in n]
    ff = _names(dit.denoiser, "decoder-attn+ff")
    assert len(ff) == 12 and {n.split(".", 2)[-1] for n in ff if ".ff." in n} == {"ff.net.0.proj", "ff.net.2"}
    assert [n for n in _names(dit.denoiser, "encoder-attn")] == [f"transformer_blocks.{b}.attn1.{p}" for b in (0, 1)
                                                                 for p in attn]
    assert len(_names(pixart.denoiser, "all-attn")) == 32 and len(_names(pixart.denoiser, "all")) == 40
    # never the adaLN modulation, the timestep / class embeddings, the patch embedding or the output projection
    for name in _names(pixart.denoiser, "all") + _names(dit.denoiser, "all"):
        assert not any(s in name for s in ("norm1", "emb", "pos_embed", "proj_out", "adaln", "caption"))


def test_layer_sets_that_do_not_apply_are_usage_errors(dit, regs):
    with pytest.raises(UsageError, match="no convolution"):
        select_layers(dit.denoiser, "decoder-attn+conv")
    with pytest.raises(UsageError, match="no cross-attention"):
        select_layers(dit.denoiser, "decoder-cross-attn")
    tiny_sd = regs.models.get("tiny-sd")
    unet = tiny_sd.load(tiny_sd.Params(), LoadContext(torch.device("cpu"), torch.float32)).denoiser
    with pytest.raises(UsageError, match="transformer denoisers"):
        select_layers(unet, "decoder-attn+ff")


def _full_size_maskunet_params(blocks, linears_per_block, d=1152, factor=4, hidden=64):
    g = d // factor
    generator = d * d + (d * hidden + hidden) + (hidden * g * g + g * g)  # FC_t, conv1, conv2
    adapter = (g + 1) * d + (g + 1) * d
    return blocks * generator + blocks * linears_per_block * adapter


@pytest.mark.parametrize("model,layers,weights,blocks,per_block", [
    ("dit", 56, 56 * 1152 * 1152, 14, 4),
    ("pixart", 112, 112 * 1152 * 1152, 14, 8),
])
def test_inspect_full_size_configs_on_meta(model, layers, weights, blocks, per_block):
    from mubench.commands.inspect import inspect_method

    report = inspect_method(["method=maskunet", f"model={model}", "weights=random"])
    assert report["masked_layers"] == layers and report["masked_weights"] == weights
    assert report["added_params"] == _full_size_maskunet_params(blocks, per_block) == report["trainable_params"]
    names = [layer["name"] for layer in report["layers"]]
    assert names[0] == "transformer_blocks.14.attn1.to_q" and names[-1].startswith("transformer_blocks.27.")
    assert report["info"]["decoder_blocks"] == "14-27" and report["info"]["generators"] == blocks
    rm = inspect_method(["method=random-mask", f"model={model}", "weights=random"])
    assert rm["masked_layers"] == layers and rm["added_params"] == 0


# ---------------------------------------------------------------------------------------------- masks


@pytest.mark.parametrize("which", ["dit", "pixart"])
def test_a_full_mask_zeroes_exactly_the_selected_layers(which, regs, dit, pixart, tmp_path):
    bundle = {"dit": dit, "pixart": pixart}[which]
    # a deterministic sampler: the mask draws consume the image streams that DDPM's ancestral noise also uses
    sampler = SamplerConfig(scheduler="ddim", steps=4, guidance=1.5, resolution=16) if which == "dit" else PIX_SAMPLER
    prepared = method_from_spec(regs, "random-mask", ratio=1.0, resample="image").prepare(bundle, untrained_ctx(tmp_path))
    masked = sample_images(bundle, prepared, PROMPTS[which][:1], SEEDS[:1], sampler)
    # reference: the same model with those weights zeroed by hand
    zeroed = copy.deepcopy(bundle.denoiser)
    with torch.no_grad():
        for _, mod in select_layers(zeroed, "decoder-attn"):
            mod.weight.zero_()
    by_hand = sample_images(bundle, Prepared(zeroed), PROMPTS[which][:1], SEEDS[:1], sampler)
    base = sample_images(bundle, Prepared(bundle.denoiser), PROMPTS[which][:1], SEEDS[:1], sampler)
    assert (masked - by_hand).abs().max() < 1e-5
    assert (masked - base).abs().max() > 1e-3
    # the base bundle keeps plain layers; the method's clone has masked ones exactly at the selected names
    assert not any(isinstance(m, MaskedLinear) for m in bundle.denoiser.modules())
    got = sorted(n for n, m in prepared.denoiser.named_modules() if isinstance(m, MaskedLinear))
    assert got == sorted(_names(bundle.denoiser, "decoder-attn"))


def test_maskunet_generator_sees_timestep_and_class(regs, dit, pixart, tmp_path):
    for bundle in (dit, pixart):
        prepared = method_from_spec(regs, "maskunet").build(bundle, untrained_ctx(tmp_path))
        perturb(prepared)
        model = prepared.model
        model.deterministic = True  # no Gumbel noise: rows with equal inputs must get equal masks in every block
        x = torch.randn(4, 4, 8, 8)
        if bundle is dit:
            kwargs = {"class_labels": torch.tensor([1, 1, 2, 1])}
        else:
            cond = bundle.conditioner.encode(["a", "a", "a", "a"])
            kwargs = {"encoder_hidden_states": cond.hidden_states, "encoder_attention_mask": cond.attention_mask,
                      "added_cond_kwargs": {"resolution": None, "aspect_ratio": None}}
        t = torch.tensor([10, 500, 10, 10])
        x[3] = x[0]
        with torch.no_grad():
            model(x, timestep=t, **kwargs)
            logits = model.layer_logits(len(model.masked) - 1)
        assert logits.shape[1:] == model.masked[-1].shape
        assert not torch.allclose(logits[0], logits[1])  # timestep
        if bundle is dit:
            assert not torch.allclose(logits[0], logits[2])  # class
        assert torch.allclose(logits[0], logits[3])  # same input, same logits


def test_maskunet_starts_as_the_base_model(regs, pixart, tmp_path):
    prepared = method_from_spec(regs, "maskunet").build(pixart, untrained_ctx(tmp_path))
    a = sample_images(pixart, prepared, PROMPTS["pixart"][:1], SEEDS[:1], PIX_SAMPLER)
    b = sample_images(pixart, Prepared(pixart.denoiser), PROMPTS["pixart"][:1], SEEDS[:1], PIX_SAMPLER)
    assert (a - b).abs().max() < 1e-5  # logits start at 5: P(zero) ~ 1e-65


# ---------------------------------------------------------------------------------------------- sampling


CASES = [("sd", {}), ("random-mask", {"ratio": 0.3}), ("random-mask", {"ratio": 0.3, "resample": "image"}),
         ("maskunet", {}), ("maskunet", {"deterministic": True}), ("lora-micro", {}), ("full-ft", {})]


@pytest.mark.parametrize("which", ["dit", "pixart"])
@pytest.mark.parametrize("spec,overrides", CASES, ids=[f"{s}-{i}" for i, (s, _) in enumerate(CASES)])
def test_sampling_is_reproducible_and_batch_invariant(which, spec, overrides, regs, dit, pixart, tmp_path):
    bundle = {"dit": dit, "pixart": pixart}[which]
    sampler = DIT_SAMPLER if which == "dit" else PIX_SAMPLER
    method = method_from_spec(regs, spec, **overrides)
    ctx = untrained_ctx(tmp_path)
    if getattr(method, "trainable", False):
        built = method.build(bundle, ctx)
        perturb(built, scale=0.05 if spec == "full-ft" else 0.5)
        method.save(built, bundle, ctx)
    prepared = method.prepare(bundle, ctx)
    prompts = PROMPTS[which]
    batch = sample_images(bundle, prepared, prompts, SEEDS, sampler)
    singles = torch.cat([sample_images(bundle, prepared, [p], [s], sampler) for p, s in zip(prompts, SEEDS)])
    assert torch.equal(batch, singles)
    assert torch.equal(batch, sample_images(bundle, prepared, prompts, SEEDS, sampler))
    # batched: chunks of 2 (the second padded), one call over both = one call per chunk, bitwise
    two = replace(sampler, chunk=2)
    chunked = sample_images(bundle, prepared, prompts, SEEDS, two)
    assert torch.equal(chunked, torch.cat([sample_images(bundle, prepared, prompts[:2], SEEDS[:2], two),
                                           sample_images(bundle, prepared, prompts[2:], SEEDS[2:], two)]))
    assert (chunked - batch).abs().max() < 1e-3  # the same images up to the rounding of another call shape
    assert not torch.equal(sample_images(bundle, prepared, prompts[:1], [999], sampler)[0], batch[0])
    if spec != "sd":
        base = sample_images(bundle, Prepared(bundle.denoiser), prompts, SEEDS, sampler)
        assert (batch - base).abs().mean() > 1e-4


@pytest.mark.parametrize("which", ["dit", "pixart"])
@pytest.mark.parametrize("overrides", [{"noise": "counter"}, {"deterministic": True}], ids=["counter", "deterministic"])
def test_tensor_only_masks_compile_into_one_graph(which, overrides, regs, dit, pixart, tmp_path, monkeypatch):
    """compile= on a masked transformer: its hooks (block features, conditioning) and counter noise trace as one
    graph, which (through dynamo's eager backend) makes the eager images bit for bit; stream noise is refused (once
    the model is loaded: the method alone cannot tell a transformer's stream noise from a UNet's, which compiles)."""
    from torch._dynamo.utils import counters

    from mubench.sampler import sample_latents

    bundle = {"dit": dit, "pixart": pixart}[which]
    sampler = replace(DIT_SAMPLER if which == "dit" else PIX_SAMPLER, chunk=2)
    method, ctx = method_from_spec(regs, "maskunet", **overrides), untrained_ctx(tmp_path)
    built = method.build(bundle, ctx)
    perturb(built)
    method.save(built, bundle, ctx)
    prepared = method.prepare(bundle, ctx)
    assert method.compile_safe and prepared.compile_safe and method.compiles_on(bundle)
    stream = method_from_spec(regs, "maskunet")  # stream noise: drawn in every layer (transformer masks have no fused path)
    assert not stream.prepare(bundle, ctx).compile_safe and not stream.compiles_on(bundle)
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, mode=None, dynamic=None:
                        real_compile(model, backend="eager", dynamic=dynamic))
    eager = sample_latents(bundle, prepared, PROMPTS[which], SEEDS, sampler)
    torch._dynamo.reset()
    counters.clear()
    traced = sample_latents(bundle, prepared, PROMPTS[which], SEEDS, replace(sampler, compile="default"))
    assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"]
    assert torch.equal(traced, eager)


# ---------------------------------------------------------------------------------------------- DiT specifics


def test_dit_defaults_learned_variance_and_three_channel_guidance(dit):
    assert dit.default_sampler == {"scheduler": "ddpm", "steps": 250, "guidance": 1.5}
    assert uses_learned_variance(dit, DIT_SAMPLER)
    assert not uses_learned_variance(dit, SamplerConfig(scheduler="ddim", steps=4))
    assert dit.extras["guidance_channels"] == 3
    uncond, cond = torch.zeros(1, 8, 2, 2), torch.ones(1, 8, 2, 2)
    guided = _guide(torch.cat([uncond, cond]), 1.5, 3, 4)
    assert torch.equal(guided[:, :3], torch.full((1, 3, 2, 2), 1.5))  # guided channels
    assert torch.equal(guided[:, 3:], torch.ones(1, 5, 2, 2))  # the rest (and the variance): the conditional row
    plain = _guide(torch.cat([uncond[:, :4], cond[:, :4]]), 1.5, None, 4)
    assert torch.equal(plain, torch.full((1, 4, 2, 2), 1.5))
    # the variance channels reach the scheduler: forcing them to the two ends of the range changes the samples
    images = []
    for v in (-1.0, 1.0):
        def forward(denoiser, x, t, cond, v=v):
            out = denoiser(x, t.expand(x.shape[0]), class_labels=cond.class_labels).sample
            return torch.cat([out[:, :4], torch.full_like(out[:, 4:], v)], 1)
        bundle = copy.copy(dit)
        bundle.extras = {**dit.extras, "forward": forward}
        images.append(sample_images(bundle, Prepared(dit.denoiser), [1], [5], DIT_SAMPLER))
    assert (images[0] - images[1]).abs().max() > 1e-3


@pytest.mark.parametrize("scheduler", ["ddim", "euler", "dpmsolver++", "dpmsolver++1"])
def test_dit_samples_with_every_scheduler(dit, scheduler):
    """Samplers other than DDPM get ε alone; DPM-Solver once sliced the learned-sigma output a second time."""
    images = sample_images(dit, Prepared(dit.denoiser), [1], [5],
                           SamplerConfig(scheduler=scheduler, steps=3, guidance=1.5, resolution=16))
    assert images.shape == (1, 3, 16, 16) and torch.isfinite(images).all()


def test_class_conditioner(dit):
    cond = dit.conditioner.encode([3, "7", ""])
    assert cond.class_labels.tolist() == [3, 7, 10]  # "" is the null class (tiny DiT: 10 classes)
    assert dit.conditioner.unconditional(2).class_labels.tolist() == [10, 10]
    for bad in ("cat", 10, -1, 2.5):
        with pytest.raises(UsageError):
            dit.conditioner.encode([bad])
    from diffusers.models.embeddings import LabelEmbedding

    assert all(m.dropout_prob == 0 for m in dit.denoiser.modules() if isinstance(m, LabelEmbedding))


# ---------------------------------------------------------------------------------------------- training


def _batches(which, bundle):
    def source(step):
        g = torch.Generator().manual_seed(1000 + step)
        images = torch.rand(2, 3, 16, 16, generator=g)
        caps = [str(int(v)) for v in torch.randint(0, 10, (2,), generator=g)] if which == "dit" else ["a", "b c"]
        return images, caps
    return source


@pytest.mark.parametrize("which", ["dit", "pixart"])
@pytest.mark.parametrize("spec", ["maskunet", "lora-micro"])
def test_trainer_steps_and_resumes_bitwise(which, spec, regs, dit, pixart, tmp_path):
    from mubench.methods.finetune_loss import DiffusionFinetuneLoss
    from mubench.methods.train_recipe import MethodTrainConfig
    from mubench.train.loop import train

    bundle = {"dit": dit, "pixart": pixart}[which]
    cfg = MethodTrainConfig(steps=4, lr=1e-2, batch_size=2, checkpoint_every=2, seed=3, log_every=1, p_uncond=0.5)
    loss = DiffusionFinetuneLoss(bundle, cfg)

    def run(out, stop_at=None):
        prepared = method_from_spec(regs, spec).build(bundle, untrained_ctx(tmp_path))
        before = [p.detach().clone() for p in prepared.trainable_parameters()]
        result = train(prepared.denoiser, loss, _batches(which, bundle), cfg, out_dir=out, show_progress=False,
                       stop_at=stop_at)
        return prepared, before, result

    straight, before, result = run(tmp_path / "a")
    assert result.step == 4 and all(torch.isfinite(torch.tensor(v)) for _, v in result.losses)
    after = list(straight.trainable_parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after))  # it learned something
    assert all(not p.requires_grad for n, p in bundle.denoiser.named_parameters())  # the base stays frozen
    run(tmp_path / "b", stop_at=2)
    resumed, _, r2 = run(tmp_path / "b")
    assert r2.resumed_from == 2 and r2.step == 4
    for a, b in zip(straight.trainable_parameters(), resumed.trainable_parameters()):
        assert torch.equal(a, b)


def test_compile_with_stream_noise_on_a_transformer_is_refused_before_training(cli, _private_home):
    """The method alone cannot tell (stream noise compiles on a UNet); the runner asks again once the model is loaded,
    before an artifact is trained for a run that would then be refused."""
    proc = cli("run", "suite=micro-class", "model=micro-dit", "method=maskunet", "method.train.steps=1",
               "method.train.batch_size=2", "limit=1", "compile=default", "--no-progress")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert not list(_private_home.rglob("weights.safetensors")), "an artifact was trained before the refusal"
    if "cannot trace" not in proc.stderr:  # no C++ toolchain: refused earlier, for that
        assert "torch.compile" in proc.stderr
    else:
        assert "compile=default: maskunet does what torch.compile cannot trace" in proc.stderr


def test_initial_noise_is_the_image_stream_times_the_schedulers_sigma(dit):
    """With ε ≡ 0 an Euler sampler never moves: the result is the initial latents, which must be the image
    stream's first draw scaled by init_noise_sigma (Euler's is ≫ 1)."""
    from mubench.methods.base import Prepared
    from mubench.sampler import SamplerConfig, make_scheduler, sample_latents

    bundle = copy.copy(dit)
    bundle.extras = {**dit.extras, "forward": lambda denoiser, x, t, cond: torch.zeros_like(x)}
    cfg = SamplerConfig(scheduler="euler", steps=3, guidance=1.5, resolution=16)
    got = sample_latents(bundle, Prepared(dit.denoiser), [1, 2], [5, 6], cfg)
    sched = make_scheduler("euler", dit.scheduler_config)
    sched.set_timesteps(3)
    assert sched.init_noise_sigma > 2
    shape = dit.codec.latent_shape(16, 16)
    want = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in (5, 6)])
    assert torch.equal(got, want * sched.init_noise_sigma)


def test_sample_latents_returns_the_requested_images_not_the_padding(dit):
    from mubench.methods.base import Prepared
    from mubench.sampler import SamplerConfig, sample_latents

    cfg = SamplerConfig(scheduler="ddim", steps=2, guidance=1.5, resolution=16, chunk=2)
    three = sample_latents(dit, Prepared(dit.denoiser), [3, 7, 0], [11, 22, 33], cfg)  # padded to 4, then cut
    two = sample_latents(dit, Prepared(dit.denoiser), [3, 7], [11, 22], cfg)
    assert three.shape[0] == 3 and torch.equal(three[:2], two)


def test_a_methods_sampler_settings_win_over_the_suite_and_the_model(dit):
    from types import SimpleNamespace

    from mubench.sampler import resolve_sampler

    cfg = resolve_sampler(dit, SimpleNamespace(scheduler="ddim", steps=7), method={"scheduler": "dpmsolver++1",
                                                                                   "steps": None})
    assert cfg.scheduler == "dpmsolver++1" and cfg.steps == 7


def test_row_infos_say_which_denoiser_rows_are_conditional(dit):
    from mubench.methods.base import Prepared
    from mubench.sampler import SamplerConfig, sample_latents

    seen = {}

    class Spy(Prepared):
        def before_step(self, state):
            seen["rows"] = [(r.image, r.cond) for r in state.rows]

    def forward(denoiser, x, t, cond):
        seen["labels"] = cond.class_labels.tolist()
        return torch.zeros_like(x)

    bundle = copy.copy(dit)
    bundle.extras = {**dit.extras, "forward": forward}
    cfg = SamplerConfig(scheduler="ddim", steps=1, guidance=1.5, resolution=16, chunk=2)
    sample_latents(bundle, Spy(dit.denoiser), [3, 7], [1, 2], cfg)
    assert seen["labels"] == [10, 10, 3, 7]  # [null class x2; the images' classes]
    assert seen["rows"] == [(0, False), (1, False), (0, True), (1, True)]
