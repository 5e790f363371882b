"""The agent API: everything that ranks implements :class:`Agent`.

An agent either ranks a whole request at once (:meth:`Agent.rank`, the natural form for recommenders and LLMs) or
acts step by step on observations (:meth:`Agent.act`, the natural form for RL policies); each has a default built
on the other, so :func:`play_episode` runs any agent. Trainable agents also implement ``learn``, ``save`` and
``load`` (:class:`TrainableAgent`).
"""

from __future__ import annotations

import abc
import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Self

import gymnasium as gym
import numpy as np
from numpy.typing import NDArray

from agents.resume import Checkpointing
from flexrec_env.config import SessionConfig
from scenarios import Request
from scenarios.settings import check_value, signature_types

logger = logging.getLogger(__name__)
_INTEROP_THREADS: list[int] = []  # the count torch's inter-op pool was given; it can be given only once per process


def use_threads(count: int) -> None:
    """Run torch on ``count`` intra-op threads (and as many inter-op threads, if torch has not started that pool).

    The compact policies and critics of FlexRec are too small to gain from more than one thread: on a busy machine
    extra threads only wait on each other (see the README's timing). torch accepts the inter-op count only once
    per process and only before its first parallel work; later calls leave it as it is.
    """
    import torch

    check_value("threads", count, int, ">= 1")
    torch.set_num_threads(count)
    if not _INTEROP_THREADS:
        try:
            torch.set_num_interop_threads(count)
            _INTEROP_THREADS.append(count)
        except RuntimeError as error:  # parallel work already started, or another caller set it
            _INTEROP_THREADS.append(torch.get_num_interop_threads())
            logger.debug("inter-op threads stay at %d: %s", _INTEROP_THREADS[0], error)


def is_main_process() -> bool:
    """False in the other processes of a data-parallel run (``accelerate launch``, ``torchrun``): they train, then stop."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def close_process_group() -> None:
    """End a data-parallel run's process group once every process is done with it (nothing in a single process).

    Without it a process can exit while the group's threads run, and the C++ runtime aborts it.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def training_env_kwargs(env_kwargs: dict[str, Any]) -> dict[str, Any]:
    """``env_kwargs`` for an env that training draws feedback from: the scenario's training split unless set."""
    return {"split": "train", **env_kwargs}


def portable(env_kwargs: dict[str, Any]) -> dict[str, Any]:
    """The environment arguments that are plain data (a scenario object, for one, is left out): what a checkpoint keeps."""
    out = {}
    for key, value in env_kwargs.items():
        try:
            json.dumps(value)
        except TypeError:
            continue
        out[key] = value
    return out


#: The observation entries whose last dimension is a feature size fixed by the scenario.
FEATURE_ENTRIES = ("candidates", "user", "need")


def observation_feature_sizes(space: gym.spaces.Dict) -> dict[str, int]:
    """``{"candidates": F, "user": U, "need": D}``: the feature sizes of one env's observation ``space``."""
    return {key: int(space[key].shape[-1]) for key in FEATURE_ENTRIES}  # type: ignore[index]


def training_feature_sizes(env_kwargs: dict[str, Any]) -> dict[str, int]:
    """The feature sizes of a request's observations under ``env_kwargs`` (a session's requests are FlexRec-v0's)."""
    import flexrec_env  # noqa: F401  (registers FlexRec-v0)

    env = gym.make("FlexRec-v0", **SessionConfig.split(env_kwargs)[1])
    try:
        assert isinstance(env.observation_space, gym.spaces.Dict)
        return observation_feature_sizes(env.observation_space)
    finally:
        env.close()


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

    @classmethod
    def setting_types(cls) -> dict[str, Any]:
        """The settings the agent takes (``--set KEY=VALUE``), with their annotations; default: its ``__init__``'s."""
        return signature_types(cls)

    def feature_sizes(self) -> dict[str, int]:
        """The observation feature sizes the agent was built for (``{"candidates": F, ...}``); empty: any sizes."""
        return {}

    def seed(self, seed: int | None) -> None:  # noqa: B027  (optional hook)
        """Reseed the agent's own randomness, if it has any."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


#: The evaluations during training: these metrics, episode i of each need played with seed ``TRAINING_EVAL_SEED + i``.
TRAINING_EVAL_METRICS = ("NDCG@5", "Recall@5")
TRAINING_EVAL_SEED = 10_000


class TrainableAgent(Agent, abc.ABC):
    """An agent with parameters: ``learn`` from an environment, ``save`` to and ``load`` from a path.

    :meth:`learn` is the one entry point: it checks the budget, starts a fresh :attr:`eval_history` and calls the
    subclass's :meth:`_learn`, which trains and may record evaluations with :meth:`evaluate_during_training`.
    """

    default_seed: int | None = None
    """Seed of :meth:`learn` when it is called without one (0 if this is ``None`` too)."""
    resumable: ClassVar[bool] = False
    """Whether training writes training checkpoints (``checkpointing``) that :meth:`resume` continues."""
    trains_on_sessions: ClassVar[bool] = False
    """Whether :meth:`learn` takes FlexRecSession-v0 arguments (the flexrec agents' trainer ranks sessions' requests)."""

    def __init__(self) -> None:
        self.trained_sizes: dict[str, int] = {}
        """The observation feature sizes of the training env (:func:`observation_feature_sizes`), kept in checkpoints
        under ``"feature_sizes"``; empty before training and for checkpoints written without them (any sizes)."""
        self.eval_history: list[dict[str, float]] = []
        """The evaluations on the true relevance during the last training run, one row each: ``{"steps": environment
        steps so far, "NDCG@5": ..., "Recall@5": ...}``, every metric the mean over the training needs (see
        :meth:`evaluate_during_training`). Empty for agents that do not evaluate while they train."""

    def learn(
        self,
        env_kwargs: dict[str, Any],
        total_steps: int,
        seed: int | None = None,
        logdir: Path | None = None,
        checkpointing: Checkpointing | None = None,
    ) -> Self:
        """Train on ``gym.make("FlexRec-v0", **env_kwargs)`` for ``total_steps`` environment steps; returns self.

        ``seed`` defaults to :attr:`default_seed`; TensorBoard events go to ``logdir`` when it is given. With
        ``checkpointing`` (:attr:`resumable` agents only) training checkpoints are written as it says and when a Ctrl-C
        stops training (:class:`~agents.resume.TrainingInterrupted` is raised then).
        """
        check_value("total_steps", total_steps, int, ">= 1")
        if SessionConfig.given(env_kwargs) and not self.trains_on_sessions:
            raise ValueError(
                f"the {self.name} agent trains on single requests: drop the session arguments "
                f"{sorted(set(env_kwargs) & set(SessionConfig.__dataclass_fields__))} (or --env session); the flexrec "
                "agents train on sessions"
            )
        if checkpointing is not None and not self.resumable:
            raise ValueError(f"the {self.name} agent cannot checkpoint during training; allowed: checkpointing=None")
        self.eval_history = []
        self.trained_sizes = training_feature_sizes(env_kwargs)
        self._learn(dict(env_kwargs), total_steps, seed if seed is not None else self.default_seed or 0, logdir, checkpointing)
        return self

    def feature_sizes(self) -> dict[str, int]:
        """The observation feature sizes the agent was trained on (:attr:`trained_sizes`)."""
        return dict(self.trained_sizes)

    def restore_feature_sizes(self, data: Mapping[str, Any]) -> None:
        """Take :attr:`trained_sizes` from a checkpoint's ``data`` (none recorded there: any sizes)."""
        self.trained_sizes = {key: int(size) for key, size in (data.get("feature_sizes") or {}).items()}

    @abc.abstractmethod
    def _learn(
        self, env_kwargs: dict[str, Any], total_steps: int, seed: int, logdir: Path | None, checkpointing: Checkpointing | None
    ) -> None:
        """Train (the budget is already checked; ``checkpointing`` is None unless the agent is :attr:`resumable`)."""

    def resume(
        self, total_steps: int | None = None, logdir: Path | None = None, checkpointing: Checkpointing | None = None
    ) -> Self:
        """Continue the run of a training checkpoint this agent was loaded from, to ``total_steps`` (default: the run's).

        The result equals that of the run never interrupted (same weights). Only :attr:`resumable` agents resume.
        """
        raise ValueError(f"the {self.name} agent cannot resume training: it writes no training checkpoints")

    def discard_checkpoint(self, path: Path) -> None:
        """Delete checkpoint ``path`` (a training checkpoint the run no longer needs), with any files beside it."""
        Path(path).unlink(missing_ok=True)

    def evaluate_during_training(self, env_kwargs: dict[str, Any], steps: int, episodes: int) -> dict[str, float]:
        """Evaluate the agent as it ranks now and append the row to :attr:`eval_history`; returns the metrics.

        ``episodes`` episodes of each of ``env_kwargs["need"]`` (seeds ``TRAINING_EVAL_SEED + i``); each of
        :data:`TRAINING_EVAL_METRICS` is averaged over the episodes, then over the needs.
        """
        from agents.evaluation import evaluate

        env_kwargs = SessionConfig.split(env_kwargs)[1]  # a session's requests are FlexRec-v0 requests
        result = evaluate(self, env_kwargs, episodes=episodes, seed=TRAINING_EVAL_SEED, metrics=TRAINING_EVAL_METRICS)
        row = {m: float(np.mean([np.mean(values[m]) for values in result.values.values()])) for m in TRAINING_EVAL_METRICS}
        self.eval_history.append({"steps": float(steps), **row})
        return row

    @abc.abstractmethod
    def save(self, path: Path) -> None:
        """Write everything needed to rebuild the agent to ``path`` (atomically: no half-written checkpoint)."""

    @classmethod
    @abc.abstractmethod
    def load(cls, path: Path) -> TrainableAgent:
        """Rebuild an agent saved with :meth:`save`."""


def ranks_at_once(agent: Agent) -> bool:
    """Whether ``agent`` ranks a whole request at once (implements :meth:`Agent.rank`) rather than only step by step."""
    return type(agent).rank is not Agent.rank


def play_episode(
    env: gym.Env,
    agent: Agent,
    seed: int | None = None,
    options: dict[str, Any] | None = None,
    on_list: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Play one episode with ``agent`` and return the last info (``info["metrics"]`` holds the true metrics).

    A FlexRecSession-v0 episode is several lists: an agent that ranks at once ranks each request as it starts, and
    ``on_list(info)`` (if given) sees the info of every finished list.
    """
    unwrapped: Any = env.unwrapped
    observation, info = env.reset(seed=seed, options=options)
    at_once = ranks_at_once(agent)
    requests = unwrapped.session.session_length if hasattr(unwrapped, "session") else 1
    plan: list[int] = []
    placed = 0  # actions in the current request
    for _ in range(requests * (unwrapped.config.list_length * 4 + unwrapped.config.num_candidates)):
        if at_once and placed == 0:
            plan = [int(i) for i in agent.rank(unwrapped.request, observation, info)]
        if at_once and placed >= len(plan):
            raise RuntimeError(f"agent {agent.name!r} ranked {len(plan)} candidates, fewer than the list length")
        action = plan[placed] if at_once else agent.act(observation, env)
        observation, _, terminated, truncated, info = env.step(action)
        placed += 1
        if "ranking" in info:  # a list is finished: the next request (if any) starts
            placed = 0
            if on_list is not None:
                on_list(info)
        if terminated or truncated:
            return info
    raise RuntimeError(f"agent {agent.name!r} did not finish the episode")
