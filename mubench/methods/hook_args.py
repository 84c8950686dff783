"""A forward pre-hook's ``(args, kwargs)`` by parameter name, in a form ``torch.compile`` traces.

``inspect.Signature.bind_partial`` does the same, but dynamo cannot trace it for every block (SD's ``UpBlock2D``
breaks the graph there), and a graph break inside the denoiser makes a compiled masked model recompile layer by
layer. The names are read from the signature once, when the hook is made; the hook only zips.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable


def positional_names(fn: Callable) -> tuple[str, ...]:
    """The names ``fn``'s positional arguments bind to, in order (up to a ``*args``)."""
    names = []
    for param in inspect.signature(fn).parameters.values():
        if param.kind not in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
            break
        names.append(param.name)
    return tuple(names)


def call_arguments(names: tuple[str, ...], args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``{name: value}`` of one call: positional arguments by ``names`` (extra ones, which a ``*args`` takes, are
    left out), then the keyword arguments."""
    bound = dict(zip(names, args))
    bound.update(kwargs)
    return bound
