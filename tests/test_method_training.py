"""Training on demand (train=auto/never/force), `mubench train`, per-model recipes, the training data sources and
the full-ft / dropout specifics, on the tiny random SD-style model."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mubench.config import resolve, resolve_component
from mubench.errors import UsageError
from mubench.methods.base import MethodContext
from mubench.models.base import LoadContext
from training_fakes import CAPTIONS, caption_folder, parquet_file

TINY_TRAIN = {"steps": 3, "batch_size": 2, "resolution": 32, "lr": 1e-3, "checkpoint_every": 0, "log_every": 1}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return caption_folder(tmp_path_factory.mktemp("captions"))


def _method(regs, spec: str, data: Path, **train):
    comp = resolve_component("method", spec, {"train": {"data": str(data), **TINY_TRAIN, **train}}, regs)
    return regs.methods.get(comp.kind)(comp.params, comp.name)


def _ctx(root: Path, train: str) -> MethodContext:
    return MethodContext(artifacts_dir=root, train=train, model_name="tiny-sd", show_progress=False)


# --------------------------------------------------------------------------- train=never / auto / force


def test_train_modes(regs, bundle, data, tmp_path):
    method = _method(regs, "lora-micro", data)
    key, directory = method.artifact_location(bundle, _ctx(tmp_path, "auto"))

    with pytest.raises(UsageError) as err:  # never: no training, a message that says how to train
        method.prepare(bundle, _ctx(tmp_path, "never"))
    assert "train=never" in str(err.value) and "mubench train method=lora-micro model=tiny-sd" in str(err.value)
    # the thread count is part of a CPU artifact's address: the command that makes this one says it
    assert f"OMP_NUM_THREADS={torch.get_num_threads()} mubench train" in str(err.value)
    assert not directory.exists()

    auto = method.prepare(bundle, _ctx(tmp_path, "auto"))  # auto: trains the missing artifact, then loads it
    meta = json.loads((directory / "meta.json").read_text())
    assert auto.artifact == meta["weights_sha256"] and meta["steps"] == 3
    assert "trained_now_s" in auto.info["training"]
    assert not (directory / "train" / "checkpoints").exists() and (directory / "train" / "train.log").is_file()

    again = method.prepare(bundle, _ctx(tmp_path, "auto"))  # auto with the artifact there: loads, no training
    assert again.artifact == auto.artifact and "trained_now_s" not in again.info["training"]
    never = method.prepare(bundle, _ctx(tmp_path, "never"))
    assert never.artifact == auto.artifact

    stamp = (directory / "meta.json").stat().st_mtime_ns
    forced = method.prepare(bundle, _ctx(tmp_path, "force"))  # force: retrains from scratch
    assert "trained_now_s" in forced.info["training"]
    assert (directory / "meta.json").stat().st_mtime_ns != stamp
    assert forced.artifact == auto.artifact  # same recipe, seed and data: the same weights


def test_artifact_key_follows_data_content_and_seed(regs, bundle, data, tmp_path):
    ctx = _ctx(tmp_path, "auto")
    key = _method(regs, "maskunet", data).artifact_location(bundle, ctx)[0]
    assert _method(regs, "maskunet", data, checkpoint_every=7).artifact_location(bundle, ctx)[0] == key
    assert _method(regs, "maskunet", data, seed=1).artifact_location(bundle, ctx)[0] != key
    other = caption_folder(tmp_path / "other")
    assert _method(regs, "maskunet", other).artifact_location(bundle, ctx)[0] == key  # same content elsewhere
    (other / "img0.txt").write_text("a purple star\n")  # a caption changes (.txt does not override the jsonl)
    (other / "captions.jsonl").write_text((other / "captions.jsonl").read_text().replace(CAPTIONS[0], "a star"))
    assert _method(regs, "maskunet", other).artifact_location(bundle, ctx)[0] != key


def test_missing_data_is_a_clear_error(regs, bundle, tmp_path):
    comp = resolve_component("method", "maskunet", {"train": dict(TINY_TRAIN)}, regs)  # paper recipe: data null
    method = regs.methods.get(comp.kind)(comp.params, comp.name)
    with pytest.raises(UsageError, match="needs training data.*method.train.data") as err:
        method.prepare(bundle, _ctx(tmp_path, "auto"))
    # run and masks take no data= (only train does): the advice names the key they do take
    assert "method.train.data=micro" in str(err.value) and "or data=micro" not in str(err.value)


def test_deviations_from_the_released_code_are_recorded(regs, bundle, data, tmp_path):
    clipped = _method(regs, "maskunet", data, grad_clip=1.0)
    prepared = clipped.prepare(bundle, _ctx(tmp_path, "auto"))
    devs = prepared.info["training"]["deviations"]
    assert any("clipped nothing" in d for d in devs)
    unclipped = _method(regs, "maskunet", data, grad_clip=None).prepare(bundle, _ctx(tmp_path, "auto"))
    assert not any("clipped nothing" in d for d in unclipped.info["training"]["deviations"])


# --------------------------------------------------------------------------- recipes


@pytest.mark.filterwarnings("ignore::mubench.config.MismatchWarning")  # micro's recipe with tiny-sd / dit on purpose
def test_micro_recipe_is_selected_by_model(regs):
    micro = resolve(["method=maskunet", "model=micro"], regs)
    assert micro.method.recipe == "micro" and micro.method.params.train.data == "micro-art"
    assert micro.method.params.train.steps < 1000 and micro.method.params.train.lr == pytest.approx(1e-3)
    paper = resolve(["method=maskunet", "model=tiny-sd"], regs)
    assert paper.method.recipe is None and paper.method.params.train.steps == 7000
    assert paper.method.params.train.lr == pytest.approx(1e-5) and paper.method.params.train.batch_size == 32
    user = resolve(["method=maskunet", "model=micro", "method.train.steps=5"], regs)  # the user's keys win
    assert user.method.params.train.steps == 5 and user.method.params.train.data == "micro-art"
    lora = resolve(["method=lora", "model=micro"], regs)
    assert lora.method.params.r == 8 and resolve(["method=lora", "model=tiny-sd"], regs).method.params.r == 256
    assert micro.method.fingerprint() != resolve(["method=maskunet", "model=tiny-sd"], regs).method.fingerprint()
    for spec in ("full-ft", "dropout", "lora", "maskunet", "maskunet-faithful"):
        assert resolve([f"method={spec}", "model=micro"], regs).method.params.train.data == "micro-art"
        dit = resolve([f"method={spec}", "model=dit"], regs).method  # DiT-XL/2 trains at its own 256², with label drop
        assert dit.recipe == "dit" and dit.params.train.resolution is None and dit.params.train.p_uncond == 0.1


def test_training_at_another_resolution_than_the_model_samples_warns(regs, bundle, data, tmp_path):
    method = _method(regs, "lora-micro", data, resolution=2 * bundle.resolution, steps=1)
    with pytest.warns(UserWarning, match=f"trains at {2 * bundle.resolution}² but tiny-sd samples at"):
        method.prepare(bundle, _ctx(tmp_path, "auto"))


# --------------------------------------------------------------------------- data sources


def test_folder_source_is_a_function_of_the_step(data):
    from mubench.train.data import open_training_data

    a = open_training_data(str(data), batch_size=4, seed=3, resolution=32)
    b = open_training_data(str(data), batch_size=4, seed=3, resolution=32)
    assert a.fingerprint.startswith("folder:") and a.info["examples"] == 6
    later = b.source(5)  # out of order: still the same batch
    first = b.source(0)
    assert torch.equal(a.source(0)[0], first[0]) and a.source(0)[1] == first[1]
    assert torch.equal(a.source(5)[0], later[0])
    images, captions = first
    assert images.shape == (4, 3, 32, 32) and 0 <= float(images.min()) and float(images.max()) <= 1
    assert set(captions) <= set(CAPTIONS)
    epoch = [c for s in range(3) for c in a.source(s)[1]][:6]  # the first epoch visits every example once
    assert sorted(epoch) == sorted(CAPTIONS)
    other = open_training_data(str(data), batch_size=4, seed=4, resolution=32)
    assert other.source(0)[1] != first[1] or not torch.equal(other.source(0)[0], first[0])


def test_folder_without_captions_is_named(tmp_path):
    from mubench.train.data import open_training_data

    folder = caption_folder(tmp_path / "d", txt_for_last=False)
    (folder / "captions.jsonl").write_text("")
    with pytest.raises(UsageError, match="without a caption.*img0.png"):
        open_training_data(str(folder), batch_size=2, seed=0, resolution=32)
    with pytest.raises(UsageError, match="no such folder or file"):
        open_training_data(str(tmp_path / "nowhere"), batch_size=2, seed=0, resolution=32)


def test_parquet_source(tmp_path):
    pytest.importorskip("pyarrow")
    from mubench.train.data import data_fingerprint, open_training_data

    path = parquet_file(tmp_path / "train.parquet")
    src = open_training_data(str(path), batch_size=3, seed=0, resolution=16, center_crop=False)
    images, captions = src.source(0)
    assert src.kind == "parquet" and images.shape == (3, 3, 16, 16) and len(captions) == 3
    assert src.fingerprint == data_fingerprint(str(path)) and src.fingerprint.startswith("parquet:")
    with pytest.raises(UsageError, match="no caption column.*set train.caption_column"):
        open_training_data(str(path), batch_size=3, seed=0, resolution=16, caption_column="label")


def test_micro_source():
    from mubench.methods.train_recipe import open_data

    src = open_data("micro", batch_size=5, seed=42, resolution=32)
    images, captions = src.source(1)
    assert images.shape == (5, 3, 32, 32) and len(captions) == 5 and all(isinstance(c, str) for c in captions)
    again = open_data("micro", batch_size=5, seed=42, resolution=32).source(1)
    assert torch.equal(images, again[0]) and captions == again[1]
    with pytest.raises(UsageError, match="32px; training asks for 64px.*method.train.resolution=32"):
        open_data("micro", batch_size=5, seed=42, resolution=64)


def test_named_data_fingerprints_are_unchanged():
    # part of trained artifacts' addresses: a change here orphans every artifact trained on these sources
    from mubench.methods.train_recipe import data_fingerprint

    assert data_fingerprint("micro") == "micro-world-train:701d493b6ae14008"
    assert data_fingerprint("micro-class") == "micro-class:1b173e0e68ee89e2"
    assert data_fingerprint(None) == "none"


def test_unknown_data_spec_lists_the_registered_sources(tmp_path):
    from mubench.methods.train_recipe import data_fingerprint, open_data

    for call in (lambda: data_fingerprint(str(tmp_path / "nowhere")),
                 lambda: open_data(str(tmp_path / "nowhere"), batch_size=2, seed=0, resolution=32)):
        with pytest.raises(UsageError, match="expected 'micro', 'micro-art', 'micro-class', a folder.*no such folder or file"):
            call()


# --------------------------------------------------------------------------- full-ft and dropout


def test_full_ft_trains_a_copy_and_leaves_the_base_alone(regs, bundle, data, tmp_path):
    before = {k: v.clone() for k, v in bundle.denoiser.state_dict().items()}
    prepared = _method(regs, "full-ft", data).prepare(bundle, _ctx(tmp_path, "auto"))
    assert all(torch.equal(v, before[k]) for k, v in bundle.denoiser.state_dict().items())
    changed = [k for k, v in prepared.denoiser.state_dict().items() if not torch.equal(v, before[k])]
    assert len(changed) > len(before) // 2
    assert prepared.trainable_params == sum(v.numel() for v in before.values())


def test_dropout_sits_at_the_stated_places(regs, bundle, data, tmp_path):
    from diffusers.models.attention_processor import Attention
    from diffusers.models.resnet import ResnetBlock2D

    from mubench.methods.finetune import dropout_site

    prepared = _method(regs, "dropout", data).build(bundle, _ctx(tmp_path, "auto"))
    resnets = sum(isinstance(m, ResnetBlock2D) for m in bundle.denoiser.modules())
    attentions = sum(isinstance(m, Attention) for m in bundle.denoiser.modules())
    assert prepared.info["dropout_sites"] == {"resnet": resnets, "attention": attentions} and resnets and attentions
    for name, m in prepared.denoiser.named_modules():
        if isinstance(m, torch.nn.Dropout):
            assert m.p == (0.1 if dropout_site(name) in ("resnet", "attention") else 0.0), name
    x = torch.randn(1, 4, 16, 16)
    enc = torch.randn(1, 16, 32)
    net = prepared.denoiser
    with torch.no_grad():
        net.train()
        a, b = net(x, 10, encoder_hidden_states=enc).sample, net(x, 10, encoder_hidden_states=enc).sample
        net.eval()
        c, d = net(x, 10, encoder_hidden_states=enc).sample, net(x, 10, encoder_hidden_states=enc).sample
    assert not torch.equal(a, b) and torch.equal(c, d)  # dropout acts in training only
    plain = _method(regs, "full-ft", data).build(bundle, _ctx(tmp_path, "auto"))
    assert all(m.p == 0.0 for m in plain.denoiser.modules() if isinstance(m, torch.nn.Dropout))


# --------------------------------------------------------------------------- the command


def test_train_command(data, tmp_path):
    from mubench.commands.train import train_from_args

    args = ["method=lora-micro", "model=tiny-sd", f"data={data}", f"cache={tmp_path}",
            *[f"method.train.{k}={v}" for k, v in TINY_TRAIN.items()]]
    first = train_from_args(args, show_progress=False)
    assert first["status"] == "trained" and first["steps"] == 3 and len(first["sha256"]) == 64
    assert Path(first["directory"], "meta.json").is_file()
    second = train_from_args(args, show_progress=False)
    assert second["status"] == "exists" and second["sha256"] == first["sha256"]
    forced = train_from_args(args + ["force=true"], show_progress=False)
    assert forced["status"] == "trained" and forced["sha256"] == first["sha256"]
    with pytest.raises(UsageError, match="nothing to train"):
        train_from_args(["method=random-mask", "model=tiny-sd"], show_progress=False)


def test_train_command_rejects_unknown_keys(cli):
    res = cli("train", "method=maskunet", "model=tiny-sd", "stpes=3")
    assert res.returncode == 2 and "unknown key 'stpes'" in res.stderr and "Traceback" not in res.stderr
    res = cli("train", "model=tiny-sd")  # no default method: a bare `mubench train` must not start training
    assert res.returncode == 2 and "needs method=NAME" in res.stderr


def test_low_precision_base_trains_fp32_weights(regs, data, tmp_path):
    """A bf16 base (as fp16/bf16 on a GPU) with autocast: the optimizer works on fp32 copies of the trainable
    weights, which go back to the base's dtype for sampling; the frozen base stays bf16."""
    from mubench.methods.training import train_artifact

    cls = regs.models.get("tiny-sd")
    low = cls.load(cls.Params(), LoadContext(torch.device("cpu"), torch.bfloat16))
    method = _method(regs, "lora-micro", data, mixed_precision="bf16")
    seen = []
    original = torch.optim.AdamW.step

    def spy(self, *a, **k):
        seen.append({p.dtype for g in self.param_groups for p in g["params"]})
        return original(self, *a, **k)

    torch.optim.AdamW.step = spy
    try:
        outcome = train_artifact(method, low, MethodContext(artifacts_dir=tmp_path, train="auto", show_progress=False,
                                                            dtype=torch.bfloat16))
    finally:
        torch.optim.AdamW.step = original
    assert outcome["saved"] and seen and all(s == {torch.float32} for s in seen)
    prepared = method.prepare(low, MethodContext(artifacts_dir=tmp_path, train="never", dtype=torch.bfloat16))
    assert {p.dtype for p in prepared.trainable_parameters()} == {torch.bfloat16}
    assert all(p.dtype == torch.bfloat16 for p in low.denoiser.parameters())
    meta = json.loads(Path(outcome["directory"], "meta.json").read_text())
    assert meta["precision"] == "bf16"


def test_an_artifact_that_does_not_fit_is_refused_and_copies_nothing():
    from mubench.methods.artifacts import copy_matching_state

    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1)).to(torch.float64)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    good = {k: torch.full(v.shape, 0.5, dtype=torch.float32) for k, v in before.items()}
    for bad, why in [({k: v for k, v in good.items() if k != "1.bias"}, r"missing \['1.bias'\]"),
                     ({**good, "2.weight": torch.zeros(1)}, r"unexpected \['2.weight'\]"),
                     ({**good, "0.weight": torch.zeros(3, 2)}, r"wrong shape \['0.weight'\]")]:
        with pytest.raises(UsageError, match=f"does not match this net: .*{why}"):
            copy_matching_state(net.state_dict(), bad, "this net")
        assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    copy_matching_state(net.state_dict(), good, "this net")
    assert all(v.dtype == torch.float64 and torch.all(v == 0.5) for v in net.state_dict().values())


def test_deterministic_sampling_does_not_change_how_the_shared_artifact_is_trained(regs, bundle, data, tmp_path):
    """``deterministic`` is inference only and not in the artifact key: training under it must still draw the
    Gumbel masks, or a stochastic run would load weights trained with thresholded masks."""
    weights = []
    for det in (False, True):
        comp = resolve_component("method", "maskunet", {"deterministic": det,
                                                        "train": {"data": str(data), **TINY_TRAIN, "lr": 1e-2}}, regs)
        method = regs.methods.get(comp.kind)(comp.params, comp.name)
        weights.append((method.artifact_location(bundle, _ctx(tmp_path, "auto"))[0],
                        method.prepare(bundle, _ctx(tmp_path / f"det-{det}", "auto")).artifact))
    assert weights[0] == weights[1]  # the same key and the same trained bits


def test_a_vae_trains_on_posterior_samples_unless_latents_is_mean(regs, bundle, data, tmp_path):
    """The released scripts encode with ``latent_dist.sample()``: the default draws from the posterior with the
    trainer's generator; ``latents=mean`` is another artifact, and recorded as a deviation."""
    from mubench.methods.finetune_loss import DiffusionFinetuneLoss
    from mubench.methods.training import deviations

    codec = bundle.codec
    images = torch.rand(2, 3, 32, 32)
    mean = codec.encode(images)
    draws = [codec.encode_sample(images, torch.Generator().manual_seed(s)) for s in (0, 0, 1)]
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])
    dist = codec.vae.encode(images * 2 - 1).latent_dist  # mean + std * eps, eps from the generator
    eps = torch.randn(dist.mean.shape, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(draws[0], (dist.mean + dist.std * eps) * codec.scaling_factor, atol=1e-6)
    assert torch.allclose(mean, dist.mean * codec.scaling_factor, atol=1e-6) and not torch.allclose(draws[0], mean)
    ctx = _ctx(tmp_path, "auto")
    sample, by_mean = _method(regs, "maskunet", data), _method(regs, "maskunet", data, latents="mean")
    assert sample.artifact_location(bundle, ctx)[0] != by_mean.artifact_location(bundle, ctx)[0]
    assert any("latents=mean" in d for d in deviations(by_mean, by_mean.recipe()))
    assert not any("latents" in d for d in deviations(sample, sample.recipe()))
    seen = []
    original = type(codec).encode_sample
    try:
        type(codec).encode_sample = lambda self, x, g: seen.append(g) or original(self, x, g)
        loss = DiffusionFinetuneLoss(bundle, sample.recipe())
        loss(bundle.denoiser, (images, ["a", "b"]), torch.Generator().manual_seed(0))
    finally:
        type(codec).encode_sample = original
    assert len(seen) == 1


def test_latents_is_not_in_the_key_where_the_codec_has_no_posterior(regs, data, tmp_path):
    from mubench.micro.model import MicroModel

    micro = MicroModel.load(MicroModel.Params(), LoadContext(torch.device("cpu"), torch.float32, "random"))
    ctx = _ctx(tmp_path, "auto")
    assert not micro.codec.stochastic
    assert (_method(regs, "maskunet", data).artifact_location(micro, ctx)[0]
            == _method(regs, "maskunet", data, latents="mean").artifact_location(micro, ctx)[0])
    with pytest.raises(UsageError, match="latents must be sample or mean"):
        _method(regs, "maskunet", data, latents="median")


def test_file_options_with_a_registered_source_are_refused_not_ignored(regs, bundle, tmp_path):
    comp = resolve_component("method", "maskunet", {"train": {"data": "micro", "random_flip": False}}, regs)
    method = regs.methods.get(comp.kind)(comp.params, comp.name)
    with pytest.raises(UsageError, match="train.random_flip=False would be ignored"):
        method.artifact_location(bundle, _ctx(tmp_path, "auto"))
    comp = resolve_component("method", "maskunet", {"train": {"data": "micro"}}, regs)
    regs.methods.get(comp.kind)(comp.params, comp.name).artifact_location(bundle, _ctx(tmp_path, "auto"))


def test_full_ft_dropout_sites_are_in_the_training_spec_only_with_dropout():
    """With dropout on, its sites are in the training spec (runs with dropout at different sites would otherwise
    share one artifact key and load each other's weights); without dropout they are not."""
    from mubench.methods.finetune import FullFTParams

    assert FullFTParams(dropout=0.1, dropout_at=["resnet"]).training_spec() != \
        FullFTParams(dropout=0.1, dropout_at=["resnet", "attention"]).training_spec()
    assert FullFTParams(dropout_at=["resnet"]).training_spec() == FullFTParams().training_spec()  # no dropout
