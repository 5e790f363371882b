r"""The FlexRec trainer: group rollouts from the environment, item-level advantages, a clipped policy update.

One iteration:

1. **Rollouts.** A :class:`~flexrec_env.vector_env.FlexRecVectorEnv` of ``B * G`` envs in groups of G
   (``group_size``), on the scenario's training split (``split="train"``), is reset: B requests, each shared by the
   G envs of its group. With a critic and ``critic_prior``, the critic's expected gain per candidate becomes the
   policy's prior (:class:`~agents.policy.RankingPolicy`): the policy starts as the critic's ranking. The policy
   samples G rankings per request (:meth:`~agents.policy.RankingPolicy.sample`) and the env is stepped K times with
   them (with session arguments, a :class:`~flexrec_env.session_env.FlexRecSessionVectorEnv` of B sessions in groups
   of G: each iteration ranks the sessions' next request, with its need and instruction, and a new batch of sessions
   is drawn when they end; a resumed run starts new sessions). The last step's info carries, per ranking, the exact
   swap rewards, the list reward, and the reward labels with their mask, all computed from the *feedback* (sparse,
   noisy) unless the env was made with ``reward_labels="true"``. The true metrics in the info are logged, never
   trained on.
2. **Advantages** (:mod:`agents.advantages`, looked up by name in ``ESTIMATORS``): ``list`` (GRPO), ``swap``, or
   ``flexrec``, which completes the unobserved labels with the critic (:mod:`agents.critic`, ``completion``) and
   weights each position by the critic's confidence (``weight``). The critic's calibration is measured on this
   batch's observed labels, then it takes a few steps on them (:class:`~agents.critic.CriticLearner`). Each
   position's advantage is then scaled by its weight in the metric (``position_weight``).
3. **Update.** For ``epochs`` passes over minibatches of requests, the clipped surrogate on per-position ratios
   ``rho = exp(log pi(s_t) - log pi_old(s_t))``, a KL penalty to the reference policy (the k3 estimator
   ``exp(q) - q - 1`` with ``q = log pi_ref - log pi``; off by default for a policy trained from scratch) and an
   entropy bonus:

       loss = -mean_t min(rho A, clip(rho, 1 - eps, 1 + eps) A) + kl_coef * KL - entropy_coef * H.

   The log-probabilities are computed through the prepared (possibly data-parallel wrapped) module.

``accelerate`` places the policy and its optimiser: one CPU, one GPU, or data parallel under ``accelerate launch`` (or
``torchrun``). There each process collects its own rollouts from its own seed, the update runs through the
DDP-wrapped module so gradients are averaged before every optimiser step, and the step budget counts the placements
of all processes. The critic is kept identical everywhere: it starts from process 0's weights, every process adds
the observed labels of all processes (gathered) and takes the same seeded steps on them. Logged statistics are
averaged over processes.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import NDArray

from agents.advantages import ESTIMATORS, USES_CRITIC, Estimator, Rewards, Weight, position_weights
from agents.base import training_env_kwargs
from agents.critic import (
    Completion,
    CriticConfig,
    CriticLearner,
    calibration_report,
    completed_gains,
    completed_swap_rewards,
    gain_moments,
)
from agents.policy import RankingInputs, RankingPolicy
from agents.progress import Progress
from agents.resume import StopRequest, TrainingInterrupted
from flexrec_env.config import SessionConfig
from flexrec_env.session import fatigue_factor
from flexrec_env.session_env import FlexRecSessionVectorEnv
from flexrec_env.swap import swap_rewards_generic
from flexrec_env.vector_env import FlexRecVectorEnv
from scenarios.settings import check_fields, check_value

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainerConfig:
    """The FlexRec trainer's settings (``flexrec-agent train --agent flexrec --set KEY=VALUE`` sets them)."""

    advantage: Estimator = "flexrec"
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
    kl_coef: float | None = None
    """Weight of the KL penalty to the reference policy. Default: 0.5 when the policy starts from the critic (the
    reference is then the critic's own ranking, so RL changes it only where the rewards insist), else 0 (a policy
    trained from scratch has nothing to stay near)."""
    reference_sync_every: int = 0
    """Iterations between copies of the policy into the reference (0: the initial policy stays the reference)."""
    entropy_coef: float = 0.001
    """Weight of the entropy bonus."""
    max_grad_norm: float = 1.0
    """Gradient clipping of the policy (``inf``: none)."""
    position_weight: Literal["discount", "uniform"] = "discount"
    """Weight of each position's term in the policy loss: NDCG@k's discount ``1 / log2(t + 1)`` (0 past the
    metric's k), normalised to mean 1, so positions count as much as the metric rewards them; or ``"uniform"``."""
    completion: Completion = "impute"
    """What stands in for unobserved labels in ``flexrec``'s swap rewards: the critic's expected gain
    (``"impute"``), a doubly robust estimate (``"dr"``), or nothing (``"none"``: only the down-weighting is used)."""
    weight: Weight = "shrinkage"
    """Confidence weight of ``flexrec``: ``"shrinkage"`` ``1 / (1 + (u T)**2)``, ``"sigmoid"`` ``sigmoid(-u T) + 0.5``,
    or ``"none"`` (1: the ablation without down-weighting)."""
    weight_temperature: float = 1.0
    """T of the confidence weight (u is the critic's std relative to the group's reward spread)."""
    critic_prior: bool = True
    """With a critic (``flexrec``): the policy starts from the critic's ranking (its expected gain per candidate is
    added to the policy's logits, times a learned weight) and RL learns the rest."""
    critic: CriticConfig = field(default_factory=CriticConfig)
    """The critic (used by ``flexrec`` only)."""
    eval_every: int = 25_000
    """Environment steps between evaluations on the true relevance (0: never)."""
    eval_episodes: int = 32
    """Episodes per need of each evaluation."""

    def __post_init__(self) -> None:
        if isinstance(self.critic, dict):  # from a config file
            object.__setattr__(self, "critic", CriticConfig(**self.critic))
        ranges = {
            "group_size": ">= 2",
            "requests_per_batch": ">= 1",
            "epochs": ">= 1",
            "minibatch_requests": ">= 1",
            "learning_rate": "> 0",
            "clip": "> 0",
            "kl_coef": ">= 0",
            "reference_sync_every": ">= 0",
            "entropy_coef": ">= 0",
            "max_grad_norm": "(0, inf]",
            "weight_temperature": "> 0",
            "eval_every": ">= 0",
            "eval_episodes": ">= 1",
        }
        check_fields(self, ranges)

    @property
    def uses_critic(self) -> bool:
        """Whether the estimator needs the critic."""
        return self.advantage in USES_CRITIC

    @property
    def kl(self) -> float:
        """The KL weight in force (see ``kl_coef``)."""
        if self.kl_coef is not None:
            return self.kl_coef
        return 0.5 if self.uses_critic and self.critic_prior else 0.0


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
    reference_log_probs: torch.Tensor | None,
    entropy: torch.Tensor,
    advantages: torch.Tensor,
    clip: float,
    kl_coef: float,
    entropy_coef: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The clipped surrogate with a k3 KL penalty and an entropy bonus, averaged over every placement."""
    ratio = torch.exp(log_probs - old_log_probs)
    surrogate = torch.minimum(ratio * advantages, ratio.clamp(1 - clip, 1 + clip) * advantages)
    if reference_log_probs is None:
        kl = torch.zeros_like(log_probs)
    else:
        q = reference_log_probs - log_probs
        kl = torch.exp(q) - q - 1  # k3: unbiased, non-negative estimate of KL(pi || pi_ref)
    loss = -surrogate.mean() + kl_coef * kl.mean() - entropy_coef * entropy.mean()
    clipped = ((ratio - 1).abs() > clip).float().mean()
    return loss, {"kl": kl.mean().detach(), "entropy": entropy.mean().detach(), "clip_fraction": clipped.detach()}


#: numpy bit generators an episode stream may be restored into, by name.
BIT_GENERATORS: dict[str, Callable[[], np.random.BitGenerator]] = {
    c.__name__: c for c in (np.random.PCG64, np.random.PCG64DXSM, np.random.Philox, np.random.SFC64, np.random.MT19937)
}


class FlexRecTrainer:
    """Trains any :class:`~agents.policy.RankingPolicy` on ``FlexRec-v0`` (see the module docstring)."""

    def __init__(
        self,
        policy: RankingPolicy,
        env_kwargs: dict[str, Any],
        config: TrainerConfig | None = None,
        logdir: Path | None = None,
        seed: int = 0,
        evaluate: Callable[[int], dict[str, float]] | None = None,
    ) -> None:
        from accelerate import Accelerator, DistributedDataParallelKwargs

        self.config = c = config or TrainerConfig()
        if c.uses_critic and c.critic_prior and not policy.learns_prior:
            name = type(policy).__name__
            raise ValueError(f"critic_prior=True, but {name} cannot start from the critic; set critic_prior=false")
        # a policy may leave a parameter unused in an update (the prior weight without a prior)
        ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
        self.accelerator = Accelerator(cpu=not torch.cuda.is_available(), kwargs_handlers=[ddp])
        # Session arguments (FlexRecSession-v0): each iteration ranks one request of B sessions (see collect).
        env_class = FlexRecSessionVectorEnv if SessionConfig.given(env_kwargs) else FlexRecVectorEnv
        self.env = env_class(
            num_envs=c.requests_per_batch * c.group_size,
            group_size=c.group_size,
            autoreset_mode="Disabled",
            shared_rng=True,
            copy=False,
            **training_env_kwargs(env_kwargs),
        )
        self.k, self.metric_k = self.env.config.list_length, self.env.config.k
        self.positions = torch.as_tensor(position_weights(self.k, self.metric_k, c.position_weight), dtype=torch.float32)
        self.base_seed = seed
        self.seed = seed + 1_000 * self.accelerator.process_index  # each process its own rollouts
        torch.manual_seed(self.seed)
        self.generator = torch.Generator(device=self.accelerator.device).manual_seed(self.seed)
        self.minibatch_generator = torch.Generator().manual_seed(self.seed)
        self.reference = policy.reference() if c.kl > 0 else None
        optimizer = torch.optim.Adam(policy.parameters(), lr=c.learning_rate)
        self.policy, self.optimizer = self.accelerator.prepare(policy, optimizer)
        if self.reference is not None:
            self.reference.to(self.accelerator.device)
        self.critic: CriticLearner | None = None
        self.list_level = {need.name: need.is_list_level for need in self.env.needs}
        self.evaluate = evaluate
        self.steps, self.iteration = 0, 0
        self._next_request: dict[str, NDArray] | None = None
        self._categories: NDArray[np.int64] | None = None
        self.next_eval = c.eval_every or math.inf
        self.history: list[dict[str, float]] = []
        """The logged rows so far (see :meth:`train`)."""
        self.writer = None
        if logdir is not None and self.accelerator.is_main_process:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(logdir))

    @property
    def unwrapped_policy(self) -> RankingPolicy:
        policy = self.accelerator.unwrap_model(self.policy)
        assert isinstance(policy, RankingPolicy)
        return policy

    def critic_learner(self, features: torch.Tensor) -> CriticLearner:
        """The critic, built on first use for per-candidate features ``(B, N, F)``."""
        if self.critic is None:
            self.critic = CriticLearner(
                features.shape[-1],
                self.env.scenario.max_grade,
                self.env.config.reward_noise[1],
                self.config.critic,
                seed=self.base_seed,  # the same minibatches in every process
                device=features.device,
            )
            self.broadcast_critic()
        return self.critic

    # Data parallel --------------------------------------------------------------------------------------------------

    @property
    def distributed(self) -> bool:
        """Whether several processes train together (``accelerate launch``)."""
        return self.accelerator.num_processes > 1

    def broadcast_critic(self) -> None:
        """Every process's critic takes process 0's weights (after it is built or re-initialised)."""
        if self.distributed and self.critic is not None:
            for parameter in self.critic.critic.parameters():
                torch.distributed.broadcast(parameter.data, src=0)

    def gather(self, array: NDArray | torch.Tensor) -> Any:
        """``array`` of every process, concatenated along the first axis (itself when training alone)."""
        if not self.distributed:
            return array
        tensor = torch.as_tensor(array, device=self.accelerator.device)
        flag = tensor.dtype == torch.bool  # gloo gathers no booleans
        gathered = self.accelerator.gather(tensor.to(torch.uint8) if flag else tensor)
        gathered = gathered.bool() if flag else gathered
        return gathered if isinstance(array, torch.Tensor) else gathered.cpu().numpy()

    def mean_over_processes(self, row: dict[str, float]) -> dict[str, float]:
        """Each statistic averaged over the processes that logged it (``row`` itself when training alone)."""
        if not self.distributed:
            return row
        from accelerate.utils import gather_object

        rows = gather_object([row])
        return {key: float(np.nanmean([r.get(key, np.nan) for r in rows])) for key in sorted({k for r in rows for k in r})}

    # Rollouts and advantages ----------------------------------------------------------------------------------------

    def collect(self) -> Batch:
        """Reset the groups, sample G rankings per request, step the env with them, and compute the advantages."""
        g = self.config.group_size
        observation = self._next_request
        if observation is None:
            observation, _ = self.env.reset(seed=self.seed if self.iteration == 0 else None)
        firsts = np.arange(0, self.env.num_envs, g)
        policy = self.unwrapped_policy
        # (B, N) categories of the requests ranked now (in a session, the env moves on to the next request with the last step)
        list_level = any(self.list_level.values())
        requests = self.env.requests(firsts) if policy.reads_text or list_level else None  # built once
        self._categories = np.stack([r.category for r in requests]) if requests is not None and list_level else None
        text = requests if policy.reads_text else None
        inputs = RankingInputs.from_observation({k: v[firsts] for k, v in observation.items()}, text, self.accelerator.device)
        features, probs = None, None
        if self.config.uses_critic:
            features = policy.critic_inputs(inputs)  # (B, N, F), detached
            critic = self.critic_learner(features)
            grade_probs = critic.probabilities(features)  # (B, N, M + 1), before the critic sees these labels
            if self.config.critic_prior:  # (B, N): the policy starts from the critic's ranking
                inputs.prior = critic.expected_gain(features, grade_probs)
            probs = grade_probs.double().cpu().numpy()
        policy.eval()
        rollout = policy.sample(inputs, g, self.k, generator=self.generator)
        policy.train()
        actions = rollout.rankings.reshape(self.env.num_envs, self.k).cpu().numpy()
        info: dict[str, Any] = {}
        for t in range(self.k):
            observation, _, terminated, _, info = self.env.step(actions[:, t])
        assert info["_ranking"].all(), "every ranking finishes after K valid placements"
        assert terminated.all() or not terminated.any(), "all sessions move in step"
        self._next_request = None if terminated.all() else observation  # a session's next request, ranked next time
        self.steps += self.env.num_envs * self.k * self.accelerator.num_processes
        advantages, stats = self.advantages(features, probs, actions.reshape(-1, g, self.k), info)
        self._categories = None
        stats["reward/list"] = float(info["list_reward"].mean())
        stats["reward/swap_mean"] = float(info["swap_rewards"].mean())
        stats["train/true_NDCG@5"] = float(info["metrics"]["NDCG@5"].mean())  # logged only, never trained on
        advantages = advantages * self.positions.numpy()  # (B, G, K): each position as much as the metric counts it
        return Batch(inputs, rollout.rankings, rollout.log_probs, torch.as_tensor(advantages, dtype=torch.float32), stats)

    def advantages(
        self,
        features: torch.Tensor | None,
        probs: NDArray[np.float64] | None,
        rankings: NDArray[np.int64],
        info: dict[str, Any],
    ) -> tuple[NDArray[np.float64], dict[str, float]]:
        """``(B, G, K)`` advantages of the configured estimator from the last step's info (reward labels only)."""
        b, g, k = rankings.shape
        rewards = Rewards(info["list_reward"].reshape(b, g), info["swap_rewards"].reshape(b, g, k))
        stats: dict[str, float] = {}
        if features is not None and probs is not None:
            rewards, stats = self.critic_rewards(features, probs, rankings, rewards, info)
        advantages, weights = ESTIMATORS[self.config.advantage](rewards, self.config.weight, self.config.weight_temperature)
        if features is not None:
            stats["critic/mean_weight"] = float(weights.mean())
            stats["critic/weight_p10"], stats["critic/weight_p90"] = (float(q) for q in np.quantile(weights, [0.1, 0.9]))
        for t in range(k):
            stats[f"advantage/position_{t + 1}"] = float(np.abs(advantages[..., t]).mean())
            stats[f"reward/swap_position_{t + 1}"] = float(rewards.swap_rewards[..., t].mean())
        return advantages, stats

    def critic_rewards(
        self,
        features: torch.Tensor,
        probs: NDArray[np.float64],
        rankings: NDArray[np.int64],
        rewards: Rewards,
        info: dict[str, Any],
    ) -> tuple[Rewards, dict[str, float]]:
        """Swap rewards on the critic-completed reward labels, with their std; then one round of critic training.

        Reads the labels the environment's rewards use (``info["reward_labels"]``: the feedback, or the truth with
        ``reward_labels="true"``, then all observed), never anything else.
        """
        b, g, _ = rankings.shape
        first = np.arange(0, b * g, g)
        labels, observed = info["reward_labels"][first], info["reward_labels_observed"][first].astype(bool)
        critic = self.critic_learner(features)
        mean, var = gain_moments(probs)
        observe_prob: float | NDArray[np.float64] = self.env.config.reward_noise[0]
        session = getattr(self.env, "session", None)
        if session is not None and session.fatigue and self.env.config.reward_labels == "feedback":
            observe_prob = observe_prob * fatigue_factor(session, info["request_index"][first])[:, None]
        gain, gain_var = completed_gains(labels, observed, mean, var, self.config.completion, observe_prob)
        critic_rewards, std = completed_swap_rewards(rankings, gain, gain_var, self.metric_k)
        self.list_level_swap_rewards(critic_rewards, rankings, gain, info["need"][first])
        stats = {
            f"critic/{key}": value
            for key, value in calibration_report(probs[observed], labels[observed], critic.label_noise).items()
        }
        stats["critic/observed"], stats["critic/reward_std"] = float(observed.mean()), float(std.mean())
        critic.add(self.gather(features), self.gather(labels), self.gather(observed))  # every process's labels
        stats["critic/loss"] = critic.fit()
        return Rewards(rewards.list_rewards, rewards.swap_rewards, critic_rewards, std), stats

    def list_level_swap_rewards(
        self, out: NDArray[np.float64], rankings: NDArray[np.int64], gain: NDArray, needs: NDArray[np.object_]
    ) -> None:
        """Rows of list-level needs (``diverse``): generic swap rewards of the completed gains, in place.

        The completed gains become grades ``log2(1 + g)`` (whose gains are ``g``); the linear std stays their uncertainty.
        """
        rows_of = {name: np.flatnonzero(needs == name) for name, level in self.list_level.items() if level}
        if not any(len(rows) for rows in rows_of.values()):
            return
        b, g, k = rankings.shape
        categories = self._categories  # (B, N), of the requests collect ranked
        if categories is None:  # called outside collect: the env's current requests
            categories = np.stack([r.category for r in self.env.requests(np.arange(0, b * g, g))])
        metrics = {need.name: need.metric for need in self.env.needs}
        for name, rows in rows_of.items():
            if not len(rows):
                continue
            grades = np.repeat(np.log2(1.0 + np.clip(gain[rows], 0.0, None)), g, axis=0)  # (R * G, N)
            ranked = rankings[rows].reshape(-1, k)
            values = swap_rewards_generic(metrics[name], ranked, grades, np.repeat(categories[rows], g, axis=0), self.metric_k)
            out[rows] = values.reshape(len(rows), g, k)

    # Update --------------------------------------------------------------------------------------------------------

    def update(self, batch: Batch) -> dict[str, float]:
        """``epochs`` passes of clipped policy-gradient steps over minibatches of the batch's requests."""
        c = self.config
        b = len(batch.inputs)
        reference_log_probs = None
        if self.reference is not None:
            with torch.no_grad():
                reference_log_probs, _ = self.reference.log_probs(batch.inputs, batch.rankings)
        sums: dict[str, float] = {}
        count = 0
        for _ in range(c.epochs):
            order = torch.randperm(b, generator=self.minibatch_generator)
            for start in range(0, b, c.minibatch_requests):
                rows = order[start : start + c.minibatch_requests]
                log_probs, entropy = self.policy(batch.inputs.take(rows), batch.rankings[rows])
                loss, stats = policy_loss(
                    log_probs,
                    batch.old_log_probs[rows],
                    None if reference_log_probs is None else reference_log_probs[rows],
                    entropy,
                    batch.advantages[rows].to(log_probs.device),
                    c.clip,
                    c.kl,
                    c.entropy_coef,
                )
                self.optimizer.zero_grad()
                self.accelerator.backward(loss)
                self.accelerator.clip_grad_norm_(self.policy.parameters(), c.max_grad_norm)
                self.optimizer.step()
                for key, value in {"loss": loss.detach(), **stats}.items():
                    sums[f"train/{key}"] = sums.get(f"train/{key}", 0.0) + float(value)
                count += 1
        means = {key: value / count for key, value in sums.items()}
        if self.unwrapped_policy.learns_prior:
            means["train/prior_weight"] = float(self.unwrapped_policy.prior_weight.detach())
        return means

    # Loop ----------------------------------------------------------------------------------------------------------

    def train(
        self,
        total_steps: int,
        progress: bool = True,
        checkpoint: Callable[[FlexRecTrainer], Path | None] | None = None,
        checkpoint_every: int = 0,
    ) -> list[dict[str, float]]:
        """Iterate until ``total_steps`` environment steps (item placements); returns the logged rows.

        A row per iteration: the batch's statistics and the update's (``reward/...``, ``train/...``, ``critic/...``),
        ``steps``, and, at every ``eval_every`` steps, ``eval/<metric>`` from the ``evaluate`` callable (given the
        steps so far). ``checkpoint(self)`` (which saves :meth:`state_dict` and returns where) is called at the end of
        the iteration that passes each multiple of ``checkpoint_every`` steps, and at the end of the iteration a
        Ctrl-C arrives in (then :class:`~agents.resume.TrainingInterrupted` is raised).
        """
        check_value("total_steps", total_steps, int, ">= 1")
        started, done_before = time.perf_counter(), self.steps
        shown = progress and self.accelerator.is_main_process
        bar = Progress(total_steps, f"flexrec ({self.config.advantage})", unit="step", enabled=shown)
        bar.update(min(self.steps, total_steps))  # a resumed run starts where it stopped
        with StopRequest() as stop:
            try:
                while self.steps < total_steps:
                    before = self.steps
                    self.iterate()
                    row = self.history[-1]
                    row["time/steps_per_second"] = (self.steps - done_before) / (time.perf_counter() - started)
                    self.log(row)
                    bar.update(min(self.steps, total_steps) - bar.n)
                    bar.set_postfix(list_reward=f"{row['reward/list']:.3f}", refresh=False)
                    if self.steps >= total_steps:  # the last iteration: the run ends as it would anyway
                        if stop.requested:
                            logger.warning("Ctrl-C came in the last iteration: the run is complete, so it is saved whole")
                        continue
                    if stop.requested:
                        raise TrainingInterrupted(self.steps, None if checkpoint is None else checkpoint(self))
                    if checkpoint and checkpoint_every and self.steps // checkpoint_every > before // checkpoint_every:
                        checkpoint(self)
            finally:
                bar.close()
        if self.critic is not None and self.config.critic.refit_epochs:
            loss = self.critic.refit(self.config.critic.refit_epochs)
            if self.distributed:  # refit re-initialises from each process's own random state: take process 0's fit
                self.broadcast_critic()
            logger.info("critic refit on %d observed labels: loss %.4f", len(self.critic.labels), loss)
        if self.writer is not None:
            self.writer.flush()
        return self.history

    def iterate(self) -> None:
        """One iteration: rollouts, update, reference sync, evaluation when due; appends its row to :attr:`history`."""
        batch = self.collect()
        row = {**self.mean_over_processes({**batch.stats, **self.update(batch)}), "steps": float(self.steps)}
        self.iteration += 1
        sync = self.config.reference_sync_every
        if self.reference is not None and sync and self.iteration % sync == 0:
            self.reference.load_state_dict(self.unwrapped_policy.state_dict())
        if self.evaluate is not None and self.steps >= self.next_eval:
            self.next_eval += self.config.eval_every
            row.update({f"eval/{key}": value for key, value in self.evaluate(self.steps).items()})
        self.history.append(row)

    # Resuming ------------------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """What continues this run exactly (:meth:`load_state_dict`), besides the policy's weights.

        The progress, the optimiser, the reference, the critic with its buffer, and every random state (torch's, the
        sampling and minibatch generators, the environment's episode stream).
        """
        if self.distributed:
            raise ValueError("training checkpoints are for single-process training; this run has several processes")
        reference = None if self.reference is None else self.reference.state_dict()
        return {
            "steps": self.steps,
            "iteration": self.iteration,
            "next_eval": None if math.isinf(self.next_eval) else self.next_eval,
            "history": self.history,
            "optimizer": self.optimizer.state_dict(),
            "reference": reference or None,  # an LLM's reference is its base model: nothing to keep
            "critic": None if self.critic is None else self.critic.state_dict(),
            "random": {
                "torch": torch.get_rng_state(),
                "sampling": self.generator.get_state(),
                "minibatches": self.minibatch_generator.get_state(),
                "episodes": self.env.np_random.bit_generator.state,
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` (the policy given to the trainer holds the saved weights)."""
        if self.distributed:
            raise ValueError("resuming is for single-process training; this run has several processes")
        self.steps, self.iteration, self.history = int(state["steps"]), int(state["iteration"]), list(state["history"])
        self.next_eval = math.inf if state["next_eval"] is None else state["next_eval"]
        self.optimizer.load_state_dict(state["optimizer"])
        if self.reference is not None and state["reference"] is not None:
            self.reference.load_state_dict(state["reference"])
        if state["critic"] is not None:
            c = state["critic"]
            device = self.accelerator.device
            self.critic = CriticLearner(c["input_dim"], c["max_grade"], c["label_noise"], self.config.critic, device=device)
            self.critic.load_state_dict(c)
        random = state["random"]
        name = random["episodes"]["bit_generator"]
        if name not in BIT_GENERATORS:  # a name from a file: look it up, never getattr it
            raise ValueError(f"episode stream bit_generator={name!r}; allowed: {sorted(BIT_GENERATORS)}")
        episodes = BIT_GENERATORS[name]()
        episodes.state = random["episodes"]
        self.env.np_random = np.random.Generator(episodes)
        self.generator.set_state(random["sampling"])
        self.minibatch_generator.set_state(random["minibatches"])
        torch.set_rng_state(random["torch"])  # last: building the critic drew from it
        if self.writer is not None:  # events past the checkpoint (logged before a crash) are dropped, not doubled
            from torch.utils.tensorboard import SummaryWriter

            logdir = self.writer.log_dir
            self.writer.close()
            self.writer = SummaryWriter(logdir, purge_step=self.steps + 1)

    def log(self, row: dict[str, float]) -> None:
        if self.writer is None:
            return
        for key, value in row.items():
            if key != "steps" and not math.isnan(value):
                self.writer.add_scalar(key, value, self.steps)
