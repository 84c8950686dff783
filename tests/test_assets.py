"""Assets manifest and lookup: explicit path, MUBENCH_HOME, reference caches, HF cache; checksums; the command."""
from __future__ import annotations

import hashlib
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import typer
from typer.testing import CliRunner

from mubench import assets as A
from mubench.commands.assets import assets_command
from mubench.errors import AssetError, UsageError


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("MUBENCH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))  # an empty HF cache
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.delenv("TORCH_HOME", raising=False)
    return tmp_path / "home"


def _put(path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_manifest_covers_what_suites_models_and_scorers_need():
    names = set(A.manifest())
    for needed in ("sd15", "inception-clean", "inception-legacy-pytorch", "clip-vit-l-14", "blip-vqa",
                   "coco2017-captions", "coco2017-val-images", "t2i-compbench-color", "t2i-compbench-shape",
                   "t2i-compbench-texture", "geneval-metadata", "mask2former-hf", "hpsv2.1", "imagereward",
                   "dit-xl-2-256", "pixart-alpha-512", "adm-ref-imagenet256"):
        assert needed in names
    assert {a.name for a in A.select(suite="compbench")} >= {"blip-vqa", "t2i-compbench-color"}
    assert "sd15" not in {a.name for a in A.select(suite="compbench")}
    for a in A.MANIFEST:
        assert a.sha256 is None or (len(a.sha256) >= 8 and all(c in "0123456789abcdef" for c in a.sha256))


def test_missing_asset_message_names_file_places_and_checksum(home):
    with pytest.raises(AssetError) as err:
        A.require("t2i-compbench-color")
    msg = str(err.value)
    assert "t2i-compbench-color" in msg
    assert str(home / "assets" / "data/t2i-compbench/color_val.txt") in msg
    assert "1634259756dbc77d13093d907d414480080ec9790a8c97ad09efaea7b2534f2d" in msg
    assert "nothing is downloaded" in msg
    assert err.value.exit_code == 2


def test_found_in_mubench_home_and_checksum_enforced(home):
    data = b"a red apple\n"
    digest = hashlib.sha256(data).hexdigest()
    asset = A.Asset("probe", "a probe file", "data/probe.txt", sha256=digest)
    bad = A.Asset("probe-bad", "a probe file", "data/probe.txt", sha256="0" * 64)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(A, "MANIFEST", A.MANIFEST + (asset, bad))
        _put(home / "assets" / "data/probe.txt", data)
        assert A.require("probe") == home / "assets" / "data/probe.txt"
        with pytest.raises(AssetError, match="does not match the expected 0000"):
            A.require("probe-bad")
        assert A.require("probe-bad", verify=False).is_file()


def test_prefix_checksum_and_reference_tool_cache(home, tmp_path, monkeypatch):
    # pytorch-fid's file is named by its sha256 prefix; a file with another digest is rejected
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    where = tmp_path / "torch/hub/checkpoints/pt_inception-2015-12-05-6726825d.pth"
    _put(where, b"not the real weights")
    with pytest.raises(AssetError) as err:
        A.require("inception-legacy-pytorch")
    assert str(where) in str(err.value) and "6726825d" in str(err.value)


def test_explicit_override_wins_and_is_not_silently_replaced(home, tmp_path):
    good = _put(tmp_path / "mine" / "inception.pt", b"weights")
    assert A.require("inception-clean", good) == good
    _put(home / "assets" / "fid/inception-2015-12-05.pt", b"weights")
    with pytest.raises(AssetError, match="configured path"):
        A.require("inception-clean", tmp_path / "typo.pt")


def test_folder_assets_need_their_files(home, tmp_path):
    folder = tmp_path / "sd"
    (folder / "unet").mkdir(parents=True)
    (folder / "model_index.json").write_text("{}")
    with pytest.raises(AssetError, match="folder lacks unet/config.json"):
        A.require("sd15", folder)
    for f in ("unet/config.json", "vae/config.json", "text_encoder/config.json", "tokenizer/vocab.json",
              "scheduler/scheduler_config.json"):
        _put(folder / f, b"{}")
    assert A.require("sd15", folder) == folder


def test_hf_cache_lookup_is_local_only(home, tmp_path):
    # a hand-made HF cache entry (the layout huggingface_hub writes) is found without any network
    repo_dir = tmp_path / "hf" / "models--Salesforce--blip-vqa-capfilt-large"
    snap = repo_dir / "snapshots" / "abc123"
    _put(snap / "config.json", b"{}")
    _put(repo_dir / "refs" / "main", b"abc123")
    assert A.require("blip-vqa") == snap
    with pytest.raises(AssetError, match="Hugging Face cache"):
        A.require("clip-vit-l-14")


def test_sha256_cache_reuses_digest(home, tmp_path):
    f = _put(tmp_path / "x.bin", b"abc")
    d1 = A.file_sha256(f)
    assert d1 == hashlib.sha256(b"abc").hexdigest()
    cache = json.loads((home / "asset-hashes.json").read_text())
    assert list(cache.values()) == [d1]


def _cli():
    app = typer.Typer()
    app.command()(assets_command)
    return app


def test_command_list_verify_where(home, tmp_path):
    runner = CliRunner()
    app = _cli()
    res = runner.invoke(app, ["list", "suite=compbench", "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert {r["name"] for r in rows} == {a.name for a in A.select(suite="compbench")}
    assert not any(r["found"] for r in rows)

    res = runner.invoke(app, ["verify", "suite=compbench"])
    assert isinstance(res.exception, AssetError) and res.exception.exit_code == 2
    assert "MISSING" in res.output and "expected sha256" in res.output

    prompts = _put(tmp_path / "p" / "color_val.txt", b"x\n")
    res = runner.invoke(app, ["verify", "suite=compbench", f"assets.t2i-compbench-color={prompts}", "--json"])
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert rows["t2i-compbench-color"]["found"] is False  # wrong checksum
    assert "does not match" in rows["t2i-compbench-color"]["problem"]

    res = runner.invoke(app, ["where", "model=sd15"])
    assert res.exit_code == 0
    assert "stable-diffusion-v1-5" in res.output and str(home) in res.output


def test_command_rejects_bad_input(home):
    runner = CliRunner()
    res = runner.invoke(_cli(), ["frobnicate"])
    assert isinstance(res.exception, UsageError)
    res = runner.invoke(_cli(), ["list", "assets.no-such=1"])
    assert isinstance(res.exception, UsageError) and "no-such" in str(res.exception)
    res = runner.invoke(_cli(), ["list", "colour=red"])
    assert isinstance(res.exception, UsageError)
    res = runner.invoke(_cli(), ["list", "suite=mikro"])
    assert isinstance(res.exception, UsageError) and "did you mean 'micro'" in str(res.exception)


def test_a_built_in_suite_needs_nothing_and_that_is_not_an_error(home):
    runner = CliRunner()
    res = runner.invoke(_cli(), ["list", "suite=micro"])
    assert res.exit_code == 0 and "no external files needed" in res.output
    res = runner.invoke(_cli(), ["verify", "suite=toy", "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout) == []


def test_a_transformers_folder_is_hashed_by_the_weights_from_pretrained_loads(home, tmp_path):
    """The weights hash stands for a scorer's folder in protocols and score keys (its path does not): a folder of
    ``.bin`` weights must hash to its files, not to nothing, and a folder without weights is refused."""
    def sha16(path):
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]

    old, new, empty = tmp_path / "old", tmp_path / "new", tmp_path / "empty"
    for d in (old, new, empty):
        d.mkdir()
        (d / "config.json").write_text("{}")
    (old / "pytorch_model.bin").write_bytes(b"bin weights")
    (new / "model-00002-of-00002.safetensors").write_bytes(b"second")
    (new / "model-00001-of-00002.safetensors").write_bytes(b"first")
    (new / "pytorch_model.bin").write_bytes(b"not loaded: safetensors win")
    assert A.weights_files_hash(old) == sha16(old / "pytorch_model.bin")
    shards = [sha16(new / f"model-0000{k}-of-00002.safetensors") for k in (1, 2)]
    assert A.weights_files_hash(new) == ",".join(shards)
    assert A.weights_files_hash(new, old) == ",".join(shards + [sha16(old / "pytorch_model.bin")])
    with pytest.raises(AssetError, match="holds no"):
        A.weights_files_hash(empty)
