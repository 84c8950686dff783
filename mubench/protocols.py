"""Protocols as text: a one-line description of a protocol, and the facts in which two protocols differ."""
from __future__ import annotations

from typing import Any, Optional, Sequence


def describe_protocol(protocols: Sequence[dict[str, Any]], protocol_hash: str) -> str:
    """A one-line description of a protocol; facts that differ between runs are listed with '/'."""
    flat = [flatten(p or {}) for p in protocols]
    keys: list[str] = []
    for f in flat:
        keys.extend(k for k in f if k not in keys)

    def val(key: str) -> Optional[str]:
        seen = []
        for f in flat:
            if key in f and f[key] is not None and str(f[key]) not in seen:
                seen.append(str(f[key]))
        return "/".join(seen) if seen else None

    parts = []
    sampler = [s for s in (val("sampler.scheduler"),
                           f"{val('sampler.steps')} steps" if val("sampler.steps") else None,
                           f"guidance {val('sampler.guidance')}" if val("sampler.guidance") else None,
                           f"{val('sampler.resolution')} px" if val("sampler.resolution") else None,
                           f"eta {val('sampler.eta')}" if val("sampler.eta") not in (None, "0", "0.0") else None,
                           f"chunk {val('sampler.chunk')}" if val("sampler.chunk") else None,
                           f"torch.compile {val('sampler.compile')}" if val("sampler.compile") else None)
               if s]
    if sampler:
        parts.append(" ".join(sampler[:2]) + (", " + ", ".join(sampler[2:]) if sampler[2:] else ""))
    for key, fmt in (("images_per_prompt", "{} img/prompt"), ("n_prompts", "{} prompts"), ("seed", "seed {}"),
                     ("dtype", "{}"), ("device_type", "{}")):
        if val(key) is not None:
            parts.append(fmt.format(val(key)))
    scorer_names = sorted({k.split(".")[1] for k in keys if k.startswith("scorers.") and k.count(".") >= 2})
    scorers = []
    for name in scorer_names:
        ver, wh = val(f"scorers.{name}.version"), val(f"scorers.{name}.weights_hash")
        desc = name + (f" v{ver}" if ver else "") + (f" (weights {wh[:12]})" if wh else "")
        scorers.append(desc)
    if scorers:
        parts.append("scorers: " + ", ".join(scorers))
    known = {"suite", "images_per_prompt", "n_prompts", "seed", "dtype", "device_type"}
    extra = [f"{k}={val(k)}" for k in keys
             if k not in known and not k.startswith(("sampler.", "scorers.")) and val(k) is not None
             and len(str(val(k))) <= 48]
    if extra:
        parts.append(", ".join(extra))
    parts.append(f"protocol {protocol_hash[:12] or '(none)'}")
    return "; ".join(parts)


def protocol_diff(a: dict[str, Any], b: dict[str, Any], limit: int = 6) -> list[str]:
    """``["sampler.steps 20 → 50", ...]``: the protocol facts that differ from ``a`` to ``b``."""
    fa, fb = flatten(a), flatten(b)
    keys = list(fa) + [k for k in fb if k not in fa]
    out = [f"{k} {fa.get(k, '(unset)')} → {fb.get(k, '(unset)')}" for k in keys if fa.get(k) != fb.get(k)]
    return out[:limit] + ([f"… {len(out) - limit} more"] if len(out) > limit else [])


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        elif isinstance(v, (list, tuple)):
            out[key] = ",".join(str(x) for x in v)
        else:
            out[key] = v
    return out


__all__ = ["describe_protocol", "protocol_diff", "flatten"]
