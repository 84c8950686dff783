"""``KEY=VALUE`` arguments of the result commands (report, runs, baseline, check)."""
from __future__ import annotations

from typing import Any, Iterable, Optional, Sequence

from ..config import Scalar, parse_overrides, plain
from ..errors import UsageError, close_matches, did_you_mean


def parse_kv(args: Optional[Sequence[str]], keys: Iterable[str], prefixes: Iterable[str] = (),
             command: str = "", options: Sequence[str] = ()) -> dict[str, Any]:
    """``["store=x", "tolerance.fid=abs:1"]`` → dict; a key outside ``keys`` (or ``PREFIX.anything``)
    raises UsageError with close matches and the valid keys. ``options``: the command's ``--NAME VALUE`` options,
    which written as ``NAME=VALUE`` are told how to write instead."""
    keys, prefixes = list(keys), list(prefixes)
    out: dict[str, Any] = {}
    for key, value in parse_overrides(list(args or [])):
        head = key.split(".", 1)[0]
        if key in options:
            shown = plain(value)
            raise UsageError(f"{key} is an option of `mubench {command}`, not a key: give it as --{key} {shown}, not "
                             f"{key}={shown}")
        if key in keys or ("." in key and head in prefixes and key.split(".", 1)[1]):
            # none / null is no value; any other text stays as typed (a str), and as_int & co read its number
            out[key] = None if isinstance(value, Scalar) and value.value is None and not value.quoted else value
            continue
        valid = keys + [f"{p}.NAME" for p in prefixes]
        hint = close_matches(key, keys + prefixes) or close_matches(head, keys + prefixes)
        where = f" for `mubench {command}`" if command else ""
        msg = f"unknown key {key!r}{where}{did_you_mean(hint)}"
        raise UsageError(msg + f"\n  valid keys: {', '.join(valid)}")
    return out


def as_list(value: Any, key: str) -> Optional[list[str]]:
    """``methods=a,b`` (or a YAML list) → ``["a", "b"]``; None stays None."""
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple)):
        items = [str(v).strip() for v in value]
    else:
        items = [v.strip() for v in str(value).split(",")]
    items = [v for v in items if v]
    if not items:
        raise UsageError(f"{key}= needs at least one name")
    return items


def as_str(value: Any) -> Optional[str]:
    return None if value is None or value == "" else str(value)


def as_int(value: Any, key: str, minimum: int = 1) -> int:
    """An integer key (``resamples=2000``) at least ``minimum``."""
    value = plain(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UsageError(f"bad value {key}={value!r}; expected an integer >= {minimum}")
    return value


def as_alpha(value: Any, key: str = "alpha") -> float:
    """A significance level strictly between 0 and 1."""
    value = plain(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < float(value) < 1:
        raise UsageError(f"bad value {key}={value!r}; expected a number between 0 and 1")
    return float(value)


def as_bool(value: Any, key: str) -> bool:
    value = plain(value)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1"):
        return True
    if isinstance(value, str) and value.lower() in ("false", "no", "off", "0"):
        return False
    if value in (0, 1):
        return bool(value)
    raise UsageError(f"bad value {key}={value!r}; expected true or false")
