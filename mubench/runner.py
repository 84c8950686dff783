"""The one flow: config → model → method.prepare → generate → score → aggregate → store.

Each stage reads only what the stage before it wrote (the content-addressed caches), so a run killed at any point
resumes when the same command is run again, re-scoring happens without regenerating, and several processes
(``accelerate launch``) can share the work: each generates and scores the prompts of its shard, the main process
aggregates everything from the caches once all are done.
"""
from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass
from functools import cached_property
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from PIL import Image

from .cache import Cache, cpu_threads, scorer_key, to_uint8
from .chunking import SCORE_CHUNK, chunks, chunks_in_flight, default_chunk, pad, shard_chunks
from .outputs import RunOutput, sample_row
from .config import ResolvedConfig, build_params, stable_hash, to_plain
from .devices import resolve_device, resolve_dtype
from .paths import cache_root
from .errors import UsageError
from .methods.base import Method, MethodContext, Prepared
from .imported import checked_images, images_per_prompt
from .pathcheck import check_out_folder, check_paths, check_run_files, run_needs
from .progress import Progress
from .models.base import LoadContext, ModelBundle
from .registry import Registries
from .sampler import SamplerConfig, compile_refusal, compile_toolchain_missing, resolve_sampler, sample_images
from .scorers.base import Scorer, ScorerContext
from .seeding import image_seed
from .provenance import git_revision, package_versions
from .suites.base import MeasureContext, PromptItem, SampleRecord, ScorerUse, Suite

@dataclass
class Shard:
    """This process's share of the work: prompts whose position % world == rank."""

    rank: int = 0
    world: int = 1
    barrier: Callable[[], None] = lambda: None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@dataclass
class PlannedSample:
    item: PromptItem
    image_index: int
    seed: Optional[int]  # None for images made by another tool
    key: str

    @cached_property
    def score_key(self) -> str:
        """Where this image's scores are cached: its sample key plus what scorers read of its prompt (text and meta),
        which the sample key alone does not fix (the same pixels imported under two prompts; a micro prompt's
        reference count, which changes its FID reference features)."""
        return f"{self.key}-{stable_hash({'prompt': self.item.prompt, 'meta': self.item.meta}, length=12)}"


class Runner:
    """Holds the resolved pieces of one run; ``execute()`` runs every stage."""

    def __init__(self, cfg: ResolvedConfig, regs: Registries, shard: Optional[Shard] = None,
                 progress: Optional[Progress] = None) -> None:
        self.cfg = cfg
        self.regs = regs
        self.shard = shard or Shard()
        self.progress = progress or Progress()
        self.device = resolve_device(cfg.run.device)
        self.dtype = resolve_dtype(cfg.run.dtype, self.device)
        self.cache = Cache(cache_root(cfg.run.cache))
        self.suite: Suite = regs.suites.get(cfg.suite.kind)(cfg.suite.params, cfg.suite.name)
        self.timing: dict[str, float] = {}
        self.planned: list[PlannedSample] = []  # set once planned: what an interrupt reports as kept

    # stages --------------------------------------------------------------------------------------------------
    def items(self) -> list[PromptItem]:
        items = self.suite.items()
        if self.cfg.run.limit is not None:
            items = items[: self.cfg.run.limit]
        if not items:
            raise UsageError(f"suite {self.cfg.suite.name!r} has no prompts")
        return items

    def preflight(self, items: list[PromptItem], method: Optional[str] = None, model: Optional[str] = None,
                  sized: bool = True) -> None:
        """Fail before the work: ``out=`` holding another run's results (of another suite, ``method`` or ``model``:
        by default the config's), every path the run writes (type, writable, free space), then (``sized``) the
        suite's sizes."""
        check_out_folder(self.cfg.run.out, self.cfg.suite.name, method or self.cfg.method.name,
                         model or self.cfg.model.name)
        model_side = self.regs.models.get(self.cfg.model.kind).image_side(self.cfg.model.params) if sized else None
        check_paths(run_needs(self.cfg.run, self.suite.params, len(items), self.cache.root, model_side))
        check_run_files(self.cfg.run)
        if sized:
            self.suite.check_size(items)

    def kept(self) -> tuple[int, int]:
        """(finished images in the cache, planned images) of this run so far."""
        return sum(self.cache.has_sample(p.key) for p in self.planned), len(self.planned)

    def check_assets(self) -> None:
        """Every missing file of the suite, the model, the scorers and the method's own scorers (maskunet-free's
        rewards, whose params are checked here too) at once, before any work (exit 2)."""
        from .preflight import check_run_assets

        method = self.regs.methods.get(self.cfg.method.kind)(self.cfg.method.params, self.cfg.method.name)
        own = {name: ScorerUse(scorer, params) for name, (scorer, params) in method.scorer_params().items()}
        check_run_assets(self.suite, self.cfg.suite.name, self.cfg.model.name, self.cfg.model.params,
                         self.cfg.run.weights, {**self.suite.scorers(), **own},
                         method=self.cfg.method.kind if own else None)

    def load_model(self) -> ModelBundle:
        model_cls = self.regs.models.get(self.cfg.model.kind)
        return model_cls.load(self.cfg.model.params, LoadContext(self.device, self.dtype, self.cfg.run.weights))

    def method(self) -> tuple[Method, MethodContext]:
        """The run's method and the context it is prepared with."""
        method_cls = self.regs.methods.get(self.cfg.method.kind)
        method = method_cls(self.cfg.method.params, self.cfg.method.name)
        ctx = MethodContext(artifacts_dir=self.cache.root / "artifacts", train=self.cfg.run.train,
                            device=self.device, dtype=self.dtype, seed=self.cfg.run.seed,
                            model_name=self.cfg.model.name, weights=self.cfg.run.weights,
                            progress=self.progress)
        return method, ctx

    def refuse_compile(self, bundle: Optional[ModelBundle] = None) -> None:
        """``compile=`` for a method whose denoiser call torch.compile cannot trace, or without the toolchain
        torch.compile needs on this device: refused before anything is loaded, and with ``bundle`` (what only the
        loaded denoiser tells) before the method prepares (trains)."""
        mode = self.cfg.run.compile
        if mode == "none":
            return
        method = self.regs.methods.get(self.cfg.method.kind)(self.cfg.method.params, self.cfg.method.name)
        if not (method.compile_safe if bundle is None else method.compiles_on(bundle)):
            raise UsageError(compile_refusal(mode, self.cfg.method.name))
        missing = compile_toolchain_missing(self.device)
        if missing is not None:
            raise UsageError(missing)

    def prepare(self, bundle: ModelBundle) -> Prepared:
        self.refuse_compile(bundle)
        method, ctx = self.method()
        return method.prepare(bundle, ctx)

    def scorers(self) -> dict[str, Scorer]:
        out = {}
        ctx = ScorerContext(self.device, torch.float32, self.cfg.run.weights)
        for name, use in self.suite.scorers().items():
            cls = self.regs.scorers.get(use.scorer)
            out[name] = cls(build_params(cls.Params, dict(use.params), where=f"scorer {name}: "), ctx, name)
        return out

    def plan(self, bundle: ModelBundle, prepared: Prepared, sampler: SamplerConfig,
             items: list[PromptItem]) -> list[PlannedSample]:
        """Every image of the run with its seed and content key (what decides its pixels)."""
        run = self.cfg.run
        base = {
            "model": bundle.fingerprint, "method": self.cfg.method.fingerprint(trained=prepared.artifact is not None,
                                                                     location_params=prepared.location_params),
            "artifact": prepared.artifact,
            "sampler": sampler.as_dict(), "dtype": str(self.dtype), "device": self.device.type,
            "batching": "per-image" if sampler.chunk == 1 else "canonical-chunks",
        }
        threads = cpu_threads(self.device.type)
        if threads is not None:
            base["threads"] = threads
        if bundle.extras.get("guidance_channels") is not None:  # DiT's cfg_channels: not in its (artifact) fingerprint
            base["guidance_channels"] = bundle.extras["guidance_channels"]
        if prepared.weights_used:  # only where set, so the keys of every other method stay what they were
            base["weights_used"] = dict(sorted(prepared.weights_used.items()))
        planned = []
        ipp = getattr(self.suite.params, "images_per_prompt", 1)
        for item in items:
            for j in range(ipp):
                seed = self.suite.image_seed(item, j, run.seed)
                if seed is None:
                    seed = image_seed(run.seed, self.cfg.suite.name, item.id, j)
                key = stable_hash({**base, "prompt": item.prompt, "seed": seed}, length=32)
                planned.append(PlannedSample(item, j, seed, key))
        return planned

    def my_chunks(self, planned: list[PlannedSample], size: int) -> list[list[PlannedSample]]:
        """This process's whole chunks of the run's global sample order (:mod:`mubench.chunking`)."""
        return shard_chunks(chunks(planned, size), self.shard.rank, self.shard.world)

    def generate(self, bundle: ModelBundle, prepared: Prepared, sampler: SamplerConfig,
                 planned: list[PlannedSample]) -> None:
        """Every chunk of this process with an image missing from the cache, ``batch_size // chunk`` chunks per
        call; a chunk is always generated whole, so a resumed run makes the same bits as an uninterrupted one."""
        todo = [c for c in self.my_chunks(planned, sampler.chunk) if not all(self.cache.has_sample(p.key) for p in c)]
        self.progress.start("generate", sum(len(c) for c in todo))
        per_call = chunks_in_flight(self.cfg.run.batch_size, sampler.chunk)
        for start in range(0, len(todo), per_call):
            batch = [p for c in todo[start:start + per_call] for p in c]
            images = sample_images(bundle, prepared, [p.item.prompt for p in batch], [p.seed for p in batch], sampler)
            for p, img in zip(batch, to_uint8(images)):
                if not self.cache.has_sample(p.key):
                    self.cache.write_sample(p.key, img)
            self.progress.advance("generate", len(batch))

    def score(self, scorers: dict[str, Scorer], planned: list[PlannedSample]) -> None:
        """Each scorer sees this process's chunks of :data:`SCORE_CHUNK` images of the global order (padded with
        copies of the last), so an image's score does not depend on what it was scored with."""
        for name, scorer in scorers.items():
            skey = scorer_key(scorer)
            todo = [c for c in self.my_chunks(planned, SCORE_CHUNK)
                    if not all(self.cache.has_score(skey, p.score_key) for p in c)]
            self.progress.start(f"score:{name}", sum(len(c) for c in todo))
            for part in todo:
                batch = pad(part, SCORE_CHUNK)
                images = torch.stack([torch.from_numpy(self.cache.read_sample(p.key).copy()).permute(2, 0, 1)
                                      for p in batch]).float().div(255).to(self.device)
                results = scorer.score(images, [p.item for p in batch])
                for p, res in zip(part, results):
                    self.cache.write_score(skey, p.score_key, res)
                self.progress.advance(f"score:{name}", len(part))

    def records(self, scorers: dict[str, Scorer], planned: list[PlannedSample]) -> list[SampleRecord]:
        out = []
        for p in planned:
            path = self.cache.sample_path(p.key)
            if not path.is_file():
                raise UsageError(f"sample {p.key} of prompt {p.item.id} is missing after generation "
                                 "(did another process fail? re-run the same command to resume)")
            scores = {name: self.cache.read_score(scorer_key(s), p.score_key) for name, s in scorers.items()}
            out.append(SampleRecord(p.item, p.image_index, p.seed, p.key, str(path), scores))
        return out

    # the whole flow ------------------------------------------------------------------------------------------
    def execute(self) -> Optional[RunOutput]:
        self.refuse_compile()
        if self.suite.measures:
            return self.execute_measurement()
        if self.device.type == "meta":
            raise UsageError("device=meta builds models without weights: it only serves suite=efficiency "
                             "(parameter and FLOP counts); use cpu, cuda or auto to generate images")
        t0 = time.perf_counter()
        self.check_assets()
        items = self.items()
        self.preflight(items)
        bundle = self.load_model()
        bundle.conditioner.check_prompts([item.prompt for item in items])  # before a method trains for nothing
        prepared = self.prepare(bundle)
        sampler = resolve_sampler(bundle, getattr(self.suite.params, "sampler", None),
                                  getattr(prepared, "sampler_overrides", None),
                                  chunk=self.cfg.run.chunk or default_chunk(self.device), compile=self.cfg.run.compile)
        scorers = self.scorers()
        self.timing["prepare_s"] = time.perf_counter() - t0
        self.planned = planned = self.plan(bundle, prepared, sampler, items)
        kept, total = self.kept()
        if kept:
            self.progress.log(f"resuming: {kept} of {total} images are already in the cache and are reused")
        t1 = time.perf_counter()
        self.generate(bundle, prepared, sampler, planned)
        self.timing["generate_s"] = time.perf_counter() - t1
        if self.shard.world > 1:
            self.shard.barrier()  # scoring chunks cut the global order differently from generation chunks
        t2 = time.perf_counter()
        self.score(scorers, planned)
        self.timing["score_s"] = time.perf_counter() - t2
        self.shard.barrier()
        if not self.shard.is_main:
            return None
        records = self.records(scorers, planned)
        metrics = self.suite.aggregate(records)
        units = self.suite.units(records)
        self.timing["total_s"] = time.perf_counter() - t0
        results = self.results(bundle, prepared, sampler, scorers, items, metrics)
        samples = [sample_row(r) for r in records]
        return RunOutput(results, samples, units)

    def execute_measurement(self) -> Optional[RunOutput]:
        """A measuring suite (efficiency): the main process measures, nothing is generated, scored or cached."""
        t0 = time.perf_counter()
        if self.cfg.run.chunk is not None:  # it would be recorded in the config but not used
            raise UsageError(f"chunk= does not apply to suite={self.cfg.suite.name}: set suite.images=N (images per call)")
        self.suite.check_assets()
        if not self.shard.is_main:
            self.shard.barrier()
            return None
        bundle = self.load_model()
        method, method_ctx = self.method()
        suite_sampler = getattr(self.suite.params, "sampler", None)
        ctx = MeasureContext(
            bundle=bundle, method=method, method_context=method_ctx, device=self.device, dtype=self.dtype,
            seed=self.cfg.run.seed, log=self.progress.log, progress=self.progress,
            resolve_sampler=lambda prepared: resolve_sampler(bundle, suite_sampler,
                                                             getattr(prepared, "sampler_overrides", None),
                                                             compile=self.cfg.run.compile))
        measured = self.suite.measure(ctx)
        self.shard.barrier()
        self.timing["total_s"] = time.perf_counter() - t0
        results = self.results(bundle, measured.prepared, measured.sampler, {}, [], measured.metrics)
        results["measurements"] = measured.details
        return RunOutput(results, [])

    def execute_external(self, folder: Path, label: str) -> RunOutput:
        """Score images made by another tool (``mubench score images=DIR``): no model, no generation."""
        t0 = time.perf_counter()
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise UsageError(f"images={folder}: no such folder")
        self.suite.check_assets()
        items = self.items()
        self.preflight(items, method=label, model="external", sized=False)
        found = checked_images(self.suite, folder, self.suite.items(), items)
        if not found:
            raise UsageError(f"no images of suite {self.cfg.suite.name!r} found in {folder} "
                             "(see the suite's folder naming in docs)")
        used = {img.item.id for img in found}
        self.suite.check_size([it for it in items if it.id in used])
        planned = []
        for img in found:
            with Image.open(img.path) as pil:
                pixels = np.asarray(pil.convert("RGB"), dtype=np.uint8)
            key = "ext-" + hashlib.sha256(pixels.tobytes() + str(pixels.shape).encode()).hexdigest()[:28]
            if not self.cache.has_sample(key):
                self.cache.write_sample(key, pixels)
            planned.append(PlannedSample(img.item, img.image_index, None, key))
        scorers = self.scorers()
        self.score(scorers, planned)
        records = self.records(scorers, planned)
        metrics = self.suite.aggregate(records)
        self.timing["total_s"] = time.perf_counter() - t0
        results = self.results(None, None, None, scorers, [it for it in items if it.id in used], metrics)
        results.update({"method": label, "model": "external", "images": str(folder.resolve())})
        results["protocol"]["images_per_prompt"] = images_per_prompt(found)  # what the folder held, not the suite
        results["protocol_hash"] = stable_hash(results["protocol"])
        return RunOutput(results, [sample_row(r) for r in records], self.suite.units(records))

    def results(self, bundle, prepared, sampler, scorers, items, metrics) -> dict[str, Any]:
        run = self.cfg.run
        protocol = {
            "suite": self.cfg.suite.name,
            "suite_params": to_plain(self.cfg.suite.params, results_only=True),
            "sampler": sampler.as_dict() if sampler else {"external": True},
            "images_per_prompt": getattr(self.suite.params, "images_per_prompt", 1),
            "n_prompts": len(items),
            "seed": run.seed,
            "dtype": str(self.dtype).replace("torch.", ""),
            "device_type": self.device.type,
            "scorers": {name: s.describe() for name, s in scorers.items()},
            "score_chunk": SCORE_CHUNK,
            **self.suite.protocol(),
        }
        if getattr(prepared, "sampler_overrides", None):  # the method's own sampling protocol
            protocol["method_sampler"] = to_plain(prepared.sampler_overrides)
        return {
            "schema": "mubench.results/1",
            "run_id": uuid.uuid4().hex,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "suite": self.cfg.suite.name,
            "method": self.cfg.method.name,
            "model": self.cfg.model.name,
            "metrics": {k: m.as_dict() for k, m in metrics.items()},
            "config": self.cfg.as_dict(),
            "protocol": protocol,
            "protocol_hash": stable_hash(protocol),
            "method_info": ({"added_params": prepared.added_params, "trainable_params": prepared.trainable_params,
                             "artifact": prepared.artifact, **to_plain(prepared.info)} if prepared else {}),
            "model_fingerprint": bundle.fingerprint if bundle else None,
            "threads": cpu_threads(self.device.type),  # not in the protocol: it changes bits, not meaning
            "versions": package_versions(),
            "git": git_revision(),
            "timing": {k: round(v, 3) for k, v in self.timing.items()},
        }

