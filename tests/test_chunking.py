"""Batched generation stays bitwise invariant: canonical chunks (mubench.chunking) through the Runner's own stages.

For every method case (each shipped method spec, on the tiny random SD-style bundle) the images a run makes at a
fixed ``chunk`` are bitwise the same whatever ``batch_size`` is (1, 3, 8, 32 images in flight) and however the work
is split over processes (two shards run one after the other into one cache, as ``accelerate launch`` would; the
real two-process launch is in tests/test_run_flow.py). Changing ``chunk`` changes the protocol and the image keys;
scorers give an image the same score whatever it is scored with; the transformer bundles keep the same invariance.
"""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from method_cases import CASES, SAMPLER, prepared_case
from mubench.cache import Cache
from mubench.chunking import SCORE_CHUNK, chunks, chunks_in_flight, default_chunk, pad, shard_chunks
from mubench.config import resolve
from mubench.errors import UsageError
from mubench.runner import Runner, Shard
from mubench.sampler import resolve_sampler, sample_images

CHUNK = 4
LIMIT = 5  # toy suite: 2 images per prompt -> 10 images -> chunks of 4, 4 and 2 (padded to 4)


# --------------------------------------------------------------------------- the chunking rules


def test_chunks_are_cut_from_the_global_order_and_shards_take_whole_chunks():
    order = list(range(10))
    assert chunks(order, 4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert shard_chunks(chunks(order, 4), 0, 2) == [[0, 1, 2, 3], [8, 9]]
    assert shard_chunks(chunks(order, 4), 1, 2) == [[4, 5, 6, 7]]
    assert pad([8, 9], 4) == [8, 9, 9, 9] and pad([1, 2, 3, 4], 4) == [1, 2, 3, 4] and pad([], 4) == []
    assert [chunks_in_flight(bs, 4) for bs in (1, 3, 4, 8, 9, 32)] == [1, 1, 1, 2, 2, 8]
    assert default_chunk(torch.device("cpu")) == 8 and default_chunk(torch.device("cuda")) == 32
    with pytest.raises(ValueError):
        chunks(order, 0)


def test_chunk_is_part_of_the_protocol(regs, bundle):
    per_image = resolve_sampler(bundle, None)
    assert "chunk" not in per_image.as_dict()  # chunk=1: the per-image protocol, its hashes as before chunking
    four, eight = resolve_sampler(bundle, None, chunk=4), resolve_sampler(bundle, None, chunk=8)
    assert four.as_dict()["chunk"] == 4 and four.as_dict() != eight.as_dict()
    with pytest.raises(UsageError, match="chunk must be >= 1"):
        resolve_sampler(bundle, None, chunk=0)

    def run(chunk: str):
        cfg = resolve(["suite=toy", "model=tiny-sd", "limit=2", chunk], regs)
        runner = Runner(cfg, regs)
        prepared = runner.prepare(bundle)
        sampler = resolve_sampler(bundle, None, chunk=cfg.run.chunk or default_chunk(runner.device))
        items = runner.items()
        return (runner.plan(bundle, prepared, sampler, items),
                runner.results(bundle, prepared, sampler, {}, items, {}))

    (p4, r4), (p8, r8), (p_default, _) = run("chunk=4"), run("chunk=8"), run("batch_size=8")
    assert r4["protocol"]["sampler"]["chunk"] == 4 and r4["protocol"]["score_chunk"] == SCORE_CHUNK
    assert r4["protocol_hash"] != r8["protocol_hash"]
    assert {p.key for p in p4}.isdisjoint(p.key for p in p8)  # images made at another chunk are other images
    assert [p.key for p in p_default] == [p.key for p in p8]  # no chunk= on a CPU: 8
    with pytest.raises(UsageError, match="chunk"):
        resolve(["suite=toy", "model=tiny-sd", "chunk=0"], regs)


# --------------------------------------------------------------------------- every method, through the Runner


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    return tmp_path_factory.mktemp("artifacts")


def _images(runner: Runner, bundle, prepared, sampler, planned, cache_dir, batch_size: int,
            shards: tuple[Shard, ...] = (Shard(),)) -> dict[str, bytes]:
    """Run the Runner's generation stage (each shard in turn, one cache) and read back every image's bytes."""
    runner.cache = Cache(cache_dir)
    runner.cfg.run.batch_size = batch_size
    for shard in shards:
        runner.shard = shard
        runner.generate(bundle, prepared, sampler, planned)
    runner.shard = Shard()
    return {p.key: runner.cache.read_sample(p.key).tobytes() for p in planned}


@pytest.mark.parametrize("name", list(CASES))
def test_images_do_not_depend_on_batch_size_or_shards(name, regs, bundle, artifacts, tmp_path):
    _, prepared = prepared_case(regs, bundle, artifacts, name)
    runner = Runner(resolve(["suite=toy", "model=tiny-sd", f"limit={LIMIT}", f"chunk={CHUNK}"], regs), regs)
    sampler = replace(SAMPLER, chunk=CHUNK)
    planned = runner.plan(bundle, prepared, sampler, runner.items())
    assert len(planned) == 2 * LIMIT and len(planned) % CHUNK  # the last chunk is padded

    ref = _images(runner, bundle, prepared, sampler, planned, tmp_path / "bs1", batch_size=1)
    for bs in (3, 8, 32):
        assert _images(runner, bundle, prepared, sampler, planned, tmp_path / f"bs{bs}", bs) == ref, bs
    two = (Shard(rank=1, world=2), Shard(rank=0, world=2))
    assert _images(runner, bundle, prepared, sampler, planned, tmp_path / "shards", 8, two) == ref
    # before the uint8 rounding too: one call over every chunk = one call per chunk, float for float
    def floats(part):
        return sample_images(bundle, prepared, [p.item.prompt for p in part], [p.seed for p in part], sampler)

    assert torch.equal(floats(planned), torch.cat([floats(c) for c in chunks(planned, CHUNK)]))
    # ... and a resumed run regenerates a chunk whole: one image lost, the same bytes come back
    runner.cache.sample_path(planned[-1].key).unlink()
    assert _images(runner, bundle, prepared, sampler, planned, tmp_path / "shards", 3) == ref


# --------------------------------------------------------------------------- scorers


@pytest.mark.parametrize("scorer_name", ["micro-clip", "micro-oracle"])
def test_a_score_does_not_depend_on_what_it_is_scored_with(regs, tmp_path, scorer_name):
    """The Runner's scoring stage with the shipped micro scorers, over micro prompts, at two global orders (so every
    image shares its score call with other images): every image gets bitwise the same score either way."""
    from mubench.runner import PlannedSample, scorer_key
    from mubench.scorers.base import ScorerContext

    cfg = resolve(["suite=micro", "model=micro", f"cache={tmp_path}"], regs)
    runner = Runner(cfg, regs)
    items = runner.items()[: SCORE_CHUNK + 5]
    use = runner.suite.scorers()
    name = next(k for k, u in use.items() if u.scorer == scorer_name)
    cls = regs.scorers.get(scorer_name)
    scorer = cls(cls.Params(**dict(use[name].params)), ScorerContext(torch.device("cpu"), torch.float32, "pretrained"),
                 name)
    images = np.random.default_rng(0).integers(0, 256, size=(len(items), 64, 64, 3), dtype=np.uint8)
    for i, img in enumerate(images):
        runner.cache.write_sample(f"img{i:04d}", img)

    def scores(order: list[int], folder: str) -> dict[int, str]:
        runner.cache = Cache(tmp_path / folder)
        for i in order:
            runner.cache.write_sample(f"img{i:04d}", images[i])
        runner.score({name: scorer}, [PlannedSample(items[i], 0, i, f"img{i:04d}") for i in order])
        planned = {i: PlannedSample(items[i], 0, i, f"img{i:04d}") for i in order}
        return {i: json.dumps(_plain(runner.cache.read_score(scorer_key(scorer), planned[i].score_key)),
                              sort_keys=True) for i in order}

    forward = scores(list(range(len(items))), "forward")
    assert scores(list(reversed(range(len(items)))), "backward") == forward


def _plain(score: dict) -> dict:
    return {k: (np.asarray(v).tolist() if isinstance(v, (np.ndarray, torch.Tensor)) else v) for k, v in score.items()}


def test_a_last_chunk_of_one_is_kept():
    from mubench.chunking import chunks

    assert chunks(list(range(9)), 4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8]]
    assert chunks([0], 4) == [[0]]


def test_unlisted_device_types_default_to_chunks_of_8():
    from mubench.chunking import default_chunk

    assert default_chunk(torch.device("mps")) == 8


def test_chunk_sizes_below_one_are_refused_and_any_sequence_gives_lists():
    """``chunks`` refuses a size below 1 with its own message (0 and negative sizes alike) and, like ``pad``, hands
    back lists whatever sequence it is given (a range, a tuple)."""
    for size in (0, -1, -4):
        with pytest.raises(ValueError, match="chunk size must be >= 1"):
            chunks([1, 2, 3], size)
    assert chunks(range(5), 2) == [[0, 1], [2, 3], [4]]
    assert chunks(("a", "b", "c"), 2) == [["a", "b"], ["c"]]
    assert pad(("a", "b", "c"), 2) == ["a", "b", "c", "c"] and pad((), 2) == []
