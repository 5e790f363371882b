"""The agent API: everything that ranks implements :class:`Agent`.

An agent either ranks a whole request at once (:meth:`Agent.rank`, the natural form for recommenders and LLMs) or
acts step by step on observations (:meth:`Agent.act`, the natural form for RL policies); each has a default built
on the other, so :func:`play_episode` runs any agent. Trainable agents also implement ``learn``, ``save`` and
``load`` (:class:`TrainableAgent`).
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from numpy.typing import NDArray

from scenarios import Request


def is_main_process() -> bool:
    """False in the other processes of a data-parallel run (``accelerate launch``, ``torchrun``): they train, then stop."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def training_env_kwargs(env_kwargs: dict[str, Any]) -> dict[str, Any]:
    """``env_kwargs`` for an env that training draws feedback from: the scenario's training split unless set."""
    return {"split": "train", **env_kwargs}


class Agent:
    """Anything that ranks. Subclasses implement :meth:`rank` or :meth:`act` (or both)."""

    name: str = "agent"
    """Label in tables and logs."""
    #: Whether the agent needs the true relevance (``expose_truth=True``); only the oracle does.
    needs_truth: ClassVar[bool] = False

    def rank(self, request: Request, observation: dict[str, Any], info: dict[str, Any]) -> NDArray[np.int64]:
        """Candidate indices, best first (at least K of them, no repeats). Default: play :meth:`act` greedily."""
        raise NotImplementedError(f"{type(self).__name__} implements neither rank() nor act()")

    def act(self, observation: dict[str, Any], env: gym.Env) -> int:
        """The next candidate to place. Default: follow :meth:`rank`, computed at the first position."""
        if int(observation["position"]) == 0 or not getattr(self, "_plan", None):
            self._plan = [int(i) for i in self.rank(env.unwrapped.request, observation, {})]  # type: ignore[attr-defined]
        placed = np.asarray(observation["placed"], dtype=bool)
        while self._plan and placed[self._plan[0]]:
            self._plan.pop(0)
        if not self._plan:
            raise RuntimeError(f"agent {self.name!r} ranked fewer candidates than the list length")
        return self._plan.pop(0)

    def seed(self, seed: int | None) -> None:  # noqa: B027  (optional hook)
        """Reseed the agent's own randomness, if it has any."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class TrainableAgent(Agent, abc.ABC):
    """An agent with parameters: ``learn`` from an environment, ``save`` to and ``load`` from a path."""

    @abc.abstractmethod
    def learn(self, env_kwargs: dict[str, Any], total_steps: int, seed: int = 0, logdir: Path | None = None) -> TrainableAgent:
        """Train on ``gym.make("FlexRec-v0", **env_kwargs)`` for ``total_steps`` environment steps; returns self."""

    @abc.abstractmethod
    def save(self, path: Path) -> None:
        """Write everything needed to rebuild the agent to ``path`` (atomically: no half-written checkpoint)."""

    @classmethod
    @abc.abstractmethod
    def load(cls, path: Path) -> TrainableAgent:
        """Rebuild an agent saved with :meth:`save`."""


def play_episode(env: gym.Env, agent: Agent, seed: int | None = None, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Play one episode with ``agent`` and return the last info (``info["metrics"]`` holds the true metrics)."""
    observation, info = env.reset(seed=seed, options=options)
    ranks_at_once = type(agent).rank is not Agent.rank
    plan = [int(i) for i in agent.rank(env.unwrapped.request, observation, info)] if ranks_at_once else []  # type: ignore[attr-defined]
    for step in range(env.unwrapped.config.list_length * 4 + env.unwrapped.config.num_candidates):  # type: ignore[attr-defined]
        if ranks_at_once and step >= len(plan):
            raise RuntimeError(f"agent {agent.name!r} ranked {len(plan)} candidates, fewer than the list length")
        action = plan[step] if ranks_at_once else agent.act(observation, env)
        observation, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            return info
    raise RuntimeError(f"agent {agent.name!r} did not finish the episode")
