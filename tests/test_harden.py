"""Hardening: paths checked before work, warnings as messages, file modes, progress lines, interrupts."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import warnings

import pytest

from conftest import REPO, run_cli

TINY = ["suite=toy", "model=tiny-sd", "--no-progress"]


@pytest.mark.parametrize("bad, needle", [
    ("out=/proc/x", "out=/proc/x: cannot write"),
    ("out={file}", "is a file; out names a folder"),
    ("store=/proc/nope/s.sqlite", "store=/proc/nope/s.sqlite: cannot write"),
    ("store={tmp}", "is a folder; store names a file"),
    ("cache={file}/c", "is a file, so nothing can be created under it"),
    ("store={file}", "is not a readable mubench results store"),
    ("out={other}", "holds the results of another run (suite toy, method lora, model tiny-sd)"),
])
def test_unwritable_paths_fail_before_any_generation(tmp_path, bad, needle):
    afile = tmp_path / "afile"
    afile.write_text("x")
    other = tmp_path / "other"  # another run's out folder
    other.mkdir()
    before = json.dumps({"suite": "toy", "method": "lora", "model": "tiny-sd", "metrics": {}})
    (other / "results.json").write_text(before)
    cache = tmp_path / "cache"
    args = [bad.format(file=afile, tmp=tmp_path, other=other)] + ([] if bad.startswith("cache") else [f"cache={cache}"])
    proc = run_cli("run", *TINY, "limit=2", *args)
    assert proc.returncode == 2, proc.stderr
    assert "mubench: error: " in proc.stderr and needle in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list(cache.rglob("*.png")), "nothing may be generated before the paths are checked"
    assert afile.read_text() == "x" and (other / "results.json").read_text() == before


def test_free_space_is_checked(tmp_path):
    from mubench.errors import UsageError
    from mubench.pathcheck import PathNeed, check_path

    with pytest.raises(UsageError, match="MiB free on that disk"):
        check_path(PathNeed("cache", tmp_path / "c", folder=True, bytes_needed=1 << 60))
    check_path(PathNeed("cache", tmp_path / "c", folder=True, bytes_needed=1024))  # fits: no error
    assert not (tmp_path / "c").exists()  # checking creates nothing


def test_the_free_space_estimate_sizes_images_by_the_model_when_the_suite_does_not(tmp_path, regs):
    """The micro world's 32-px images are not estimated as 512-px ones (a 700-image demo would need 550 MB)."""
    from mubench.config import RunConfig
    from mubench.micro.model import MicroParams
    from mubench.models.sd15 import SD15Params
    from mubench.pathcheck import MIN_FREE, image_bytes, run_needs
    from mubench.suites.base import SamplerParams, SuiteParams

    def cache_need(suite, side):
        need = {n.key: n for n in run_needs(RunConfig(), suite, 100, tmp_path, side)}["cache"]
        return need.bytes_needed - MIN_FREE

    micro_side = regs.models.get("micro").image_side(MicroParams())
    assert micro_side == 32 and regs.models.get("sd15").image_side(SD15Params(resolution=768)) == 768
    assert cache_need(SuiteParams(), micro_side) == 100 * image_bytes(32)
    assert cache_need(SuiteParams(sampler=SamplerParams(resolution=256)), micro_side) == 100 * image_bytes(256)
    assert cache_need(SuiteParams(), None) == 100 * image_bytes(512)  # unknown: generous


def test_atomic_files_get_the_umask_mode(tmp_path):
    from mubench.fsutil import atomic_write_text

    old = os.umask(0o022)
    try:
        assert (atomic_write_text(tmp_path / "a.json", "{}").stat().st_mode & 0o777) == 0o644
        os.umask(0o027)
        assert (atomic_write_text(tmp_path / "b.json", "{}").stat().st_mode & 0o777) == 0o640
    finally:
        os.umask(old)


def test_a_write_that_fails_midway_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    from mubench.train.loop import atomic_torch_save

    path = tmp_path / "ckpt.pt"
    atomic_torch_save({"step": 1}, path)
    before = path.read_bytes()
    with pytest.raises(Exception, match="pickle"):
        atomic_torch_save({"step": 2, "hook": lambda: 0}, path)  # torch.save fails after writing part of the file
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_warnings_print_once_per_kind_and_are_recorded():
    from mubench.warnlog import routed_warnings

    lines: list[str] = []
    with routed_warnings(lines.append) as log:
        for _ in range(3):
            warnings.warn("micro suite: something small")
        warnings.warn("another thing", RuntimeWarning)
    assert lines == ["mubench: warning: micro suite: something small", "mubench: warning: another thing"]
    assert [(r["category"], r["count"]) for r in log.records] == [("UserWarning", 3), ("RuntimeWarning", 1)]


def test_progress_lines_have_rate_and_eta():
    from mubench.progress import LineReporter, eta_seconds

    now = [0.0]
    lines: list[str] = []
    rep = LineReporter(interval=30, emit=lines.append, clock=lambda: now[0])
    rep.start("generate", 10)
    now[0] = 20.0
    rep.advance("generate", 4)
    rep.tick()
    assert lines[-1] == "generate: 4/10 images, 0.20/s, elapsed 0:00:20, ETA 0:00:30"
    rep.advance("generate", 6)
    assert lines[-1].endswith("done")
    assert eta_seconds(0, 10, 5.0) is None and eta_seconds(5, 10, 5.0) == 5.0


def test_a_micro_limit_that_leaves_tasks_out_says_which_and_what_limit_covers_them():
    from mubench.config import resolve
    from mubench.registry import load_registries
    from mubench.runner import Runner

    regs = load_registries(plugins=False)

    def task_warnings(limit):
        run = Runner(resolve(["suite=micro", f"limit={limit}"], regs), regs)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run.suite.check_size(run.items())
        return [str(w.message) for w in caught if "covers every task" in str(w.message)]

    [message] = task_warnings(3)
    assert "hold no " in message and "color_attr" in message
    covers = int(re.search(r"limit=(\d+) or more", message).group(1))
    assert task_warnings(covers) == [] and len(task_warnings(covers - 1)) == 1


def test_micro_limit_too_small_for_fid_is_one_warning_before_generation():
    from mubench.config import resolve
    from mubench.registry import load_registries
    from mubench.runner import Runner

    regs = load_registries(plugins=False)
    runner = Runner(resolve(["suite=micro", "limit=1"], regs), regs)
    def fid_warnings(run):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run.suite.check_size(run.items())
        return [str(w.message) for w in caught if "fid skipped" in str(w.message)]

    [message] = fid_warnings(runner)
    suggested = int(re.search(r"limit=(\d+) or more", message).group(1))
    # the suggested limit is the smallest that gives fid its 64 coco images: it passes, one less warns
    for limit, warns in ((suggested, 0), (suggested - 1, 1)):
        run = Runner(resolve(["suite=micro", f"limit={limit}"], regs), regs)
        assert len(fid_warnings(run)) == warns, limit
    from mubench.errors import UsageError

    forced = Runner(resolve(["suite=micro", "limit=1", "suite.fid.force=true"], regs), regs)
    with pytest.raises(UsageError, match="at least 2"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # limit=1 also leaves tasks out: that warning is tested above
        forced.suite.check_size(forced.items())


def test_debug_shows_the_traceback_and_plain_does_not():
    plain = run_cli("run", *TINY, "out=/proc/x")
    debug = run_cli("--debug", "run", *TINY, "out=/proc/x")
    assert plain.returncode == debug.returncode == 2
    assert "Traceback" not in plain.stderr and "Traceback" in debug.stderr


def _wait_for(pred, timeout=120.0):
    deadline = time.time() + timeout
    while time.time() < deadline and not pred():
        time.sleep(0.02)
    return pred()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_says_what_was_kept_and_resume_matches(tmp_path, sig):
    args = [*TINY, "limit=4", "batch_size=1", "suite.sampler.steps=12"]
    ref, out, cache = tmp_path / "ref", tmp_path / "out", tmp_path / "cache"
    assert run_cli("run", *args, f"out={ref}", f"cache={tmp_path / 'rc'}", f"store={tmp_path / 'r.db'}").returncode == 0
    victim = subprocess.Popen([sys.executable, "-m", "mubench", "run", *args, f"out={out}", f"cache={cache}"],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert _wait_for(lambda: len(list((cache / "samples").rglob("*.png"))) >= 2)
    victim.send_signal(sig)
    _, err = victim.communicate(timeout=60)
    assert victim.returncode == 128 + sig, err
    assert "images kept; run the same command to resume" in err and "Traceback" not in err
    proc = run_cli("run", *args, f"out={out}", f"cache={cache}")
    assert proc.returncode == 0, proc.stderr
    assert "are already in the cache and are reused" in proc.stderr
    a, b = (json.loads((d / "results.json").read_text()) for d in (ref, out))
    assert a["metrics"] == b["metrics"]
    sha = lambda d: sorted(json.loads(line)["sha256"] for line in (d / "samples.jsonl").read_text().splitlines())
    assert sha(ref) == sha(out)


def test_damaged_store_and_cache_files_are_named_and_nothing_else_is_lost(tmp_path):
    store, cache = tmp_path / "s.sqlite", tmp_path / "cache"
    base = [*TINY, "limit=2", f"cache={cache}"]
    assert run_cli("run", *base, f"store={store}").returncode == 0
    # a truncated SQLite file: a clear message, no traceback
    broken = tmp_path / "broken.sqlite"
    broken.write_bytes(store.read_bytes()[:100])
    proc = run_cli("run", *base, f"store={broken}")
    assert proc.returncode == 2 and "mubench: error:" in proc.stderr and str(broken) in proc.stderr
    assert "Traceback" not in proc.stderr
    # a truncated PNG: named, with the fix; the other images stay
    pngs = sorted((cache / "samples").rglob("*.png"))
    victim = pngs[0]
    victim.write_bytes(victim.read_bytes()[:40])
    for f in (cache / "scores").rglob("*.npz"):
        f.unlink()  # force a re-score, which reads the PNG
    proc = run_cli("run", *base, f"store={store}")
    assert proc.returncode == 2 and str(victim) in proc.stderr and "delete it" in proc.stderr
    assert all(p.is_file() for p in pngs[1:])
    victim.unlink()
    assert run_cli("run", *base, f"store={store}").returncode == 0


def test_two_runs_writing_one_store_at_once_lose_no_row(tmp_path):
    import sqlite3

    store = tmp_path / "shared.sqlite"
    procs = [subprocess.Popen([sys.executable, "-m", "mubench", "run", *TINY, "limit=1", f"seed={seed}",
                               f"store={store}", f"cache={tmp_path / f'c{seed}'}"], cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    with sqlite3.connect(store) as conn:
        assert conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 2
        assert conn.execute("SELECT COUNT(*) FROM samples").fetchone()[0] == 4


def test_a_full_disk_names_the_file_and_never_calls_a_good_store_damaged(tmp_path, monkeypatch):
    """No space left: the error names what was being written (a write's OSError carries no file name), and a store
    that could not be written is said to be on a full disk, not "not a readable mubench store"."""
    import errno
    import sqlite3

    from mubench.errors import UsageError
    from mubench.fsutil import atomic_write_bytes
    from mubench.store import Store

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(os, "fsync", full)
        with pytest.raises(OSError) as err:
            atomic_write_bytes(tmp_path / "cache" / "img.png", b"x")
    assert err.value.filename == str(tmp_path / "cache" / "img.png") and err.value.errno == errno.ENOSPC
    assert not list((tmp_path / "cache").iterdir())  # the temporary file is gone

    with Store(tmp_path / "s.sqlite"):
        pass

    def setup(self):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(Store, "_setup", setup)
    with pytest.raises(UsageError, match="cannot write the results store .*free space.*not damaged"):
        Store(tmp_path / "s.sqlite")


def test_an_interrupt_before_generation_says_training_checkpoints_are_kept():
    from mubench.commands.run import _kept

    assert "training keeps its checkpoints" in _kept([])


def test_chunk_is_refused_where_a_suite_measures_instead_of_ignored():
    proc = run_cli("run", "suite=efficiency", "model=tiny-sd", "weights=random", "device=meta", "chunk=4",
                   "--no-progress")
    assert proc.returncode == 2 and "chunk= does not apply to suite=efficiency: set suite.images=N" in proc.stderr
