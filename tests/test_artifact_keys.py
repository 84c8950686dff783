"""What decides a trained artifact's weights is in its key: the base model's dtype (where not float32), the CPU thread
count (on a CPU only), the content of files a parquet's path cells name; `mixed_precision=no` survives YAML."""
from __future__ import annotations

import copy
import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mubench.config import resolve_component
from mubench.methods.base import MethodContext

TINY_TRAIN = {"steps": 2, "batch_size": 2, "resolution": 32, "lr": 1e-3, "checkpoint_every": 0, "log_every": 1}


def _method(regs, data, spec: str = "maskunet", **train):
    comp = resolve_component("method", spec, {"train": {"data": str(data), **TINY_TRAIN, **train}}, regs)
    return regs.methods.get(comp.kind)(comp.params, comp.name)


def _ctx(root: Path, device: str = "cpu") -> MethodContext:
    return MethodContext(artifacts_dir=root, train="auto", device=torch.device(device), model_name="tiny-sd",
                         show_progress=False)


@pytest.fixture
def threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture
def no_bf16_probe(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # a cuda key without a GPU


def test_the_base_dtype_is_in_the_key_where_it_is_not_float32(regs, bundle, tmp_path, no_bf16_probe):
    from training_fakes import caption_folder

    data = caption_folder(tmp_path / "data")
    bf16 = dataclasses.replace(bundle, denoiser=copy.deepcopy(bundle.denoiser).to(torch.bfloat16))
    method = _method(regs, data)
    for device in ("cpu", "cuda"):
        key32, key16 = (method.artifact_location(b, _ctx(tmp_path, device))[0] for b in (bundle, bf16))
        assert key32 != key16, device
        assert method.keyed_spec(bf16, torch.device(device))["train"]["dtype"] == "bfloat16"
    assert "dtype" not in method.keyed_spec(bundle, torch.device("cuda"))["train"]  # float32 keys stay what they were


def test_the_cpu_thread_count_is_in_cpu_keys_only(regs, bundle, tmp_path, threads, no_bf16_probe):
    from training_fakes import caption_folder

    data = caption_folder(tmp_path / "data")
    method = _method(regs, data)
    keys = {}
    for n in (1, 2):
        torch.set_num_threads(n)
        keys[n] = {d: method.artifact_location(bundle, _ctx(tmp_path, d))[0] for d in ("cpu", "cuda")}
        assert method.keyed_spec(bundle, torch.device("cpu"))["train"]["threads"] == n
    assert keys[1]["cpu"] != keys[2]["cpu"] and keys[1]["cuda"] == keys[2]["cuda"]
    assert "threads" not in method.keyed_spec(bundle, torch.device("cuda"))["train"]


def test_meta_and_training_info_record_dtype_and_threads(regs, bundle, tmp_path, threads):
    from training_fakes import caption_folder

    torch.set_num_threads(1)
    method = _method(regs, caption_folder(tmp_path / "data"), "lora-micro")
    prepared = method.prepare(bundle, _ctx(tmp_path / "artifacts"))
    meta = json.loads((method.artifact_location(bundle, _ctx(tmp_path / "artifacts"))[1] / "meta.json").read_text())
    assert meta["dtype"] == "float32" and meta["threads"] == 1 and meta["spec"]["train"]["threads"] == 1
    assert prepared.info["training"]["dtype"] == "float32" and prepared.info["training"]["threads"] == 1


def test_mixed_precision_no_survives_yaml(regs, bundle, tmp_path):
    from training_fakes import caption_folder

    data = caption_folder(tmp_path / "data")
    as_yaml = _method(regs, data, mixed_precision=False)  # `method.train.mixed_precision=no` on the command line
    assert as_yaml.recipe().mixed_precision == "no"
    assert (as_yaml.artifact_location(bundle, _ctx(tmp_path))[0]
            == _method(regs, data, mixed_precision="no").artifact_location(bundle, _ctx(tmp_path))[0])


def _png(path: Path, value: int) -> None:
    Image.fromarray(np.full((24, 24, 3), value, dtype=np.uint8)).save(path)


@pytest.mark.parametrize("cells", ["strings", "hf-structs"])
def test_a_parquet_of_paths_is_fingerprinted_with_the_files_it_names(tmp_path, cells):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from mubench.assets import file_sha256
    from mubench.config import stable_hash
    from mubench.errors import UsageError
    from mubench.train.data import data_fingerprint, open_training_data

    for i in range(3):
        _png(tmp_path / f"img{i}.png", 40 * i)
    names = [f"img{i}.png" for i in range(3)]
    column = names if cells == "strings" else [{"bytes": None, "path": n} for n in names]
    path = tmp_path / "train.parquet"
    pq.write_table(pa.table({"image": column, "text": ["a red circle"] * 3}), path)
    before = data_fingerprint(str(path))
    assert open_training_data(str(path), batch_size=2, seed=0, resolution=16).fingerprint == before
    _png(tmp_path / "img0.png", 200)  # the same parquet, another image behind a path
    after = data_fingerprint(str(path))
    assert after != before and after.startswith("parquet:")
    (tmp_path / "img1.png").unlink()
    with pytest.raises(UsageError, match="img1.png"):
        data_fingerprint(str(path))
    # a parquet of embedded images keeps the fingerprint rule it had (and its artifacts their keys)
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(buf, format="PNG")
    pq.write_table(pa.table({"image": [{"bytes": buf.getvalue(), "path": "gone.png"}], "text": ["x"]}), path)
    old_rule = "parquet:" + stable_hash({"sha256": file_sha256(path), "image": "image", "caption": "text"}, 20)
    assert data_fingerprint(str(path)) == old_rule

