"""One generic registry for every plug-in kind (models, methods, suites, scorers, named training data).

Entries are lazy: a target is either an object or a ``"package.module:attr"`` string that is
imported the first time the entry is used, so listing plug-ins imports nothing heavy.
Third-party packages add entries through the entry-point group ``mubench.plugins``: each entry
point is a callable ``register(registries: Registries) -> None``.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Generic, Iterator, TypeVar

from .errors import unknown

T = TypeVar("T")

ENTRY_POINT_GROUP = "mubench.plugins"


def import_target(target: str) -> Any:
    """Resolve ``"package.module:attr"`` (attr may be dotted)."""
    module_name, _, attr = target.partition(":")
    if not attr:
        raise ValueError(f"registry target {target!r} must look like 'package.module:attr'")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


class Registry(Generic[T]):
    """Name → object, resolved lazily; unknown names fail with close matches."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._targets: dict[str, str | T] = {}
        self._help: dict[str, str] = {}
        self._params: dict[str, str | type] = {}

    def register(self, name: str, target: str | T, help: str = "", params: str | type | None = None) -> None:
        """``params``: the entry's ``Params`` dataclass (or ``"module:attr"``) where it can be imported without the
        entry's own module: configurations are then resolved without importing that module (and torch)."""
        if name in self._targets:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._targets[name] = target
        self._help[name] = help
        if params is not None:
            self._params[name] = params

    def get(self, name: str) -> T:
        if name not in self._targets:
            raise unknown(self.kind, name, self._targets)
        target = self._targets[name]
        if isinstance(target, str):
            target = import_target(target)
            self._targets[name] = target
        return target  # type: ignore[return-value]

    def params(self, name: str) -> type:
        """The entry's ``Params`` dataclass: the one registered with it (its module only is imported), else
        ``get(name).Params``."""
        if name not in self._targets:
            raise unknown(self.kind, name, self._targets)
        params = self._params.get(name)
        if params is None:
            return self.get(name).Params
        if isinstance(params, str):
            params = self._params[name] = import_target(params)
        return params

    def target(self, name: str) -> str:
        """Where an entry lives ("module:attr"), without importing it."""
        t = self._targets[name]
        return t if isinstance(t, str) else f"{getattr(t, '__module__', '?')}:{getattr(t, '__qualname__', t)}"

    def help(self, name: str) -> str:
        return self._help.get(name, "")

    def names(self) -> list[str]:
        return sorted(self._targets)

    def __contains__(self, name: object) -> bool:
        return name in self._targets

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


@dataclass
class Registries:
    models: Registry = field(default_factory=lambda: Registry("model"))
    methods: Registry = field(default_factory=lambda: Registry("method kind"))
    suites: Registry = field(default_factory=lambda: Registry("suite kind"))
    scorers: Registry = field(default_factory=lambda: Registry("scorer"))
    # named training data (``train.data=NAME``): :class:`mubench.train.data.NamedDataSource` objects
    datasets: Registry = field(default_factory=lambda: Registry("training data"))


def load_registries(plugins: bool = True) -> Registries:
    """Built-in entries (``mubench.builtins``) plus every installed ``mubench.plugins`` entry point."""
    from .builtins import register_builtins

    regs = Registries()
    register_builtins(regs)
    if plugins:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            ep.load()(regs)
    return regs
