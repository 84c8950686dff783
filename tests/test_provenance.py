"""Where a number came from: the git revision recorded with every result says whether the code was that commit."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from mubench.provenance import git_revision, package_versions


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
                          check=True, capture_output=True, text=True).stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_the_revision_is_the_commit_and_says_when_tracked_files_changed(tmp_path):
    assert git_revision(tmp_path) is None  # not a checkout
    _git(tmp_path, "init", "-q")
    assert git_revision(tmp_path) is None  # no commit yet
    (tmp_path / "code.py").write_text("x = 1\n")
    _git(tmp_path, "add", "code.py")
    _git(tmp_path, "commit", "-qm", "first")
    head = _git(tmp_path, "rev-parse", "HEAD")
    assert len(head) == 40 and git_revision(tmp_path) == head
    (tmp_path / "notes.txt").write_text("untracked files are not the code\n")
    assert git_revision(tmp_path) == head
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_revision(tmp_path) == head + "-dirty"
    _git(tmp_path, "add", "code.py")  # staged but not committed: still not the commit
    assert git_revision(tmp_path) == head + "-dirty"


def test_package_versions_name_torch_and_mubench():
    versions = package_versions()
    assert {"python", "mubench", "torch"} <= set(versions)
