"""The ``flexrec`` agent: the transformer ranking policy trained by :class:`~agents.trainer.FlexRecTrainer`.

One model for all needs: it reads the need's feature vector with the user and the candidates, so it trains on a
mix of needs and ranks for needs it never trained on (held-out needs are evaluated, never trained on). Settings are
the fields of :class:`~agents.trainer.TrainerConfig` (``advantage``, ``group_size``, ...), of
:class:`~agents.policy.TransformerPolicyConfig` (``dim``, ``layers``, ...) and of
:class:`~agents.critic.CriticConfig` prefixed with ``critic_`` (``critic_ensemble``, ...).

:class:`PolicyAgent` is what every agent around a :class:`~agents.policy.RankingPolicy` shares (settings, ``learn``
with the trainer, ``rank``, ``save``/``load``); :class:`FlexRecAgent` and the LLM agent (:mod:`agents.llm`) only say
how to build, save and restore their policy. A ``flexrec`` run keeps its critic: the policy ranks with the critic's
expected gains as its prior (``critic_prior``), the checkpoint holds both, and :meth:`PolicyAgent.critic_ranker`
ranks with the critic alone.
"""

from __future__ import annotations

import abc
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from numpy.typing import NDArray

from agents.base import TrainableAgent, is_main_process, portable
from agents.checkpoints import load_checkpoint, restored_env_kwargs, restoring, save_checkpoint
from agents.critic import CriticLearner, critic_setting_types, critic_settings
from agents.policy import RankingInputs, RankingPolicy, TransformerPolicyConfig, TransformerRankingPolicy
from agents.resume import Checkpointing
from agents.supervised import CriticRanker
from agents.trainer import FlexRecTrainer, TrainerConfig
from scenarios import Request
from scenarios.settings import check_keys, check_value, field_types

logger = logging.getLogger(__name__)


def flat_setting_types(policy_config: type[Any]) -> dict[str, Any]:
    """The flat settings of an agent around ``policy_config``, with their annotations.

    The trainer's fields, the policy's, and the critic's prefixed with ``critic_``.
    """
    return {**_trainer_setting_types(), **field_types(policy_config), **critic_setting_types()}


def _trainer_setting_types() -> dict[str, Any]:
    return {k: v for k, v in field_types(TrainerConfig).items() if k != "critic"}  # the critic's come prefixed


def split_settings(
    settings: dict[str, Any], policy_config: type[Any] = TransformerPolicyConfig, agent: str = "flexrec"
) -> tuple[TrainerConfig, Any]:
    """Flat settings to the trainer's, the critic's (``critic_`` prefix) and the policy's (``policy_config``) configs."""
    check_keys(f"{agent} setting(s)", settings, flat_setting_types(policy_config))
    critic, rest = critic_settings(settings)
    trainer = TrainerConfig(critic=critic, **{k: v for k, v in rest.items() if k in _trainer_setting_types()})
    return trainer, policy_config(**{k: v for k, v in rest.items() if k in field_types(policy_config)})


class PolicyAgent(TrainableAgent):
    """An agent around a :class:`~agents.policy.RankingPolicy` trained by :class:`~agents.trainer.FlexRecTrainer`.

    Subclasses set ``name`` and ``policy_config_class`` and implement :meth:`build_policy`, :meth:`policy_payload` and
    :meth:`restore_policy`; settings, training, ranking and checkpoints are shared.
    """

    resumable = True
    trains_on_sessions = True
    policy_config_class: ClassVar[type[Any]]
    """The dataclass of the policy's settings."""
    trainer_defaults: ClassVar[dict[str, Any]] = {}
    """Trainer settings whose default differs for this agent."""
    rank_on_cpu: ClassVar[bool] = True
    """Move the policy to the CPU after training (small policies rank single requests faster there)."""

    def __init__(self, **settings: Any) -> None:
        super().__init__()
        self.settings = dict(settings)
        self.trainer_config, self.policy_config = split_settings(
            {**self.trainer_defaults, **self.settings}, self.policy_config_class, self.name
        )
        self.policy: RankingPolicy | None = None
        self.critic: CriticLearner | None = None
        """The critic of a ``flexrec`` run (its expected gains are the policy's prior with ``critic_prior``)."""
        self.history: list[dict[str, float]] = []
        """The trainer's logged rows of the last training run (one per iteration; see :meth:`FlexRecTrainer.train`)."""
        self.env_kwargs: dict[str, Any] = {}
        """The environment arguments of training (those that can be written down), for evaluation."""
        self.training_state: dict[str, Any] | None = None
        """The trainer's state of a training checkpoint this agent was loaded from (:meth:`resume` continues it)."""
        self.loaded_from: Path | str = "the training checkpoint"
        """The file :meth:`load` read, for error messages."""

    @classmethod
    def setting_types(cls) -> dict[str, Any]:
        return flat_setting_types(cls.policy_config_class)

    # Subclass hooks -------------------------------------------------------------------------------------------------

    @abc.abstractmethod
    def build_policy(self, space: gym.spaces.Dict) -> RankingPolicy:
        """A fresh policy for observations of ``space`` (one env's observation space)."""

    @abc.abstractmethod
    def policy_payload(self, policy: RankingPolicy, path: Path, rewritten: bool = False) -> dict[str, Any]:
        """What checkpoint ``path`` needs to rebuild ``policy`` (with :meth:`restore_policy`).

        Files beside the checkpoint (the LLM's adapter folder) are written here, before the checkpoint itself;
        ``rewritten`` says the checkpoint is rewritten in place during training (a training checkpoint), so the
        previous pair of files must stay valid until the new checkpoint is in place (:meth:`saved`).
        """

    @abc.abstractmethod
    def restore_policy(self, data: dict[str, Any], path: Path) -> RankingPolicy:
        """The policy saved in a checkpoint's ``data``."""

    # Shared ---------------------------------------------------------------------------------------------------------

    def init_policy(self, env_kwargs: dict[str, Any], seed: int = 0) -> RankingPolicy:
        """Build a fresh (untrained) policy for ``gym.make("FlexRec-v0", **env_kwargs)`` and make it this agent's."""
        from flexrec_env.config import SessionConfig
        from flexrec_env.vector_env import FlexRecVectorEnv

        space = FlexRecVectorEnv(1, **SessionConfig.split(env_kwargs)[1]).single_observation_space  # a request's
        assert isinstance(space, gym.spaces.Dict)
        torch.manual_seed(seed)
        self.policy = self.build_policy(space)
        self.env_kwargs = portable(env_kwargs)
        return self.policy

    def _learn(
        self, env_kwargs: dict[str, Any], total_steps: int, seed: int, logdir: Path | None, checkpointing: Checkpointing | None
    ) -> None:
        self.init_policy(env_kwargs, seed)
        self.training_state = None
        self._train(env_kwargs, total_steps, seed, logdir, checkpointing)

    def resume(
        self, total_steps: int | None = None, logdir: Path | None = None, checkpointing: Checkpointing | None = None
    ) -> PolicyAgent:
        state = self.training_state
        if state is None or self.policy is None:
            raise ValueError(
                f"this {self.name} agent holds no training state: resume from a training checkpoint (the .resume.ckpt "
                "written beside --out every --checkpoint-every steps and on Ctrl-C), not a final one"
            )
        with restoring(self.loaded_from, "training state"):
            run, steps = state["run"], state["steps"]
            complete, saved_total, seed = run["env_complete"], run["total_steps"], run["seed"]
        if not complete:
            raise ValueError("this run's environment arguments include objects a checkpoint cannot keep: it cannot resume")
        total = saved_total if total_steps is None else total_steps
        check_value("total_steps", total, int, ">= 1")
        if total <= steps:
            raise ValueError(f"total_steps={total}; allowed: more than the {steps} steps this run has done")
        self._train(dict(self.env_kwargs), total, seed, logdir, checkpointing, state)
        return self

    def _train(
        self,
        env_kwargs: dict[str, Any],
        total_steps: int,
        seed: int,
        logdir: Path | None,
        checkpointing: Checkpointing | None,
        state: dict[str, Any] | None = None,
    ) -> None:
        """Train :attr:`policy` with the FlexRec trainer, from ``state`` (a training checkpoint's) when given."""
        assert self.policy is not None
        policy = self.policy.train()  # as a fresh module is
        run = {"seed": seed, "total_steps": total_steps, "env_complete": portable(env_kwargs) == env_kwargs}

        def true_metrics(steps: int) -> dict[str, float]:
            self.critic = trainer.critic  # rank as the agent would now: with the critic's prior, if it has one
            return self.evaluate_during_training(env_kwargs, steps, self.trainer_config.eval_episodes)

        def checkpoint(trainer: FlexRecTrainer) -> Path | None:
            if checkpointing is None or trainer.distributed:  # training checkpoints are for single-process runs
                return None
            self.policy, self.critic, self.history = trainer.unwrapped_policy, trainer.critic, trainer.history
            self.save(checkpointing.path, training={"run": {**run, "options": checkpointing.options}, **trainer.state_dict()})
            return checkpointing.path

        trainer = FlexRecTrainer(policy, env_kwargs, self.trainer_config, logdir, seed, evaluate=true_metrics)
        if state is not None:
            with restoring(self.loaded_from, "training state"):
                trainer.load_state_dict(state)
        every = 0 if checkpointing is None else checkpointing.every
        self.history = trainer.train(total_steps, checkpoint=checkpoint, checkpoint_every=every)
        self.training_state = None
        policy = trainer.unwrapped_policy.eval()
        self.policy = policy.cpu() if self.rank_on_cpu else policy
        self.critic = trainer.critic
        if self.critic is not None and self.rank_on_cpu:
            self.critic.to("cpu")

    @property
    def uses_prior(self) -> bool:
        """Whether the policy ranks with the critic's expected gains as its prior."""
        return self.critic is not None and self.trainer_config.uses_critic and self.trainer_config.critic_prior

    def critic_ranker(self) -> CriticRanker:
        """This run's critic as a ranker (sorts by its expected gain), for comparison with the policy."""
        if self.critic is None or self.policy is None:
            raise RuntimeError(f"this {self.name} agent has no critic: train it with advantage='flexrec'")
        return CriticRanker(self.critic, self.policy.critic_inputs)

    @torch.no_grad()
    def ranking_inputs(self, request: Request, observation: dict[str, Any]) -> tuple[RankingPolicy, RankingInputs]:
        """The policy, in eval mode, and its inputs for one request (with the critic's prior when it ranks with one)."""
        if self.policy is None:
            raise RuntimeError(f"this {self.name} agent is untrained: call learn() or load a checkpoint first")
        self.policy.eval()
        device = next(self.policy.parameters()).device
        inputs = RankingInputs.from_observation(observation, [request] if self.policy.reads_text else None, device)
        if self.uses_prior:
            assert self.critic is not None
            inputs.prior = self.critic.expected_gain(self.policy.critic_inputs(inputs))
        return self.policy, inputs

    @torch.no_grad()
    def rank(self, request: Request, observation: dict[str, Any], info: dict[str, Any]) -> NDArray[np.int64]:
        policy, inputs = self.ranking_inputs(request, observation)
        return policy.rank(inputs, inputs.candidates.shape[1])[0].cpu().numpy()

    def save(self, path: Path, training: dict[str, Any] | None = None) -> None:
        """Write the agent to checkpoint ``path``; with ``training`` (a trainer's state), a training checkpoint."""
        if self.policy is None:
            raise RuntimeError(f"nothing to save: this {self.name} agent is untrained")
        if not is_main_process():
            return  # data parallel: the processes hold the same policy, and process 0 writes it
        payload = {
            "settings": self.settings,
            "trainer_config": asdict(self.trainer_config),
            "policy_config": asdict(self.policy_config),
            **self.policy_payload(self.policy, Path(path), rewritten=training is not None),
            "critic": None if self.critic is None else self.critic.payload(),
            "history": self.history,
            "eval_history": self.eval_history,
            "env_kwargs": self.env_kwargs,
            "feature_sizes": self.trained_sizes,
            "training": training,
        }
        save_checkpoint(path, self.name, payload)
        self.saved(Path(path), payload)

    def saved(self, path: Path, payload: dict[str, Any]) -> None:
        """After checkpoint ``path`` is written with ``payload``: remove files beside it that it no longer names."""

    @classmethod
    def load(cls, path: Path) -> PolicyAgent:
        data = load_checkpoint(path, cls.name)
        env_kwargs = restored_env_kwargs(data["env_kwargs"], path)  # first: nothing is built from a file naming code
        with restoring(path, "settings"):
            agent = cls(**data["settings"])
        with restoring(path, "policy"):
            agent.policy = agent.restore_policy(data, Path(path)).eval()
        with restoring(path, "critic"):
            critic = data.get("critic")
            agent.critic = None if critic is None else CriticLearner.from_payload(critic, agent.trainer_config.critic)
        agent.history, agent.env_kwargs = data["history"], env_kwargs
        agent.eval_history = data["eval_history"]
        agent.training_state = data["training"]
        agent.loaded_from = Path(path)
        agent.restore_feature_sizes(data)
        return agent

    def __repr__(self) -> str:
        return f"{type(self).__name__}(advantage={self.trainer_config.advantage!r})"


class FlexRecAgent(PolicyAgent):
    """A transformer ranking policy trained with item-level swap advantages and an uncertainty-aware critic."""

    name = "flexrec"
    policy_config_class = TransformerPolicyConfig

    def build_policy(self, space: gym.spaces.Dict) -> TransformerRankingPolicy:
        dims = (space["candidates"].shape[-1], space["user"].shape[0], space["need"].shape[0])  # type: ignore[index]
        return TransformerRankingPolicy(*dims, config=self.policy_config)

    def policy_payload(self, policy: RankingPolicy, path: Path, rewritten: bool = False) -> dict[str, Any]:
        assert isinstance(policy, TransformerRankingPolicy)
        return {"dims": policy.dims, "state_dict": policy.state_dict()}

    def restore_policy(self, data: dict[str, Any], path: Path) -> TransformerRankingPolicy:
        candidate_dim, user_dim, need_dim = data["dims"]
        policy = TransformerRankingPolicy(candidate_dim, user_dim, need_dim, config=self.policy_config)
        policy.load_state_dict(data["state_dict"])
        return policy
