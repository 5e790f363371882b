"""The ``flexrec`` agent: the transformer ranking policy trained by :class:`~agents.trainer.FlexRecTrainer`.

One model for all needs: it reads the need's feature vector with the user and the candidates, so it trains on a
mix of needs and ranks for needs it never trained on (held-out needs are evaluated, never trained on). Settings are
the fields of :class:`~agents.trainer.TrainerConfig` (``advantage``, ``group_size``, ...), of
:class:`~agents.policy.TransformerPolicyConfig` (``dim``, ``layers``, ...) and of
:class:`~agents.critic.CriticConfig` prefixed with ``critic_`` (``critic_ensemble``, ...).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from numpy.typing import NDArray

from agents.base import TrainableAgent
from agents.checkpoints import load_checkpoint, save_checkpoint
from agents.critic import CriticConfig
from agents.policy import RankingInputs, TransformerPolicyConfig, TransformerRankingPolicy
from agents.trainer import FlexRecTrainer, TrainerConfig
from scenarios import Request

logger = logging.getLogger(__name__)


def split_settings(settings: dict[str, Any]) -> tuple[TrainerConfig, TransformerPolicyConfig]:
    """Flat settings to the trainer's, the critic's (``critic_`` prefix) and the policy's configs."""
    names = {
        "trainer": {f.name for f in fields(TrainerConfig)} - {"critic"},
        "policy": {f.name for f in fields(TransformerPolicyConfig)},
        "critic": {f"critic_{f.name}" for f in fields(CriticConfig)},
    }
    unknown = sorted(set(settings) - set().union(*names.values()))
    if unknown:
        raise ValueError(f"unknown flexrec setting(s) {unknown}; allowed: {sorted(set().union(*names.values()))}")
    critic = CriticConfig(**{k.removeprefix("critic_"): v for k, v in settings.items() if k in names["critic"]})
    trainer = TrainerConfig(critic=critic, **{k: v for k, v in settings.items() if k in names["trainer"]})
    return trainer, TransformerPolicyConfig(**{k: v for k, v in settings.items() if k in names["policy"]})


def portable(env_kwargs: dict[str, Any]) -> dict[str, Any]:
    """The environment arguments that are plain data (a scenario object, for one, is left out)."""
    out = {}
    for key, value in env_kwargs.items():
        try:
            json.dumps(value)
        except TypeError:
            continue
        out[key] = value
    return out


class FlexRecAgent(TrainableAgent):
    """A transformer ranking policy trained with item-level swap advantages and an uncertainty-aware critic."""

    name = "flexrec"

    def __init__(self, **settings: Any) -> None:
        self.settings = dict(settings)
        self.trainer_config, self.policy_config = split_settings(self.settings)
        self.policy: TransformerRankingPolicy | None = None
        self.history: list[dict[str, float]] = []
        self.env_kwargs: dict[str, Any] = {}
        """The environment arguments of training (those that can be written down), for evaluation."""

    def learn(self, env_kwargs: dict[str, Any], total_steps: int, seed: int = 0, logdir: Path | None = None) -> FlexRecAgent:
        from agents.evaluation import evaluate
        from flexrec_env.vector_env import FlexRecVectorEnv

        self.env_kwargs = portable(env_kwargs)
        space = FlexRecVectorEnv(1, **env_kwargs).single_observation_space
        assert isinstance(space, gym.spaces.Dict)
        dims = (space["candidates"].shape[-1], space["user"].shape[0], space["need"].shape[0])  # type: ignore[index]
        torch.manual_seed(seed)
        self.policy = TransformerRankingPolicy(*dims, config=self.policy_config)
        eval_kwargs = {k: v for k, v in env_kwargs.items() if k != "need"}

        def true_metrics() -> dict[str, float]:
            needs = env_kwargs.get("need", "interest")
            result = evaluate(self, eval_kwargs, needs, self.trainer_config.eval_episodes, 10_000, ("NDCG@5", "Recall@5"))
            return {m: float(np.mean([np.mean(v[m]) for v in result.values.values()])) for m in ("NDCG@5", "Recall@5")}

        trainer = FlexRecTrainer(self.policy, env_kwargs, self.trainer_config, logdir, seed, evaluate=true_metrics)
        self.history = trainer.train(total_steps)
        self.policy = trainer.unwrapped_policy.cpu().eval()  # type: ignore[assignment]
        return self

    @torch.no_grad()
    def rank(self, request: Request, observation: dict[str, Any], info: dict[str, Any]) -> NDArray[np.int64]:
        if self.policy is None:
            raise RuntimeError("this flexrec agent is untrained: call learn() or load a checkpoint first")
        self.policy.eval()
        inputs = RankingInputs.from_observation(observation)
        return self.policy.rank(inputs, inputs.candidates.shape[1])[0].numpy()

    def save(self, path: Path) -> None:
        if self.policy is None:
            raise RuntimeError("nothing to save: this flexrec agent is untrained")
        payload = {
            "settings": self.settings,
            "trainer_config": asdict(self.trainer_config),
            "policy_config": asdict(self.policy_config),
            "dims": self.policy.dims,
            "state_dict": self.policy.state_dict(),
            "history": self.history,
            "env_kwargs": self.env_kwargs,
        }
        save_checkpoint(path, self.name, payload)

    @classmethod
    def load(cls, path: Path) -> FlexRecAgent:
        data = load_checkpoint(path, cls.name)
        agent = cls(**data["settings"])
        candidate_dim, user_dim, need_dim = data["dims"]
        agent.policy = TransformerRankingPolicy(candidate_dim, user_dim, need_dim, config=agent.policy_config)
        agent.policy.load_state_dict(data["state_dict"])
        agent.policy.eval()
        agent.history, agent.env_kwargs = data["history"], data["env_kwargs"]
        return agent

    def __repr__(self) -> str:
        return f"FlexRecAgent(advantage={self.trainer_config.advantage!r})"
