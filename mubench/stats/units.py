"""The per-unit data behind a metric: what CIs, paired comparisons and pooled replicates resample.

A *unit* is one generated image, keyed by (prompt id, image index, replicate); its *cluster* is its prompt
(images of one prompt, and the replicate runs of one prompt, are not independent and are resampled
together). A :class:`UnitData` holds, for one metric of one run (or one pooled replicate group), the unit
keys and the per-unit values the metric is computed from, and knows how to compute the metric for any
weighting of its units (a bootstrap resample is a weighting by counts):

- ``mean``: the mean of a per-image score (clip, rule / oracle scores, VQA scores);
- ``strata_mean``: the mean over strata (tasks) of the per-stratum means (GenEval's ``overall``);
- ``fid``: the Fréchet distance of the weighted Gaussian fit of per-image features against reference
  features (per-unit references, resampled with the same weights, or a fixed reference Gaussian).

Values are vectorised over resamples: ``evaluate(values, weights)`` takes weights of shape (R, n) and
values of shape (n, ...) or, for mixed (swapped) data, (R, n, ...), and returns R metric values.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass, field, replace
from typing import Any, Optional, Sequence

import numpy as np

KINDS = ("mean", "strata_mean", "fid")
FORMAT = "mubench.units/1"


@dataclass
class UnitData:
    """Per-unit data of one metric: unit keys, per-unit values, and how the metric combines them."""

    kind: str  # one of KINDS
    higher_is_better: bool
    prompt_ids: np.ndarray  # (n,) str: the cluster of each unit
    image_index: np.ndarray  # (n,) int
    values: np.ndarray  # mean / strata_mean: (n,) float64; fid: (n, d) features
    seeds: Optional[np.ndarray] = None  # (n,) int64 image seeds (-1 unknown): tells whether noise was shared
    replicate: Optional[np.ndarray] = None  # (n,) int: position of the unit's run in its replicate group
    strata: Optional[np.ndarray] = None  # (n,) str: strata (tasks) for strata_mean and stratified resampling
    ref: Optional[np.ndarray] = None  # fid: (n, d) per-unit reference features (resampled with the units)
    ref_mu: Optional[np.ndarray] = None  # fid: fixed reference Gaussian (when references are not per unit)
    ref_sigma: Optional[np.ndarray] = None
    note: str = ""  # e.g. "n < feature dimension: values biased, compare only at equal n"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown unit-data kind {self.kind!r}; expected one of {', '.join(KINDS)}")
        self.prompt_ids = np.asarray(self.prompt_ids, dtype=str)
        self.image_index = np.asarray(self.image_index, dtype=np.int64)
        self.values = np.asarray(self.values, dtype=np.float64)
        n = self.prompt_ids.shape[0]
        if self.image_index.shape != (n,) or self.values.shape[0] != n:
            raise ValueError("unit data: prompt_ids, image_index and values must have one entry per unit")
        if self.seeds is None:
            self.seeds = np.full(n, -1, dtype=np.int64)
        self.seeds = np.asarray(self.seeds, dtype=np.int64)
        if self.replicate is None:
            self.replicate = np.zeros(n, dtype=np.int64)
        self.replicate = np.asarray(self.replicate, dtype=np.int64)
        if self.strata is not None:
            self.strata = np.asarray(self.strata, dtype=str)
        if self.kind == "strata_mean" and self.strata is None:
            raise ValueError("strata_mean unit data needs strata")
        if self.kind == "fid":
            if self.values.ndim != 2:
                raise ValueError("fid unit data needs (n, d) features")
            if self.ref is not None:
                self.ref = np.asarray(self.ref, dtype=np.float64)
                if self.ref.shape != self.values.shape:
                    raise ValueError("fid unit data: per-unit reference features must match the features' shape")
            elif self.ref_mu is None or self.ref_sigma is None:
                raise ValueError("fid unit data needs per-unit reference features or a reference Gaussian")

    # -- identity -------------------------------------------------------------------------------------------
    @property
    def n(self) -> int:
        return int(self.prompt_ids.shape[0])

    def keys(self) -> list[tuple[str, int, int]]:
        return list(zip(self.prompt_ids.tolist(), self.image_index.tolist(), self.replicate.tolist()))

    def take(self, index: np.ndarray) -> "UnitData":
        """The units at ``index`` (in that order)."""
        def pick(a: Optional[np.ndarray]) -> Optional[np.ndarray]:
            return None if a is None else a[index]
        return replace(self, prompt_ids=self.prompt_ids[index], image_index=self.image_index[index],
                       values=self.values[index], seeds=pick(self.seeds), replicate=pick(self.replicate),
                       strata=pick(self.strata), ref=pick(self.ref))

    # -- the metric -----------------------------------------------------------------------------------------
    def value(self) -> float:
        return float(self.evaluate(self.values, np.ones((1, self.n)))[0])

    def evaluate(self, values: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """The metric for each row of ``weights`` (R, n); ``values`` is (n, ...) or per-row (R, n, ...)."""
        w = np.asarray(weights, dtype=np.float64)
        if self.kind == "mean":
            x = values if values.ndim == 2 else values[None, :]
            with np.errstate(invalid="ignore", divide="ignore"):
                return (w * x).sum(axis=1) / w.sum(axis=1)
        if self.kind == "strata_mean":
            x = values if values.ndim == 2 else values[None, :]
            labels, inverse = np.unique(self.strata, return_inverse=True)
            onehot = np.zeros((self.n, len(labels)))
            onehot[np.arange(self.n), inverse] = 1.0
            with np.errstate(invalid="ignore", divide="ignore"):
                per = ((w * x) @ onehot) / (w @ onehot)
            return per.mean(axis=1)
        return _fid_weighted(values, w, self.ref, self.ref_mu, self.ref_sigma)

    # -- storage --------------------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        arrays = {k: getattr(self, k) for k in ("prompt_ids", "image_index", "values", "seeds", "replicate",
                                               "strata", "ref", "ref_mu", "ref_sigma")
                  if getattr(self, k) is not None}
        head = {"format": FORMAT, "kind": self.kind, "higher_is_better": self.higher_is_better, "note": self.note,
                "meta": self.meta}
        buf = io.BytesIO()
        np.savez_compressed(buf, __json__=np.frombuffer(json.dumps(head, sort_keys=True).encode(), np.uint8),
                            **{k: _compact(v) for k, v in arrays.items()})
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "UnitData":
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            head = json.loads(bytes(z["__json__"]).decode())
            if head.get("format") != FORMAT:
                raise ValueError(f"not mubench unit data (format {head.get('format')!r})")
            arrays = {k: z[k] for k in z.files if k != "__json__"}
        return cls(kind=head["kind"], higher_is_better=bool(head["higher_is_better"]), note=head.get("note", ""),
                   meta=head.get("meta") or {}, **arrays)


def _compact(a: np.ndarray) -> np.ndarray:
    """float64 arrays that hold float32 values (features) are stored as float32: lossless, half the size."""
    if a.dtype == np.float64 and a.size and np.array_equal(a.astype(np.float32).astype(np.float64), a):
        return a.astype(np.float32)
    return a


def pool(parts: Sequence[UnitData]) -> UnitData:
    """Replicate runs of one configuration as one unit set (replicate = the run's position in the group)."""
    if not parts:
        raise ValueError("nothing to pool")
    first = parts[0]
    if len(parts) == 1:
        return first
    for p in parts[1:]:
        if p.kind != first.kind or p.values.shape[1:] != first.values.shape[1:]:
            raise ValueError("pooled replicates must hold the same kind of unit data")

    def cat(name: str) -> Optional[np.ndarray]:
        arrays = [getattr(p, name) for p in parts]
        return None if any(a is None for a in arrays) else np.concatenate(arrays)

    replicate = np.concatenate([np.full(p.n, k, dtype=np.int64) for k, p in enumerate(parts)])
    notes = sorted({p.note for p in parts if p.note})
    return UnitData(kind=first.kind, higher_is_better=first.higher_is_better, prompt_ids=cat("prompt_ids"),
                    image_index=cat("image_index"), values=cat("values"), seeds=cat("seeds"), replicate=replicate,
                    strata=cat("strata"), ref=cat("ref"), ref_mu=first.ref_mu, ref_sigma=first.ref_sigma,
                    note="; ".join(notes), meta=dict(first.meta))


# -- weighted FID, batched over resamples ---------------------------------------------------------------------

def _weighted_gaussians(x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted means (R, d) and covariances (R, d, d), ddof 1 in the count sense (as np.cov with repeats)."""
    total = w.sum(axis=1)
    if x.ndim == 2:
        mu = (w @ x) / total[:, None]
        centred = x[None, :, :] - mu[:, None, :]
    else:
        mu = np.einsum("rn,rnd->rd", w, x) / total[:, None]
        centred = x - mu[:, None, :]
    cov = (np.swapaxes(centred * w[:, :, None], 1, 2) @ centred) / (total - 1.0)[:, None, None]  # batched GEMM
    return mu, cov


def _psd_root(s: np.ndarray) -> np.ndarray:
    """Symmetric square root of a PSD matrix or a stack of them (eigh; negative round-off eigenvalues clipped)."""
    evals, evecs = np.linalg.eigh(s)
    return (evecs * np.sqrt(np.clip(evals, 0, None))[..., None, :]) @ np.swapaxes(evecs, -1, -2)


def _frechet(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray, root: np.ndarray,
             other: np.ndarray) -> np.ndarray:
    """‖mu1 − mu2‖² + Tr s1 + Tr s2 − 2 Tr (root · other · root)^½, ``root`` the square root of one side."""
    inner = root @ other @ root
    inner = (inner + np.swapaxes(inner, -1, -2)) / 2.0
    tr_cross = np.sqrt(np.clip(np.linalg.eigvalsh(inner), 0, None)).sum(axis=-1)
    diff = mu1 - mu2
    return (diff * diff).sum(axis=-1) + np.trace(s1, axis1=-2, axis2=-1) + np.trace(s2, axis1=-2, axis2=-1) \
        - 2 * tr_cross


def frechet_batched(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> np.ndarray:
    """‖mu1 − mu2‖² + Tr s1 + Tr s2 − 2 Tr (s1^½ s2 s1^½)^½, for stacks of Gaussians (symmetric eigh route)."""
    return _frechet(mu1, s1, mu2, s2, _psd_root(s1), s2)


def frechet_to_fixed(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> np.ndarray:
    """:func:`frechet_batched` against ONE reference Gaussian (``mu2`` (d,), ``s2`` (d, d)): its square root is taken
    once, and ``Tr (s2^½ s1 s2^½)^½`` (the same trace: ``s1 s2`` and ``s2 s1`` share their eigenvalues) needs one
    symmetric eigenvalue problem per stack entry instead of two."""
    return _frechet(mu1, s1, mu2, s2, _psd_root(s2), s1)


def _fid_weighted(x: np.ndarray, w: np.ndarray, ref: Optional[np.ndarray], ref_mu: Optional[np.ndarray],
                  ref_sigma: Optional[np.ndarray], chunk: int = 256) -> np.ndarray:
    out = np.empty(w.shape[0])
    # one reference Gaussian for every row (a fixed one, or per-unit references under equal weights: the permutation
    # test's relabellings) is fitted and square-rooted once
    fixed = None
    if ref is None:
        fixed = (ref_mu, ref_sigma)
    elif np.all(w == w[:1]):
        rmu, rcov = _weighted_gaussians(ref, w[:1])
        fixed = (rmu[0], rcov[0])
    for start in range(0, w.shape[0], chunk):
        wc = w[start:start + chunk]
        xc = x if x.ndim == 2 else x[start:start + chunk]
        mu, cov = _weighted_gaussians(xc, wc)
        if fixed is not None:
            out[start:start + chunk] = frechet_to_fixed(mu, cov, *fixed)
        else:
            rmu, rcov = _weighted_gaussians(ref, wc)
            out[start:start + chunk] = frechet_batched(mu, cov, rmu, rcov)
    return out


__all__ = ["UnitData", "pool", "frechet_batched", "KINDS"]
