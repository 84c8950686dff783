"""micro-CLIP: a tiny contrastive run learns, weights round-trip through safetensors, features are per-image."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mubench.errors import AssetError
from mubench.micro import clip as C
from mubench.micro import data as D
from mubench.micro import scene as S

TINY = C.MicroClipConfig(widths=(8, 16, 16), feature_dim=16, embed_dim=16, text_hidden=16, text_layers=1,
                         text_heads=2, text_mlp=32)


@pytest.fixture(scope="module")
def trained():
    torch.set_num_threads(1)
    losses: list[float] = []
    params = C.MicroClipTrainParams(batch_size=24, lr=3e-3, warmup=5, mix={"single": 1.0})
    model = C.train_micro_clip(steps=60, seed=0, progress=lambda s, n, d: losses.append(d["loss"]),
                               params=params, config=TINY)
    return model, losses


def test_loss_falls(trained):
    model, losses = trained
    assert len(losses) == 60 and all(np.isfinite(losses))
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:5])
    assert model.train_info["params"]["steps"] == 60 and not model.training


def test_training_is_reproducible(trained):
    model, _ = trained
    params = C.MicroClipTrainParams(batch_size=24, lr=3e-3, warmup=5, mix={"single": 1.0})
    again = C.train_micro_clip(steps=3, seed=0, params=params, config=TINY)
    same = C.train_micro_clip(steps=3, seed=0, params=params, config=TINY)
    other = C.train_micro_clip(steps=3, seed=1, params=params, config=TINY)
    sd_a, sd_s, sd_o = again.state_dict(), same.state_dict(), other.state_dict()
    assert all(torch.equal(sd_a[k], sd_s[k]) for k in sd_a)
    assert not all(torch.equal(sd_a[k], sd_o[k]) for k in sd_a)


def test_the_seed_given_in_params_is_the_one_trained_with():
    """``params.seed`` holds unless ``seed=`` overrides it (the micro-art build passes its seed only in params)."""
    params = C.MicroClipTrainParams(batch_size=8, lr=3e-3, warmup=1, mix={"single": 1.0}, seed=3)
    by_params = C.train_micro_clip(steps=2, params=params, config=TINY)
    by_arg = C.train_micro_clip(steps=2, seed=3, params=params, config=TINY)
    overridden = C.train_micro_clip(steps=2, seed=0, params=params, config=TINY)
    assert by_params.train_info["params"]["seed"] == 3 and overridden.train_info["params"]["seed"] == 0
    a, b, c = by_params.state_dict(), by_arg.state_dict(), overridden.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a) and not all(torch.equal(a[k], c[k]) for k in a)


def test_a_retrained_model_saves_to_the_same_bytes_however_long_it_took(tmp_path, monkeypatch):
    """The saved file holds nothing of the wall clock: two trainings of one seed give the same sha256 even when one
    took longer (docs/micro-world.md: a rebuild of bitwise-equal weights has the same sha256)."""
    import hashlib
    import time

    params = C.MicroClipTrainParams(batch_size=8, lr=3e-3, warmup=1, mix={"single": 1.0})
    digests = []
    for k, slow in enumerate((0.0, 7.3)):
        calls: list[int] = []

        def clock(slow=slow, calls=calls) -> float:  # the first reading at 1000 s, every later one `slow` s after
            calls.append(1)
            return 1000.0 + (slow if len(calls) > 1 else 0.0)

        monkeypatch.setattr(time, "time", clock)
        model = C.train_micro_clip(steps=2, seed=0, params=params, config=TINY)
        path = C.save_micro_clip(model, tmp_path / f"c{k}.safetensors")
        digests.append(hashlib.sha256(path.read_bytes()).hexdigest())
    assert digests[0] == digests[1]


def test_save_load_round_trip(trained, tmp_path):
    model, _ = trained
    path = C.save_micro_clip(model, tmp_path / "zoo" / C.CLIP_FILENAME)
    loaded = C.load_micro_clip(path)
    assert loaded.config == model.config and loaded.train_info == model.train_info
    x = torch.rand(3, 3, 32, 32)
    assert torch.equal(loaded.encode_image(x), model.encode_image(x))
    with pytest.raises(AssetError, match="not found"):
        C.load_micro_clip(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(bad))
    with pytest.raises(AssetError, match="not a micro-CLIP"):
        C.load_micro_clip(bad)


def test_saving_the_same_weights_twice_gives_the_same_bytes(trained, tmp_path):
    """A rebuild of bitwise-equal weights must have the same sha256 (the zoo manifest pins it)."""
    import hashlib

    model, _ = trained
    digests = {hashlib.sha256(C.save_micro_clip(model, tmp_path / f"{i}.safetensors", extra={"a": 1, "b": [2]})
                              .read_bytes()).hexdigest() for i in range(4)}
    assert len(digests) == 1


def test_the_shipped_file_layout_still_loads():
    """The shipped micro-clip.safetensors predates the one-key metadata layout; it must keep loading."""
    shipped = C.zoo_dir("micro") / C.CLIP_FILENAME
    if not shipped.is_file():
        pytest.skip("no shipped micro-CLIP in this checkout")
    assert C.load_micro_clip(shipped).config is not None


def test_features_do_not_depend_on_the_batch(trained):
    model, _ = trained
    enc = C.MicroClipEncoder(model)
    imgs = C.uint8_to_float(S.render_batch(D.make_scenes("val", 5)))
    emb, feats = enc.images(imgs)
    emb1, feats1 = enc.images(imgs[2:3])
    assert feats.shape == (5, TINY.feature_dim) and emb.shape == (5, TINY.embed_dim)
    assert torch.allclose(feats[2:3], feats1, atol=1e-5) and torch.allclose(emb[2:3], emb1, atol=1e-5)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(5), atol=1e-5)
    txt = enc.texts(["a red circle", "", "a red circle"])
    assert torch.equal(txt[0], txt[2]) and not torch.equal(txt[0], txt[1])


def test_evaluate_reports_accuracies(trained):
    model, _ = trained
    out = C.evaluate_micro_clip(model, n=60)
    assert set(out) == {"color_acc", "shape_acc", "fill_acc", "retrieval_acc", "mean_cosine", "fid_real_vs_real"}
    assert out["fid_real_vs_real"] >= 0
    assert all(0.0 <= v <= 1.0 for k, v in out.items() if k.endswith("acc"))
    assert out["color_acc"] > 1 / 6  # 60 steps learn colour well above chance


def test_soft_targets_mark_every_true_caption():
    scenes = D.make_scenes("train", 30, {"single": 1.0})
    truth = C._truth(scenes)
    for i, s in enumerate(scenes):
        for j, o in enumerate(scenes):
            assert bool(truth[i, j]) == (i == j or S.describes(s.phrases, s.relation, o.objects))
    assert truth.diagonal().all()
