"""Specs (methods/, suites/, reports/) and the zoo are found after a non-editable install (from a built wheel)."""
from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import pytest

from conftest import REPO


@pytest.mark.slow
def test_wheel_ships_specs_and_finds_them(tmp_path):
    wheel_dir = tmp_path / "wheel"
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                           str(REPO), "-w", str(wheel_dir)], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0 and "setuptools" in proc.stderr:
        pytest.skip("setuptools is not installed in this environment")
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = wheel_dir.glob("mubench-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    code = ("import json; from mubench.specs import spec_dir, spec_names; "
            "print(json.dumps({k: [str(spec_dir(k)), spec_names(k)] for k in ('methods', 'suites', 'reports/tables')}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    for kind, (folder, names) in found.items():
        assert folder.startswith(str(site)), (kind, folder)  # the installed copy, not the checkout
        shipped = sorted(p.stem for p in (REPO / kind).glob("*.yaml"))
        assert names == shipped, kind
    # the zoo too (mubench._zoo has no __init__.py: importlib.resources gives a MultiplexedPath, not a folder), every
    # entry checked against its manifest
    code = ("import json; from mubench.micro.assets import verify_all, zoo_dir; "
            "print(json.dumps({n: [str(zoo_dir(n)), sorted(verify_all(zoo_dir(n)))] "
            "for n in ('micro', 'micro-dit', 'micro-art')}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    for name, (folder, files) in json.loads(out.stdout).items():
        assert folder == str(site / "mubench" / "_zoo" / name), folder
        shipped = json.loads((REPO / "zoo" / name / "manifest.json").read_text())["files"]
        assert files == sorted(shipped), name
