"""End to end through ``mubench run`` on the tiny random SD-style pipeline and the toy suite."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, run_cli

TINY = ["suite=toy", "model=tiny-sd", "--no-progress"]


def _sha_by_image(out: Path) -> dict:
    return {(s["prompt_id"], s["image_index"]): s["sha256"]
            for s in map(json.loads, (out / "samples.jsonl").read_text().splitlines())}


def test_run_writes_results_and_samples(tmp_path):
    out = tmp_path / "out"
    proc = run_cli("run", *TINY, "limit=2", f"out={out}", "--json")
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)  # --json: stdout holds the results object and nothing else
    on_disk = json.loads((out / "results.json").read_text())
    assert results["run_id"] == on_disk["run_id"]
    for name, m in results["metrics"].items():
        assert set(m) == {"value", "ci_low", "ci_high", "n", "higher_is_better"}, name
        assert m["n"] == 4
    assert results["protocol"]["sampler"]["scheduler"] == "ddim"
    assert results["protocol"]["images_per_prompt"] == 2
    assert results["config"]["run"]["limit"] == 2
    assert "torch" in results["versions"]
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 4
    for s in samples:
        assert {"prompt_id", "image_index", "seed", "path", "sha256", "scores"} <= set(s)
        assert Path(s["path"]).is_file()
    assert len({s["seed"] for s in samples}) == 4


def test_batch_size_does_not_change_images(tmp_path):
    """6 images in chunks of 2: one chunk per call, or two (the last call holding one); every method case is
    checked through the Runner's stages in tests/test_chunking.py."""
    a, b = tmp_path / "bs1", tmp_path / "bs5"
    for out, bs, cache in ((a, 1, tmp_path / "c1"), (b, 5, tmp_path / "c3")):
        proc = run_cli("run", *TINY, "limit=3", "chunk=2", f"batch_size={bs}", f"out={out}", f"cache={cache}")
        assert proc.returncode == 0, proc.stderr
    assert _sha_by_image(a) == _sha_by_image(b)
    ra, rb = (json.loads((d / "results.json").read_text())["metrics"] for d in (a, b))
    assert ra == rb


def test_rerun_reuses_cache_and_rescoring_does_not_regenerate(tmp_path):
    out1, out2 = tmp_path / "o1", tmp_path / "o2"
    assert run_cli("run", *TINY, "limit=2", f"out={out1}").returncode == 0
    cache = Path(os.environ["MUBENCH_HOME"]) / "cache"
    pngs = sorted((cache / "samples").rglob("*.png"))
    mtimes = {p: p.stat().st_mtime_ns for p in pngs}
    # drop the scores: they are recomputed, the images are not
    for f in (cache / "scores").rglob("*.npz"):
        f.unlink()
    assert run_cli("run", *TINY, "limit=2", f"out={out2}").returncode == 0
    assert {p: p.stat().st_mtime_ns for p in pngs} == mtimes
    m1, m2 = (json.loads((d / "results.json").read_text())["metrics"] for d in (out1, out2))
    assert m1 == m2


@pytest.mark.slow
def test_sigkill_midway_then_rerun_gives_same_results(tmp_path):
    args = [*TINY, "limit=6", "batch_size=1", "suite.sampler.steps=12"]
    ref_out, out = tmp_path / "ref", tmp_path / "killed"
    proc = run_cli("run", *args, f"out={ref_out}", f"cache={tmp_path / 'ref-cache'}", f"store={tmp_path / 'r.db'}")
    assert proc.returncode == 0, proc.stderr

    cache = tmp_path / "cache"
    env = dict(os.environ)
    victim = subprocess.Popen([sys.executable, "-m", "mubench", "run", *args, f"out={out}", f"cache={cache}"],
                              cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and len(list((cache / "samples").rglob("*.png"))) < 3:
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    done_before = len(list((cache / "samples").rglob("*.png")))
    assert 3 <= done_before < 12, "the run should have been killed mid-way"
    # temp files a kill leaves are never read as samples: every PNG the cache holds is a whole, readable image
    from PIL import Image

    for png in (cache / "samples").rglob("*.png"):
        with Image.open(png) as im:
            im.load()

    proc = run_cli("run", *args, f"out={out}", f"cache={cache}")
    assert proc.returncode == 0, proc.stderr
    assert _sha_by_image(out) == _sha_by_image(ref_out)
    ref, got = (json.loads((d / "results.json").read_text()) for d in (ref_out, out))
    assert got["metrics"] == ref["metrics"]
    assert len(list((cache / "samples").rglob("*.png"))) == 12


@pytest.mark.slow
@pytest.mark.parametrize("method", ["sd", "random-mask"])  # random-mask: a per-image mask in every chunk row
def test_two_processes_give_the_same_samples(tmp_path, method):
    """torchrun, 2 CPU processes: 6 images in chunks of 2, so rank 0 makes chunks 0 and 2, rank 1 chunk 1; one run
    recorded (a launcher that ran the whole run in each process would record two). Both at one thread per process
    (the thread count is part of the cache keys: CPU sums depend on it)."""
    single, multi = tmp_path / "single", tmp_path / "multi"
    args = [*TINY, "limit=3", "chunk=2", f"method={method}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    assert run_cli("run", *args, f"out={single}", f"cache={tmp_path / 'c1'}", env=env).returncode == 0
    store = tmp_path / "multi.sqlite"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "--log-dir", str(tmp_path / "torchrun-logs"), "-m", "mubench", "run", *args, f"out={multi}", f"cache={tmp_path / 'c2'}",
                           f"store={store}"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _sha_by_image(single) == _sha_by_image(multi)
    m1, m2 = (json.loads((d / "results.json").read_text())["metrics"] for d in (single, multi))
    assert m1 == m2
    from mubench.store import Store

    with Store(store, create=False) as st:
        assert len(st.all_results()) == 1


@pytest.mark.parametrize("args, needle", [
    (["run", "suite=toy", "model=tiny-sd", "method=nope"], "unknown method 'nope'"),
    (["run", "suite=toy", "model=tiny-sd", "batchsize=2"], "did you mean 'batch_size'"),
    (["run", "suite=toy", "model=tiny-sd", "limit=-1"], "positive"),
    (["run", "suite=/does/not/exist.yaml"], "does not exist"),
    (["list", "widgets"], "unknown list kind"),
])
def test_bad_input_exits_2_without_traceback(args, needle):
    proc = run_cli(*args)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr


def test_help_and_list():
    proc = run_cli("run", "--help")
    assert proc.returncode == 0 and "batch_size" in proc.stdout
    proc = run_cli("list", "methods")
    assert proc.returncode == 0 and "sd" in proc.stdout


def test_score_folder_gives_the_run_metrics(tmp_path):
    """Images scored from a folder (another tool's output) give the same metrics as the run that made them."""
    out = tmp_path / "out"
    assert run_cli("run", *TINY, "limit=2", f"out={out}").returncode == 0
    folder = tmp_path / "images"
    for s in map(json.loads, (out / "samples.jsonl").read_text().splitlines()):
        (folder / s["prompt_id"]).mkdir(parents=True, exist_ok=True)
        (folder / s["prompt_id"] / f"{s['image_index']}.png").write_bytes(Path(s["path"]).read_bytes())
    proc = run_cli("score", "suite=toy", "limit=2", f"images={folder}", "label=copied", "--json")
    assert proc.returncode == 0, proc.stderr
    scored = json.loads(proc.stdout)
    made = json.loads((out / "results.json").read_text())
    assert scored["method"] == "copied" and scored["model"] == "external"
    assert scored["metrics"] == made["metrics"]
    proc = run_cli("score", "suite=toy", f"images={tmp_path / 'missing'}")
    assert proc.returncode == 2 and "no such folder" in proc.stderr


def test_training_only_settings_do_not_make_the_images_again(tmp_path):
    """A trained method's artifact (its sha256, in every sample key) stands for its train settings: train.log_every=
    changes neither the artifact key nor the images' keys, so the second run reuses every image."""
    from mubench.config import resolve
    from mubench.registry import load_registries

    regs = load_registries(plugins=False)
    base = ["method=maskunet", "model=micro"]
    a, b = (resolve(base + extra, regs).method for extra in ([], ["method.train.log_every=7"]))
    assert a.fingerprint() != b.fingerprint() and a.fingerprint(trained=True) == b.fingerprint(trained=True)
    assert a.fingerprint(trained=True) != resolve(base + ["method.tau=0.5"], regs).method.fingerprint(trained=True)
    args = ["run", "suite=micro", "method=maskunet", "method.train.steps=2", "method.train.batch_size=2",
            "method.train.checkpoint_every=0", "limit=4", "--no-progress"]
    first = run_cli(*args, f"out={tmp_path / 'a'}")
    assert first.returncode == 0, first.stderr[-2000:]
    again = run_cli(*args, "method.train.log_every=7", f"out={tmp_path / 'b'}")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming: 4 of 4 images are already in the cache" in again.stderr + again.stdout
