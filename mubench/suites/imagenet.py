"""``imagenet``: class-conditional ImageNet-256 generation scored as DiT / ADM do (protocols.md §4).

Protocol:

* **labels**: ``count`` labels drawn uniformly from 0…``num_classes``−1 (not class-balanced, as DiT's
  ``sample_ddp.py``) with ``numpy.random.default_rng(label_seed)``, in order: prompt ``k`` (id ``<k:06d>``) is label
  ``k`` of that list, so every method gets the same labels and ``limit=N`` the first N; one image per label, its
  noise from the harness's per-image stream (run seed, suite, id).
* **sampling**: DiT's defaults — DDPM, 250 steps with the model's learned variance, classifier-free guidance 1.5 on
  the first 3 latent channels (``model=dit``'s ``cfg_channels``), 256².
* **metrics** against the ADM reference batch ``VIRTUAL_imagenet256_labeled.npz`` (asset ``adm-ref-imagenet256``;
  ``mu``/``sigma`` of the whole training set, ``arr_0`` = 10k reference images), with the features of the
  ``adm-inception`` scorer (:mod:`mubench.scorers.adm_inception`):
  ``fid`` — Fréchet distance of the samples' pool_3 Gaussian to the reference ``mu``/``sigma``, the same
  :func:`~mubench.metrics.fid.frechet_distance` as every suite (refused below 2048 samples unless ``fid_force``);
  ``inception_score`` — the ADM / improved-GAN Inception Score over splits of ``is_split`` (5000) samples;
  ``precision`` / ``recall`` — Kynkäänniemi et al. with k = 3 on squared Euclidean distances, the reference's 10k
  images against all samples (ADM's ManifoldEstimator; reference features cached per extractor). sFID is **not**
  computed (the PyTorch Inception port does not expose ``mixed_6/conv``).
* **n is part of the protocol**: ``imagenet`` is the paper's 5k setting ("FID-5K (ADM ref)"), ``imagenet-50k`` DiT's
  50k; the protocol records ``fid_label`` from the number of samples actually scored; FID-5K is biased upward against
  FID-50K and the two are never comparable.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..config import LOCATION_ONLY, stable_hash
from ..errors import AssetError, UsageError
from ..metrics.core import Metric
from ..metrics.fid import FIDStats, Gaussian, fid_from_stats
from ..stats.build import fid_units
from ..stats.units import UnitData
from .base import PromptItem, SampleRecord, SamplerParams, ScorerUse, Suite


@dataclass
class ImageNetParams:
    count: int = 5000  # samples (5000: the paper's FID-5K; 50000: DiT's FID-50K)
    num_classes: int = 1000
    label_seed: int = 0  # seed of the uniform label list
    # VIRTUAL_imagenet256_labeled.npz (else the asset's locations)
    reference: Optional[str] = field(default=None, metadata=LOCATION_ONLY)
    images_per_prompt: int = 1
    is_split: int = 5000  # Inception Score split size (ADM)
    precision_recall: bool = True  # compute precision / recall against the 10k reference images
    pr_k: int = 3  # nearest neighbour defining the manifold radius (ADM: 3)
    pr_device: str = "auto"  # device for the pairwise distances of precision / recall
    fid_force: bool = False  # compute FID with fewer samples than feature dimensions (label it!)
    # the TorchScript Inception (adm-inception scorer's weights)
    scorer_weights: Optional[str] = field(default=None, metadata=LOCATION_ONLY)
    sampler: SamplerParams = field(default_factory=lambda: SamplerParams(scheduler="ddpm", steps=250, guidance=1.5,
                                                                         resolution=256))

    def validate(self) -> None:
        if self.count < 1 or self.num_classes < 1:
            raise ValueError("count and num_classes must be >= 1")
        if self.images_per_prompt != 1:
            raise ValueError("the ImageNet protocol makes one image per label")
        if self.is_split < 1 or self.pr_k < 1:
            raise ValueError("is_split and pr_k must be >= 1")


def uniform_labels(count: int, num_classes: int, seed: int) -> np.ndarray:
    """The suite's label list: ``count`` uniform draws from 0…num_classes−1 (``default_rng(seed).integers``)."""
    return np.random.default_rng(int(seed)).integers(0, int(num_classes), size=int(count)).astype(np.int64)


def inception_score(probs: np.ndarray, split_size: int = 5000) -> float:
    """ADM's Inception Score: exp(mean KL(p(y|x) ‖ p(y))) per consecutive split of ``split_size``, averaged."""
    p = np.asarray(probs, dtype=np.float64)
    scores = []
    for i in range(0, len(p), split_size):
        part = p[i:i + split_size]
        kl = part * (np.log(part) - np.log(np.mean(part, 0, keepdims=True)))
        scores.append(np.exp(np.mean(np.sum(kl, 1))))
    return float(np.mean(scores))


def _pairwise_sq(u, v):
    import torch

    nu = (u * u).sum(1, keepdim=True)
    nv = (v * v).sum(1)[None, :]
    return torch.clamp(nu - 2.0 * u @ v.t() + nv, min=0.0)


def manifold_radii(features: np.ndarray, k: int = 3, batch: int = 10000, device: str = "cpu") -> np.ndarray:
    """Squared distance of each feature to its k-th nearest neighbour (itself excluded), as ADM's estimator."""
    import torch

    x = torch.as_tensor(features, dtype=torch.float32, device=device)
    if len(x) <= k:
        raise UsageError(f"precision/recall with k={k} needs more than {k} feature vectors, got {len(x)}")
    out = []
    for s in range(0, len(x), batch):
        d = _pairwise_sq(x[s:s + batch], x)
        out.append(torch.kthvalue(d, k + 1, dim=1).values)  # index 0 is the point itself (distance 0)
    return torch.cat(out).cpu().numpy()


def precision_recall(ref: np.ndarray, samples: np.ndarray, k: int = 3, batch: int = 10000,
                     device: str = "cpu") -> tuple[float, float]:
    """(precision, recall): the fraction of samples inside the reference manifold, and of references inside the
    samples' manifold (a point is inside when within some manifold point's k-NN radius)."""
    import torch

    r_ref = torch.as_tensor(manifold_radii(ref, k, batch, device), device=device)
    r_smp = torch.as_tensor(manifold_radii(samples, k, batch, device), device=device)
    a = torch.as_tensor(ref, dtype=torch.float32, device=device)
    b = torch.as_tensor(samples, dtype=torch.float32, device=device)
    ref_in = torch.zeros(len(a), dtype=torch.bool, device=device)
    smp_in = torch.zeros(len(b), dtype=torch.bool, device=device)
    for i in range(0, len(a), batch):
        for j in range(0, len(b), batch):
            d = _pairwise_sq(a[i:i + batch], b[j:j + batch])
            ref_in[i:i + batch] |= (d <= r_smp[j:j + batch][None, :]).any(1)
            smp_in[j:j + batch] |= (d <= r_ref[i:i + batch][:, None]).any(0)
    return float(smp_in.double().mean()), float(ref_in.double().mean())


def fid_label(n: int) -> str:
    return f"FID-{n // 1000}K (ADM ref)" if n >= 1000 and n % 1000 == 0 else f"FID-{n} (ADM ref)"


class ImageNetSuite(Suite):
    Params = ImageNetParams

    def __init__(self, params: ImageNetParams, name: str) -> None:
        super().__init__(params, name)
        self._scored: Optional[int] = None

    # -- data --------------------------------------------------------------------------------------
    def labels(self) -> np.ndarray:
        return uniform_labels(self.params.count, self.params.num_classes, self.params.label_seed)

    def items(self) -> list[PromptItem]:
        return [PromptItem(f"{k:06d}", int(label), {"label": int(label)}) for k, label in enumerate(self.labels())]

    def reference_path(self) -> Path:
        from ..assets import require

        return require("adm-ref-imagenet256", self.params.reference)

    def check_assets(self) -> None:
        self.reference_path()

    def reference_gaussian(self) -> Gaussian:
        path = self.reference_path()
        try:
            with np.load(path, allow_pickle=False) as data:
                mu, sigma = np.asarray(data["mu"], np.float64), np.asarray(data["sigma"], np.float64)
        except (OSError, ValueError, KeyError) as err:
            raise AssetError(f"{path}: not an ADM reference batch with mu / sigma ({err})") from None
        return Gaussian(mu, sigma, None)  # full-dataset statistics: their count is not a sample size here

    def reference_features(self, scorer_id: str, ref_cache: Optional[Path] = None) -> np.ndarray:
        """Features of the reference batch's ``arr_0`` images with the samples' extractor (cached)."""
        from ..assets import file_sha256, mubench_home
        from ..fsutil import atomic_save_npz
        from ..scorers.adm_inception import AdmInception, AdmInceptionParams
        from ..scorers.base import ScorerContext

        path = self.reference_path()
        key = stable_hash({"ref": file_sha256(path), "extractor": scorer_id}, length=24)
        cache = Path(ref_cache or mubench_home() / "fid-ref") / f"adm-ref-features-{key}.npz"
        if cache.is_file():
            with np.load(cache, allow_pickle=False) as data:
                if json.loads(str(data["key"])) == {"extractor": scorer_id, "reference": str(path.name)}:
                    return np.asarray(data["features"])
        weights = "random" if scorer_id.split(":", 1)[1].startswith("random") else "pretrained"
        scorer = AdmInception(AdmInceptionParams(weights=self.params.scorer_weights),
                              ScorerContext(_device(self.params.pr_device), weights=weights), "fid")
        if scorer.extractor_id != scorer_id:
            raise UsageError(f"the Inception extractor now is {scorer.extractor_id}, the samples were scored with "
                             f"{scorer_id}; re-score the samples")
        with np.load(path, allow_pickle=False) as data:
            if "arr_0" not in data:
                raise AssetError(f"{path} has no arr_0 reference images (needed for precision / recall)")
            images = data["arr_0"]
            feats = np.concatenate([scorer.features_uint8(images[s:s + 1000])[0] for s in range(0, len(images), 1000)])
        atomic_save_npz(cache, features=feats,
                        key=np.asarray(json.dumps({"extractor": scorer_id, "reference": str(path.name)})))
        return feats

    # -- scoring -------------------------------------------------------------------------------------
    def scorers(self) -> dict[str, ScorerUse]:
        return {"inception": ScorerUse("adm-inception", {"weights": self.params.scorer_weights})}

    def aggregate(self, records: list[SampleRecord]) -> dict[str, Metric]:
        if not records:
            return {}
        p = self.params
        self._scored = len(records)
        ids = {r.scores["inception"]["extractor"] for r in records}
        if len(ids) != 1:
            raise UsageError(f"samples were scored by different Inception extractors: {sorted(ids)}")
        extractor = ids.pop()
        feats = np.stack([np.asarray(r.scores["inception"]["features"], np.float64) for r in records])
        probs = np.stack([np.asarray(r.scores["inception"]["probs"], np.float64) for r in records])
        n = len(records)
        ref = self.reference_gaussian()
        metrics = {
            "fid": Metric(fid_from_stats(FIDStats.from_features(feats), ref, force=p.fid_force,
                                         names=("generated", "reference"), force_hint="suite.fid_force=true"),
                          None, None, n, False),
            "inception_score": Metric(inception_score(probs, p.is_split), None, None, n, True),
        }
        if p.precision_recall:
            ref_feats = self.reference_features(extractor)
            prec, rec = precision_recall(ref_feats, feats.astype(np.float32), p.pr_k,
                                         device=str(_device(p.pr_device)))
            metrics["precision"] = Metric(prec, None, None, n, True)
            metrics["recall"] = Metric(rec, None, None, n, True)
        return metrics

    def units(self, records: list[SampleRecord]) -> dict[str, UnitData]:
        """``fid``: the per-image Inception features against ADM's reference Gaussian (a paired test at equal n)."""
        if len(records) < 2:
            return {}
        ref = self.reference_gaussian()
        feats = np.stack([np.asarray(r.scores["inception"]["features"], np.float64) for r in records])
        return {"fid": fid_units(records, feats, ref_mu=ref.mu, ref_sigma=ref.sigma)}

    def protocol(self) -> dict[str, Any]:
        p = self.params
        n = self._scored if self._scored is not None else p.count
        out = {"benchmark": "ImageNet 256 class-conditional (DiT sample_ddp.py + ADM evaluator)",
               "labels": f"uniform random, default_rng({p.label_seed}).integers(0, {p.num_classes}, {p.count})",
               "labels_hash": stable_hash(self.labels().tolist()), "n_samples": n, "fid_label": fid_label(n),
               "fid_reference": "ADM VIRTUAL_imagenet256_labeled.npz mu/sigma (whole training set)",
               "fid_forced": p.fid_force, "inception_score_split": p.is_split,
               "precision_recall": f"k={p.pr_k} vs the reference's 10k images" if p.precision_recall else "off",
               "sfid": "not computed (the PyTorch Inception port exposes no mixed_6/conv features)",
               "features": "adm-inception: TorchScript Inception port, resize inside (legacy_tensorflow); "
                           "not validated against the TF evaluator here"}
        try:
            from ..assets import file_sha256

            out["reference_sha256"] = file_sha256(self.reference_path())
        except (AssetError, OSError):
            pass
        return out


def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
