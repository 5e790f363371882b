"""Rankers that sort by the critic's expected gain: the ``supervised`` baseline and a trained FlexRec critic.

``supervised`` is the strongest plain answer to sparse feedback: collect exactly the feedback the RL agents get
(the same number of requests: ``total_steps / (group_size * K)``, the requests a FlexRec run of that budget sees,
each with its observed, noisy labels), fit the critic's model on it (:class:`~agents.critic.CriticLearner`, the same
code and the same per-candidate inputs as the FlexRec critic), and rank every request by the expected gain. The
``critic`` benchmark entry ranks with the critic a FlexRec run trained (:meth:`agents.flexrec.PolicyAgent.critic_ranker`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from agents.base import Agent, TrainableAgent, training_env_kwargs
from agents.checkpoints import load_checkpoint, restoring, save_checkpoint
from agents.critic import CriticConfig, CriticLearner, critic_setting_types, critic_settings
from agents.policy import RankingInputs, candidate_context
from agents.resume import Checkpointing
from scenarios import Request
from scenarios.settings import check_fields, check_keys, field_types

logger = logging.getLogger(__name__)

Features = Callable[[RankingInputs], torch.Tensor]


class CriticRanker(Agent):
    """Ranks each request by a critic's expected gain per candidate (``features`` builds the critic's inputs)."""

    name = "critic"

    def __init__(self, learner: CriticLearner | None = None, features: Features = candidate_context) -> None:
        super().__init__()
        self.learner, self.features = learner, features

    @torch.no_grad()
    def rank(self, request: Request, observation: dict[str, Any], info: dict[str, Any]) -> NDArray[np.int64]:
        if self.learner is None:
            raise RuntimeError(f"this {self.name} agent is untrained: call learn() or load a checkpoint first")
        device = next(self.learner.critic.parameters()).device
        inputs = RankingInputs.from_observation(observation, [request], device)
        scores = self.learner.expected_gain(self.features(inputs))[0]  # (N,)
        return torch.argsort(scores, descending=True, stable=True).cpu().numpy()


@dataclass(frozen=True)
class SupervisedConfig:
    """The ``supervised`` baseline's data budget and fitting."""

    group_size: int = 8
    """G of the FlexRec run whose budget is matched: the baseline sees ``total_steps / (G * K)`` requests."""
    epochs: int = 100
    """Passes over the collected observed labels (NDCG@5 on the synthetic training needs flattens by about 100)."""
    critic: CriticConfig = field(default_factory=CriticConfig)
    """The model (the FlexRec critic's; ``updates``, ``buffer_size`` and ``refit_epochs`` are not used)."""

    def __post_init__(self) -> None:
        if isinstance(self.critic, dict):
            object.__setattr__(self, "critic", CriticConfig(**self.critic))
        check_fields(self, {"group_size": ">= 1", "epochs": ">= 1"})


def collect_feedback(
    env_kwargs: dict[str, Any], requests: int, seed: int, chunk: int = 512
) -> tuple[torch.Tensor, NDArray[np.int64], NDArray[np.bool_], int, float]:
    """The reward labels of ``requests`` training requests: features ``(R, N, F)``, labels, observed, max grade, noise."""
    from flexrec_env.vector_env import FlexRecVectorEnv

    features, labels, observed = [], [], []
    env = FlexRecVectorEnv(min(chunk, requests), autoreset_mode="Disabled", shared_rng=True, **training_env_kwargs(env_kwargs))
    k, done = env.config.list_length, 0
    while done < requests:
        observation, _ = env.reset(seed=seed if done == 0 else None)
        info: dict[str, Any] = {}
        for t in range(k):  # the labels do not depend on the list: place the candidates in index order
            _, _, _, _, info = env.step(np.full(env.num_envs, t))
        take = min(env.num_envs, requests - done)
        features.append(candidate_context(RankingInputs.from_observation({key: v[:take] for key, v in observation.items()})))
        labels.append(info["reward_labels"][:take])
        observed.append(info["reward_labels_observed"][:take].astype(bool))
        done += take
    noise = env.config.reward_noise[1]
    return torch.cat(features), np.concatenate(labels), np.concatenate(observed), env.scenario.max_grade, noise


class SupervisedAgent(CriticRanker, TrainableAgent):
    """A pointwise model fitted on the same sparse, noisy feedback the RL agents get (see the module docstring)."""

    name = "supervised"

    @classmethod
    def setting_types(cls) -> dict[str, Any]:
        own = {k: v for k, v in field_types(SupervisedConfig).items() if k != "critic"}
        return {**own, **critic_setting_types()}

    def __init__(self, **settings: Any) -> None:
        super().__init__()
        check_keys(f"{self.name} setting(s)", settings, self.setting_types())
        self.settings = dict(settings)
        critic, rest = critic_settings(settings)
        self.config = SupervisedConfig(critic=critic, **rest)

    def _learn(
        self, env_kwargs: dict[str, Any], total_steps: int, seed: int, logdir: Path | None, checkpointing: Checkpointing | None
    ) -> None:
        from flexrec_env.config import EnvConfig

        length = EnvConfig(**{k: v for k, v in env_kwargs.items() if k in ("num_candidates", "list_length")}).list_length
        requests = max(total_steps // (self.config.group_size * length), 1)
        x, labels, observed, max_grade, noise = collect_feedback(env_kwargs, requests, seed)
        torch.manual_seed(seed)
        config = replace(self.config.critic, buffer_size=max(int(observed.sum()), 1))  # keep every label
        self.learner = learner = CriticLearner(x.shape[-1], max_grade, noise, config, seed=seed)
        learner.add(x, labels, observed)
        loss = learner.fit_epochs(self.config.epochs)
        logger.info("supervised: %d requests, %d observed labels, last loss %.4f", requests, len(learner.labels), loss)

    def save(self, path: Path) -> None:
        if self.learner is None:
            raise RuntimeError(f"nothing to save: this {self.name} agent is untrained")
        payload = {"settings": self.settings, "feature_sizes": self.trained_sizes, "critic": self.learner.payload()}
        save_checkpoint(path, self.name, payload)

    @classmethod
    def load(cls, path: Path) -> SupervisedAgent:
        data = load_checkpoint(path, cls.name)
        agent = cls(**data["settings"])
        with restoring(path, "critic"):
            agent.learner = CriticLearner.from_payload(data["critic"], agent.config.critic)
        agent.restore_feature_sizes(data)
        return agent
