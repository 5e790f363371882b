"""Ranking metrics, batched over any leading shape.

Definitions (part of the public contract):

* gain of a candidate with graded relevance ``rel >= 0``: ``g = 2**rel - 1``;
* discount of 1-based position ``p``: ``d_p = 1 / log2(p + 1)`` for ``p <= k``, else 0;
* ``DCG@k = sum_p g_(s_p) d_p`` over the ranked list ``s``;
* ``IDCG@k`` is the DCG@k of the best ordering of *all* N candidates;
* ``NDCG@k = DCG@k / IDCG@k``, 0 when ``IDCG@k`` is 0;
* ``Recall@k`` = relevant candidates (``rel > 0``) in the top k / all relevant candidates, 0 if none;
* ``alpha-NDCG@k`` (the category-coverage-aware metric of the ``diverse`` need): the j-th item of a category
  in the list (j = 0, 1, ...) earns ``g * gamma**j`` instead of ``g``; the ideal list is built greedily, which is
  exact here because each category's discounted gains decrease along the category.

Shapes: ``rankings`` is ``(..., L)`` of candidate indices (a list may be shorter than k), ``relevance`` and
``categories`` are ``(..., N)``; their leading shapes broadcast (``relevance`` may have fewer leading axes than
``rankings``, e.g. one request scored against many alternative lists). Every metric returns the leading shape.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

#: Attenuation of repeated categories in alpha-NDCG (the ``diverse`` need's metric).
DEFAULT_GAMMA = 0.5


class ListMetric(Protocol):
    """A list-level metric: ``metric(rankings, relevance, categories, k) -> values`` (see module docstring)."""

    def __call__(
        self, rankings: NDArray[np.integer], relevance: NDArray[Any], categories: NDArray[np.integer], k: int
    ) -> FloatArray: ...


def gains(relevance: NDArray[np.floating] | NDArray[np.integer]) -> FloatArray:
    """``2**rel - 1`` elementwise."""
    return np.exp2(np.asarray(relevance, dtype=np.float64)) - 1.0


@lru_cache(maxsize=256)
def discounts(length: int, k: int) -> FloatArray:
    """``(length,)`` discounts of positions 1..length: ``1/log2(p+1)`` for ``p <= k``, 0 after (read-only)."""
    positions = np.arange(1, length + 1, dtype=np.float64)
    out = np.where(positions <= k, 1.0 / np.log2(positions + 1.0), 0.0)
    out.flags.writeable = False
    return out


def gather(values: NDArray, rankings: NDArray[np.integer]) -> NDArray:
    """``values[..., rankings]`` along the last axis, broadcasting leading axes: ``(..., N), (..., L) -> (..., L)``."""
    rankings = np.asarray(rankings)
    values = np.asarray(values)
    if values.ndim == rankings.ndim == 2 and len(values) == len(rankings):  # the common case, without the overhead
        return values[np.arange(len(values))[:, None], rankings]
    missing = rankings.ndim - values.ndim
    if missing > 0:  # relevance of one request, many lists: (B, N) -> (B, 1, ..., N)
        values = values.reshape(values.shape[:-1] + (1,) * missing + values.shape[-1:])
    return np.take_along_axis(values, rankings, axis=-1)


def ideal_dcg(relevance: NDArray[np.floating] | NDArray[np.integer], k: int) -> FloatArray:
    """IDCG@k over all N candidates: ``(..., N) -> (...)``."""
    g = np.sort(gains(relevance), axis=-1)[..., ::-1]  # descending, (..., N)
    n = g.shape[-1]
    return np.asarray(g[..., : min(k, n)] @ discounts(min(k, n), k))


def dcg(rankings: NDArray[np.integer], relevance: NDArray, k: int) -> FloatArray:
    """DCG@k of each list: ``(..., L) -> (...)``."""
    length = np.shape(rankings)[-1]
    return np.asarray(gains(gather(relevance, rankings)) @ discounts(length, k))


def _safe_divide(numerator: FloatArray, denominator: FloatArray) -> FloatArray:
    denominator = np.asarray(denominator, dtype=np.float64)
    return np.divide(numerator, denominator, out=np.zeros(np.broadcast(numerator, denominator).shape), where=denominator > 0)


def _expand_to(values: FloatArray, ndim: int) -> FloatArray:
    """Append singleton axes so a per-request value broadcasts against per-list values."""
    return values.reshape(values.shape + (1,) * (ndim - values.ndim))


def ndcg(
    rankings: NDArray[np.integer],
    relevance: NDArray,
    categories: NDArray[np.integer] | None = None,
    k: int = 10,
) -> FloatArray:
    """NDCG@k: ``(..., L) -> (...)``. ``categories`` is accepted (and ignored) to fit :class:`ListMetric`."""
    values = dcg(rankings, relevance, k)
    return _safe_divide(values, _expand_to(ideal_dcg(relevance, k), values.ndim))


def recall(
    rankings: NDArray[np.integer],
    relevance: NDArray,
    categories: NDArray[np.integer] | None = None,
    k: int = 10,
) -> FloatArray:
    """Recall@k: ``(..., L) -> (...)``."""
    hits = (gather(relevance, np.asarray(rankings)[..., :k]) > 0).sum(axis=-1).astype(np.float64)
    total = (np.asarray(relevance) > 0).sum(axis=-1).astype(np.float64)
    return _safe_divide(hits, _expand_to(total, hits.ndim))


@lru_cache(maxsize=64)
def _strictly_lower(length: int) -> NDArray[np.bool_]:
    return np.tri(length, k=-1, dtype=bool)


def _category_rank(categories_in_order: NDArray[np.integer]) -> IntArray:
    """For each position, how many earlier positions share its category: ``(..., L) -> (..., L)``."""
    same = categories_in_order[..., :, None] == categories_in_order[..., None, :]  # (..., L, L)
    return (same & _strictly_lower(same.shape[-1])).sum(axis=-1)


def alpha_dcg(
    rankings: NDArray[np.integer], relevance: NDArray, categories: NDArray[np.integer], k: int, gamma: float
) -> FloatArray:
    """alpha-DCG@k: the j-th item of a category (j = 0, 1, ...) earns ``g * gamma**j``: ``(..., L) -> (...)``."""
    length = np.shape(rankings)[-1]
    g = gains(gather(relevance, rankings))  # (..., L)
    repeats = _category_rank(gather(categories, rankings))  # (..., L)
    return np.asarray((g * gamma**repeats) @ discounts(length, k))


def ideal_alpha_dcg(relevance: NDArray, categories: NDArray[np.integer], k: int, gamma: float) -> FloatArray:
    """Ideal alpha-DCG@k over all candidates: sort each category by gain, attenuate, take the best k overall."""
    g = gains(relevance)  # (..., N)
    cats = np.asarray(categories)
    order = np.lexsort((-g, cats), axis=-1)  # by category, then by gain descending
    g_sorted = np.take_along_axis(g, order, axis=-1)
    repeats = _category_rank(np.take_along_axis(cats, order, axis=-1))
    attenuated = -np.sort(-(g_sorted * gamma**repeats), axis=-1)
    n = attenuated.shape[-1]
    return np.asarray(attenuated[..., : min(k, n)] @ discounts(min(k, n), k))


def alpha_ndcg(
    rankings: NDArray[np.integer],
    relevance: NDArray,
    categories: NDArray[np.integer],
    k: int = 10,
    gamma: float = DEFAULT_GAMMA,
) -> FloatArray:
    """alpha-NDCG@k, the ``diverse`` need's list metric: ``(..., L) -> (...)``."""
    values = alpha_dcg(rankings, relevance, categories, k, gamma)
    return _safe_divide(values, _expand_to(ideal_alpha_dcg(relevance, categories, k, gamma), values.ndim))


#: The evaluation metrics reported in ``info["metrics"]`` (always on the true relevance).
EVALUATION_METRICS: dict[str, tuple[ListMetric, int]] = {
    "NDCG@5": (ndcg, 5),
    "NDCG@10": (ndcg, 10),
    "Recall@5": (recall, 5),
    "Recall@10": (recall, 10),
}


def evaluation_metrics(
    rankings: NDArray[np.integer], relevance: NDArray, categories: NDArray[np.integer]
) -> dict[str, FloatArray]:
    """The four evaluation metrics of a batch of finished lists: ``(B, K), (B, N) -> {name: (B,)}``.

    Equal to calling each metric of :data:`EVALUATION_METRICS`, with the shared work (gains, the ideal order)
    done once, since this runs at the end of every episode.
    """
    relevance = np.asarray(relevance)
    g_list = gains(gather(relevance, rankings))  # (B, K)
    g_ideal = np.sort(gains(relevance), axis=-1)[:, ::-1]  # (B, N), descending
    hits = np.cumsum(gather(relevance, rankings) > 0, axis=-1)  # (B, K)
    total = (relevance > 0).sum(axis=-1)  # (B,)
    out: dict[str, FloatArray] = {}
    for name, (metric, k) in EVALUATION_METRICS.items():
        if metric is ndcg:
            length, ideal_length = g_list.shape[-1], min(k, g_ideal.shape[-1])
            out[name] = _safe_divide(g_list @ discounts(length, k), g_ideal[:, :ideal_length] @ discounts(ideal_length, k))
        else:
            top = hits[:, min(k, hits.shape[-1]) - 1] if hits.shape[-1] else np.zeros(len(total))
            out[name] = _safe_divide(top.astype(np.float64), total.astype(np.float64))
    return out
