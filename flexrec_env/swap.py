r"""The counterfactual swap reward: dense, item-level credit for a ranked list.

For a finished list ``s = (s_1, ..., s_K)`` over the candidate set ``C`` (``|C| = N``) and a list metric ``f``
(NDCG@k by default), the remaining pool at position t is ``P_t = C \ {s_1..s_(t-1)}``. For every alternative
``j in P_t \ {s_t}``, ``s(t<->j)`` exchanges ``s_t`` and ``j``: if ``j`` is later in the list they trade places,
otherwise ``j`` takes position t and ``s_t`` leaves the list. Then

    r_t = f(s) - mean_j f(s(t<->j)),        r_t = 0 when P_t \ {s_t} is empty.

For an additive metric (DCG normalised by IDCG) this has a closed form. Put the list first and the unplaced
candidates after it, so every candidate u has a gain ``G_u`` and a discount ``D_u`` (0 outside the list or past k);
the alternatives of position t are exactly the ``m_t = N - 1 - t`` entries after it (0-based t), and

    r_t = mean_(u > t) (G_t - G_u)(D_t - D_u) / IDCG
        = [m G_t D_t - G_t S_D(t) - D_t S_G(t) + S_GD(t)] / (m IDCG),

with suffix sums ``S_x(t) = sum_(u > t) x_u``: O(N) per list, vectorised over a batch (:func:`swap_rewards`).
:func:`swap_rewards_generic` recomputes any :class:`~flexrec_env.metrics.ListMetric` on every swapped list (for
list-level needs such as ``diverse``), and :func:`brute_force_swap_rewards` is the definition written as loops.

During an episode the final positions of the alternatives are unknown, so the per-step reward treats every
alternative as outside the list (``D_u = 0``): ``d_t (G_t - mean_j G_j) / IDCG`` (:func:`step_swap_reward`), or,
for a list-level metric, ``f(prefix + s_t) - mean_j f(prefix + j)`` (:func:`generic_step_rewards`).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
from numpy.typing import NDArray

from flexrec_env.metrics import FloatArray, IntArray, ListMetric, discounts, gains, gather, ideal_dcg


def full_order(rankings: NDArray[np.integer], num_candidates: int) -> IntArray:
    """The list followed by the unplaced candidates in index order: ``(B, K) -> (B, N)``."""
    rankings = np.asarray(rankings, dtype=np.int64)
    batch, length = rankings.shape
    key = np.tile(np.arange(length, length + num_candidates, dtype=np.int64), (batch, 1))  # unplaced: after the list
    np.put_along_axis(key, rankings, np.arange(length, dtype=np.int64)[None, :], axis=-1)
    return np.argsort(key, axis=-1, kind="stable")


def swap_rewards(rankings: NDArray[np.integer], relevance: NDArray, k: int) -> FloatArray:
    """Exact swap rewards of NDCG@k by the closed form: ``(B, K), (B, N) -> (B, K)``."""
    rankings = np.asarray(rankings, dtype=np.int64)
    batch, length = rankings.shape
    n = np.shape(relevance)[-1]
    g_all = gains(relevance)  # (B, N)
    idcg = ideal_dcg(relevance, k)  # (B,)
    g = gather(g_all, rankings)  # (B, K), gains in list order
    d = discounts(length, k)  # (K,), list positions; unplaced candidates have d = 0
    gd = g * d  # (B, K)
    # Suffix sums over u > t. Unplaced candidates add gain but no discount.
    s_g = g_all.sum(axis=-1, keepdims=True) - np.cumsum(g, axis=-1)  # (B, K)
    s_d = d.sum() - np.cumsum(d)  # (K,)
    s_gd = gd.sum(axis=-1, keepdims=True) - np.cumsum(gd, axis=-1)  # (B, K)
    m = (n - 1 - np.arange(length)).astype(np.float64)  # (K,), alternatives per position
    numerator = m * gd - g * s_d - d * s_g + s_gd  # (B, K)
    denominator = m[None, :] * idcg[:, None]  # (B, K)
    return np.divide(numerator, denominator, out=np.zeros((batch, length)), where=denominator > 0)


def swap_coefficients(rankings: NDArray[np.integer], num_candidates: int, k: int) -> FloatArray:
    """The closed form as a linear map of the gains: ``C (B, K, N)`` with ``r = C @ G / IDCG``.

    Row t holds ``(m D_t - S_D(t)) / m`` for the candidate at position t and ``(D_u - D_t) / m`` for every candidate
    u after it in the full order (0 for the candidates before it, and for a row without alternatives). With gains
    that are uncertain, ``C @ mean / IDCG`` is the expected swap reward and ``(C**2) @ var / IDCG**2`` its variance
    (independent labels), which is how the critic carries its uncertainty into the rewards.
    """
    rankings = np.asarray(rankings, dtype=np.int64)
    batch, length = rankings.shape
    order = full_order(rankings, num_candidates)  # (B, N), candidate at each place of the full order
    d = np.zeros(num_candidates)
    d[:length] = discounts(length, k)  # discount of each place; unplaced candidates 0
    m = (num_candidates - 1 - np.arange(length)).astype(np.float64)  # (K,)
    after = np.arange(num_candidates)[None, :] > np.arange(length)[:, None]  # (K, N), place u after position t
    by_place = np.where(after, d[None, :] - d[:length, None], 0.0)  # (K, N)
    by_place[np.arange(length), np.arange(length)] = m * d[:length] - (d.sum() - np.cumsum(d)[:length])
    by_place = np.divide(by_place, m[:, None], out=np.zeros_like(by_place), where=m[:, None] > 0)
    out = np.zeros((batch, length, num_candidates))
    np.put_along_axis(out, np.broadcast_to(order[:, None, :], out.shape), np.broadcast_to(by_place, out.shape), axis=-1)
    return out


def _ratio(numerator: Any, denominator: Any) -> Any:
    """``numerator / denominator``, 0 where the denominator is 0; Python floats stay floats (fast scalar path)."""
    if isinstance(denominator, (float, int)) and isinstance(numerator, (float, int)):
        return numerator / denominator if denominator > 0 else 0.0
    numerator, denominator = np.asarray(numerator, dtype=np.float64), np.asarray(denominator, dtype=np.float64)
    return np.divide(numerator, denominator, out=np.zeros(np.broadcast(numerator, denominator).shape), where=denominator > 0)


def step_swap_reward(gain: Any, discount: Any, pool_gain: Any, pool_size: Any, idcg: Any) -> Any:
    r"""Per-step swap reward, alternatives treated as outside the list: ``d_t (G_t - mean_j G_j) / IDCG``.

    ``pool_gain`` and ``pool_size`` are the gain sum and count of the alternatives ``P_t \ {s_t}``. Works on
    Python floats and on arrays (broadcasting); 0 where there is no alternative or IDCG is 0.
    """
    return _ratio(discount * (pool_size * gain - pool_gain), pool_size * idcg)


def marginal_reward(gain: Any, discount: Any, idcg: Any) -> Any:
    """Per-step marginal reward ``G_t d_t / IDCG`` (the return is NDCG@k); floats or arrays."""
    return _ratio(gain * discount, idcg)


@lru_cache(maxsize=32)
def _swap_variants(num_candidates: int, length: int) -> tuple[IntArray, FloatArray]:
    """Every swapped list as positions into the full order ``(V, K)``, and ``(V, K)`` weights averaging them per t."""
    lists, owners = [], []
    base = np.arange(num_candidates)
    for t in range(length):
        for u in range(t + 1, num_candidates):
            variant = base.copy()
            variant[t], variant[u] = u, t
            lists.append(variant[:length])
            owners.append(t)
    positions = np.array(lists, dtype=np.int64).reshape(-1, length)
    averaging = np.zeros((len(owners), length))
    averaging[np.arange(len(owners)), owners] = 1.0
    averaging /= np.maximum(averaging.sum(axis=0, keepdims=True), 1.0)  # mean over each t's alternatives
    return positions, averaging


def swap_rewards_generic(
    metric: ListMetric,
    rankings: NDArray[np.integer],
    relevance: NDArray,
    categories: NDArray[np.integer],
    k: int,
) -> FloatArray:
    """Exact swap rewards of any list metric, recomputing it on every swapped list: ``(B, K) -> (B, K)``."""
    rankings = np.asarray(rankings, dtype=np.int64)
    n = np.shape(relevance)[-1]
    positions, averaging = _swap_variants(n, rankings.shape[1])  # (V, K), (V, K)
    order = full_order(rankings, n)  # (B, N)
    base = metric(rankings, relevance, categories, k)  # (B,)
    swapped = metric(order[:, positions], relevance, categories, k)  # (B, V)
    has_alternatives = averaging.sum(axis=0) > 0  # (K,)
    return np.where(has_alternatives, base[:, None] - swapped @ averaging, 0.0)


def next_item_values(
    metric: ListMetric, prefix: NDArray[np.integer], relevance: NDArray, categories: NDArray[np.integer], k: int
) -> FloatArray:
    """``f(prefix + j)`` for every candidate j as the next item: ``(B, t) -> (B, N)``."""
    prefix = np.asarray(prefix, dtype=np.int64)
    batch, n = np.shape(relevance)
    candidates = np.broadcast_to(np.arange(n), (batch, n))  # (B, N), every candidate as the next item
    lists = np.concatenate([np.broadcast_to(prefix[:, None, :], (batch, n, prefix.shape[1])), candidates[..., None]], axis=-1)
    return metric(lists, relevance, categories, k)  # (B, N)


def swap_from_values(values: FloatArray, action: NDArray[np.integer], placed: NDArray[np.bool_]) -> FloatArray:
    """``values[s_t] - mean_j values[j]`` over the pool ``j`` not placed and not ``s_t``: ``(B, N) -> (B,)``."""
    action = np.asarray(action, dtype=np.int64)[:, None]
    chosen = np.take_along_axis(values, action, axis=-1)[:, 0]  # (B,)
    alternative = ~np.asarray(placed, dtype=bool)
    np.put_along_axis(alternative, action, False, axis=-1)
    count = alternative.sum(axis=-1)
    mean = np.divide((values * alternative).sum(axis=-1), count, out=np.zeros(len(values)), where=count > 0)
    return np.where(count > 0, chosen - mean, 0.0)


def generic_step_rewards(
    metric: ListMetric,
    prefix: NDArray[np.integer],
    action: NDArray[np.integer],
    placed: NDArray[np.bool_],
    relevance: NDArray,
    categories: NDArray[np.integer],
    k: int,
    with_marginal: bool = True,
) -> tuple[FloatArray, FloatArray]:
    """Per-step ``(swap, marginal)`` rewards of any list metric f: ``(B, t)`` prefix, ``(B,)`` action -> ``(B,)``, ``(B,)``.

    ``swap = f(prefix + s_t) - mean_j f(prefix + j)`` over the pool ``j`` (not placed, not ``s_t``), 0 without
    alternatives; ``marginal = f(prefix + s_t) - f(prefix)`` (0 with ``with_marginal=False``: it costs one more
    evaluation of f). ``placed`` ``(B, N)`` marks the items placed before this step.
    """
    prefix = np.asarray(prefix, dtype=np.int64)
    values = next_item_values(metric, prefix, relevance, categories, k)  # (B, N)
    swap = swap_from_values(values, action, placed)
    if not with_marginal:  # it costs one more evaluation of f: 0 where nobody reads it
        return swap, np.zeros(len(swap))
    before = metric(prefix, relevance, categories, k) if prefix.shape[1] else 0.0
    marginal = np.take_along_axis(values, np.asarray(action, dtype=np.int64)[:, None], axis=1)[:, 0] - before
    return swap, marginal


def brute_force_swap_rewards(
    metric: ListMetric, ranking: NDArray[np.integer], relevance: NDArray, categories: NDArray[np.integer], k: int
) -> FloatArray:
    """The definition as loops, for one list ``(K,)``: the reference the fast paths are tested against."""
    s = [int(x) for x in ranking]
    n = len(relevance)
    rel, cats = np.asarray(relevance)[None], np.asarray(categories)[None]
    base = float(metric(np.array([s]), rel, cats, k)[0])
    rewards = np.zeros(len(s))
    for t in range(len(s)):
        alternatives = [j for j in range(n) if j not in s[:t] and j != s[t]]
        values = []
        for j in alternatives:
            swapped = list(s)
            if j in s:
                swapped[s.index(j)] = s[t]
            swapped[t] = j
            values.append(float(metric(np.array([swapped]), rel, cats, k)[0]))
        rewards[t] = base - float(np.mean(values)) if values else 0.0
    return rewards
