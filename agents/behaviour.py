r"""Stochastic behaviour policies: any agent as a distribution over the next item, for logging and off-policy evaluation.

A logged step is useful offline only with the probability the logging (behaviour) policy gave the action it took;
an off-policy estimate also needs the probability a *target* policy gives the same action in the same state. A
:class:`BehaviourPolicy` gives both: :meth:`BehaviourPolicy.probabilities` is the distribution over the N candidates
at the current position (0 on the candidates already placed, summing to 1), a function of the state alone (the
request and the items placed so far), so replaying a logged prefix gives back the probabilities the log holds.

Every agent gives *scores* of the candidates not yet placed (``-inf`` on placed ones), and the exploration turns
them into probabilities over the pool ``P_t``:

* ``softmax``: ``p(i) = exp(score_i / T) / sum_(j in P_t) exp(score_j / T)`` (``temperature`` T);
* ``epsilon-greedy``: ``p(i) = (1 - epsilon) [i in B_t] / |B_t| + epsilon / |P_t|``, with ``B_t`` the candidates
  of the pool with the highest score (one, unless scores tie).

The scores by agent:

* ``random``: 0 for every candidate, so both explorations are uniform over the pool, ``p(i) = 1 / |P_t|``;
* the ``flexrec`` agents (:class:`~agents.flexrec.PolicyAgent`): the policy's own log-probabilities of the next
  placement given the prefix (with the critic's prior when it ranks with one); ``softmax`` at ``T = 1`` is exactly the
  distribution the policy samples from, and ``T`` rescales its logits;
* any agent that ranks a request at once (:meth:`~agents.base.Agent.rank`: the heuristics, popularity, BPR, SASRec,
  supervised): ``score_i = -rank_i``, minus the 0-based position of candidate i in the agent's ranking of the
  request, so ``softmax`` draws the agent's next unplaced item with probability ``(1 - e^(-1/T)) / (1 - e^(-|P_t|/T))``
  whatever came before (a Plackett-Luce model with geometric weights) and ``epsilon-greedy`` follows the ranking;
* an agent that only acts step by step (the stable-baselines3 agents): its action as the greedy choice, so only
  ``epsilon-greedy`` applies.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from numpy.typing import NDArray

from agents.base import Agent, ranks_at_once
from agents.baselines import RandomAgent
from scenarios.settings import check_fields

Exploration = Literal["softmax", "epsilon-greedy"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BehaviourConfig:
    """How an agent's scores become the probabilities of the next item (see the module docstring)."""

    exploration: Exploration = "softmax"
    """``softmax`` over the scores, or ``epsilon-greedy`` around the best one."""
    temperature: float = 1.0
    """Softmax temperature T (> 0): lower is closer to the agent's own choice; the flexrec policy's own at 1."""
    epsilon: float = 0.1
    """Share of uniform exploration of ``epsilon-greedy``, in [0, 1]."""

    def __post_init__(self) -> None:
        check_fields(self, {"temperature": "> 0", "epsilon": "[0, 1]"})
        if (self.exploration == "epsilon-greedy" and self.epsilon == 0) or (
            self.exploration == "softmax" and self.temperature < 1e-3
        ):
            logger.warning(
                "%s: the behaviour policy all but never explores, so a log of it cannot evaluate another policy off-line",
                self,
            )


class BehaviourPolicy:
    """An agent with an exploration: the probabilities of the next item (module docstring), and a sampler of them."""

    def __init__(self, agent: Agent, config: BehaviourConfig | None = None) -> None:
        from agents.flexrec import PolicyAgent

        self.agent, self.config = agent, config or BehaviourConfig()
        self._kind = "uniform" if isinstance(agent, RandomAgent) else "policy" if isinstance(agent, PolicyAgent) else "rank"
        if self._kind == "rank" and not ranks_at_once(agent):
            if self.config.exploration != "epsilon-greedy":
                raise ValueError(
                    f"the {agent.name} agent acts step by step and has no scores to take a softmax of; "
                    "allowed: exploration='epsilon-greedy'"
                )
            self._kind = "act"
        self._ranks: NDArray[np.float64] | None = None

    @property
    def name(self) -> str:
        c = self.config
        setting = f"T={c.temperature:g}" if c.exploration == "softmax" else f"epsilon={c.epsilon:g}"
        return self.agent.name if self._kind == "uniform" else f"{self.agent.name} ({c.exploration}, {setting})"

    def scores(self, observation: dict[str, Any], info: dict[str, Any], env: gym.Env) -> NDArray[np.float64]:
        """``(N,)`` scores of the candidates, ``-inf`` on those placed (``info`` is the reset's or the last step's)."""
        placed = np.asarray(observation["placed"], dtype=bool)
        if self._kind == "uniform":
            scores = np.zeros(len(placed))
        elif self._kind == "policy":
            scores = self._policy_log_probs(observation, env)
        elif self._kind == "act":
            scores = np.zeros(len(placed))
            scores[self.agent.act(observation, env)] = 1.0
        else:
            if int(observation["position"]) == 0 or self._ranks is None:
                ranking = np.asarray(self.agent.rank(env.unwrapped.request, observation, info))  # type: ignore[attr-defined]
                self._ranks = np.full(len(placed), np.inf)
                self._ranks[ranking] = np.arange(len(ranking), dtype=np.float64)
            scores = -self._ranks
        return np.where(placed, -np.inf, scores)

    def _policy_log_probs(self, observation: dict[str, Any], env: gym.Env) -> NDArray[np.float64]:
        import torch

        with torch.no_grad():
            policy, inputs = self.agent.ranking_inputs(env.unwrapped.request, observation)  # type: ignore[attr-defined]
            prefix = torch.tensor([env.unwrapped.ranking], dtype=torch.long, device=inputs.candidates.device)  # type: ignore[attr-defined]
            return policy.next_log_probs(inputs, prefix.reshape(1, -1))[0].double().cpu().numpy()

    def probabilities(self, observation: dict[str, Any], info: dict[str, Any], env: gym.Env) -> NDArray[np.float64]:
        """``(N,)`` probabilities of placing each candidate next: 0 on placed ones, summing to 1."""
        return explore(self.scores(observation, info, env), self.config)

    def seed(self, seed: int | None) -> None:
        """Reseed the agent's own randomness (the sampling of the actions is the caller's)."""
        self.agent.seed(seed)


def explore(scores: NDArray[np.float64], config: BehaviourConfig) -> NDArray[np.float64]:
    """``(N,)`` probabilities from ``(N,)`` scores (``-inf``: not in the pool) by ``config``'s exploration."""
    pool = scores > -np.inf
    if not pool.any():
        raise ValueError("no candidate left to place: every score is -inf")
    if config.exploration == "epsilon-greedy":
        best = pool & (scores == scores.max())  # ties share the greedy choice
        return np.where(pool, config.epsilon / pool.sum(), 0.0) + (1.0 - config.epsilon) * best / best.sum()
    scaled = np.where(pool, scores / config.temperature, -np.inf)
    weights = np.exp(scaled - scaled.max())
    return weights / weights.sum()
