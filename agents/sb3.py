"""stable-baselines3 agents (MaskablePPO, PPO, DQN) that score candidates as a set.

The policy never sees a candidate's slot as an identity: one shared encoder reads each candidate together with
the user, the need and the position, a masked mean over the pool gives the context, and a shared scorer turns
each (candidate, context) pair into a logit (or Q-value). Candidates already placed get ``MASKED_SCORE``, so PPO
and DQN act on valid candidates only, without a wrapper; ``MaskablePPO`` also receives the env's
``action_masks()`` as sb3-contrib expects; DQN's epsilon-greedy exploration samples among valid candidates
(:class:`MaskedDQN`). Training runs on the natively batched vector env through :class:`SB3VecEnv`, on the
scenario's training split (``split="train"``); the evaluations during training use the scenario as given.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode
from numpy.typing import NDArray
from sb3_contrib import MaskablePPO
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.vec_env import VecEnv, VecMonitor
from stable_baselines3.dqn.policies import DQNPolicy, QNetwork
from torch import nn

from agents.base import TrainableAgent, portable, training_env_kwargs
from agents.checkpoints import read_checkpoint, restored_env_kwargs, restoring, save_checkpoint
from agents.progress import Progress
from agents.resume import Checkpointing
from flexrec_env.vector_env import FlexRecVectorEnv
from scenarios.settings import check_fields, check_keys, field_types

logger = logging.getLogger(__name__)

Algorithm = Literal["maskable-ppo", "ppo", "dqn"]
#: Score of a candidate that is already placed: far below any real score, finite for float32 arithmetic.
MASKED_SCORE = -1e8


# --------------------------------------------------------------------------------------------------------------------
# The set-structured network.


class CandidateSetExtractor(BaseFeaturesExtractor):
    """Features ``[score_1..score_N, context]``: per-candidate scores from shared weights, plus a pooled context."""

    def __init__(self, observation_space: spaces.Dict, hidden: int = 64) -> None:
        candidates, user, need, position = (observation_space[k] for k in ("candidates", "user", "need", "position"))
        assert isinstance(candidates, spaces.Box) and isinstance(position, spaces.Discrete)
        n, f = candidates.shape
        self.num_candidates = n
        super().__init__(observation_space, features_dim=n + hidden)
        shared = int(np.prod(user.shape or ())) + int(np.prod(need.shape or ())) + int(position.n)
        self.encoder = nn.Sequential(nn.Linear(f + shared + 1, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.context = nn.Sequential(nn.Linear(hidden + shared, hidden), nn.ReLU())
        self.scorer = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        candidates = obs["candidates"]  # (B, N, F)
        position = obs["position"].flatten(1)  # (B, K + 1), one-hot (sb3 stores Discrete observations as (B, 1))
        shared = torch.cat([obs["user"], obs["need"], position], dim=-1)  # (B, S)
        n = candidates.shape[1]
        per_candidate = torch.cat([candidates, shared[:, None].expand(-1, n, -1), obs["placed"][..., None]], dim=-1)
        h = self.encoder(per_candidate)  # (B, N, H)
        available = obs["action_mask"][..., None]  # (B, N, 1)
        pooled = (h * available).sum(1) / available.sum(1).clamp(min=1.0)  # (B, H), mean over the pool
        context = self.context(torch.cat([pooled, shared], dim=-1))  # (B, H)
        scores = self.scorer(torch.cat([h, context[:, None].expand(-1, n, -1)], dim=-1))[..., 0]  # (B, N)
        scores = torch.where(obs["action_mask"] > 0.5, scores, torch.full_like(scores, MASKED_SCORE))
        return torch.cat([scores, context], dim=-1)  # (B, N + H)


class TakeScores(nn.Module):
    """The action head: the first N features are already the per-candidate logits (or Q-values)."""

    def __init__(self, num_candidates: int) -> None:
        super().__init__()
        self.num_candidates = num_candidates

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return latent[..., : self.num_candidates]


def _with_score_head(base: type[Any]) -> type[Any]:
    class ScoredPolicy(base):
        def _build(self, lr_schedule: Any) -> None:
            super()._build(lr_schedule)
            self.action_net = TakeScores(int(self.action_space.n))
            self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    ScoredPolicy.__name__ = f"Scored{base.__name__}"
    return ScoredPolicy


ScoredMaskablePolicy = _with_score_head(MaskableActorCriticPolicy)
ScoredActorCriticPolicy = _with_score_head(ActorCriticPolicy)


class ScoredDQNPolicy(DQNPolicy):
    """DQN policy whose Q-values are the extractor's per-candidate scores."""

    def make_q_net(self) -> QNetwork:
        net = super().make_q_net()
        assert isinstance(self.action_space, spaces.Discrete)
        net.q_net = TakeScores(int(self.action_space.n))  # type: ignore[assignment]
        return net


def random_valid_actions(action_mask: NDArray) -> NDArray[np.int64]:
    """One uniformly random valid action per row of a ``(B, N)`` mask (``(N,)`` gives a scalar array)."""
    mask = np.asarray(action_mask, dtype=bool)
    keys = np.where(mask, np.random.rand(*mask.shape), -1.0)
    return keys.argmax(axis=-1)


class MaskedDQN(DQN):
    """DQN whose random actions (warm-up and epsilon-greedy exploration) are uniform over valid candidates."""

    def predict(self, observation: Any, state: Any = None, episode_start: Any = None, deterministic: bool = False) -> Any:
        if deterministic or np.random.rand() >= self.exploration_rate:
            return self.policy.predict(observation, state, episode_start, deterministic)
        return random_valid_actions(observation["action_mask"]), state

    def _sample_action(self, learning_starts: int, action_noise: Any = None, n_envs: int = 1) -> tuple[NDArray, NDArray]:
        if self.num_timesteps < learning_starts:
            assert isinstance(self._last_obs, dict)
            action = random_valid_actions(self._last_obs["action_mask"])
            return action, action
        return super()._sample_action(learning_starts, action_noise, n_envs)


# --------------------------------------------------------------------------------------------------------------------
# The vector env, as stable-baselines3 expects it.


class SB3VecEnv(VecEnv):
    """A stable-baselines3 ``VecEnv`` over the native ``FlexRecVectorEnv`` (same-step autoreset)."""

    def __init__(self, env: FlexRecVectorEnv, seed: int = 0) -> None:
        if env.autoreset_mode != AutoresetMode.SAME_STEP:
            raise ValueError("SB3VecEnv needs a FlexRecVectorEnv made with autoreset_mode=AutoresetMode.SAME_STEP")
        self.env, self._seed = env, seed
        self.render_mode = None
        super().__init__(env.num_envs, env.single_observation_space, env.single_action_space)
        self._actions: NDArray[np.int64] | None = None

    def reset(self) -> dict[str, NDArray]:
        obs, _ = self.env.reset(seed=self._seed)
        return obs

    def step_async(self, actions: NDArray) -> None:
        self._actions = np.asarray(actions, dtype=np.int64)

    def step_wait(self) -> tuple[dict[str, NDArray], NDArray, NDArray, list[dict[str, Any]]]:
        obs, rewards, terminated, truncated, info = self.env.step(self._actions)
        done = terminated | truncated
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        for row in np.flatnonzero(done):
            infos[row] = {
                "terminal_observation": info["final_obs"][row],
                "TimeLimit.truncated": bool(truncated[row] and not terminated[row]),
                "metrics": {k: float(v[row]) for k, v in info["final_info"].get("metrics", {}).items() if not k.startswith("_")},
            }
        return obs, rewards.astype(np.float32), done, infos

    def action_masks(self) -> NDArray[np.bool_]:
        return self.env.action_masks()

    def close(self) -> None:
        self.env.close()

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        return [getattr(self, attr_name)] * len(list(self._get_indices(indices)))

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        setattr(self, attr_name, value)

    def env_method(self, method_name: str, *args: Any, indices: Any = None, **kwargs: Any) -> list[Any]:
        rows = list(self._get_indices(indices))
        if method_name == "action_masks":
            return list(self.env.action_masks()[rows])
        raise AttributeError(f"SB3VecEnv does not forward {method_name!r}")

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: Any = None) -> list[bool]:
        return [False] * len(list(self._get_indices(indices)))

    def seed(self, seed: int | None = None) -> list[int | None]:
        self._seed = 0 if seed is None else int(seed)
        return [self._seed + i for i in range(self.num_envs)]


def make_training_env(env_kwargs: dict[str, Any], num_envs: int, seed: int) -> VecEnv:
    """The batched training env (shared random stream: fastest) with episode statistics for logging.

    Its requests come from the scenario's training split (``split="train"``) unless ``env_kwargs`` sets ``split``.
    """
    vector = FlexRecVectorEnv(
        num_envs=num_envs, autoreset_mode=AutoresetMode.SAME_STEP, shared_rng=True, **training_env_kwargs(env_kwargs)
    )
    return VecMonitor(SB3VecEnv(vector, seed=seed))


# --------------------------------------------------------------------------------------------------------------------
# The agent.


@dataclass(frozen=True)
class SB3Config:
    """Settings of the stable-baselines3 agents (defaults: a few minutes on a laptop CPU)."""

    algorithm: Algorithm = "maskable-ppo"
    """``"maskable-ppo"`` (sb3-contrib), ``"ppo"`` or ``"dqn"``."""
    num_envs: int = 16
    """Environments stepped together (one batched vector env)."""
    learning_rate: float = 3e-4
    """Adam step size."""
    gamma: float = 0.99
    """Discount over the positions of a list."""
    hidden: int = 64
    """Width of the shared candidate encoder, the context and the scorer."""
    n_steps: int = 64
    """PPO: steps per env per rollout (a rollout is ``num_envs * n_steps`` placements)."""
    batch_size: int = 256
    """Minibatch size of the updates."""
    n_epochs: int = 4
    """PPO: passes over each rollout."""
    ent_coef: float = 0.01
    """PPO: entropy bonus."""
    buffer_size: int = 50_000
    """DQN: replay buffer size."""
    learning_starts: int = 1_000
    """DQN: steps before the first update."""
    exploration_fraction: float = 0.3
    """DQN: fraction of training over which epsilon decays from 1 to 0.05."""
    target_update_interval: int = 1_000
    """DQN: steps between target-network updates."""
    eval_every: int = 10_000
    """Environment steps between evaluations on the true relevance (logged to TensorBoard); 0 disables them."""
    eval_episodes: int = 30
    """Episodes per need in each evaluation."""
    device: str = "cpu"
    """torch device."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Further keyword arguments for the stable-baselines3 algorithm."""

    def __post_init__(self) -> None:
        ranges = {
            "num_envs": ">= 1",
            "learning_rate": "(0, 1)",
            "gamma": "[0, 1]",
            "hidden": ">= 1",
            "n_steps": ">= 1",
            "batch_size": ">= 1",
            "n_epochs": ">= 1",
            "ent_coef": ">= 0",
            "buffer_size": ">= 1",
            "learning_starts": ">= 0",
            "exploration_fraction": "(0, 1]",
            "target_update_interval": ">= 1",
            "eval_every": ">= 0",
            "eval_episodes": ">= 1",
        }
        check_fields(self, ranges)
        check_keys(f"{self.algorithm} argument(s) in extra", self.extra, self.extra_arguments())

    def extra_arguments(self) -> list[str]:
        """The keys ``extra`` allows: the arguments of the algorithm's constructor that nothing else sets."""
        algorithm = ALGORITHMS[self.algorithm][0]
        taken = BUILD_ARGUMENTS | set(self.own_kwargs())
        return sorted(set(inspect.signature(algorithm).parameters) - taken)

    def algorithm_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of the algorithm's constructor: those of these fields, then ``extra``."""
        return {**self.own_kwargs(), **self.extra}

    def own_kwargs(self) -> dict[str, Any]:
        common = {"learning_rate": self.learning_rate, "gamma": self.gamma, "batch_size": self.batch_size}
        if self.algorithm == "dqn":
            specific = {
                "buffer_size": self.buffer_size,
                "learning_starts": self.learning_starts,
                "exploration_fraction": self.exploration_fraction,
                "target_update_interval": self.target_update_interval,
                "train_freq": 1,
                "gradient_steps": max(1, self.num_envs // 4),
            }
        else:
            specific = {"n_steps": self.n_steps, "n_epochs": self.n_epochs, "ent_coef": self.ent_coef}
        return {**common, **specific}


#: Arguments of the algorithm's constructor that :meth:`SB3Agent.build_model` sets itself (``extra`` cannot).
BUILD_ARGUMENTS = frozenset(
    {"policy", "env", "policy_kwargs", "seed", "device", "verbose", "tensorboard_log", "_init_setup_model"}
)
ALGORITHMS: dict[str, tuple[type[BaseAlgorithm], type[Any]]] = {
    "maskable-ppo": (MaskablePPO, ScoredMaskablePolicy),
    "ppo": (PPO, ScoredActorCriticPolicy),
    "dqn": (MaskedDQN, ScoredDQNPolicy),
}


class ProgressCallback(BaseCallback):
    """Progress over environment steps (:class:`~agents.progress.Progress`)."""

    def __init__(self, total: int, description: str) -> None:
        super().__init__()
        self.bar = Progress(total, description, unit="step")

    def _on_step(self) -> bool:
        self.bar.update(min(self.num_timesteps, self.bar.total) - self.bar.n)
        return True

    def _on_training_end(self) -> None:
        self.bar.close()


class TrueMetricsCallback(BaseCallback):
    """Every ``every`` steps, evaluate on the true relevance (:meth:`SB3Agent.evaluate_during_training`) and log it."""

    def __init__(self, agent: SB3Agent, env_kwargs: dict[str, Any], every: int, episodes: int) -> None:
        super().__init__()
        self.agent, self.env_kwargs, self.every, self.episodes = agent, env_kwargs, every, episodes
        self.next_at = every

    def _on_step(self) -> bool:
        if self.every and self.num_timesteps >= self.next_at:
            self.next_at += self.every
            for metric, value in self.agent.evaluate_during_training(self.env_kwargs, self.num_timesteps, self.episodes).items():
                self.logger.record(f"eval/{metric}", value)
            self.logger.dump(self.num_timesteps)
        return True


class SB3Agent(TrainableAgent):
    """A stable-baselines3 policy over the candidate set (see the module docstring)."""

    def __init__(self, config: SB3Config | None = None, **overrides: Any) -> None:
        self.config = (
            config if config is not None and not overrides else SB3Config(**{**asdict(config or SB3Config()), **overrides})
        )
        super().__init__()
        self.name = self.config.algorithm
        self.model: BaseAlgorithm | None = None
        self.env_kwargs: dict[str, Any] = {}

    @classmethod
    def setting_types(cls) -> dict[str, Any]:
        return {k: v for k, v in field_types(SB3Config).items() if k != "algorithm"}  # the agent's name fixes it

    def build_model(self, venv: VecEnv, seed: int, logdir: Path | None = None) -> BaseAlgorithm:
        """A fresh stable-baselines3 model of the configured algorithm on ``venv``, with the set-structured policy.

        A value in ``extra`` that the algorithm refuses is a ``ValueError`` naming ``extra`` and the algorithm's reason.
        """
        c = self.config
        algorithm, policy = ALGORITHMS[c.algorithm]
        policy_kwargs: dict[str, Any] = {
            "features_extractor_class": CandidateSetExtractor,
            "features_extractor_kwargs": {"hidden": c.hidden},
        }
        policy_kwargs["net_arch"] = [] if c.algorithm == "dqn" else {"pi": [], "vf": [c.hidden]}
        try:
            return algorithm(
                policy, venv, policy_kwargs=policy_kwargs, seed=seed, device=c.device, verbose=0,
                tensorboard_log=str(logdir) if logdir else None, **c.algorithm_kwargs(),
            )  # fmt: skip
        except (AssertionError, TypeError, ValueError) as error:
            if not c.extra:
                raise  # the fields are checked: this is ours to fix, not the user's
            raise ValueError(f"extra={c.extra}: {error or type(error).__name__}") from error

    def _learn(
        self, env_kwargs: dict[str, Any], total_steps: int, seed: int, logdir: Path | None, checkpointing: Checkpointing | None
    ) -> None:
        c = self.config
        self.env_kwargs = portable(env_kwargs)
        venv = make_training_env(dict(env_kwargs), c.num_envs, seed)
        self.model = self.build_model(venv, seed, logdir)
        evaluation = TrueMetricsCallback(self, dict(env_kwargs), c.eval_every, c.eval_episodes)
        callbacks = CallbackList([ProgressCallback(total_steps, f"train {c.algorithm}"), evaluation])
        self.model.learn(total_timesteps=total_steps, callback=callbacks, tb_log_name=c.algorithm)
        venv.close()

    def act(self, observation: dict[str, Any], env: gym.Env) -> int:
        if self.model is None:
            raise RuntimeError("the agent has no policy yet: call learn() or load a checkpoint")
        keys = self.model.observation_space.spaces  # type: ignore[attr-defined]
        observation = {key: observation[key] for key in keys}  # a session's observation has request_index too
        masks = np.asarray(observation["action_mask"], dtype=bool)
        if isinstance(self.model, MaskablePPO):
            action, _ = self.model.predict(observation, deterministic=True, action_masks=masks)
        else:
            action, _ = self.model.predict(observation, deterministic=True)
        return int(action)

    def save(self, path: Path) -> None:
        """Write the settings and the policy's weights (a FlexRec checkpoint, not an SB3 zip: see :meth:`load`)."""
        if self.model is None:
            raise RuntimeError("nothing to save: the agent has not been trained")
        payload = {
            "config": asdict(self.config),
            "env_kwargs": self.env_kwargs,
            "eval_history": self.eval_history,
            "feature_sizes": self.trained_sizes,
            "policy": self.model.policy.state_dict(),
        }
        save_checkpoint(path, self.name, payload)

    @classmethod
    def load(cls, path: Path) -> SB3Agent:
        """Rebuild an agent written by :meth:`save`: a fresh model on the training env, then the saved weights.

        stable-baselines3's own ``load`` is not used: its archives keep spaces, schedules and classes as cloudpickle
        payloads, which it unpickles (code from the file would run).
        """
        kind, data = read_checkpoint(path)
        if kind not in ALGORITHMS:
            raise ValueError(f"{path} holds a {kind!r} checkpoint, not a stable-baselines3 one ({sorted(ALGORITHMS)})")
        env_kwargs = restored_env_kwargs(data["env_kwargs"], path)  # first: nothing is built from a file naming code
        with restoring(path, "settings"):
            agent = cls(SB3Config(**data["config"]))
        agent.env_kwargs = env_kwargs
        venv = make_training_env(agent.env_kwargs, agent.config.num_envs, seed=0)  # as in training: the same checks
        with restoring(path, "policy"):
            agent.model = agent.build_model(venv, seed=0)
            agent.model.policy.load_state_dict(data["policy"])
        venv.close()
        agent.eval_history = list(data["eval_history"])
        agent.restore_feature_sizes(data)
        return agent
