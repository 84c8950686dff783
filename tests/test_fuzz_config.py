"""Property-based fuzzing of what users type and write: KEY=VALUE arguments and method/suite YAML specs.

Every input either resolves or raises UsageError (the CLI prints it as ``mubench: error: ...`` and exits 2); any other
exception is a bug the CLI would report as ``unexpected``.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from mubench.config import resolve
from mubench.errors import UsageError
from mubench.registry import load_registries

REGS = load_registries(plugins=False)
FUZZ = settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

KEYS = st.sampled_from(["limit", "seed", "batch_size", "device", "dtype", "out", "train", "weights", "suite",
                        "method", "model", "method.ratio", "suite.images_per_prompt", "suite.sampler.steps",
                        "model.path", "method.train.steps", "suite.fid.force", "nope", "method.nope.deep", ""])
VALUES = st.one_of(
    st.text(max_size=20), st.integers(min_value=-10**30, max_value=10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str), st.sampled_from([
        "", "null", "~", "[1, 2", "{a: 1}", "!!python/object:os.system ls", "!!binary AAAA", "1e999", "-0",
        "true", "yes", "\x00", "\u202e", "${oc.env:HOME}", "${missing}", "'", '"', "a=b", "[[[[]]]]", "0x10"]))
ARGS = st.lists(st.one_of(st.tuples(KEYS, VALUES).map(lambda kv: f"{kv[0]}={kv[1]}"), st.text(max_size=15)),
                max_size=4)


def _resolves_or_usage_error(args: list[str]) -> None:
    try:
        resolve(args, REGS)
    except UsageError as err:
        assert str(err).strip(), "an error needs a message"


@FUZZ
@given(ARGS)
def test_key_value_arguments_resolve_or_are_usage_errors(args):
    _resolves_or_usage_error(["suite=toy", "model=tiny-sd", *args])


YAML_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(min_value=-10**40, max_value=10**40),
                         st.floats(), st.text(max_size=12))
YAML_TREES = st.recursive(YAML_SCALARS, lambda kids: st.one_of(
    st.lists(kids, max_size=3), st.dictionaries(st.one_of(st.sampled_from(
        ["kind", "ratio", "train", "steps", "sampler", "images_per_prompt", "recipes", "description"]),
        st.text(max_size=8)), kids, max_size=4)), max_leaves=12)
RAW = st.one_of(st.binary(max_size=64), st.sampled_from([
    b"", b"\xff\xfe\x00", b"kind: [", b"kind: !!python/object/apply:os.system [ls]", b"kind: sd\n" * 3,
    b"&a [*a]", b"kind: maskunet\nratio: 1e999\n", b"- - - -", b"kind: toy\nimages_per_prompt: 99999999999999999999"]))


def _write_spec(folder: Path, data) -> Path:
    import yaml

    path = folder / "spec.yaml"
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return path


@FUZZ
@given(st.one_of(YAML_TREES, RAW), st.sampled_from(["suite", "method"]))
def test_spec_files_resolve_or_are_usage_errors(data, role):
    base = {"suite": "suite=toy", "method": "method=sd"}
    with tempfile.TemporaryDirectory(prefix="mubench-fuzz-") as folder:  # hypothesis: no function-scoped tmp_path
        path = _write_spec(Path(folder), data)
        _resolves_or_usage_error([f"{role}={path}", "model=tiny-sd"] + [v for k, v in base.items() if k != role])


@pytest.mark.parametrize("data", [b"", b"\x89PNG\x00\x01", b"kind: toy\n\x00"])
def test_cli_reports_broken_specs_with_exit_2(cli, tmp_path, data):
    path = _write_spec(tmp_path, data)
    proc = cli("run", f"suite={path}", "model=tiny-sd")
    assert proc.returncode == 2 and "mubench: error:" in proc.stderr and "Traceback" not in proc.stderr
    assert "unexpected" not in proc.stderr
