"""``check_scenario``: checks that a user simulator meets the scenario contract, like gymnasium's ``check_env``."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import numpy as np

from scenarios.base import RequestBatch, Scenario


class ScenarioCheckError(ValueError):
    """A scenario breaks the contract; the message lists every problem found and how to fix it."""


def _attribute_problems(scenario: Scenario) -> list[str]:
    problems = []
    for name in ("num_items", "num_users", "num_categories", "candidate_feature_dim", "user_feature_dim", "max_grade"):
        value = getattr(scenario, name, None)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            problems.append(f"attribute {name}={value!r}: set it to a positive integer in __init__")
    categories = np.asarray(getattr(scenario, "item_category", None))
    if categories.shape != (getattr(scenario, "num_items", -1),):
        problems.append(f"item_category must be an array of shape (num_items,), got shape {categories.shape}")
    elif not ((categories >= 0) & (categories < scenario.num_categories)).all():
        problems.append("item_category holds values outside [0, num_categories)")
    return problems


def _batch_problems(scenario: Scenario, batch: Any, num_requests: int, num_candidates: int) -> list[str]:
    if not isinstance(batch, RequestBatch):
        return [f"sample_requests returned {type(batch).__name__}; return a scenarios.RequestBatch"]
    b, n = num_requests, num_candidates
    expected: dict[str, tuple[tuple[int, ...] | None, str]] = {
        "user_ids": ((b,), "i"),
        "times": ((b,), "f"),
        "history": (None, "i"),
        "candidates": ((b, n), "i"),
        "candidate_features": ((b, n, scenario.candidate_feature_dim), "float32"),
        "user_features": ((b, scenario.user_feature_dim), "float32"),
        "category": ((b, n), "i"),
        "popularity": ((b, n), "f"),
        "recent_popularity": ((b, n), "f"),
        "freshness": ((b, n), "f"),
        "interest": ((b, n), "i"),
    }
    problems = []
    for field in fields(RequestBatch):
        if field.name == "extras":
            continue
        value = getattr(batch, field.name)
        shape, kind = expected[field.name]
        if not isinstance(value, np.ndarray):
            problems.append(f"{field.name} is a {type(value).__name__}; make it a numpy array")
            continue
        if shape is not None and value.shape != shape:
            problems.append(f"{field.name} has shape {value.shape}, expected {shape}")
        if kind == "float32" and value.dtype != np.float32:
            problems.append(f"{field.name} has dtype {value.dtype}; cast it with .astype(np.float32)")
        elif kind in "if" and value.dtype.kind not in ("iu" if kind == "i" else "fiu"):
            problems.append(f"{field.name} has dtype {value.dtype}; expected {'integers' if kind == 'i' else 'numbers'}")
        elif value.dtype.kind == "f" and not np.isfinite(value).all():
            problems.append(f"{field.name} has NaN or infinite values")
    return problems or _value_problems(scenario, batch, n)


def _value_problems(scenario: Scenario, batch: RequestBatch, n: int) -> list[str]:
    problems = []
    b = len(batch.user_ids)
    for name, value in batch.extras.items():
        if not isinstance(value, np.ndarray) or value.shape[:1] != (b,):
            problems.append(f"extras[{name!r}] must be an array with the batch axis first, shape ({b}, ...)")
    if batch.history.ndim != 2 or len(batch.history) != b:
        problems.append(f"history has shape {batch.history.shape}, expected ({b}, H) padded with -1")
    ranges: dict[str, tuple[np.ndarray, float, float]] = {
        "user_ids": (batch.user_ids, 0, scenario.num_users - 1),
        "candidates": (batch.candidates, 0, scenario.num_items - 1),
        "history": (batch.history, -1, scenario.num_items - 1),
        "category": (batch.category, 0, scenario.num_categories - 1),
        "interest": (batch.interest, 0, scenario.max_grade),
        "popularity": (batch.popularity, 0.0, 1.0),
        "recent_popularity": (batch.recent_popularity, 0.0, 1.0),
        "freshness": (batch.freshness, 0.0, 1.0),
    }
    for name, (value, low, high) in ranges.items():
        if np.size(value) and (np.min(value) < low or np.max(value) > high):
            problems.append(f"{name} has values in [{np.min(value)}, {np.max(value)}], outside the allowed [{low}, {high}]")
    repeats = [i for i, row in enumerate(batch.candidates) if len(np.unique(row)) != n]
    if repeats:
        problems.append(f"candidates repeat an item within a request (request {repeats[0]}); sample without replacement")
    categories = np.asarray(scenario.item_category)[np.clip(batch.candidates, 0, scenario.num_items - 1)]
    if not np.array_equal(categories, batch.category):
        problems.append("category disagrees with item_category[candidates]")
    return problems


def check_scenario(scenario: Scenario, num_requests: int = 64, num_candidates: int = 20, seed: int = 0) -> None:
    """Check a scenario against the data contract; raise :class:`ScenarioCheckError` listing every problem found.

    Checks attributes, the shapes, dtypes and ranges of a sampled :class:`RequestBatch` and that the same seed gives
    the same requests. Whether the needs work on the scenario is the environment's check
    (``flexrec_env.needs.check_scenario_needs``); ``gym.make`` runs both on every scenario it has not seen.
    """
    if not isinstance(scenario, Scenario):
        raise ScenarioCheckError(f"{scenario!r} is a {type(scenario).__name__}; subclass scenarios.Scenario")
    problems = _attribute_problems(scenario)
    if problems:
        raise ScenarioCheckError(_format(scenario, problems))
    limit = scenario.max_candidates()
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 2:
        problem = f"max_candidates() is {limit!r}: every request must be able to hold at least 2 candidates"
        raise ScenarioCheckError(_format(scenario, [problem + " (a larger catalogue, or fewer items excluded)"]))
    try:
        num_candidates = min(num_candidates, int(limit))
        batch = scenario.sample_requests(np.random.default_rng(seed), num_requests, num_candidates)
        again = scenario.sample_requests(np.random.default_rng(seed), num_requests, num_candidates)
    except Exception as error:
        raise ScenarioCheckError(_format(scenario, [f"sample_requests raised {error!r}"])) from error
    problems = _batch_problems(scenario, batch, num_requests, num_candidates)
    if problems:
        raise ScenarioCheckError(_format(scenario, problems))
    if not batch.equals(again):
        problems = ["the same generator seed gave different requests: draw every random number from the rng argument"]
        raise ScenarioCheckError(_format(scenario, problems))


def _format(scenario: Scenario, problems: list[str]) -> str:
    return f"scenario {scenario!r} breaks the scenario contract:\n" + "\n".join(f"  - {p}" for p in problems)
