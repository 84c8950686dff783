"""``KEY=VALUE`` values of the command line: read as typed, then by the type of the field they set.

A value keeps its text next to what it reads as (:class:`Scalar`), so a text field gets exactly what was typed
(``out=0123``, ``compile=none``, ``suite.prompt=close-up: a red circle``, ``model.path=/w/sd #1``) while a number or
flag field gets the number or flag. The reading rules are plain ones (:func:`read_scalar`), not YAML 1.1's octal
integers, sexagesimal numbers, dates and comments.
"""
from __future__ import annotations

import dataclasses
import re
import typing
from typing import Any, Literal

import yaml

from .errors import UsageError


class Scalar(str):
    """A command-line value as typed (surrounding quotes removed) that also knows what it reads as (``value``: None,
    a bool, an int, a float or the text). :func:`build_params` gives a text field the text (``out=0123`` stays
    "0123", ``compile=none`` stays "none", ``out=/tmp/run #2`` keeps its ``#2``) and any other field the value."""

    value: Any
    quoted: bool

    def __new__(cls, text: str, value: Any, quoted: bool = False) -> "Scalar":
        obj = super().__new__(cls, text)
        obj.value, obj.quoted = value, quoted
        return obj


_NULLS, _TRUE, _FALSE = ("null", "none", "~"), ("true", "yes", "on"), ("false", "no", "off")
_DIGITS = r"\d(?:_?\d)*"  # 1000 or 1_000, as Python reads them
_INT = re.compile(rf"[-+]?{_DIGITS}")
_FLOAT = re.compile(rf"[-+]?({_DIGITS}\.(?:{_DIGITS})?|\.{_DIGITS}|{_DIGITS})([eE][-+]?{_DIGITS})?")


def read_scalar(raw: str) -> Any:
    """One ``KEY=VALUE`` value: a :class:`Scalar`, or a list / mapping written in flow style (``[1, 2]``).

    Plain rules instead of YAML 1.1's: decimal integers (``0123`` is 123, not octal), floats with or without a dot
    (``1e-3``), true/yes/on, false/no/off, null/none/~; no comments, dates or implicit mappings (``a: b`` is text)."""
    text = raw.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return Scalar(text[1:-1], text[1:-1], quoted=True)
    low = text.lower()
    if text[:1] in ("[", "{"):
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError:
            return Scalar(text, text)
    if low in _NULLS:
        value: Any = None
    elif low in _TRUE or low in _FALSE:
        value = low in _TRUE
    elif _INT.fullmatch(text):
        value = int(text)
    elif _FLOAT.fullmatch(text):
        value = float(text)
    else:
        value = text
    return Scalar(text, value)


def plain(value: Any) -> Any:
    """What a value reads as where no field type says it is text (a :class:`Scalar`'s value; anything else as is)."""
    if isinstance(value, Scalar):
        return value.value
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def parse_overrides(args: list[str]) -> list[tuple[str, Any]]:
    """``["a=1", "method.ratio=0.5"]`` → ``[("a", Scalar("1")), ...]`` (:func:`read_scalar`; :func:`build_params`
    reads each value by its field's type)."""
    parsed = []
    for arg in args:
        key, sep, raw = arg.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"expected KEY=VALUE, got {arg!r}")
        parsed.append((key, read_scalar(raw)))
    return parsed


def _text_field(tp: Any) -> tuple[bool, bool]:
    """(is a text field, may be None) for a dataclass field's type: ``str``, ``Optional[str]``, a Literal of texts."""
    args = typing.get_args(tp)
    optional = typing.get_origin(tp) is typing.Union and type(None) in args
    if optional:
        rest = [a for a in args if a is not type(None)]
        tp = rest[0] if len(rest) == 1 else None
    if tp is str:
        return True, optional
    if typing.get_origin(tp) is Literal and all(isinstance(a, str) for a in typing.get_args(tp)):
        return True, optional
    return False, optional


def typed_layer(cls: type, layer: dict[str, Any]) -> dict[str, Any]:
    """``layer`` with each :class:`Scalar` read by ``cls``'s field types (text fields keep the text)."""
    try:
        hints = typing.get_type_hints(cls)
    except (NameError, TypeError):
        hints = {}
    out: dict[str, Any] = {}
    for key, value in layer.items():
        tp = hints.get(key)
        sub = dataclass_type(cls, key) if tp is not None else None
        if sub is not None and isinstance(value, dict):
            out[key] = typed_layer(sub, value)
        elif isinstance(value, Scalar):
            text, optional = _text_field(tp) if tp is not None else (False, False)
            if text and not (optional and value.value is None and not value.quoted):
                out[key] = str(value)
            else:
                out[key] = value.value
        else:
            out[key] = plain(value)
    return out


def dataclass_type(cls: type, name: str) -> type | None:
    """The dataclass a field of ``cls`` holds (a nested config), or None."""
    hints = typing.get_type_hints(cls)
    tp = hints.get(name)
    return tp if isinstance(tp, type) and dataclasses.is_dataclass(tp) else None
