"""Non-learning rankers: random, popularity, a need-aware heuristic, and the oracle (the upper bound).

All read only what the environment shows (``env.unwrapped.request`` and the observation), except the oracle,
which sorts by the true relevance and exists to show the ceiling: it is labelled as such everywhere.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from agents.base import Agent
from flexrec_env.needs import NEED_FEATURE_NAMES
from scenarios import Request

_AXIS = {name: i for i, name in enumerate(NEED_FEATURE_NAMES)}


class RandomAgent(Agent):
    """Ranks candidates in a uniformly random order."""

    name = "random"

    def __init__(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(seed)

    def seed(self, seed: int | None) -> None:
        self.rng = np.random.default_rng(seed)

    def rank(self, request: Request, observation: dict[str, Any], info: dict[str, Any]) -> NDArray[np.int64]:
        return self.rng.permutation(len(request.candidates)).astype(np.int64)


class PopularityAgent(Agent):
    """Ranks by popularity: all-time (``window="all"``) or in the recent window (``window="recent"``)."""

    def __init__(self, window: Literal["all", "recent"] = "all") -> None:
        if window not in ("all", "recent"):
            raise ValueError(f"window={window!r}; allowed: 'all' or 'recent'")
        self.window = window
        self.name = "popularity" if window == "all" else "popularity-recent"

    def rank(self, request: Request, observation: dict[str, Any], info: dict[str, Any]) -> NDArray[np.int64]:
        signal = request.popularity if self.window == "all" else request.recent_popularity
        return np.argsort(-signal, kind="stable").astype(np.int64)


class OracleAgent(Agent):
    """The upper bound, not a recommender: sorts by the true need-specific relevance (``expose_truth=True``)."""

    name = "oracle (upper bound)"
    needs_truth = True

    def rank(self, request: Request, observation: dict[str, Any], info: dict[str, Any]) -> NDArray[np.int64]:
        if "relevance" not in info:
            raise ValueError("the oracle reads the true relevance: make the env with expose_truth=True")
        return np.argsort(-np.asarray(info["relevance"]), kind="stable").astype(np.int64)


class NeedAwareHeuristic(Agent):
    """Hand-written scoring driven by the need's feature vector.

    ``score_i = w_interest * taste_i + w_trending * recent_popularity_i + w_niche * (1 - popularity_i)
    + w_fresh * freshness_i``, where ``taste_i`` is the share of the user's history in the candidate's category.
    With a ``diverse`` weight, the list is built greedily and each repeat of a category halves the score.
    """

    name = "need-aware"

    def __init__(self, signal_weight: float = 2.0) -> None:
        self.signal_weight = signal_weight

    def scores(self, request: Request, need: NDArray[np.float32]) -> NDArray[np.float64]:
        size = max(int(request.category.max()), max(request.history_categories, default=0)) + 1
        history = np.bincount(np.asarray(request.history_categories, dtype=np.int64), minlength=size)
        taste = history[request.category] / max(len(request.history_categories), 1)  # (N,)
        w = self.signal_weight
        return (
            need[_AXIS["interest"]] * taste
            + w * need[_AXIS["trending"]] * request.recent_popularity
            + w * need[_AXIS["niche"]] * (1.0 - request.popularity)
            + w * need[_AXIS["fresh"]] * request.freshness
        )

    def rank(self, request: Request, observation: dict[str, Any], info: dict[str, Any]) -> NDArray[np.int64]:
        need = np.asarray(observation["need"])
        scores = self.scores(request, need)
        if need[_AXIS["diverse"]] <= 0:
            return np.argsort(-scores, kind="stable").astype(np.int64)
        ranking: list[int] = []
        seen = np.zeros(int(request.category.max()) + 1)
        available = np.ones(len(scores), dtype=bool)
        for _ in range(len(scores)):
            attenuated = np.where(available, scores * 0.5 ** seen[request.category], -np.inf)
            best = int(np.argmax(attenuated))
            ranking.append(best)
            available[best] = False
            seen[request.category[best]] += 1
        return np.array(ranking, dtype=np.int64)
