r"""Off-policy estimators of a target policy's expected list value from logged lists and their propensities.

A log holds E lists ``s_i = (s_i1, ..., s_iK)`` drawn by a behaviour policy ``mu`` on requests ``x_i``, each
with its value ``v_i`` (e.g. NDCG@k on the feedback, the log's ``list_reward``) and per-step rewards ``r_it``. A
target policy ``pi`` gives the logged lists the probabilities ``pi(s_i | x_i) = prod_t pi(s_it | x_i, s_i,<t)``.
With the importance weights ``w_i = pi(s_i | x_i) / mu(s_i | x_i)`` and the prefix weights
``w_it = prod_(u <= t) pi(s_iu | ...) / mu(s_iu | ...)``:

* IPS (:func:`ips`): ``V = (1/E) sum_i w_i v_i``. Unbiased for ``E_x E_(s ~ pi)[v]`` when ``mu(s | x) > 0``
  wherever ``pi(s | x) > 0``: ``E_(s ~ mu)[w v] = sum_s mu(s) pi(s)/mu(s) v(s) = sum_s pi(s) v(s)``.
* Self-normalised IPS (:func:`snips`): ``V = sum_i w_i v_i / sum_i w_i``, a weighted mean with weights
  ``w_i / sum_j w_j`` (they sum to 1). Biased by O(1/E) but never outside the range of the values, and with a
  much smaller variance when a few weights dominate.
* Cascade IPS (:func:`cascade_ips`, OBP's reward-interaction IPS): ``V = (1/E) sum_i sum_t w_it r_it``. Unbiased
  for ``E_(s ~ pi)[sum_t r_t]`` when the reward of step t depends only on the list up to t (every reward of FlexRec-v0
  does: with ``reward_mode="marginal"`` they sum to NDCG@k on the reward labels); its weights are products of t
  ratios, not K, so its variance is smaller.

Each estimate comes with a 95% percentile bootstrap interval over the logged lists
(:func:`agents.statistics.paired_resample_means`, one seed row: the ordinary paired bootstrap over episodes, which
resamples ``w_i v_i`` and ``w_i`` together) and Kish's effective sample size ``(sum_i w_i)^2 / sum_i w_i^2``, which
falls far below E when a few weights dominate: then no interval is to be trusted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from agents.statistics import PERCENTILES, REPS, paired_resample_means

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class Estimate:
    """An off-policy estimate with its 95% bootstrap interval."""

    value: float
    low: float
    high: float
    effective_sample_size: float
    """Kish's ``(sum w)^2 / sum w^2`` of the list weights (E when the target is the behaviour policy)."""

    def __str__(self) -> str:
        return f"{self.value:.4f} [{self.low:.4f}, {self.high:.4f}] (ESS {self.effective_sample_size:.0f})"


def importance_weights(target: ArrayLike, behaviour: ArrayLike) -> FloatArray:
    """``pi / mu`` elementwise: list (or prefix) probabilities of the target over the behaviour's.

    >>> importance_weights([0.5, 0.0], [0.25, 0.5])
    array([2., 0.])
    """
    pi, mu = np.asarray(target, dtype=np.float64), np.asarray(behaviour, dtype=np.float64)
    if pi.shape != mu.shape:
        raise ValueError(f"target probabilities {pi.shape} and behaviour probabilities {mu.shape}; allowed: the same shape")
    if np.any(mu <= 0) or np.any(~np.isfinite(mu)) or np.any(pi < 0) or np.any(~np.isfinite(pi)):
        raise ValueError("propensities must be finite, the behaviour's > 0 (every logged list was drawn) and the target's >= 0")
    return pi / mu


def self_normalised_weights(weights: ArrayLike) -> FloatArray:
    """``w_i / sum_j w_j``: the weights of the SNIPS mean (they sum to 1).

    >>> self_normalised_weights([2.0, 0.0, 2.0])
    array([0.5, 0. , 0.5])
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.sum() <= 0:
        raise ValueError("every importance weight is 0: the target gives no logged list any probability")
    return w / w.sum()


def _effective_sample_size(weights: FloatArray) -> float:
    return float(weights.sum() ** 2 / np.sum(weights**2)) if np.any(weights) else 0.0


def _estimates(weighted: FloatArray, weights: FloatArray, reps: int, seed: int) -> tuple[Estimate, Estimate]:
    """IPS ``mean(weighted)`` and SNIPS ``mean(weighted) / mean(weights)`` of per-episode arrays ``(E,)``."""
    resampled_values, resampled_weights = paired_resample_means(weighted[None], weights[None], reps, seed)  # (reps,) x 2
    ess = _effective_sample_size(weights)
    ips_low, ips_high = np.percentile(resampled_values, PERCENTILES)
    with np.errstate(divide="ignore", invalid="ignore"):  # a resample of zero weights only: left out
        ratios = resampled_values / resampled_weights
    sn_low, sn_high = np.percentile(ratios[np.isfinite(ratios)], PERCENTILES)
    ips_estimate = Estimate(float(weighted.mean()), float(ips_low), float(ips_high), ess)
    snips_estimate = Estimate(float(weighted.sum() / weights.sum()), float(sn_low), float(sn_high), ess)
    return ips_estimate, snips_estimate


def _per_list(values: ArrayLike, target: ArrayLike, behaviour: ArrayLike) -> tuple[FloatArray, FloatArray]:
    v = np.asarray(values, dtype=np.float64)
    w = importance_weights(target, behaviour)
    if v.ndim != 1 or v.shape != w.shape or len(v) == 0:
        raise ValueError(f"values {v.shape} and propensities {w.shape}; allowed: (E,) each, E >= 1")
    return v, w


def ips(values: ArrayLike, target: ArrayLike, behaviour: ArrayLike, reps: int = REPS, seed: int = 0) -> Estimate:
    """IPS ``(1/E) sum_i w_i v_i`` of list values ``(E,)`` from list probabilities ``(E,)``, with its interval.

    >>> ips([1.0, 0.0], target=[0.5, 0.5], behaviour=[0.25, 0.75]).value  # (2 * 1 + 2/3 * 0) / 2
    1.0
    """
    v, w = _per_list(values, target, behaviour)
    return _estimates(w * v, w, reps, seed)[0]


def snips(values: ArrayLike, target: ArrayLike, behaviour: ArrayLike, reps: int = REPS, seed: int = 0) -> Estimate:
    """Self-normalised IPS ``sum_i w_i v_i / sum_i w_i`` of list values ``(E,)``, with its interval.

    >>> snips([1.0, 0.0], target=[0.5, 0.5], behaviour=[0.25, 0.75]).value  # 2 / (2 + 2/3)
    0.75
    """
    v, w = _per_list(values, target, behaviour)
    return _estimates(w * v, w, reps, seed)[1]


def on_policy(values: ArrayLike, reps: int = REPS, seed: int = 0) -> Estimate:
    """The plain mean of values ``(E,)`` a policy earned itself (all weights 1), with the same interval.

    >>> on_policy([0.25, 0.75]).value
    0.5
    """
    v = np.asarray(values, dtype=np.float64)
    return ips(v, np.ones_like(v), np.ones_like(v), reps, seed)


def cascade_ips(step_rewards: ArrayLike, target: ArrayLike, behaviour: ArrayLike, reps: int = REPS, seed: int = 0) -> Estimate:
    """Cascade IPS ``(1/E) sum_i sum_t w_it r_it`` from per-step rewards and *per-step* probabilities ``(E, K)``.

    ``target[i, t]`` and ``behaviour[i, t]`` are ``pi(s_it | s_i,<t)`` and ``mu(s_it | s_i,<t)``; the prefix weights
    are their cumulative products. The effective sample size is that of the whole lists' weights.
    """
    r = np.asarray(step_rewards, dtype=np.float64)
    pi, mu = np.asarray(target, dtype=np.float64), np.asarray(behaviour, dtype=np.float64)
    if r.ndim != 2 or r.shape != pi.shape or r.shape != mu.shape or r.size == 0:
        raise ValueError(f"rewards {r.shape}, target {pi.shape}, behaviour {mu.shape}; allowed: (E, K) each")
    prefix = importance_weights(np.cumprod(pi, axis=1), np.cumprod(mu, axis=1))  # (E, K)
    contributions = (prefix * r).sum(axis=1)  # (E,)
    resampled, _ = paired_resample_means(contributions[None], contributions[None], reps, seed)
    low, high = np.percentile(resampled, PERCENTILES)
    return Estimate(float(contributions.mean()), float(low), float(high), _effective_sample_size(prefix[:, -1]))
