r"""Advantage estimators of the FlexRec trainer: pure functions of a group's rewards, ``(B, G, K)`` out.

A batch holds B requests, G sampled rankings per request (a *group*) and K positions per ranking. Every estimator
gives each position of each ranking an advantage ``A[b, g, t]`` from a :class:`Rewards` record; they are looked up
by name in :data:`ESTIMATORS`, whose keys are the choices of :data:`Estimator` (the trainer's ``advantage``
setting and the command line's ``--advantage`` read them from there):

``list`` (GRPO)
    One list reward ``R[b, g]`` (the need's metric on the feedback labels) per ranking, normalised across its
    group, shared by all positions: ``A[b, g, t] = (R[b, g] - mean_g R[b, :]) / (std_g R[b, :] + eps)``.

``swap``
    The environment's exact per-position swap rewards ``r[b, g, t]``, normalised per position across the group:
    ``A[b, g, t] = (r[b, g, t] - mean_g r[b, :, t]) / (std_g r[b, :, t] + eps)``. Each position is credited for its
    own placement.

``flexrec``
    Swap rewards ``r_hat`` recomputed from the feedback completed by the critic, with standard deviation ``sigma``
    (:mod:`agents.critic`), normalised as for ``swap`` and scaled by a confidence weight:
    ``A[b, g, t] = w(u[b, g, t]) * normalise(r_hat)[b, g, t]``, where ``u = sigma / (std_g r_hat[b, :, t] + eps)``
    is the uncertainty relative to the spread the normalisation divides by (so the weight does not depend on the
    reward's scale).

Confidence weights :math:`w(u)` (:data:`WEIGHTS`), decreasing in ``u`` and 1 at ``u = 0``:

* ``"shrinkage"`` (default): ``w = 1 / (1 + (u T)**2)``, the signal's share of the total variance when the reward
  spread is the signal and ``sigma`` the noise: 1 where the critic is sure, towards 0 where it knows nothing;
* ``"sigmoid"``: ``w = sigmoid(-u T) + 0.5``, in ``(0.5, 1]``: an uncertain position still teaches half as much
  (the first version's weight; in practice a flat cut of the step size);
* ``"none"``: ``w = 1``, the ablation that keeps the critic's completion and drops the down-weighting.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]

EPS = 1e-8
Weight = Literal["shrinkage", "sigmoid", "none"]
Estimator = Literal["list", "swap", "flexrec"]


@dataclass(frozen=True)
class Rewards:
    """What the estimators read about one batch of G rankings of B requests."""

    list_rewards: FloatArray
    """``(B, G)`` the need's list metric on the feedback labels."""
    swap_rewards: FloatArray
    """``(B, G, K)`` the environment's exact swap rewards on the feedback labels."""
    critic_rewards: FloatArray | None = None
    """``(B, G, K)`` swap rewards on the critic-completed gains (``flexrec`` only)."""
    critic_std: FloatArray | None = None
    """``(B, G, K)`` their standard deviation."""


def group_normalise(values: NDArray, eps: float = EPS) -> FloatArray:
    """``(x - mean) / (std + eps)`` across the group axis (axis 1) of ``(B, G, ...)``; 0 where the group ties."""
    values = np.asarray(values, dtype=np.float64)
    centred = values - values.mean(axis=1, keepdims=True)
    std = values.std(axis=1, keepdims=True)
    return np.where(std > eps, centred / (std + eps), 0.0)


def confidence_weights(uncertainty: NDArray, form: Weight = "shrinkage", temperature: float = 1.0) -> FloatArray:
    """Weights in ``(0, 1]`` that decrease with the (relative) uncertainty ``u >= 0``; see the module docstring."""
    u = np.asarray(uncertainty, dtype=np.float64) * temperature
    if form == "shrinkage":
        return 1.0 / (1.0 + u**2)
    if form == "sigmoid":
        return np.exp(-np.logaddexp(0.0, u)) + 0.5  # sigmoid(-u), without overflow
    if form == "none":
        return np.ones_like(u)
    raise ValueError(f"weight={form!r}; allowed: {list(WEIGHTS)}")


def relative_uncertainty(rewards: NDArray, std: NDArray, eps: float = EPS) -> FloatArray:
    """``sigma / (spread of the rewards across the group + eps)`` per position: ``(B, G, K)``."""
    spread = np.asarray(rewards, dtype=np.float64).std(axis=1, keepdims=True)
    return np.asarray(std, dtype=np.float64) / (spread + eps)


def list_advantages(rewards: Rewards, weight: Weight = "shrinkage", temperature: float = 1.0) -> tuple[FloatArray, FloatArray]:
    """GRPO: the group-normalised list reward broadcast to all K positions; weights 1."""
    shape = rewards.swap_rewards.shape
    return np.broadcast_to(group_normalise(rewards.list_rewards)[..., None], shape).copy(), np.ones(shape)


def swap_advantages(rewards: Rewards, weight: Weight = "shrinkage", temperature: float = 1.0) -> tuple[FloatArray, FloatArray]:
    """Per-position swap rewards normalised per position across the group; weights 1."""
    return group_normalise(rewards.swap_rewards), np.ones(rewards.swap_rewards.shape)


def flexrec_advantages(rewards: Rewards, weight: Weight = "shrinkage", temperature: float = 1.0) -> tuple[FloatArray, FloatArray]:
    """Critic-completed swap rewards, normalised, times the confidence weight of their std."""
    if rewards.critic_rewards is None or rewards.critic_std is None:
        raise ValueError("the flexrec estimator needs critic_rewards and critic_std")
    weights = confidence_weights(relative_uncertainty(rewards.critic_rewards, rewards.critic_std), weight, temperature)
    return weights * group_normalise(rewards.critic_rewards), weights


EstimatorFn = Callable[[Rewards, Weight, float], tuple[FloatArray, FloatArray]]
"""``(rewards, weight, temperature) -> (advantages (B, G, K), weights (B, G, K))``."""
#: Estimators by name (one per choice of :data:`Estimator`).
ESTIMATORS: dict[Estimator, EstimatorFn] = {
    "list": list_advantages,
    "swap": swap_advantages,
    "flexrec": flexrec_advantages,
}
#: Estimators that need the critic.
USES_CRITIC: frozenset[Estimator] = frozenset({"flexrec"})
WEIGHTS: tuple[Weight, ...] = get_args(Weight)


def position_weights(length: int, k: int, form: Literal["discount", "uniform"] = "discount") -> FloatArray:
    """Per-position weights ``(K,)`` with mean 1: NDCG@k's discount ``1 / log2(t + 1)`` (0 past k), or uniform."""
    if form == "uniform":
        return np.ones(length)
    if form != "discount":
        raise ValueError(f"position_weight={form!r}; allowed: ['discount', 'uniform']")
    t = np.arange(1, length + 1)
    discount = np.where(t <= k, 1.0 / np.log2(t + 1.0), 0.0)
    return discount / discount.mean()
