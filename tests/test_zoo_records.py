"""The micro zoo's build records and checks: a time-boxed build records where it stopped, the shipped weights are the
EMA ones, caption dropout drops the recipe's fraction, the quality check's prompts cover every pair of the split,
manifests are checked before any file is trusted, and ``mubench zoo`` refuses unknown entries and keys."""
from __future__ import annotations

import json

import pytest
import torch

from mubench.errors import AssetError, UsageError
from mubench.micro import zoo as Z
from mubench.micro.assets import verified_path, verify_all
from zoo_builds import build


def test_a_time_boxed_build_records_the_step_it_stopped_at(tmp_path):
    """A build whose time budget runs out records the steps it really trained, not the recipe's target."""
    manifest = build(tmp_path, steps=4, max_train_minutes=1e-9)  # the budget is spent after the first chunk
    recipe = manifest["recipe"]
    assert recipe["steps"] == 4
    assert recipe["steps_done"] == recipe["stopped_early_at"] == 1
    assert json.loads((tmp_path / "manifest.json").read_text())["recipe"]["steps_done"] == 1


def test_the_written_unet_holds_the_ema_weights(tmp_path):
    """The saved UNet is the EMA of training: a build with another EMA decay writes other weights."""
    raw = build(tmp_path / "raw", ema_decay=0.0)  # decay 0: the EMA is the last raw weights
    ema = build(tmp_path / "ema", ema_decay=0.999)
    assert raw["files"]["unet.safetensors"]["sha256"] != ema["files"]["unet.safetensors"]["sha256"]


def test_caption_dropout_drops_about_p_uncond_of_the_captions(monkeypatch):
    """The training loss replaces a ``p_uncond`` fraction of captions by "" (classifier-free guidance), not the rest."""
    seen = []

    class Stop(Exception):
        pass

    def fake_encode(encoder, tokenizer, captions):
        seen.extend(captions)
        raise Stop

    class Codec:
        def encode_uint8(self, images):
            return torch.zeros(len(images), 1)

    monkeypatch.setattr(Z, "encode_text", fake_encode)
    loss = Z.MicroDiffusionLoss(Codec(), torch.ones(10), 0.1, "v_prediction", None, tokenizer=None)
    module = torch.nn.ModuleDict({"unet": torch.nn.Linear(1, 1), "text_encoder": torch.nn.Linear(1, 1)})
    with pytest.raises(Stop):
        loss(module, ([0] * 400, ["a red circle"] * 400), torch.Generator().manual_seed(0))
    dropped = sum(c == "" for c in seen)
    assert len(seen) == 400 and 20 <= dropped <= 60


def test_single_object_prompts_cover_each_pair_per_pair_times_with_their_article():
    """The build's quality check asks ``per_pair`` images of every (colour, shape) pair, captioned "a"/"an"."""
    pairs = Z.eval_pairs("test")
    prompts = Z.single_object_prompts(3)
    assert len(prompts) == 3 * len(pairs)
    assert sorted({(c, s) for _, c, s in prompts}) == sorted(pairs)
    for caption, colour, shape in prompts:
        article = "an" if colour[0] in "aeiou" else "a"
        assert caption == f"{article} {colour} {shape}"
    assert any(caption.startswith("an ") for caption, _, _ in prompts)


def _zoo(folder, files):
    folder.mkdir(parents=True)
    (folder / "w.bin").write_bytes(b"weights")
    (folder / "manifest.json").write_text(json.dumps({"files": files}))
    return folder


def test_a_file_the_manifest_does_not_list_is_refused(tmp_path):
    """A weights file is trusted only when the manifest lists its checksum."""
    folder = _zoo(tmp_path / "zoo", {})
    with pytest.raises(AssetError, match="w.bin is not listed"):
        verified_path(folder, "w.bin")


def test_a_manifest_without_a_files_table_is_an_asset_error(tmp_path):
    """A manifest with no ``files`` table is said plainly (AssetError), not a crash further on."""
    folder = _zoo(tmp_path / "zoo", ["w.bin"])
    with pytest.raises(AssetError, match="no 'files' table"):
        verify_all(folder)


def test_zoo_command_refuses_unknown_entries_and_recipe_keys(tmp_path):
    """``mubench zoo`` names only its entries; an unknown one or an unknown recipe key is a usage error (exit 2)."""
    from mubench.cli import main
    from mubench.commands import zoo as cmd
    from mubench.micro.dit import DiTBuildParams, build_micro_dit

    with pytest.raises(UsageError, match="unknown zoo entry"):
        cmd._builder("micro-typo")
    with pytest.raises(UsageError, match="unknown build parameter"):
        cmd._recipe(["stepz=3"], "micro")
    assert cmd._recipe(["steps=3"], "micro-dit").steps == 3
    assert cmd._builder("micro-dit") == (DiTBuildParams, build_micro_dit)
    with pytest.raises(SystemExit) as bad:
        main(["zoo", "verify", "micro-typo", "--out", str(tmp_path)])
    assert bad.value.code == 2


def test_zoo_build_no_eval_skips_the_quality_check(tmp_path, monkeypatch):
    """``zoo build --no-eval`` asks the builder for no quality check, into the ``--out`` folder."""
    from mubench.cli import main

    calls = []

    def fake_build(out, params, show_progress=True, echo=True, evaluate=True):
        calls.append((out, params.steps, evaluate))
        return {"quality": {}}

    monkeypatch.setattr(Z, "build_micro", fake_build)
    with pytest.raises(SystemExit) as done:
        main(["zoo", "build", "micro", "steps=5", "--out", str(tmp_path), "--no-eval", "--quiet"])
    assert done.value.code == 0
    assert calls == [(tmp_path, 5, False)]
