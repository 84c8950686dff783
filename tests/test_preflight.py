"""A run lists every missing file at once (suite data, model weights, scorer weights) before any work starts."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from mubench.errors import AssetError
from mubench.preflight import MissingAssets, check_all, check_run_assets, collect


def test_every_missing_file_is_listed_with_the_verify_command(cli, tmp_path):
    proc = cli("run", "suite=compbench", "method=sd", f"suite.prompts_dir={tmp_path}", f"model.path={tmp_path / 'sd'}",
               f"suite.vqa.path={tmp_path / 'blip'}", "--no-progress")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    err = proc.stderr
    assert "5 files this run needs are missing" in err
    for name in ("t2i-compbench-color", "t2i-compbench-shape", "t2i-compbench-texture", "'sd15'", "'blip-vqa'"):
        assert name in err, name
    assert "mubench assets verify suite=compbench model=sd15" in err


def test_check_all_flattens_and_keeps_a_single_error():
    def missing(name):
        def check():
            raise AssetError(f"asset {name!r} was not found")
        return check

    with pytest.raises(AssetError, match="'a' was not found") as one:
        check_all([missing("a"), lambda: None])
    assert not isinstance(one.value, MissingAssets)
    with pytest.raises(MissingAssets) as many:
        check_all([missing("a"), lambda: check_all([missing("b"), missing("c")])], hint="verify them")
    assert [str(e) for e in many.value.errors] == [f"asset {n!r} was not found" for n in "abc"]
    assert str(many.value).endswith("verify them")
    assert collect([lambda: None]) == []


@pytest.mark.parametrize("suite, protocol, asset", [("coco", "clean", "inception-clean"),
                                                    ("coco", "legacy_pytorch", "inception-legacy-pytorch"),
                                                    ("imagenet", None, "inception-clean")])
def test_the_inception_file_of_the_fid_protocol_is_checked_before_any_work(tmp_path, suite, protocol, asset):
    """Two Inception files share suite.fid.weights: the protocol picks one, and it is checked up front (before, it
    was found missing only when the scorers were built, after the model loaded and a method trained)."""
    from mubench.config import resolve
    from mubench.preflight import scorer_checks
    from mubench.registry import load_registries

    args = [f"suite={suite}", "method=sd"] + ([f"suite.fid.protocol={protocol}"] if protocol else [])
    cfg = resolve(args, load_registries())
    from mubench.suites.coco import CocoSuite
    from mubench.suites.imagenet import ImageNetSuite

    s = (CocoSuite if suite == "coco" else ImageNetSuite)(cfg.suite.params, suite)
    use = next(u for u in s.scorers().values() if u.scorer in ("fid-features", "adm-inception"))
    checks = scorer_checks(use.scorer, {**dict(use.params), "weights": str(tmp_path / "missing.pt")})
    assert len(checks) == 1
    with pytest.raises(AssetError, match=asset):
        checks[0]()


def test_a_methods_own_reward_files_and_params_are_checked_before_the_model_loads(cli, tmp_path):
    """maskunet-free runs reward scorers of its own: their missing checkpoints are listed with the suite's files,
    and a wrong reward param key is refused, before the model loads (it used to surface only in prepare)."""
    rewards = (f"method.rewards=[{{scorer: hpsv2, params: {{checkpoint: {tmp_path / 'hps.pt'}}}}}, "
               f"{{scorer: micro-clip, params: {{weights: {tmp_path / 'clip.safetensors'}}}}}]")
    proc = cli("run", "suite=micro", "method=maskunet-free", "limit=1", rewards,
               f"cache={tmp_path / 'cache'}", "--no-progress")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "asset 'hpsv2.1'" in proc.stderr and str(tmp_path / "hps.pt") in proc.stderr
    assert "mubench assets verify suite=micro model=micro method=maskunet-free" in proc.stderr
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.png"))

    wrong_key = cli("run", "suite=micro", "method=maskunet-free", "limit=1",
                    "method.rewards=[{scorer: micro-clip, params: {checkpoint: /x}}]", "--no-progress")
    assert wrong_key.returncode == 2 and "Traceback" not in wrong_key.stderr
    assert "unknown key 'method.rewards[micro-clip].params.checkpoint'" in wrong_key.stderr
    assert "warning" not in wrong_key.stderr  # refused before the suite's size checks, let alone the model


def test_assets_filters_by_method_kind(cli):
    proc = cli("assets", "list", "method=maskunet-free", "--json")
    import json

    assert proc.returncode == 0
    assert {row["name"] for row in json.loads(proc.stdout)} == {"hpsv2.1", "imagereward", "imagereward-med-config",
                                                                 "bert-base-uncased"}
    assert cli("assets", "list", "method=nosuch").returncode == 2


def test_random_weights_need_only_the_suites_data(tmp_path):
    """weights=random builds the model and scorers without their files: missing weights do not stop the run, while
    with pretrained weights the same missing file is named."""
    suite = SimpleNamespace(check_assets=lambda: None)
    params = SimpleNamespace(path=str(tmp_path / "sd"))
    check_run_assets(suite, "micro", "sd15", params, "random")
    with pytest.raises(AssetError, match="sd15"):
        check_run_assets(suite, "micro", "sd15", params, "pretrained")
