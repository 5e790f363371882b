"""User simulators ("scenarios") behind one small contract, and the registry that finds them by name."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from scenarios.base import Request, RequestBatch, Scenario
from scenarios.synthetic import SyntheticConfig, SyntheticScenario

__all__ = [
    "Request",
    "RequestBatch",
    "Scenario",
    "SyntheticConfig",
    "SyntheticScenario",
    "available_scenarios",
    "make_scenario",
    "register",
]

ScenarioFactory = Callable[..., Scenario]
_FACTORIES: dict[str, tuple[ScenarioFactory, str]] = {}


def register(name: str, factory: ScenarioFactory, description: str = "") -> None:
    """Make ``factory(**scenario_kwargs)`` available as ``gym.make("FlexRec-v0", scenario=name, ...)``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"scenario name must be a non-empty string, got {name!r}")
    if not callable(factory):
        raise TypeError(f"scenario factory for {name!r} must be callable, got {type(factory).__name__}")
    _FACTORIES[name] = (factory, description or (getattr(factory, "description", "") or "").strip())


def available_scenarios() -> dict[str, str]:
    """Registered scenario names with their one-line descriptions."""
    return {name: description for name, (_, description) in sorted(_FACTORIES.items())}


def make_scenario(spec: str | Scenario, kwargs: Mapping[str, Any] | None = None) -> Scenario:
    """A scenario from a registered name (built with ``kwargs``) or a scenario object (used as is)."""
    if isinstance(spec, Scenario):
        if kwargs:
            raise ValueError(f"scenario_kwargs {dict(kwargs)} only apply to a scenario given by name, not to {spec!r}")
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"scenario must be a name or a Scenario, got {type(spec).__name__}: {spec!r}")
    if spec not in _FACTORIES:
        raise ValueError(f"unknown scenario {spec!r}; allowed: {sorted(_FACTORIES)}")
    factory, _ = _FACTORIES[spec]
    scenario = factory(**dict(kwargs or {}))
    if not isinstance(scenario, Scenario):
        raise TypeError(f"scenario factory {spec!r} returned {type(scenario).__name__}, not a Scenario")
    return scenario


register("synthetic", SyntheticScenario, SyntheticScenario.description)
