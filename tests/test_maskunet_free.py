"""maskunet-free on the tiny random SD-style model: only the logits learn, the update schedule, the predicted x0,
reproducibility per seed, and its own sampling protocol through the run flow."""
from __future__ import annotations

from conftest import prepare_free


import pytest
import torch

from mubench.config import resolve
from mubench.sampler import SamplerConfig, sample_images

SAMPLER = SamplerConfig(scheduler="dpmsolver++1", steps=4, guidance=3.0, resolution=32)
PROMPTS, SEEDS = ["a red circle", "two blue squares"], [5, 6]


def _prepared(regs, bundle, **overrides):
    return prepare_free(regs, bundle, early_steps=2, **overrides)


def _frozen_state(bundle, prepared):
    mods = {"unet": bundle.denoiser, "vae": bundle.codec.vae, "text": bundle.conditioner.text_encoder}
    for term, scorer in prepared.rewards:
        mods[term.scorer] = scorer.encoder.model
    return {f"{k}.{n}": p.detach().clone() for k, m in mods.items() for n, p in m.named_parameters()}, mods


def test_only_the_logits_learn(regs, bundle):
    prepared = _prepared(regs, bundle)
    before, mods = _frozen_state(bundle, prepared)
    seen = []
    original = torch.optim.AdamW.step

    def spy(self, *a, **k):  # what the optimizer steps: exactly the logits, which have gradients
        seen.append([(p.shape, p.grad is not None) for g in self.param_groups for p in g["params"]])
        return original(self, *a, **k)

    torch.optim.AdamW.step = spy
    try:
        sample_images(bundle, prepared, PROMPTS[:1], SEEDS[:1], SAMPLER)
    finally:
        torch.optim.AdamW.step = original
    shapes = [layer["shape"] for layer in prepared.layers]
    assert len(seen) == 2 * 1 + 2 * 3  # 2 early steps x 1 update + 2 late steps x 3 updates
    assert all([list(s) for s, _ in step] == shapes and all(g for _, g in step) for step in seen)
    after, _ = _frozen_state(bundle, prepared)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None and not p.requires_grad for m in mods.values() for p in m.parameters())
    assert prepared.trainable_params == 0 and prepared.added_params == sum(
        torch.Size(s).numel() for s in shapes)


def test_update_schedule_and_final_update(regs, bundle):
    calls = []

    def counting(prepared):
        inner = prepared.predict

        def predict(state, model_fn):
            n = {"fwd": 0, "grad": 0}

            def fn():
                n["fwd"] += 1
                n["grad"] += torch.is_grad_enabled()
                return model_fn()

            out = inner(state, fn)
            calls.append((state.step_index, n["fwd"], n["grad"], len(prepared.last_losses)))
            return out

        prepared.predict = predict
        return prepared

    sample_images(bundle, counting(_prepared(regs, bundle)), PROMPTS[:1], SEEDS[:1], SAMPLER)
    assert calls == [(0, 1, 1, 1), (1, 1, 1, 1), (2, 3, 3, 3), (3, 3, 3, 3)]
    calls.clear()
    sample_images(bundle, counting(_prepared(regs, bundle, final_update=False)), PROMPTS[:1], SEEDS[:1], SAMPLER)
    assert calls == [(0, 1, 0, 0), (1, 1, 0, 0), (2, 3, 2, 2), (3, 3, 2, 2)]  # the K-th forward: no gradients


def test_reproducible_per_seed_and_batch_invariant(regs, bundle):
    short = SamplerConfig(scheduler="dpmsolver++1", steps=3, guidance=3.0, resolution=32)
    prepared = _prepared(regs, bundle, late_updates=2)
    a = sample_images(bundle, prepared, PROMPTS, SEEDS, short)
    b = sample_images(bundle, _prepared(regs, bundle, late_updates=2), PROMPTS, SEEDS, short)
    single = sample_images(bundle, prepared, PROMPTS[1:], SEEDS[1:], short)
    other = sample_images(bundle, prepared, PROMPTS[:1], [99], short)
    assert torch.equal(a, b) and torch.equal(a[1:], single) and not torch.equal(a[:1], other)
    unmasked = _prepared(regs, bundle, init_logit=30.0, lr=1e-12, late_updates=2)  # logit 30: nothing is masked
    base = sample_images(bundle, unmasked, PROMPTS[:1], SEEDS[:1], short)
    assert (a[:1] - base).abs().mean() > 1e-4  # the masks change the images


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_predicted_x0_matches_diffusers(regs, bundle, prediction_type):
    from diffusers import DDIMScheduler

    from mubench.methods.base import RowInfo, StepState

    prepared = _prepared(regs, bundle)
    prepared.prediction_type = prediction_type
    sched = DDIMScheduler.from_config({**bundle.scheduler_config, "prediction_type": prediction_type})
    sched.set_timesteps(10)
    t = sched.timesteps[3]
    x = torch.randn(2, 4, 16, 16)
    out = torch.randn(4, 4, 16, 16)  # rows: [uncond 0, uncond 1, cond 0, cond 1]
    rows = [RowInfo(0, False), RowInfo(1, False), RowInfo(0, True), RowInfo(1, True)]
    state = StepState(3, 10, t, x, rows, [])
    guided = out[:2] + 3.0 * (out[2:] - out[:2])
    ref = sched.step(guided, t, x).pred_original_sample
    assert torch.allclose(prepared._x0(out, state, 3.0), ref, atol=1e-5)


def test_own_sampling_protocol_through_the_run_flow(regs, tmp_path):
    from mubench.runner import Runner

    args = ["suite=toy", "model=tiny-sd", "method=maskunet-free", "limit=1", "weights=random", "device=cpu",
            f"cache={tmp_path}", "method.rewards=[{scorer: micro-clip, weight: 5.0}]", "method.late_updates=1"]
    out = Runner(resolve(args, regs), regs).execute()
    protocol = out.results["protocol"]
    assert protocol["method_sampler"] == {"scheduler": "dpmsolver++1", "steps": 15}
    assert protocol["sampler"]["scheduler"] == "dpmsolver++1" and protocol["sampler"]["steps"] == 15
    assert out.results["method_info"]["added_params"] > 0 and out.results["method_info"]["trainable_params"] == 0
    suite_own = Runner(resolve(args + ["method.sampler.scheduler=null", "method.sampler.steps=null"], regs), regs)
    follows = suite_own.execute().results["protocol"]
    assert "method_sampler" not in follows and follows["sampler"]["steps"] != 15


def test_the_reward_models_weights_are_in_every_sample_key(regs, tmp_path, monkeypatch):
    """New reward weights make new images: a cache holding the old ones must not hand them out."""
    from mubench.micro.scorers import MicroClipScorer
    from mubench.runner import Runner

    args = ["suite=toy", "model=tiny-sd", "method=maskunet-free", "limit=1", "weights=random", "device=cpu",
            f"cache={tmp_path}", "method.rewards=[{scorer: micro-clip, weight: 5.0}]"]
    runner = Runner(resolve(args, regs), regs)
    bundle, items = runner.load_model(), runner.items()

    def keys():
        prepared = runner.prepare(bundle)
        return [p.key for p in runner.plan(bundle, prepared, SamplerConfig(), items)], prepared

    before, prepared = keys()
    assert prepared.weights_used == {"micro-clip": prepared.rewards[0][1].weights_hash()}
    monkeypatch.setattr(MicroClipScorer, "weights_hash", lambda self: "other-weights")
    after, _ = keys()
    assert before != after


def test_a_reward_checkpoint_moved_elsewhere_keeps_its_images(regs, tmp_path):
    """A reward's checkpoint path says where its weights are, not what they are (their hash is in the key): the same
    file copied elsewhere keeps every sample key, other weights under the same name change them all."""
    import shutil

    from mubench.micro.clip import zoo_dir
    from mubench.runner import Runner

    shipped = zoo_dir("micro") / "micro-clip.safetensors"
    here, there = tmp_path / "a" / "clip.safetensors", tmp_path / "b" / "clip.safetensors"
    for path in (here, there):
        path.parent.mkdir()
        shutil.copyfile(shipped, path)

    def keys(path):
        args = ["suite=micro", "model=micro", "method=maskunet-free", "limit=2", "device=cpu", f"cache={tmp_path}",
                f"method.rewards=[{{scorer: micro-clip, weight: 5.0, params: {{weights: {path}}}}}]"]
        runner = Runner(resolve(args, regs), regs)
        bundle = runner.load_model()
        prepared = runner.prepare(bundle)
        assert prepared.location_params == ("rewards.0.params.weights",)
        return [p.key for p in runner.plan(bundle, prepared, SamplerConfig(), runner.items())]

    before = keys(here)
    assert keys(there) == before
    shutil.copyfile(zoo_dir("micro-art") / "micro-clip.safetensors", there)
    assert set(keys(there)).isdisjoint(before)


def test_free_straight_through_gradient_is_the_released_estimators_at_any_tau():
    """The one-node straight-through mask gives the gradient of ``W ⊙ (hard − sg(s) + s)``,
    ``s = σ((ℓ − log E)/τ)``, at a temperature other than 1."""
    from mubench.methods.maskunet_free import StraightThroughMaskedWeight

    g = torch.Generator().manual_seed(0)
    weight = torch.randn(3, 5, generator=g)
    noise = torch.empty(3, 5).exponential_(generator=g)
    upstream = torch.randn(3, 5, generator=g)
    tau = 2.5
    logits = torch.randn(3, 5, generator=g).requires_grad_(True)
    masked, hard = StraightThroughMaskedWeight.apply(logits, noise, weight, tau)
    (masked * upstream).sum().backward()
    ref_logits = logits.detach().clone().requires_grad_(True)
    s = torch.sigmoid((ref_logits - noise.log()) / tau)
    ref = weight * (hard.float() - s.detach() + s)
    (ref * upstream).sum().backward()
    assert torch.equal(masked, weight * hard)
    assert torch.allclose(logits.grad, ref_logits.grad, atol=1e-6)


def test_every_step_starts_from_init_logit(regs, bundle):
    """The logits are optimised within a step and start again from ``init_logit`` at the next one (the released
    method keeps only AdamW's moments across steps)."""
    prepared = _prepared(regs, bundle)
    seen: list[list[torch.Tensor]] = []  # per step, the logits at each forward
    inner = prepared.predict

    def predict(state, model_fn):
        seen.append([])

        def fn():
            (state_of_image,) = prepared._images.values()
            seen[-1].append(state_of_image.logits[0].detach().clone())
            return model_fn()

        return inner(state, fn)

    prepared.predict = predict
    sample_images(bundle, prepared, PROMPTS[:1], SEEDS[:1], SAMPLER)
    assert len(seen) == SAMPLER.steps and all(len(step) == 3 for step in seen[2:])
    assert all(bool((step[0] == 1.0).all()) for step in seen)
    assert all(not bool((step[-1] == 1.0).all()) for step in seen[2:])  # they move within a step


def test_a_term_without_hinge_rewards_exceeding_its_target(regs, bundle):
    """``h`` is the identity for a term without hinge (a reward above its target lowers the loss) and ReLU with it
    (no credit above the target)."""
    from mubench.methods.base import RowInfo, StepState
    from mubench.methods.maskunet_free import RewardTerm

    class Fixed:
        def reward(self, images, texts):
            return torch.full((len(texts),), 1.5)

    prepared = _prepared(regs, bundle)
    rows = [RowInfo(0, False), RowInfo(1, False), RowInfo(0, True), RowInfo(1, True)]
    state = StepState(0, 4, torch.tensor(500), torch.zeros(2, 4, 16, 16), rows, [])
    out = torch.zeros(4, 4, 16, 16)
    prepared.rewards = [(RewardTerm("fixed", weight=2.0, target=1.0, hinge=False), Fixed())]
    assert float(prepared._loss(out, state, [0, 1], PROMPTS, 3.0)) == pytest.approx(2 * 2.0 * (1.0 - 1.5))
    prepared.rewards = [(RewardTerm("fixed", weight=2.0, target=1.0, hinge=True), Fixed())]
    assert float(prepared._loss(out, state, [0, 1], PROMPTS, 3.0)) == 0.0
