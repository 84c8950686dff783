"""Config resolution: overrides, spec lookup, close-match errors."""
from __future__ import annotations

import pytest

from mubench.config import parse_overrides, plain, resolve, to_plain
from mubench.errors import UsageError
from mubench.registry import load_registries


@pytest.fixture(scope="module")
def regs():
    return load_registries()


def test_parse_overrides_types():
    pairs = parse_overrides(["a=1", "b=0.5", "c=true", "d=hello", "e=", "f=none", "g=[1, 2]", "h=1e-3", "i=0123",
                             "j=no", "k='none'", "l=1_000"])
    assert [(k, plain(v)) for k, v in pairs] == [
        ("a", 1), ("b", 0.5), ("c", True), ("d", "hello"), ("e", ""), ("f", None), ("g", [1, 2]), ("h", 1e-3),
        ("i", 123), ("j", False), ("k", "none"), ("l", 1000)]  # decimal integers (YAML 1.1 read 0123 as octal 83); quotes: text
    assert [str(v) for _, v in pairs[:6]] == ["1", "0.5", "true", "hello", "", "none"]  # and the text as typed


@pytest.mark.parametrize("arg, field, expected", [
    ("compile=none", "compile", "none"),  # the documented default could not be named (text field, not None)
    ("out=0123", "out", "0123"),  # not octal 83
    ("out=1.10", "out", "1.10"),
    ("out=on", "out", "on"),
    ("out=/tmp/run #2", "out", "/tmp/run #2"),  # not a comment
    ("out=2024-01-01", "out", "2024-01-01"),  # not a date
    ("out=none", "out", None),  # an optional text field: none is no value
    ("out='none'", "out", "none"),
    ("seed=0123", "seed", 123),
    ("limit=5", "limit", 5),
])
def test_text_fields_get_the_text_as_typed(regs, arg, field, expected):
    assert getattr(resolve([arg], regs).run, field) == expected


def test_text_values_in_component_overrides(regs):
    cfg = resolve(["method=maskunet", "model=micro", "method.train.mixed_precision=no", "model.path=/w/sd #1"],
                  regs)
    assert cfg.method.params.train.mixed_precision == "no"  # YAML read it as False
    assert cfg.model.params.path == "/w/sd #1"
    cfg = resolve(["suite=toy", "model=tiny-sd", "suite.sampler.steps=0012"], regs)
    assert cfg.suite.params.sampler.steps == 12


def test_resolve_defaults_and_overrides(regs):
    cfg = resolve(["suite=toy", "model=tiny-sd", "limit=2", "suite.images_per_prompt=3",
                   "suite.sampler.steps=7", "model.seed=5"], regs)
    assert cfg.run.limit == 2
    assert cfg.suite.params.images_per_prompt == 3
    assert cfg.suite.params.sampler.steps == 7
    assert cfg.model.params.seed == 5
    assert cfg.method.name == "sd" and cfg.method.kind == "sd"


@pytest.mark.parametrize("args, needle", [
    (["method=sdd"], "did you mean 'sd'"),
    (["suite=tyo"], "did you mean 'toy'"),
    (["model=tiny-sdd"], "did you mean 'tiny-sd'"),
    (["limt=3"], "did you mean 'limit'"),
    (["suite=toy", "suite.images_per_promt=3"], "did you mean 'suite.images_per_prompt'"),
    (["suite=toy", "suite.sampler.stpes=3"], "suite.sampler.steps"),
    (["method=lora", "method.rank=4"], "or 'method.r'"),  # peft's spelling, which difflib finds too far
    (["limit=abc"], "limit"),
    (["limit=0"], "positive"),
    (["device=gpu"], "device"),
    (["train=sometimes"], "auto, never, force"),
    (["nokey"], "KEY=VALUE"),
    # a parameter of the run's suite, method or model given at the top level is told its full name
    (["steps=3"], "did you mean 'suite.sampler.steps'?"),
    (["method=random-mask", "ratio=0.3"], "did you mean 'method.ratio'?"),
    (["method=lora", "lr=1e-3"], "did you mean 'method.train.lr'?"),
    (["cross_attention_dim=8"], "did you mean 'model.cross_attention_dim'?"),
])
def test_bad_input_is_a_usage_error(regs, args, needle):
    base = ["suite=toy", "model=tiny-sd"]
    with pytest.raises(UsageError) as err:
        resolve(base + args, regs)
    assert needle in str(err.value)


def test_user_yaml_spec(tmp_path, regs):
    spec = tmp_path / "mine.yaml"
    spec.write_text("kind: toy\nimages_per_prompt: 4\nprompts: ['a cat']\n")
    cfg = resolve([f"suite={spec}", "model=tiny-sd"], regs)
    assert cfg.suite.name == "mine" and cfg.suite.params.images_per_prompt == 4
    assert cfg.suite.params.prompts == ["a cat"]


def test_a_bad_key_in_a_spec_file_names_the_file_and_one_on_the_command_line_does_not(tmp_path, regs):
    spec = tmp_path / "mine.yaml"
    spec.write_text("kind: toy\nname: mine\nprompts: ['a cat']\n")
    with pytest.raises(UsageError, match=f"^{spec}: unknown key 'suite.name'"):
        resolve([f"suite={spec}", "model=tiny-sd"], regs)
    spec.write_text("kind: toy\nprompts: ['a cat']\n")
    with pytest.raises(UsageError, match="^unknown key 'suite.nmae'"):
        resolve([f"suite={spec}", "model=tiny-sd", "suite.nmae=1"], regs)


def test_yaml_is_loaded_safely(tmp_path, regs):
    spec = tmp_path / "evil.yaml"
    spec.write_text("kind: toy\nprompts: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(UsageError, match="not valid YAML"):
        resolve([f"suite={spec}"], regs)


def test_registry_lazy_and_plugins(regs):
    from mubench.registry import Registry

    r: Registry = Registry("thing")
    r.register("json-dumps", "json:dumps")
    import json

    assert r.get("json-dumps") is json.dumps
    with pytest.raises(UsageError, match="did you mean 'json-dumps'"):
        r.get("json-dump")
    with pytest.raises(ValueError):
        r.register("json-dumps", "json:loads")


def test_a_registered_params_class_is_the_plugins_own_and_loads_without_importing_it(regs):
    """Every built-in model and method names its ``Params`` apart from its module: that must be the class the plug-in
    itself uses, and resolving with it must not import the plug-in (nor torch)."""
    import json
    import subprocess
    import sys
    from types import SimpleNamespace

    from mubench.registry import Registry

    named = [(kind, name) for kind in ("models", "methods") for name in getattr(regs, kind).names()]
    assert len(named) == 13
    for kind, name in named:
        registry = getattr(regs, kind)
        assert name in registry._params, f"{kind} {name!r} names no torch-free Params"
        assert registry.params(name) is registry.get(name).Params, (kind, name)
    r: Registry = Registry("thing")
    r.register("plain", SimpleNamespace(Params=dict))  # no params= given: the target's own Params
    assert r.params("plain") is dict
    with pytest.raises(UsageError, match="did you mean 'plain'"):
        r.params("plai")
    probe = ("import json, sys\nfrom mubench.registry import load_registries\nfrom mubench.config import resolve\n"
             "resolve(['model=dit', 'method=maskunet-free', 'suite=micro'], load_registries())\n"
             "print(json.dumps(sorted(m for m in ('torch', 'diffusers', 'mubench.methods.maskunet_free', "
             "'mubench.models.dit') if m in sys.modules)))")
    done = subprocess.run([sys.executable, "-W", "ignore", "-c", probe], capture_output=True, text=True, timeout=120)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [], done.stderr


def test_a_file_in_the_working_folder_does_not_shadow_a_shipped_spec(regs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "random-mask").write_text("kind: random-mask\nratio: 0.25\n")  # a spec without a suffix
    assert resolve(["method=random-mask"], regs).method.source.endswith("methods/random-mask.yaml")
    mine = resolve(["method=./random-mask"], regs).method  # a path says it is one
    assert mine.params.ratio == 0.25 and resolve(["method=random-mask"], regs).method.params.ratio != 0.25


def test_every_part_of_an_image_seed_matters_and_a_value_may_hold_equals_signs():
    import hashlib

    from mubench.seeding import image_seed

    seeds = {image_seed(r, s, p, j) for r in (0, 1) for s in ("micro", "coco") for p in ("a/1", "a/2") for j in (0, 1)}
    assert len(seeds) == 16  # run seed, suite, prompt id and image index each change the stream
    blob = "3\x1fmicro\x1fcoco/0001\x1f2".encode()  # the documented derivation, as a golden value
    assert image_seed(3, "micro", "coco/0001", 2) == int.from_bytes(hashlib.sha256(blob).digest()[:8], "little") \
        & ((1 << 63) - 1)
    assert [(k, str(v)) for k, v in parse_overrides(["suite.prompt=a=b", "out=x=y=z"])] == [
        ("suite.prompt", "a=b"), ("out", "x=y=z")]  # the first = splits key from value


def test_protocols_and_keys_null_a_data_location_and_drop_a_speed_setting():
    """A path whose content is pinned elsewhere (LOCATION_ONLY) is recorded as null, as at its default: the same data
    mounted elsewhere keeps its protocol; a speed-only setting is left out; every other field stays as set."""
    from mubench.scorers.fid_features import FidFeaturesParams
    from mubench.suites.compbench import CompBenchParams

    moved = to_plain(CompBenchParams(prompts_dir="/mnt/b/t2i", images_per_prompt=3), results_only=True)
    assert moved == to_plain(CompBenchParams(images_per_prompt=3), results_only=True)
    assert moved["prompts_dir"] is None and moved["images_per_prompt"] == 3
    assert to_plain(CompBenchParams(prompts_dir="/mnt/b/t2i"))["prompts_dir"] == "/mnt/b/t2i"  # the config keeps it
    fid = to_plain(FidFeaturesParams(weights="/w/inception.pt", num_workers=4, resolution=256), results_only=True)
    assert fid["weights"] is None and "num_workers" not in fid and fid["resolution"] == 256


def test_a_negative_run_seed_is_another_run():
    from mubench.seeding import image_seed

    assert image_seed(-1, "micro", "a/1", 0) != image_seed(1, "micro", "a/1", 0)


def test_null_path_reaches_into_lists_and_leaves_missing_paths_alone():
    from mubench.config import null_path

    plain_params = {"rewards": [{"params": {"checkpoint": "/a", "other": 1}}, {"params": {}}], "tau": 1.0}
    for missing in ("rewards.2.params.checkpoint", "rewards.1.params.checkpoint", "nothing.here", "tau.x"):
        null_path(plain_params, missing)
    assert plain_params == {"rewards": [{"params": {"checkpoint": "/a", "other": 1}}, {"params": {}}], "tau": 1.0}
    null_path(plain_params, "rewards.0.params.checkpoint")
    assert plain_params["rewards"][0]["params"] == {"checkpoint": None, "other": 1}


def test_an_option_for_a_component_without_options_says_it_has_none(regs):
    """``method.ratio=...`` with ``method=sd`` (a method without options) says that the method takes no options,
    instead of listing an empty set of valid keys; a method with options lists them."""
    with pytest.raises(UsageError, match="unknown key 'method.ratio'\n  this method has no options") as err:
        resolve(["suite=toy", "model=tiny-sd", "method=sd", "method.ratio=0.5"], regs)
    assert "valid keys" not in str(err.value)
    with pytest.raises(UsageError, match="valid keys: .*method.ratio"):
        resolve(["suite=toy", "model=tiny-sd", "method=random-mask", "method.ratoi=0.5"], regs)
