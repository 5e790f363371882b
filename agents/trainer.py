r"""The FlexRec trainer: group rollouts from the environment, item-level advantages, a clipped policy update.

One iteration:

1. **Rollouts.** A :class:`~flexrec_env.vector_env.FlexRecVectorEnv` of ``B * G`` envs in groups of G
   (``group_size``) is reset: B requests, each shared by the G envs of its group. The policy samples G rankings per
   request (:meth:`~agents.policy.RankingPolicy.sample`) and the env is stepped K times with them; the last step's
   info carries, per ranking, the exact swap rewards, the list reward, and the feedback labels with their mask, all
   computed from the *feedback* (sparse, noisy) unless the env was made with ``reward_labels="true"``. The true
   metrics in the info are logged, never trained on.
2. **Advantages** (:mod:`agents.advantages`): ``list`` (GRPO), ``swap``, or ``flexrec``, which completes the
   unobserved labels with the critic (:mod:`agents.critic`) and weights each position by the critic's confidence.
   The critic then takes a few steps on this batch's observed labels (its calibration is measured before, on labels
   it has not trained on).
3. **Update.** For ``epochs`` passes over minibatches of requests, the clipped surrogate on per-position ratios
   ``rho = exp(log pi(s_t) - log pi_old(s_t))``, a KL penalty to the reference policy (the k3 estimator
   ``exp(q) - q - 1`` with ``q = log pi_ref - log pi``) and an entropy bonus:

       loss = -mean_t min(rho A, clip(rho, 1 - eps, 1 + eps) A) + kl_coef * KL - entropy_coef * H.

``accelerate`` places the policy, the critic and the optimisers (one CPU, one GPU, or ``accelerate launch`` for data
parallel: each process collects its own rollouts from its own seed).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from tqdm import tqdm

from agents.advantages import ESTIMATORS, WEIGHT_FORMS, flexrec_advantages, list_advantages, swap_advantages
from agents.critic import (
    CriticConfig,
    UncertaintyCritic,
    calibration,
    completed_gains,
    completed_swap_rewards,
    gaussian_nll,
)
from agents.policy import RankingInputs, RankingPolicy
from flexrec_env.vector_env import FlexRecVectorEnv
from scenarios.tools import check_settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainerConfig:
    """The FlexRec trainer's settings (``flexrec-agent train --agent flexrec --set KEY=VALUE`` sets them)."""

    advantage: str = "flexrec"
    """Advantage estimator: ``"list"`` (GRPO), ``"swap"`` or ``"flexrec"`` (swap + uncertainty-aware critic)."""
    group_size: int = 8
    """G: rankings sampled per request."""
    requests_per_batch: int = 16
    """B: requests per iteration (an iteration is ``B * G * K`` environment steps)."""
    epochs: int = 4
    """Passes over each batch."""
    minibatch_requests: int = 8
    """Requests (with their whole groups) per gradient step."""
    learning_rate: float = 1e-3
    """Adam step size of the policy."""
    clip: float = 0.2
    """PPO clip range of the per-position ratio."""
    kl_coef: float = 0.01
    """Weight of the KL penalty to the reference policy."""
    reference_sync_every: int = 10
    """Iterations between copies of the policy into the reference (0: the initial policy stays the reference,
    as for a pretrained LLM; a policy trained from scratch would otherwise be held near its random init)."""
    entropy_coef: float = 0.001
    """Weight of the entropy bonus."""
    max_grad_norm: float = 1.0
    """Gradient clipping of the policy."""
    impute: str = "all"
    """Where ``flexrec`` fills in unobserved labels with the critic: ``"all"`` requests, or only ``"anchored"`` ones
    (whose feedback observed at least one relevant item; the others keep the feedback's swap rewards)."""
    weight_form: str = "sigmoid"
    """Confidence weight of ``flexrec``: ``"sigmoid"`` (``sigmoid(-u T) + 0.5``) or ``"inverse-variance"``."""
    weight_temperature: float = 1.0
    """T of the confidence weight (u is the critic's std relative to the group's reward spread)."""
    critic: CriticConfig = field(default_factory=CriticConfig)
    """The critic (used by ``flexrec`` only)."""
    eval_every: int = 25_000
    """Environment steps between evaluations on the true relevance (0: never)."""
    eval_episodes: int = 32
    """Episodes per need of each evaluation."""

    def __post_init__(self) -> None:
        if isinstance(self.critic, dict):  # from a config file
            object.__setattr__(self, "critic", CriticConfig(**self.critic))
        checks = {
            "advantage": self.advantage in ESTIMATORS,
            "group_size": self.group_size >= 2,
            "requests_per_batch": self.requests_per_batch >= 1,
            "epochs": self.epochs >= 1,
            "minibatch_requests": self.minibatch_requests >= 1,
            "learning_rate": self.learning_rate > 0,
            "clip": self.clip > 0,
            "kl_coef": self.kl_coef >= 0,
            "reference_sync_every": self.reference_sync_every >= 0,
            "entropy_coef": self.entropy_coef >= 0,
            "max_grad_norm": self.max_grad_norm > 0,
            "weight_form": self.weight_form in WEIGHT_FORMS,
            "impute": self.impute in ("all", "anchored"),
            "weight_temperature": self.weight_temperature > 0,
            "eval_every": self.eval_every >= 0,
            "eval_episodes": self.eval_episodes >= 1,
        }
        check_settings(
            self,
            checks,
            f"advantage in {list(ESTIMATORS)}, weight_form in {list(WEIGHT_FORMS)}, group_size >= 2, positive sizes and "
            "rates (see TrainerConfig's field docs)",
        )

    @property
    def steps_per_iteration(self) -> int:
        """Environment steps per iteration, without K: multiply by the list length."""
        return self.requests_per_batch * self.group_size


@dataclass
class Batch:
    """One iteration's rollouts and what the update needs of them (``(B, G, K)`` unless said otherwise)."""

    inputs: RankingInputs
    rankings: torch.Tensor
    old_log_probs: torch.Tensor
    advantages: torch.Tensor
    stats: dict[str, float]


def policy_loss(
    log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    reference_log_probs: torch.Tensor,
    entropy: torch.Tensor,
    advantages: torch.Tensor,
    clip: float,
    kl_coef: float,
    entropy_coef: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The clipped surrogate with a k3 KL penalty and an entropy bonus, averaged over every placement."""
    ratio = torch.exp(log_probs - old_log_probs)
    surrogate = torch.minimum(ratio * advantages, ratio.clamp(1 - clip, 1 + clip) * advantages)
    q = reference_log_probs - log_probs
    kl = torch.exp(q) - q - 1  # k3: unbiased, non-negative estimate of KL(pi || pi_ref)
    loss = -surrogate.mean() + kl_coef * kl.mean() - entropy_coef * entropy.mean()
    clipped = ((ratio - 1).abs() > clip).float().mean()
    return loss, {"kl": kl.mean().detach(), "entropy": entropy.mean().detach(), "clip_fraction": clipped.detach()}


class FlexRecTrainer:
    """Trains any :class:`~agents.policy.RankingPolicy` on ``FlexRec-v0`` (see the module docstring)."""

    def __init__(
        self,
        policy: RankingPolicy,
        env_kwargs: dict[str, Any],
        config: TrainerConfig | None = None,
        logdir: Path | None = None,
        seed: int = 0,
        evaluate: Callable[[], dict[str, float]] | None = None,
    ) -> None:
        from accelerate import Accelerator

        self.config = c = config or TrainerConfig()
        self.accelerator = Accelerator(cpu=not torch.cuda.is_available())
        self.env = FlexRecVectorEnv(
            num_envs=c.requests_per_batch * c.group_size,
            group_size=c.group_size,
            autoreset_mode="Disabled",
            shared_rng=True,
            copy=False,
            **env_kwargs,
        )
        self.k, self.metric_k = self.env.config.list_length, self.env.config.k
        self.seed = seed + 1_000 * self.accelerator.process_index
        torch.manual_seed(self.seed)
        self.generator = torch.Generator(device=self.accelerator.device).manual_seed(self.seed)
        self.reference = policy.reference()
        optimizer = torch.optim.Adam(policy.parameters(), lr=c.learning_rate)
        self.policy, self.optimizer = self.accelerator.prepare(policy, optimizer)
        self.reference.to(self.accelerator.device)
        self.critic: UncertaintyCritic | None = None
        self._buffer: list[torch.Tensor] = []  # recent observed (critic inputs, target gains)
        self._critic_generator = torch.Generator().manual_seed(self.seed)
        self.list_level = {need.name: need.is_list_level for need in self.env.config.needs}
        self.evaluate = evaluate
        self.steps, self.iteration = 0, 0
        self.writer = None
        if logdir is not None and self.accelerator.is_main_process:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(logdir))

    @property
    def unwrapped_policy(self) -> RankingPolicy:
        policy = self.accelerator.unwrap_model(self.policy)
        assert isinstance(policy, RankingPolicy)
        return policy

    # Rollouts and advantages ----------------------------------------------------------------------------------------

    def collect(self) -> Batch:
        """Reset the groups, sample G rankings per request, step the env with them, and compute the advantages."""
        g = self.config.group_size
        observation, _ = self.env.reset(seed=self.seed if self.iteration == 0 else None)
        firsts = np.arange(0, self.env.num_envs, g)
        policy = self.unwrapped_policy
        requests = self.env.requests(firsts) if policy.reads_text else None
        inputs = RankingInputs.from_observation({k: v[firsts] for k, v in observation.items()}, requests, self.accelerator.device)
        policy.eval()
        rollout = policy.sample(inputs, g, self.k, generator=self.generator)
        policy.train()
        actions = rollout.rankings.reshape(self.env.num_envs, self.k).cpu().numpy()
        info: dict[str, Any] = {}
        for t in range(self.k):
            _, _, terminated, _, info = self.env.step(actions[:, t])
        assert terminated.all(), "every ranking finishes after K valid placements"
        self.steps += self.env.num_envs * self.k
        advantages, stats = self.advantages(inputs, actions.reshape(-1, g, self.k), info)
        stats["reward/list"] = float(info["list_reward"].mean())
        stats["reward/swap_mean"] = float(info["swap_rewards"].mean())
        stats["train/true_NDCG@5"] = float(info["metrics"]["NDCG@5"].mean())  # logged only, never trained on
        return Batch(inputs, rollout.rankings, rollout.log_probs, torch.as_tensor(advantages, dtype=torch.float32), stats)

    def advantages(
        self, inputs: RankingInputs, rankings: NDArray[np.int64], info: dict[str, Any]
    ) -> tuple[NDArray[np.float64], dict[str, float]]:
        """``(B, G, K)`` advantages of the configured estimator from the last step's info (feedback only)."""
        b, g, k = rankings.shape
        swap = info["swap_rewards"].reshape(b, g, k)
        stats: dict[str, float] = {}
        if self.config.advantage == "list":
            advantages = list_advantages(info["list_reward"].reshape(b, g), k)
        elif self.config.advantage == "swap":
            advantages = swap_advantages(swap)
        else:
            first = np.arange(0, b * g, g)
            labels, observed = info["feedback_labels"][first], info["feedback_labels_observed"][first].astype(bool)
            rewards, std, stats = self.critic_rewards(inputs, rankings, labels, observed, swap, info["need"][first])
            advantages, weights = flexrec_advantages(rewards, std, self.config.weight_form, self.config.weight_temperature)
            stats["critic/mean_weight"] = float(weights.mean())
            stats["critic/reward_std"] = float(std.mean())
        for t in range(k):
            stats[f"advantage/position_{t + 1}"] = float(np.abs(advantages[..., t]).mean())
            stats[f"reward/swap_position_{t + 1}"] = float(swap[..., t].mean())
        return advantages, stats

    def critic_rewards(
        self,
        inputs: RankingInputs,
        rankings: NDArray[np.int64],
        labels: NDArray,
        observed: NDArray[np.bool_],
        env_swap: NDArray,
        needs: NDArray[np.object_],
    ) -> tuple[NDArray, NDArray, dict[str, float]]:
        """Critic-completed swap rewards and their std ``(B, G, K)``; then one round of critic training."""
        features = self.unwrapped_policy.critic_inputs(inputs)  # (B, N, H), detached
        if self.critic is None:
            self.critic = UncertaintyCritic(features.shape[-1], self.config.critic).to(features.device)
            self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=self.config.critic.learning_rate)
        with torch.no_grad():
            mean, var = (x.cpu().numpy().astype(np.float64) for x in self.critic(features))
        gain, gain_var = completed_gains(labels, observed, mean, var)
        if self.config.impute == "anchored":  # requests whose feedback saw no relevant item are not imputed
            anchored = ((labels > 0) & observed).any(axis=1)
            gain[~anchored] = np.where(observed[~anchored], gain[~anchored], 0.0)
        rewards, std = completed_swap_rewards(rankings, gain, gain_var, self.metric_k)
        list_level = np.array([self.list_level.get(str(n), False) for n in needs])
        rewards[list_level] = env_swap[list_level]  # exact generic swap rewards; the linear std stays
        target = np.exp2(labels) - 1.0
        within_1, within_2 = calibration(mean[observed], np.sqrt(var[observed]), target[observed])
        stats = {"critic/within_1sigma": within_1, "critic/within_2sigma": within_2, "critic/observed": float(observed.mean())}
        stats["critic/nll"] = self.train_critic(features, torch.as_tensor(target, dtype=torch.float32), observed)
        return rewards, std, stats

    def train_critic(self, features: torch.Tensor, target: torch.Tensor, observed: NDArray[np.bool_]) -> float:
        """Add the observed labels to the buffer and take the critic's steps; returns their NLL before the steps."""
        assert self.critic is not None
        c = self.config.critic
        mask = torch.as_tensor(observed, device=features.device)
        x, y = features[mask], target.to(features.device)[mask]
        self._buffer = (
            [torch.cat([old, new])[-c.buffer_size :] for old, new in zip(self._buffer, (x, y), strict=True)]
            if (self._buffer)
            else [x, y]
        )
        nll = float("nan")
        if len(y):
            with torch.no_grad():
                mean, var = self.critic(x)
                nll = float(gaussian_nll(mean, var, y).mean())
        size = len(self._buffer[1])
        for _ in range(c.updates if size else 0):
            rows = torch.randint(size, (min(c.batch_size, size),), generator=self._critic_generator)
            loss = self.critic.loss(self._buffer[0][rows], self._buffer[1][rows])
            self.critic_optimizer.zero_grad()
            loss.backward()
            self.critic_optimizer.step()
        return nll

    # Update --------------------------------------------------------------------------------------------------------

    def update(self, batch: Batch) -> dict[str, float]:
        """``epochs`` passes of clipped policy-gradient steps over minibatches of the batch's requests."""
        c = self.config
        b = len(batch.inputs)
        with torch.no_grad():
            reference_log_probs, _ = self.reference.log_probs(batch.inputs, batch.rankings)
        sums: dict[str, float] = {}
        count = 0
        for _ in range(c.epochs):
            order = torch.randperm(b, generator=torch.Generator().manual_seed(self.seed + self.iteration))
            for start in range(0, b, c.minibatch_requests):
                rows = order[start : start + c.minibatch_requests]
                log_probs, entropy = self.unwrapped_policy.log_probs(batch.inputs.take(rows), batch.rankings[rows])
                loss, stats = policy_loss(
                    log_probs,
                    batch.old_log_probs[rows],
                    reference_log_probs[rows],
                    entropy,
                    batch.advantages[rows].to(log_probs.device),
                    c.clip,
                    c.kl_coef,
                    c.entropy_coef,
                )
                self.optimizer.zero_grad()
                self.accelerator.backward(loss)
                self.accelerator.clip_grad_norm_(self.policy.parameters(), c.max_grad_norm)
                self.optimizer.step()
                for key, value in {"loss": loss.detach(), **stats}.items():
                    sums[f"train/{key}"] = sums.get(f"train/{key}", 0.0) + float(value)
                count += 1
        return {key: value / count for key, value in sums.items()}

    # Loop ----------------------------------------------------------------------------------------------------------

    def train(self, total_steps: int, progress: bool = True) -> list[dict[str, float]]:
        """Iterate until ``total_steps`` environment steps (item placements); returns the logged rows."""
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
            raise ValueError(f"total_steps={total_steps!r}; allowed: an integer >= 1")
        history: list[dict[str, float]] = []
        next_eval = self.config.eval_every or math.inf
        started = time.perf_counter()
        bar = tqdm(total=total_steps, desc=f"flexrec ({self.config.advantage})", unit="step", disable=not progress or None)
        while self.steps < total_steps:
            batch = self.collect()
            row = {**batch.stats, **self.update(batch), "steps": float(self.steps)}
            self.iteration += 1
            if self.config.reference_sync_every and self.iteration % self.config.reference_sync_every == 0:
                self.reference.load_state_dict(self.unwrapped_policy.state_dict())
            if self.evaluate is not None and self.steps >= next_eval:
                next_eval += self.config.eval_every
                row.update({f"eval/{key}": value for key, value in self.evaluate().items()})
            row["time/steps_per_second"] = self.steps / (time.perf_counter() - started)
            history.append(row)
            self.log(row)
            bar.update(min(self.steps, total_steps) - bar.n)
            bar.set_postfix(list_reward=f"{row['reward/list']:.3f}", refresh=False)
        bar.close()
        if self.writer is not None:
            self.writer.flush()
        return history

    def log(self, row: dict[str, float]) -> None:
        if self.writer is None:
            return
        for key, value in row.items():
            if key != "steps" and not math.isnan(value):
                self.writer.add_scalar(key, value, self.steps)
