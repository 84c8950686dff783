"""Typed run configuration with Hydra-style ``key=value`` overrides.

``mubench run suite=micro method=random-mask method.ratio=0.5 limit=8`` resolves to a
:class:`ResolvedConfig`: the top-level :class:`RunConfig` plus one :class:`Component` each for the
model, the method and the suite. A component's parameters are the dataclass ``Params`` of the
registered class; a spec YAML (``methods/NAME.yaml``, ``suites/NAME.yaml``) names its ``kind`` and
fills those parameters; ``method.KEY=VALUE`` overrides them. Unknown names and keys, and values of
the wrong type, raise :class:`~mubench.errors.UsageError` with close matches.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Optional

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .errors import UsageError, close_matches, did_you_mean
from .overrides import Scalar, dataclass_type, parse_overrides, plain, read_scalar, typed_layer
from .registry import Registries
from .specs import find_spec, load_yaml

COMPONENTS = ("model", "method", "suite")
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune")  # the run's compile= (mubench.sampler)
SPEC_META_KEYS = ("kind", "description", "paper")
#: A suite spec's ``model``: the base model a run uses when no ``model=`` is given; ``models``: the models its
#: numbers are meant for (default: just ``model``). A run on another model warns (unless weights=random).
SUITE_MODEL_KEYS = ("model", "models")
RECIPES_KEY = "recipes"  # method specs: per-model parameter layers, ``recipes: {micro: {train: {steps: 300}}}``


@dataclass
class RunConfig:
    """Top-level keys of ``mubench run``."""

    suite: str = "micro"  # suite spec name or path to a YAML file
    method: str = "sd"  # method spec name or path to a YAML file
    model: str = "micro"  # registered model name
    limit: Optional[int] = None  # first N prompts of the suite
    batch_size: int = 8  # images held in memory at once, in whole chunks (results do not depend on it)
    chunk: Optional[int] = None  # images per denoiser / decoder call, padded (part of the protocol); None: 8 cpu, 32 cuda
    seed: int = 0  # run seed; image j of prompt i uses a stream seeded by (seed, suite, prompt id, j)
    device: str = "auto"  # cpu | cuda | cuda:N | auto
    dtype: str = "auto"  # auto | float32 | float16 | bfloat16
    out: Optional[str] = None  # folder for results.json and samples.jsonl
    store: Optional[str] = None  # SQLite results store (default under the user cache dir)
    cache: Optional[str] = None  # sample / score cache folder (default under the user cache dir)
    train: str = "auto"  # auto | never | force: train a method's missing artifact on demand
    weights: str = "pretrained"  # pretrained | random (build the model from its config, for inspection and tests)
    # torch.compile mode of the denoiser call: none (eager) | default | reduce-overhead (CUDA graphs on a GPU) |
    # max-autotune; part of the protocol when not none (compiled kernels round differently)
    compile: str = "none"


ALLOWED = {
    "device": None,
    "dtype": ("auto", "float32", "float16", "bfloat16"),
    "train": ("auto", "never", "force"),
    "weights": ("pretrained", "random"),
    "compile": COMPILE_MODES,
}


@dataclass
class Component:
    """A resolved model, method or suite: registry kind, typed params, where it came from."""

    role: str  # model | method | suite
    name: str  # spec / registry name
    kind: str  # registry key of the implementing class
    params: Any  # instance of the class's Params dataclass
    description: str = ""
    source: str = ""  # spec file path, or "registry"
    recipe: Optional[str] = None  # the spec's ``recipes`` entry applied (the model it is keyed by), if any

    def as_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "kind": self.kind, "params": to_plain(self.params)}
        if self.recipe is not None:
            out["recipe"] = self.recipe
        return out

    def fingerprint(self, trained: bool = False, location_params: tuple[str, ...] = ()) -> str:
        """Hash of the resolved component. ``trained``: a method whose artifact (its weights' sha256, keyed
        separately) stands for how it was trained: its ``train`` settings are left out, so ``train.log_every=`` or
        a moved ``train.data=`` folder does not make every image again. ``location_params``: dotted paths into the
        params (list items by index, e.g. ``rewards.0.params.checkpoint``) that say only where a file is whose
        content is keyed separately: recorded as null, like a :data:`LOCATION_ONLY` field."""
        out = self.as_dict()
        if trained and isinstance(out["params"], dict):
            out["params"] = {k: v for k, v in out["params"].items() if k != "train"}
        for path in location_params:
            null_path(out["params"], path)
        return stable_hash(out)


@dataclass
class ResolvedConfig:
    run: RunConfig
    model: Component
    method: Component
    suite: Component

    def as_dict(self) -> dict[str, Any]:
        return {
            "run": to_plain(self.run),
            "model": self.model.as_dict(),
            "method": self.method.as_dict(),
            "suite": self.suite.as_dict(),
        }


#: dataclass field metadata of a setting that changes how fast a result is computed, never the result (e.g. FID's
#: ``num_workers``): left out of protocols and cache keys by ``to_plain(..., results_only=True)``
SPEED_ONLY = {"speed_only": True}
#: dataclass field metadata of a path that says where a file is, never what it holds: its content is pinned elsewhere
#: in the same protocol or key (an asset's sha256 checked on load, a scorer's weights hash, COCO's selection manifest,
#: the reference batch's sha256). ``to_plain(..., results_only=True)`` records it as null, as if left at its default,
#: so the same data mounted elsewhere keeps its protocol and its cached scores.
LOCATION_ONLY = {"location_only": True}


def to_plain(obj: Any, results_only: bool = False) -> Any:
    """Dataclasses (nested) → plain JSON-able dicts; ``results_only`` drops the :data:`SPEED_ONLY` fields and
    nulls the :data:`LOCATION_ONLY` ones."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: None if results_only and f.metadata.get("location_only") else
                to_plain(getattr(obj, f.name), results_only)
                for f in dataclasses.fields(obj) if not (results_only and f.metadata.get("speed_only"))}
    if isinstance(obj, dict):
        return {str(k): to_plain(v, results_only) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v, results_only) for v in obj]
    return obj


def null_path(plain: Any, path: str) -> None:
    """Set the value at dotted ``path`` (list items by index) of a plain dict to None, where it is present."""
    *parents, last = path.split(".")
    node = plain
    for part in parents:
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return
    if isinstance(node, dict) and last in node:
        node[last] = None


def stable_hash(obj: Any, length: int = 16) -> str:
    """sha256 of the canonical JSON of ``obj`` (sorted keys), truncated to ``length`` hex digits."""
    blob = json.dumps(to_plain(obj), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def _check_keys(cls: type, data: dict[str, Any], where: str) -> None:
    """Reject keys that ``cls`` (a dataclass, possibly nested) does not have, with close matches."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in data.items():
        if key not in fields:
            msg = f"unknown key {where + str(key)!r}{did_you_mean(where + h for h in close_matches(key, fields))}"
            if fields:
                msg += f"\n  valid keys: {', '.join(where + k for k in sorted(fields))}"
            else:  # e.g. method.ratio=... for method=sd
                msg += f"\n  this {where.rstrip('.') or 'component'} has no options: no {where}KEY=VALUE applies"
            raise UsageError(msg)
        sub = dataclass_type(cls, key)
        if sub is not None and isinstance(value, dict):
            _check_keys(sub, value, f"{where}{key}.")


def nest_overrides(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``[("a.b", 1), ("c", 2)]`` → ``{"a": {"b": 1}, "c": 2}`` (a key both a leaf and a prefix is an error)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UsageError(f"key {key!r} conflicts with an earlier override")
        node[parts[-1]] = value
    return out


def build_params(cls: type, *layers: dict[str, Any], where: str = "") -> Any:
    """Merge dict layers onto the dataclass defaults with type checking (OmegaConf structured)."""
    layers = tuple(typed_layer(cls, layer) for layer in layers)
    for layer in layers:
        _check_keys(cls, layer, where)
    try:
        conf = OmegaConf.structured(cls)
        for layer in layers:
            conf = OmegaConf.merge(conf, OmegaConf.create(layer))
        obj = OmegaConf.to_object(conf)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or ""
        raise UsageError(f"bad value for {where}{key}: {str(err).splitlines()[0]}") from None
    check = getattr(obj, "validate", None)
    if callable(check):
        try:
            check()
        except ValueError as err:
            raise UsageError(f"bad value in {where.rstrip('.') or 'config'}: {err}") from None
    return obj


def resolve_component(role: str, name: str, overrides: dict[str, Any], regs: Registries,
                      model: Optional[str] = None) -> Component:
    """Resolve one component: spec defaults, then (methods) the spec's recipe for ``model``, then ``overrides``.

    A method spec may hold ``recipes: {MODEL: {...}}``: parameter layers keyed by model name, applied on top of the
    spec when the run's model is ``MODEL`` (e.g. a micro-scale training recipe for ``model=micro``) and under the
    user's ``method.KEY=VALUE`` overrides.
    """
    registry = {"model": regs.models, "method": regs.methods, "suite": regs.suites}[role]
    if role == "model":
        params = build_params(registry.params(name), overrides, where="model.")
        return Component(role, name, name, params, registry.help(name), "registry")
    spec_name, path = find_spec(role + "s", name)
    spec = load_yaml(path)
    kind = spec.pop("kind", None)
    if not kind or not isinstance(kind, str):
        raise UsageError(f"{path}: a {role} spec needs a 'kind' naming one of {', '.join(registry.names())}"
                         + (f" (got {kind!r})" if kind else ""))
    params_cls = registry.params(kind)
    description = str(spec.pop("description", ""))
    if role == "suite":
        for meta in SUITE_MODEL_KEYS:
            spec.pop(meta, None)
    for meta in SPEC_META_KEYS:
        spec.pop(meta, None)
    recipes = spec.pop(RECIPES_KEY, None) or {}
    if not isinstance(recipes, dict) or not all(isinstance(v, dict) for v in recipes.values()):
        raise UsageError(f"{path}: '{RECIPES_KEY}' must map model names to parameter mappings")
    recipe = recipes.get(model) if model is not None else None
    layers = [spec] + ([recipe] if recipe else []) + [overrides]
    try:
        params = build_params(params_cls, *layers, where=f"{role}.")
    except UsageError as err:
        try:  # name the spec file when the fault is in it, not in the command line's overrides
            build_params(params_cls, *layers[:-1], where=f"{role}.")
        except UsageError:
            raise UsageError(f"{path}: {err}") from None
        raise
    return Component(role, spec_name, kind, params, description, str(path),
                     recipe=model if recipe else None)


def resolve(args: list[str], regs: Registries, defaults: Optional[dict[str, Any]] = None,
            check_run: Optional[Callable[[RunConfig], None]] = None) -> ResolvedConfig:
    """Resolve ``key=value`` arguments into a :class:`ResolvedConfig` (raises UsageError). ``check_run`` is called
    with the top-level :class:`RunConfig` before any component's module is imported (those import torch): checks
    that need only it, such as the paths a command writes, fail in a fraction of a second."""
    pairs = parse_overrides(args)
    top: dict[str, Any] = dict(defaults or {})
    sub: dict[str, list[tuple[str, Any]]] = {c: [] for c in COMPONENTS}
    for key, value in pairs:
        head, dot, rest = key.partition(".")
        if dot and head in COMPONENTS:
            sub[head].append((rest, value))
        elif dot:
            raise _unknown_top(key)
        else:
            top[key] = value
    _check_top_keys(top, regs)
    fits: list[str] = []
    if top.get("suite", RunConfig.suite) is not None:
        default_model, fits = suite_models(str(top.get("suite", RunConfig.suite)))
        if "model" not in top and default_model:
            top["model"] = default_model
    run = build_params(RunConfig, top)
    for key, allowed in ALLOWED.items():
        value = getattr(run, key)
        if allowed and value not in allowed:
            raise UsageError(f"bad value {key}={value!r}; expected one of {', '.join(allowed)}")
    if not re.fullmatch(r"auto|cpu|mps|meta|cuda(:\d+)?", run.device):
        raise UsageError(f"bad value device={run.device!r}; expected cpu, cuda, cuda:N or auto (meta: counts only)")
    if run.limit is not None and run.limit < 1:
        raise UsageError(f"bad value limit={run.limit}; expected a positive number of prompts")
    if run.batch_size < 1:
        raise UsageError(f"bad value batch_size={run.batch_size}; expected >= 1")
    if run.chunk is not None and run.chunk < 1:
        raise UsageError(f"bad value chunk={run.chunk}; expected >= 1 (1 = one image per denoiser call)")
    if check_run is not None:
        check_run(run)
    comps = {c: resolve_component(c, getattr(run, c), nest_overrides(sub[c]), regs, model=run.model)
             for c in ("suite", "method", "model")}
    if fits and run.model not in fits and run.weights != "random":
        warnings.warn(f"suite {comps['suite'].name!r} is meant for model {' or '.join(fits)}; model={run.model} runs "
                      f"the {run.model} model on its prompts, and its numbers are not comparable with that setting's",
                      MismatchWarning, stacklevel=2)
    return ResolvedConfig(run=run, **comps)


def _check_top_keys(top: dict[str, Any], regs: Registries) -> None:
    """:func:`_check_keys` for the top-level keys, where a key that is a parameter of this run's suite, method or
    model (``steps=20``: ``suite.sampler.steps``) is told its full name."""
    unknown_keys = [k for k in top if k not in {f.name for f in dataclasses.fields(RunConfig)}]
    component_keys = _component_keys(top, regs) if unknown_keys else []
    for key in unknown_keys:
        nested = [path for path in component_keys if path.rsplit(".", 1)[-1] == key]
        if nested:
            raise UsageError(f"unknown key {key!r}; did you mean {' or '.join(map(repr, nested))}? (the suite's, "
                             "method's and model's parameters are given as suite.KEY, method.KEY, model.KEY)")
    _check_keys(RunConfig, top, "")


def _component_keys(top: dict[str, Any], regs: Registries) -> list[str]:
    """Every dotted parameter key (``suite.sampler.steps``) of the suite, method and model ``top`` names; a
    component that cannot be resolved has none here (resolving it tells why)."""
    keys: list[str] = []
    for role in COMPONENTS:
        try:
            if role == "model":
                name = top.get("model") or suite_models(str(top.get("suite", RunConfig.suite)))[0] or RunConfig.model
                cls = regs.models.params(str(name))
            else:
                kind = load_yaml(find_spec(role + "s", str(top.get(role, getattr(RunConfig, role))))[1]).get("kind")
                cls = getattr(regs, role + "s").params(str(kind))
        except (UsageError, AttributeError, ImportError):
            continue
        keys.extend(_field_keys(cls, role + "."))
    return keys


def _field_keys(cls: type, prefix: str) -> list[str]:
    out = []
    for f in dataclasses.fields(cls):
        out.append(prefix + f.name)
        sub = dataclass_type(cls, f.name)
        if sub is not None:
            out.extend(_field_keys(sub, f"{prefix}{f.name}."))
    return out


class MismatchWarning(UserWarning):
    """A run's model is not one its suite's numbers are meant for."""


def suite_models(name: str) -> tuple[Optional[str], list[str]]:
    """A suite spec's default model and the models it fits (``(None, [])`` when it names none)."""
    try:
        _, path = find_spec("suites", name)
    except UsageError:
        return None, []  # resolve_component reports the unknown suite
    spec = load_yaml(path)
    model = spec.get("model")
    fits = spec.get("models") or ([model] if model else [])
    if isinstance(fits, str):
        fits = [fits]
    if model is not None and not isinstance(model, str) or not all(isinstance(m, str) for m in fits):
        raise UsageError(f"{path}: 'model' must be a model name and 'models' a list of model names")
    return model, list(fits)


def _unknown_top(key: str) -> UsageError:
    head = key.split(".")[0]
    names = [f.name for f in dataclasses.fields(RunConfig)] + list(COMPONENTS)
    return UsageError(f"unknown key {key!r}{did_you_mean(close_matches(head, names))}")


def params_dataclass(**kwargs: Any):  # pragma: no cover - convenience for plug-in authors
    return dataclass(**kwargs)


__all__ = [
    "RunConfig", "Component", "ResolvedConfig", "resolve", "resolve_component", "build_params",
    "parse_overrides", "plain", "read_scalar", "Scalar", "stable_hash", "to_plain", "field", "Literal",
]
