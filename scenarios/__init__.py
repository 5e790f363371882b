"""User simulators ("scenarios") behind one small contract, and how the environment finds them.

Three ways to plug a scenario in, all usable as ``gym.make("FlexRec-v0", scenario=..., scenario_kwargs={...})``:

1. pass a :class:`Scenario` object;
2. register a factory under a name: ``scenarios.register("shoppers", make_shoppers)``;
3. install a package that declares an entry point in the group ``flexrec.scenarios``
   (``[project.entry-points."flexrec.scenarios"] shoppers = "shop_sim:ShopperScenario"``): the name then works
   everywhere, the command line included.

A ``"package.module:Factory"`` string also works (a callable that returns a :class:`Scenario`). Named scenarios are
built once per set of arguments and shared (scenarios are read-only after construction), and every scenario the
environment has not seen yet goes through :func:`check_scenario`.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import typing
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from typing import Any
from weakref import WeakSet

from scenarios.base import Request, RequestBatch, Scenario, ScenarioNeed
from scenarios.check import ScenarioCheckError, check_scenario
from scenarios.settings import field_types, signature_types
from scenarios.synthetic import SyntheticConfig, SyntheticScenario

__all__ = [
    "ENTRY_POINT_GROUP",
    "Request",
    "RequestBatch",
    "Scenario",
    "ScenarioCheckError",
    "ScenarioNeed",
    "SyntheticConfig",
    "SyntheticScenario",
    "available_scenarios",
    "check_scenario",
    "make_scenario",
    "register",
    "scenario_settings",
]

#: Entry-point group through which installed packages provide scenarios.
ENTRY_POINT_GROUP = "flexrec.scenarios"

ScenarioFactory = Callable[..., Scenario]
_FACTORIES: dict[str, tuple[ScenarioFactory, str]] = {}
_BUILT: dict[tuple[str, str], Scenario] = {}
_CHECKED: WeakSet[Scenario] = WeakSet()


def register(name: str, factory: ScenarioFactory, description: str = "") -> None:
    """Make ``factory(**scenario_kwargs)`` available by ``name``; a later call with the same name replaces it."""
    if not isinstance(name, str) or not name or ":" in name:
        raise ValueError(f"scenario name must be a non-empty string without ':', got {name!r}")
    if not callable(factory):
        raise TypeError(f"scenario factory for {name!r} must be callable, got {type(factory).__name__}")
    _FACTORIES[name] = (factory, description or _first_line(getattr(factory, "description", "") or factory.__doc__))
    for key in [key for key in _BUILT if key[0] == name]:
        del _BUILT[key]


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""


def _entry_points() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_scenarios() -> dict[str, str]:
    """Every scenario name that works in ``gym.make`` (registered and installed), with a one-line description."""
    found = {name: description for name, (_, description) in _FACTORIES.items()}
    for name, ep in _entry_points().items():
        if name not in found:
            try:
                factory = ep.load()
                found[name] = _first_line(getattr(factory, "description", "") or factory.__doc__) + f"  [{ep.value}]"
            except Exception as error:  # noqa: BLE001  (a broken plug-in must not hide the others)
                found[name] = f"(cannot be loaded: {error!r})  [{ep.value}]"
    return dict(sorted(found.items()))


def _factory(spec: str) -> ScenarioFactory:
    if spec in _FACTORIES:
        return _FACTORIES[spec][0]
    installed = _entry_points()
    if spec in installed:
        factory: ScenarioFactory = installed[spec].load()
        return factory
    if ":" in spec:
        module_name, _, attribute = spec.partition(":")
        try:
            found = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError, ValueError) as error:
            raise ValueError(f"cannot load scenario {spec!r}: {error}; expected 'package.module:Factory'") from error
        if not callable(found) or inspect.ismodule(found):
            raise ValueError(
                f"scenario {spec!r} names a {type(found).__name__}, not a scenario factory; "
                "expected 'package.module:Factory', a class or function returning a scenarios.Scenario"
            )
        return typing.cast(ScenarioFactory, found)
    allowed = sorted({*_FACTORIES, *installed})
    raise ValueError(f"unknown scenario {spec!r}; allowed: {allowed}, or 'package.module:Factory'")


def scenario_settings(spec: str) -> dict[str, Any] | None:
    """The keyword arguments the factory of scenario ``spec`` accepts, with their annotations (for parsing text).

    A factory may say so itself with a ``setting_types()`` attribute; otherwise its signature does, a parameter annotated
    with a config dataclass standing for that dataclass's fields when the factory also takes ``**overrides`` (as
    :class:`SyntheticScenario` does). None when the factory accepts arbitrary keywords it does not declare: the
    factory checks them itself.

    >>> sorted(scenario_settings("synthetic"))[:3]
    ['hard_negative_boost', 'history_length', 'latent_dim']
    """
    factory = _factory(spec)
    declared = getattr(factory, "setting_types", None)
    if callable(declared):
        return dict(declared())
    try:
        named = signature_types(factory)
        overrides = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(factory).parameters.values())
    except (TypeError, ValueError, NameError):
        return None
    settings: dict[str, Any] = {}
    for name, annotation in named.items():
        configs = [m for m in typing.get_args(annotation) or (annotation,) if dataclasses.is_dataclass(m)]
        if configs and overrides:
            settings.update(field_types(typing.cast(type, configs[0])))
        else:
            settings[name] = annotation
    return settings if settings or not overrides else None


def make_scenario(spec: str | Scenario, kwargs: Mapping[str, Any] | None = None, check: bool = True) -> Scenario:
    """A scenario from a name, an entry point, a ``"module:Factory"`` string (built with ``kwargs``) or an object.

    With ``check``, a scenario not seen before is checked against the contract (:func:`check_scenario`).
    """
    if isinstance(spec, Scenario):
        if kwargs:
            raise ValueError(f"scenario_kwargs {dict(kwargs)} only apply to a scenario given by name, not to {spec!r}")
        scenario = spec
    elif isinstance(spec, str):
        key = (spec, json.dumps(dict(kwargs or {}), sort_keys=True, default=repr))
        if key not in _BUILT:
            built = _factory(spec)(**dict(kwargs or {}))
            if not isinstance(built, Scenario):
                raise TypeError(f"scenario factory {spec!r} returned {type(built).__name__}, not a scenarios.Scenario")
            _BUILT[key] = built
        scenario = _BUILT[key]
    else:
        raise TypeError(f"scenario must be a name or a Scenario, got {type(spec).__name__}: {spec!r}")
    if check and scenario not in _CHECKED:
        check_scenario(scenario)
        _CHECKED.add(scenario)
    return scenario


def _log_factory(name: str) -> ScenarioFactory:
    """``scenarios.logged.<name>``, imported on first use (reading logs needs pandas, which is slow to import)."""

    def factory(**kwargs: Any) -> Scenario:
        from scenarios import logged

        built: Scenario = getattr(logged, name)(**kwargs)
        return built

    def setting_types() -> dict[str, Any]:
        from scenarios import logged
        from scenarios.logs import LOADER_OPTIONS, load_logged

        hints = typing.get_type_hints(getattr(logged, name))
        readers = typing.get_type_hints(load_logged)
        options = {option: readers[option] for option in LOADER_OPTIONS["logged" if "layout" in hints else name]}
        layout = {"layout": hints["layout"]} if "layout" in hints else {}
        return {"path": hints["path"], **layout, **field_types(logged.LogConfig), **options}

    factory.__name__ = factory.__qualname__ = name
    factory.setting_types = setting_types  # type: ignore[attr-defined]
    return factory


register("synthetic", SyntheticScenario, SyntheticScenario.description)
register("movielens", _log_factory("movielens"), "MovieLens 100K, 1M or latest from its folder: scenario_kwargs={'path': ...}")
register("movietweetings", _log_factory("movietweetings"), "MovieTweetings from its folder: scenario_kwargs={'path': ...}")
register("logged", _log_factory("logged"), "Any log: a CSV/TSV/Parquet file or RecBole .inter files, columns configurable")
