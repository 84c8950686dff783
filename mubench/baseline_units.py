"""Per-unit data inside a baseline file (compact: base64 of the serialised, compressed UnitData) and the paired
test of a current run against it (what makes ``mubench check`` flag only significant regressions)."""
from __future__ import annotations

import base64
from typing import Any, Mapping, Optional

from .errors import UsageError
from .stats.paired import PairedResult, compare_units
from .stats.resample import holm
from .stats.units import UnitData

CHECK_PERMUTATIONS = 5000  # the check's p-values are compared with alpha after Holm: enough relabellings for that


def encode_units(units: Mapping[str, UnitData]) -> dict[str, str]:
    return {name: base64.b64encode(u.to_bytes()).decode("ascii") for name, u in units.items()}


def decode_units(encoded: Mapping[str, Any], where: str = "baseline") -> dict[str, UnitData]:
    out = {}
    for name, text in encoded.items():
        try:
            out[name] = UnitData.from_bytes(base64.b64decode(str(text), validate=True))
        except (ValueError, KeyError, OSError) as err:
            raise UsageError(f"{where}: per-unit data of {name!r} is unreadable ({err})") from None
    return out


def paired_against_baseline(entry: Mapping[str, Any], current: Optional[Mapping[str, UnitData]],
                            alpha: float = 0.05) -> dict[str, PairedResult]:
    """Metric → paired result (baseline = A, current = B), Holm over the metrics both sides have."""
    if not current or not entry.get("units"):
        return {}
    base = decode_units(entry["units"], f"baseline entry {entry.get('suite')}/{entry.get('method')}")
    names = [m for m in base if m in current and base[m].kind == current[m].kind]
    results = {m: compare_units(m, base[m], current[m], resamples=0, permutations=CHECK_PERMUTATIONS) for m in names}
    for r, p in zip(results.values(), holm([r.p for r in results.values()])):
        r.p_holm = p
        r.decide(alpha)
    return results


__all__ = ["encode_units", "decode_units", "paired_against_baseline"]
