"""``coco``: zero-shot FID and CLIP score on COCO captions (``coco`` = 2017 val 5k; ``coco2014-30k`` spec).

Protocol:

* **selection** (:func:`select_captions`), deterministic and written as a manifest
  (``$MUBENCH_HOME/coco/<name>-<hash>.json``, hash recorded in the protocol):
  ``first-caption`` — every image of the annotation file, one caption each (the one with the lowest
  annotation id), in image-id order (COCO-2017 val: 5,000 images → 5,000 captions);
  ``random-caption`` — ``count`` images drawn without replacement with ``numpy.random.default_rng(seed)``
  and one of each image's captions drawn with the same generator (the GigaGAN-style COCO-2014 30k).
* one image per caption; generated images are PNG.
* **FID**: features of generated and reference images from the ``fid-features`` scorer (clean-fid
  ``clean`` by default, ``legacy_pytorch`` selectable), both centre-cropped and resized to
  ``fid.resolution`` by the same function. The reference set is the selected images (``reference:
  selected``) or every image of the annotation file (``reference: all``, the full-set convention of
  30k papers). Reference statistics are cached by (selection manifest hash, protocol, extractor,
  resolution). With fewer generated images than feature dimensions FID is refused unless
  ``fid_force``.
* **CLIP**: raw cosine per image (``clip-score`` scorer); reported as ``clip`` (raw mean cosine, the
  paper's convention) and ``clip_x100`` (torchmetrics: 100·mean, clamped at 0).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch

from ..config import LOCATION_ONLY, stable_hash, to_plain
from ..errors import UsageError
from ..fsutil import atomic_write_text
from ..metrics.core import Metric, bootstrap_mean
from ..metrics.fid import FIDStats, RefStatsCache, RefStatsKey, fid_from_stats
from ..scorers.clip_score import ClipScoreParams
from ..scorers.fid_features import FidFeaturesParams
from ..stats.build import fid_units, mean_units
from ..stats.units import UnitData
from .base import ImportedImage, PromptItem, SampleRecord, SamplerParams, ScorerUse, Suite

SELECTIONS = ("first-caption", "random-caption")


@dataclass
class CocoParams:
    year: int = 2017  # 2017 | 2014: which assets are the defaults
    captions: Optional[str] = field(default=None, metadata=LOCATION_ONLY)  # captions_val<year>.json (else the asset)
    images: Optional[str] = field(default=None, metadata=LOCATION_ONLY)  # folder of val<year> images (else the asset)
    selection: str = "first-caption"  # first-caption | random-caption
    count: Optional[int] = None  # images drawn for random-caption (None: all images)
    seed: int = 0  # generator seed of random-caption
    reference: str = "selected"  # selected | all: the real images FID compares against
    images_per_prompt: int = 1
    fid: FidFeaturesParams = field(default_factory=FidFeaturesParams)
    fid_force: bool = False  # compute FID even with fewer images than feature dimensions
    fid_device: str = "auto"  # device for reference features computed at aggregation
    clip: ClipScoreParams = field(default_factory=ClipScoreParams)
    sampler: SamplerParams = field(default_factory=SamplerParams)

    def validate(self) -> None:
        if self.year not in (2014, 2017):
            raise ValueError(f"year must be 2014 or 2017, got {self.year}")
        if self.selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {', '.join(SELECTIONS)}, got {self.selection!r}")
        if self.reference not in ("selected", "all"):
            raise ValueError(f"reference must be 'selected' or 'all', got {self.reference!r}")
        if self.images_per_prompt != 1:
            raise ValueError("the COCO protocol makes one image per caption")
        self.fid.validate()


def load_annotations(path: Path) -> tuple[dict[int, str], dict[int, list[tuple[int, str]]]]:
    """(image id → file name, image id → [(annotation id, caption)] sorted by annotation id)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        files = {int(im["id"]): str(im["file_name"]) for im in data["images"]}
        caps: dict[int, list[tuple[int, str]]] = {}
        for ann in data["annotations"]:
            caps.setdefault(int(ann["image_id"]), []).append((int(ann["id"]), str(ann["caption"]).strip()))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UsageError(f"{path}: not a COCO captions file ({err})") from None
    for v in caps.values():
        v.sort()
    return files, caps


def select_captions(files: dict[int, str], caps: dict[int, list[tuple[int, str]]], selection: str,
                    count: Optional[int] = None, seed: int = 0) -> list[dict[str, Any]]:
    """The deterministic (image, caption) list; see the module docstring for the two rules."""
    ids = sorted(i for i in files if caps.get(i))
    if selection == "first-caption":
        chosen = ids[:count] if count else ids
        return [{"image_id": i, "file_name": files[i], "caption_id": caps[i][0][0], "caption": caps[i][0][1]}
                for i in chosen]
    if selection == "random-caption":
        rng = np.random.default_rng(seed)
        n = count or len(ids)
        if n > len(ids):
            raise UsageError(f"cannot draw {n} images from {len(ids)}")
        picked = sorted(int(ids[k]) for k in rng.choice(len(ids), size=n, replace=False))
        out = []
        for i in picked:
            ann_id, caption = caps[i][int(rng.integers(len(caps[i])))]
            out.append({"image_id": i, "file_name": files[i], "caption_id": ann_id, "caption": caption})
        return out
    raise UsageError(f"unknown selection {selection!r}")


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class CocoSuite(Suite):
    Params = CocoParams

    def import_images(self, folder: Path, items: list[PromptItem]) -> list[ImportedImage]:
        """Images named by COCO image id: ``folder/<image_id>.png``."""
        return import_folder(folder, items)

    def __init__(self, params: CocoParams, name: str) -> None:
        super().__init__(params, name)
        self._selection: Optional[list[dict[str, Any]]] = None
        self._files: dict[int, str] = {}

    # -- data ----------------------------------------------------------------------------------------
    def captions_path(self) -> Path:
        from ..assets import require

        return require(f"coco{self.params.year}-captions", self.params.captions)

    def images_dir(self) -> Path:
        from ..assets import require

        return require(f"coco{self.params.year}-val-images", self.params.images, verify=False) \
            if self.params.images is None else _existing_dir(self.params.images)

    def selection(self) -> list[dict[str, Any]]:
        if self._selection is None:
            p = self.params
            files, caps = load_annotations(self.captions_path())
            self._files = files
            self._selection = select_captions(files, caps, p.selection, p.count, p.seed)
        return self._selection

    def manifest_hash(self) -> str:
        return stable_hash(self.selection(), length=24)

    def write_manifest(self, root: Optional[Path] = None) -> Path:
        """Write the selection as JSON under ``$MUBENCH_HOME/coco`` (idempotent) and return its path."""
        from ..assets import mubench_home

        root = Path(root) if root else mubench_home() / "coco"
        path = root / f"{self.name}-{self.manifest_hash()}.json"
        if not path.is_file():
            atomic_write_text(path, json.dumps({"suite": self.name, "params": to_plain(self.params),
                                                "selection": self.selection()}, indent=1))
        return path

    def items(self) -> list[PromptItem]:
        self.write_manifest()
        return [PromptItem(id=f"coco-{row['image_id']:012d}", prompt=row["caption"],
                           meta={"image_id": row["image_id"], "caption_id": row["caption_id"],
                                 "file_name": row["file_name"]}) for row in self.selection()]

    def check_assets(self) -> None:
        from ..preflight import check_all

        check_all([self.captions_path, self.images_dir])

    def reference_files(self) -> list[Path]:
        folder = self.images_dir()
        self.selection()
        names = ([row["file_name"] for row in self.selection()] if self.params.reference == "selected"
                 else [self._files[i] for i in sorted(self._files)])
        paths = [folder / n for n in names]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            from ..errors import AssetError

            raise AssetError(f"{len(missing)} reference images are missing from {folder}, e.g. {missing[0].name}")
        return paths

    # -- scoring -------------------------------------------------------------------------------------
    def scorers(self) -> dict[str, ScorerUse]:
        return {"fid": ScorerUse("fid-features", to_plain(self.params.fid)),
                "clip": ScorerUse("clip-score", to_plain(self.params.clip))}

    def reference_stats(self, extractor_id: str, ref_cache: Optional[Path] = None) -> FIDStats:
        """Reference statistics for the extractor that scored the samples (cached; computed once)."""
        from ..assets import mubench_home
        from ..scorers.base import ScorerContext
        from ..scorers.fid_features import InceptionFeatures

        p = self.params
        refs = self.reference_files()
        manifest = stable_hash({"selection": self.manifest_hash(), "reference": p.reference,
                                "files": [r.name for r in refs]}, length=24)
        key = RefStatsKey(manifest, p.fid.protocol, extractor_id, p.fid.resolution, p.fid.resample)
        cache = RefStatsCache(ref_cache or mubench_home() / "fid-ref")
        stats = cache.get(key)
        if stats is None:
            weights = "random" if extractor_id.split(":", 1)[1].startswith("random") else "pretrained"
            scorer = InceptionFeatures(p.fid, ScorerContext(_device(p.fid_device), weights=weights), "fid")
            if scorer.extractor_id != extractor_id:
                raise UsageError(f"the FID extractor now is {scorer.extractor_id}, the samples were scored with "
                                 f"{extractor_id}; re-score the samples")
            stats = FIDStats.from_features(scorer.features_files(refs))
            cache.put(key, stats)
        return stats

    def aggregate(self, records: list[SampleRecord]) -> dict[str, Metric]:
        metrics: dict[str, Metric] = {}
        if not records:
            return metrics
        groups = [r.item.id for r in records]
        cos = [float(r.scores["clip"]["clip_cosine"]) for r in records]
        raw = bootstrap_mean(cos, True, groups=groups)
        metrics["clip"] = raw
        scale = lambda v: None if v is None else 100.0 * max(v, 0.0)  # noqa: E731
        metrics["clip_x100"] = Metric(scale(raw.value), scale(raw.ci_low), scale(raw.ci_high), raw.n, True)
        extractors = {r.scores["fid"]["extractor"] for r in records}
        if len(extractors) != 1:
            raise UsageError(f"samples were scored by different FID extractors: {sorted(extractors)}")
        gen = FIDStats.from_features(np.stack([np.asarray(r.scores["fid"]["features"]) for r in records]))
        ref = self.reference_stats(extractors.pop())
        metrics["fid"] = Metric(fid_from_stats(gen, ref, force=self.params.fid_force,
                                                  names=("generated", "reference"),
                                                  force_hint="suite.fid_force=true"), None, None, gen.count, False)
        return metrics

    def units(self, records: list[SampleRecord]) -> dict[str, UnitData]:
        """``clip``: the per-image cosines; ``fid``: the per-image features against the reference Gaussian (a
        paired test at equal n; ``clip_x100`` is a monotone function of ``clip``: test ``clip``)."""
        if not records:
            return {}
        out = {"clip": mean_units(records, [float(r.scores["clip"]["clip_cosine"]) for r in records])}
        if len(records) >= 2:
            extractor = str(records[0].scores["fid"]["extractor"])
            mu, sigma = self.reference_stats(extractor).mean_cov()
            feats = np.stack([np.asarray(r.scores["fid"]["features"], np.float64) for r in records])
            out["fid"] = fid_units(records, feats, ref_mu=mu, ref_sigma=sigma)
        return out

    def protocol(self) -> dict[str, Any]:
        p = self.params
        out = {"benchmark": f"COCO-{p.year} val captions, {p.selection}", "fid_protocol": p.fid.protocol,
               "fid_resolution": p.fid.resolution, "fid_forced": p.fid_force, "fid_resample": p.fid.resample, "reference": p.reference,
               "clip_backbone": p.clip.backbone, "clip_prefix": p.clip.prefix,
               "clip_metrics": "clip = raw mean cosine; clip_x100 = 100*max(mean, 0) (torchmetrics)"}
        try:
            out["selection_manifest"] = self.manifest_hash()
        except UsageError:
            pass
        return out


def import_folder(folder: Union[str, Path], items: list[PromptItem]) -> list[ImportedImage]:
    """Images made elsewhere, named by COCO image id (``<image_id>.png``, zero padding allowed)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder")
    by_id = {it.meta["image_id"]: it for it in items}
    out = []
    for path in sorted(folder.glob("*.png")):
        if not path.stem.isdigit():
            raise UsageError(f"{path.name}: COCO samples are named <image_id>.png")
        iid = int(path.stem)
        if iid not in by_id:
            raise UsageError(f"{path.name}: image id {iid} is not in this suite's caption selection")
        out.append(ImportedImage(by_id[iid], 0, path))
    if not out:
        raise UsageError(f"no <image_id>.png images in {folder}")
    return sorted(out, key=lambda s: s.item.meta["image_id"])


def _existing_dir(path: str) -> Path:
    p = Path(os.path.expanduser(path))
    if not p.is_dir():
        from ..errors import AssetError

        raise AssetError(f"COCO image folder {p} does not exist")
    return p
