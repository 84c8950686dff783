"""`mubench score images=DIR`: a folder from another tool is checked before anything is recorded — one file per
(prompt, image index), indices the suite makes — and the recorded n, protocol and warnings say what it held."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import run_cli

TINY = ["suite=toy", "model=tiny-sd", "--no-progress"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A toy run's 3 prompts x 2 images in the default naming DIR/<prompt id>/<image index>.png."""
    tmp = tmp_path_factory.mktemp("score")
    out = tmp / "run"
    assert run_cli("run", *TINY, "limit=3", f"out={out}").returncode == 0
    images = tmp / "images"
    for s in map(json.loads, (out / "samples.jsonl").read_text().splitlines()):
        (images / s["prompt_id"]).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(s["path"], images / s["prompt_id"] / f"{s['image_index']}.png")
    return images


def _copy(folder: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "images"
    shutil.copytree(folder, dest)
    return dest


def _score(images: Path, tmp_path: Path, *extra: str):
    out = tmp_path / "scored"
    proc = run_cli("score", "suite=toy", "limit=3", f"images={images}", f"out={out}",
                   f"store={tmp_path / 'store.sqlite'}", "--json", *extra)
    return proc, out


def test_two_files_for_one_image_are_refused_and_nothing_is_recorded(folder, tmp_path):
    images = _copy(folder, tmp_path)
    shutil.copyfile(images / "toy-001" / "1.png", images / "toy-000" / "00.png")  # another file read as image 0
    proc, out = _score(images, tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "are both image 0 of prompt toy-000" in proc.stderr
    assert not out.exists() and not (tmp_path / "store.sqlite").exists()


def test_an_index_the_suite_does_not_make_is_refused(folder, tmp_path):
    images = _copy(folder, tmp_path)
    shutil.copyfile(images / "toy-001" / "1.png", images / "toy-000" / "2.png")
    proc, _ = _score(images, tmp_path)
    assert proc.returncode == 2 and "image index 2 of prompt toy-000 is outside 0..1" in proc.stderr, proc.stderr


def test_a_folder_of_mixed_image_sizes_is_refused_before_scoring(folder, tmp_path):
    """The scorers take a chunk as one tensor: images of two sizes are refused with their sizes named (it was a
    traceback from the scoring loop)."""
    from PIL import Image

    images = _copy(folder, tmp_path)
    Image.open(images / "toy-001" / "0.png").resize((16, 8)).save(images / "toy-001" / "0.png")
    proc, out = _score(images, tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "have 2 sizes" in proc.stderr and "16x8 (e.g. toy-001/0.png)" in proc.stderr
    assert not out.exists() and not (tmp_path / "store.sqlite").exists()


def test_the_protocol_and_warnings_say_what_the_folder_held(folder, tmp_path):
    full, _ = _score(folder, tmp_path)
    assert full.returncode == 0, full.stderr
    whole = json.loads(full.stdout)
    assert whole["protocol"]["images_per_prompt"] == 2 and whole["warnings"] == []
    assert whole["images"] == str(folder.resolve())
    images = _copy(folder, tmp_path / "part")
    for p in images.glob("*/1.png"):
        p.unlink()
    (images / "toy-002").rename(images / "toy-02")  # a misspelt prompt folder
    proc, _ = _score(images, tmp_path / "part")
    assert proc.returncode == 0, proc.stderr
    part = json.loads(proc.stdout)
    assert part["protocol"]["images_per_prompt"] == 1 and part["protocol_hash"] != whole["protocol_hash"]
    said = " ".join(w["message"] for w in part["warnings"])
    assert "1 of 3 prompts have no image" in said and "toy-02/0.png" in said
    assert "have no image" in proc.stderr  # printed too, once


def test_a_full_folder_imports_under_a_limit_and_dot_is_named_by_its_folder(folder, tmp_path):
    proc = run_cli("score", "suite=toy", "limit=1", "images=.", "--json", f"store={tmp_path / 's.sqlite'}",
                   cwd=folder)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert res["method"] == f"external:{folder.name}" and res["images"] == str(folder.resolve())
    assert res["protocol"]["n_prompts"] == 1 and res["warnings"] == []
