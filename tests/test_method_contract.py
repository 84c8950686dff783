"""The contract every method kind keeps, on the tiny random SD-style bundle (``tiny-sd``).

For each method (resolved from its shipped spec, as ``mubench run method=...`` does): ``prepare`` works (after an
artifact is saved for the trainable ones), the same seeds give the same images, a batch of 3 gives bitwise the
images of three batches of 1, the parameter counts equal an independent count, and trained weights survive the
safetensors round trip. Every trainable method's training, killed mid-way and resumed from its checkpoint, gives
bitwise the artifact of an uninterrupted training.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from method_cases import CASES, Case, PROMPTS, SAMPLER, SEEDS, context, method_of, prepared_case
from mubench.methods.base import MethodContext, Prepared
from mubench.sampler import sample_images


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    return tmp_path_factory.mktemp("artifacts")


def _expected_counts(prepared: Prepared, bundle) -> int:
    """Independent parameter count of what the method adds."""
    kind = prepared.info.get("change")
    if kind in ("none", "random-mask", "full-ft"):
        return 0
    if kind == "maskunet-free":  # one logit per weight of the decoder attention q/k/v/o linears
        return sum(m.weight.numel() for n, m in bundle.denoiser.named_modules()
                   if n.startswith("up_blocks.") and isinstance(m, torch.nn.Linear)
                   and n.endswith(("to_q", "to_k", "to_v", "to_out.0")))
    if kind == "lora":
        r = prepared.info["r"]
        total = 0
        for name, module in bundle.denoiser.named_modules():
            if isinstance(module, torch.nn.Linear) and name.endswith(("to_q", "to_k", "to_v", "to_out.0")):
                total += r * (module.in_features + module.out_features)
        return total
    if kind == "maskunet":
        model = prepared.model
        total = 0
        for key, gen in model.generators.items():
            block = bundle.denoiser.get_submodule(key.replace("-", "."))
            cin, cout = block.resnets[0].conv1.in_channels, block.resnets[0].conv1.out_channels
            go, gi, temb = cout // 4, cin // 4, block.resnets[0].time_emb_proj.in_features
            total += temb * cin + cin * 64 + 64 + 64 * go * gi + go * gi
            for layer in model.masked:
                if layer.block == key.replace("-", "."):
                    total += (go + 1) * layer.shape[0] + (gi + 1) * layer.shape[1]
        return total
    raise AssertionError(f"no independent count for {kind}")


@pytest.fixture(scope="module")
def base_images(bundle, regs, artifacts):
    _, sd = prepared_case(regs, bundle, artifacts, "sd")
    return sample_images(bundle, sd, PROMPTS, SEEDS, SAMPLER)


@pytest.mark.parametrize("name", list(CASES))
def test_method_contract(name, regs, bundle, artifacts, base_images):
    method, prepared = prepared_case(regs, bundle, artifacts, name)
    case = CASES[name]

    # prepare works and records what it did
    assert prepared.info.get("change")
    if getattr(method, "trainable", False):
        assert prepared.artifact and len(prepared.artifact) == 64

    # per-seed reproducibility and batch invariance: a batch of 3 = three separate batches of 1, bitwise
    batch = sample_images(bundle, prepared, PROMPTS, SEEDS, SAMPLER)
    singles = torch.cat([sample_images(bundle, prepared, [p], [s], SAMPLER) for p, s in zip(PROMPTS, SEEDS)])
    assert torch.equal(batch, singles)
    # ...and the seed matters
    other = sample_images(bundle, prepared, PROMPTS[:1], [999], SAMPLER)
    assert not torch.equal(other[0], batch[0])
    # the method changes the images (or, for sd, does not); the base bundle itself is left untouched
    effect = (batch - base_images).abs().mean().item()
    assert (effect > 1e-4) == case.changes_images
    assert all(type(m).__name__ in ("Linear", "Conv2d") for n, m in bundle.denoiser.named_modules()
               if n.endswith(("to_q", "to_out.0", "conv1")))

    # one denoiser call for the whole batch (shared-mask grouping, several row streams) differs only by GEMM
    # rounding (and the rare hard-mask bit a rounding difference flips); method noise given to the wrong rows
    # would change the images about as much as the method itself does
    fused = sample_images(bundle, prepared, PROMPTS, SEEDS, SAMPLER, per_image=False)
    assert (fused - batch).abs().mean().item() < max(1e-5, 0.05 * effect)
    # parameter counts
    assert prepared.added_params == _expected_counts(prepared, bundle)
    if getattr(method, "trainable", False):
        assert prepared.trainable_params == sum(p.numel() for p in prepared.trainable_parameters())
    else:
        assert prepared.trainable_params == 0

    # artifact round trip: a fresh prepare loads the same weights and gives the same images
    if getattr(method, "trainable", False):
        fresh = method.prepare(bundle, context(artifacts))
        a, b = prepared.artifact_state(), fresh.artifact_state()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        assert fresh.artifact == prepared.artifact
        assert torch.equal(sample_images(bundle, fresh, PROMPTS[:1], SEEDS[:1], SAMPLER), batch[:1])


def test_sampling_masks_come_from_the_image_streams(regs, bundle, artifacts):
    """Changing only image 2's seed changes only image 2 (no method noise leaks between images)."""
    _, prepared = prepared_case(regs, bundle, artifacts, "maskunet")
    a = sample_images(bundle, prepared, PROMPTS, SEEDS, SAMPLER)
    b = sample_images(bundle, prepared, PROMPTS, SEEDS[:2] + [77], SAMPLER)
    assert torch.equal(a[:2], b[:2]) and not torch.equal(a[2], b[2])


TRAINABLE = ["lora", "full-ft", "dropout", "maskunet", "maskunet-faithful"]


@pytest.fixture(scope="module")
def train_data(tmp_path_factory) -> Path:
    from training_fakes import caption_folder

    return caption_folder(tmp_path_factory.mktemp("train-data"))


@pytest.mark.parametrize("name", TRAINABLE)
def test_trainer_resume(name, regs, bundle, train_data, tmp_path):
    """Killed at step 2 of 4 (checkpoints every 2) and resumed = uninterrupted, bitwise; training moves weights."""
    from mubench.methods.training import train_artifact

    case = CASES[name]
    recipe = {"train": {"data": str(train_data), "steps": 4, "batch_size": 2, "resolution": 32, "lr": 1e-3,
                        "checkpoint_every": 2, "log_every": 1}}
    method = method_of(regs, Case(case.spec, {**case.overrides, **recipe}))

    def ctx(root: str, train: str = "auto") -> MethodContext:
        return MethodContext(artifacts_dir=tmp_path / root, train=train, model_name="tiny-sd", weights="random",
                             show_progress=False)

    whole = train_artifact(method, bundle, ctx("whole"))
    assert whole["saved"] and whole["steps"] == 4 and whole["resumed_from"] is None
    killed = train_artifact(method, bundle, ctx("killed"), stop_at=2)
    assert not killed["saved"] and killed["steps"] == 2
    resumed = train_artifact(method, bundle, ctx("killed"))
    assert resumed["resumed_from"] == 2 and resumed["sha256"] == whole["sha256"]

    trained = method.prepare(bundle, ctx("killed", "never"))
    fresh = method.build(bundle, ctx("killed"))
    a, b = trained.artifact_state(), fresh.artifact_state()
    assert any(not torch.equal(a[k], b[k]) for k in a)  # training changed the weights
    assert trained.artifact == whole["sha256"]
