"""Non-learning rankers: a random ranker and a need-aware heuristic.

Every agent ranks a request: ``agent.rank(request, observation)`` returns candidate indices, best first. The
heuristic reads only what the environment shows (``env.unwrapped.request``: history, categories, popularity
signals, and the need's feature vector in the observation), never the ground truth.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from numpy.typing import NDArray

from flexrec_env.needs import NEED_FEATURE_NAMES
from scenarios import Request

_AXIS = {name: i for i, name in enumerate(NEED_FEATURE_NAMES)}


class Agent(abc.ABC):
    """Anything that ranks a request."""

    name: ClassVar[str] = "agent"

    @abc.abstractmethod
    def rank(self, request: Request, observation: dict[str, Any]) -> NDArray[np.int64]:
        """Candidate indices, best first (at least K of them, no repeats)."""

    def seed(self, seed: int | None) -> None:  # noqa: B027  (optional hook)
        """Reseed the agent's own randomness, if it has any."""


class RandomAgent(Agent):
    """Ranks candidates in a uniformly random order."""

    name = "random"

    def __init__(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(seed)

    def seed(self, seed: int | None) -> None:
        self.rng = np.random.default_rng(seed)

    def rank(self, request: Request, observation: dict[str, Any]) -> NDArray[np.int64]:
        return self.rng.permutation(len(request.candidates)).astype(np.int64)


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
        history = np.bincount(np.asarray(request.history_categories, dtype=np.int64), minlength=int(request.category.max()) + 1)
        taste = history[request.category] / max(len(request.history_categories), 1)  # (N,)
        w = self.signal_weight
        return (
            need[_AXIS["interest"]] * taste
            + w * need[_AXIS["trending"]] * request.recent_popularity
            + w * need[_AXIS["niche"]] * (1.0 - request.popularity)
            + w * need[_AXIS["fresh"]] * request.freshness
        )

    def rank(self, request: Request, observation: dict[str, Any]) -> NDArray[np.int64]:
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


def run_episode(env: gym.Env, agent: Agent, seed: int | None = None, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Play one episode by placing the agent's ranking position by position; returns the last info."""
    observation, info = env.reset(seed=seed, options=options)
    ranking = agent.rank(env.unwrapped.request, observation)  # type: ignore[attr-defined]
    for action in ranking:
        observation, _, terminated, truncated, info = env.step(int(action))
        if terminated or truncated:
            return info
    raise RuntimeError(f"agent {agent.name!r} returned {len(ranking)} items, fewer than the list length")
