"""The Runner's bookkeeping around the images: what decides each image's seed and content key, what a resumed run
counts as kept, what each record says, what the protocol of a run and of an imported folder records."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from mubench.config import resolve, stable_hash
from mubench.errors import UsageError
from mubench.runner import Runner
from mubench.sampler import resolve_sampler
from mubench.seeding import image_seed


def _runner(regs, tmp_path, *extra):
    cfg = resolve(["suite=toy", "model=tiny-sd", "limit=2", "chunk=4", "device=cpu", f"cache={tmp_path / 'cache'}",
                   *extra], regs)
    return Runner(cfg, regs)


def _plan(runner, bundle):
    prepared = runner.prepare(bundle)
    sampler = resolve_sampler(bundle, None, chunk=4)
    return runner.plan(bundle, prepared, sampler, runner.items()), prepared, sampler


def test_each_image_gets_its_own_documented_seed_and_index(regs, bundle, tmp_path):
    """Image j of prompt i is seeded from (run seed, suite, prompt id, j), so another tool or a later version
    reproduces it; indices run 0..images_per_prompt-1 per prompt."""
    runner = _runner(regs, tmp_path, "seed=7")
    planned, _, _ = _plan(runner, bundle)
    assert [(p.item.id, p.image_index) for p in planned] == [("toy-000", 0), ("toy-000", 1), ("toy-001", 0),
                                                             ("toy-001", 1)]
    for p in planned:
        assert p.seed == image_seed(7, "toy", p.item.id, p.image_index)
    assert len({p.key for p in planned}) == 4


def test_the_content_key_changes_with_what_changes_the_pixels(regs, bundle, tmp_path, monkeypatch):
    """An image made at another dtype or device, or from another prompt with the same seed, is another cache entry:
    a cache hit never hands back pixels made under other settings (the thread count held equal)."""
    monkeypatch.setattr("mubench.runner.cpu_threads", lambda device_type: 2)
    runner = _runner(regs, tmp_path)
    planned, prepared, sampler = _plan(runner, bundle)
    keys = [p.key for p in planned]
    item = runner.items()[0]
    other_prompt = runner.plan(bundle, prepared, sampler, [replace(item, prompt="a different prompt")])
    assert other_prompt[0].seed == planned[0].seed and other_prompt[0].key != planned[0].key
    runner.dtype = torch.float16
    assert {p.key for p in runner.plan(bundle, prepared, sampler, runner.items())}.isdisjoint(keys)
    runner.dtype = torch.float32
    runner.device = torch.device("meta")
    assert {p.key for p in runner.plan(bundle, prepared, sampler, runner.items())}.isdisjoint(keys)
    runner.device = torch.device("cpu")
    assert [p.key for p in runner.plan(bundle, prepared, sampler, runner.items())] == keys


def test_kept_counts_only_the_images_in_the_cache_and_records_need_every_image(regs, bundle, tmp_path):
    """What an interrupted run reports as kept is what the cache holds; records carry each image's own index and
    seed, and a missing image is an error, never a record pointing at nothing."""
    runner = _runner(regs, tmp_path)
    runner.planned, _, _ = _plan(runner, bundle)
    assert runner.kept() == (0, 4)
    img = np.zeros((8, 8, 3), dtype=np.uint8)
    runner.cache.write_sample(runner.planned[1].key, img)
    assert runner.kept() == (1, 4)
    with pytest.raises(UsageError, match="missing after generation"):
        runner.records({}, runner.planned)
    for p in runner.planned:
        runner.cache.write_sample(p.key, img)
    records = runner.records({}, runner.planned)
    assert [(r.image_index, r.seed) for r in records] == [(p.image_index, p.seed) for p in runner.planned]


def test_the_protocol_records_what_the_numbers_depend_on(regs, bundle, tmp_path):
    """The protocol (and so its hash, which decides what report and compare pool) records the run seed, dtype,
    suite parameters, scorer versions, score chunk and the method's own sampler; the hash covers all of it."""
    def protocol(*extra, prepared_overrides=None):
        runner = _runner(regs, tmp_path, *extra)
        _, prepared, sampler = _plan(runner, bundle)
        if prepared_overrides:
            prepared.sampler_overrides = prepared_overrides
        scorers = runner.scorers()
        res = runner.results(bundle, prepared, sampler, scorers, runner.items(), {})
        assert res["protocol_hash"] == stable_hash(res["protocol"])
        return res["protocol"], res["protocol_hash"]

    p, h = protocol()
    assert p["seed"] == 0 and p["dtype"] == "float32" and p["n_prompts"] == 2 and p["score_chunk"] > 0
    assert p["suite_params"]["images_per_prompt"] == 2
    assert p["scorers"]["pixels"] and "method_sampler" not in p
    assert protocol("seed=3")[1] != h
    assert protocol("suite.images_per_prompt=3")[1] != h
    q, hq = protocol(prepared_overrides={"steps": 3})
    assert q["method_sampler"] == {"steps": 3} and hq != h


def _png(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((16, 16, 3), value, dtype=np.uint8)).save(path)


def test_a_partial_folder_records_what_it_held(regs, tmp_path):
    """Scoring a folder of another tool's images: n_prompts counts the prompts with images, images_per_prompt says
    the range the folder held, each sample keeps its own image index, and the protocol hash is that of the
    recorded protocol (so it pools only with folders that held the same)."""
    folder = tmp_path / "imgs"
    _png(folder / "toy-000" / "0.png", 10)
    _png(folder / "toy-000" / "1.png", 200)
    _png(folder / "toy-001" / "1.png", 90)
    cfg = resolve(["suite=toy", "limit=3", "device=cpu", "method=sd", "model=tiny-sd", f"cache={tmp_path / 'c'}",
                   f"store={tmp_path / 's.sqlite'}"], regs)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = Runner(cfg, regs).execute_external(folder, "ext")
    proto = out.results["protocol"]
    assert proto["n_prompts"] == 2
    assert proto["images_per_prompt"] == "1-2"
    assert out.results["protocol_hash"] == stable_hash(proto)
    assert sorted((s["prompt_id"], s["image_index"]) for s in out.samples) == [("toy-000", 0), ("toy-000", 1),
                                                                               ("toy-001", 1)]
    bright = {(s["prompt_id"], s["image_index"]): s["scores"]["pixels"]["brightness"] for s in out.samples}
    assert bright[("toy-000", 0)] < bright[("toy-001", 1)] < bright[("toy-000", 1)]


def test_a_suite_fixed_seed_is_used_per_image(regs, bundle, tmp_path, monkeypatch):
    """Suites that reproduce a reference's seeds (image j: 42 + j) get that seed for every image, and every image
    of a prompt its own."""
    runner = _runner(regs, tmp_path)
    monkeypatch.setattr(runner.suite, "image_seed", lambda item, j, run_seed: 42 + j)
    planned, _, _ = _plan(runner, bundle)
    assert [p.seed for p in planned] == [42, 43, 42, 43]
    assert len({p.key for p in planned}) == 4


def test_a_resumed_run_completes_a_chunk_it_had_partly_made(regs, bundle, tmp_path):
    """A chunk with some of its images in the cache is generated again (whole), so no image of the run is missing
    and the images it already had are kept as they were."""
    runner = _runner(regs, tmp_path, "suite.sampler.steps=2")
    planned, prepared, sampler = _plan(runner, bundle)
    kept = np.full((sampler.resolution, sampler.resolution, 3), 7, dtype=np.uint8)
    runner.cache.write_sample(planned[0].key, kept)
    runner.generate(bundle, prepared, sampler, planned)
    assert all(runner.cache.has_sample(p.key) for p in planned)
    assert np.array_equal(runner.cache.read_sample(planned[0].key), kept)


def test_scoring_resumes_a_partly_scored_chunk(regs, bundle, tmp_path):
    """Scores cached for some images of a score chunk do not stand for the others: every image ends up scored."""
    from mubench.cache import scorer_key

    runner = _runner(regs, tmp_path)
    planned, _, _ = _plan(runner, bundle)
    for i, p in enumerate(planned):
        runner.cache.write_sample(p.key, np.full((16, 16, 3), 40 * i, dtype=np.uint8))
    scorers = runner.scorers()
    runner.score(scorers, planned[:1])
    runner.score(scorers, planned)
    skey = scorer_key(scorers["pixels"])
    assert all(runner.cache.has_score(skey, p.score_key) for p in planned)
    assert len(runner.records(scorers, planned)) == 4


def test_the_free_space_check_counts_every_image_of_the_run(regs, tmp_path, monkeypatch):
    """The cache must have room for every image the run makes (prompts x images per prompt), not one prompt's."""
    from mubench.pathcheck import MIN_FREE, image_bytes

    seen = []
    monkeypatch.setattr("mubench.runner.check_paths", lambda needs: seen.extend(needs))
    runner = _runner(regs, tmp_path, "limit=3")
    runner.preflight(runner.items())
    cache = {n.key: n for n in seen}["cache"]
    side = runner.suite.params.sampler.resolution or regs.models.get("tiny-sd").image_side(
        regs.models.get("tiny-sd").Params())
    assert cache.bytes_needed == MIN_FREE + 3 * 2 * image_bytes(side)

