"""Small helpers for writing scenarios (percentile signals, sampling without replacement) and checking settings."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray


def percentile_ranks(values: NDArray, valid: NDArray[np.bool_] | None = None) -> NDArray[np.float32]:
    """The percentile in [0, 1] of each valid entry among the valid entries of its row, 0 for invalid entries.

    Equal values share their mean rank, so they get equal percentiles. Works row by row on ``(..., I)``.
    """
    values = np.asarray(values, dtype=np.float64)
    valid = np.ones(values.shape, dtype=bool) if valid is None else np.broadcast_to(np.asarray(valid, dtype=bool), values.shape)
    out = np.zeros(values.shape, dtype=np.float32)
    flat_values, flat_valid, flat_out = (x.reshape(-1, values.shape[-1]) for x in (values, valid, out))
    for row_values, row_valid, row_out in zip(flat_values, flat_valid, flat_out, strict=True):
        _, inverse, counts = np.unique(row_values[row_valid], return_inverse=True, return_counts=True)
        mean_rank = np.cumsum(counts) - counts + (counts - 1) / 2.0  # (unique,), 0-based
        row_out[row_valid] = mean_rank[inverse] / max(int(row_valid.sum()) - 1, 1)
    return out


def alias_table(weights: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Walker's alias table (Vose's construction) for O(1) draws proportional to ``weights``."""
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 1 or not (weights >= 0).all() or weights.sum() <= 0:
        raise ValueError("alias_table needs a 1-d array of non-negative weights with a positive sum")
    n = len(weights)
    scaled = weights * n / weights.sum()
    prob, alias = np.ones(n), np.arange(n)
    small, large = [i for i in range(n) if scaled[i] < 1.0], [i for i in range(n) if scaled[i] >= 1.0]
    while small and large:
        s, g = small.pop(), large.pop()
        prob[s], alias[s] = scaled[s], g
        scaled[g] -= 1.0 - scaled[s]
        (small if scaled[g] < 1.0 else large).append(g)
    return prob, alias


def alias_draw(
    prob: NDArray,
    alias: NDArray[np.int64],
    column_uniform: NDArray,
    alias_uniform: NDArray,
    table: NDArray[np.int64] | None = None,
) -> NDArray[np.int64]:
    """Draws ``(R, M)`` from an alias table ``(I,)``, or from row ``table[r]`` of stacked tables ``(T, I)``."""
    n = prob.shape[-1]
    column = np.minimum((column_uniform * n).astype(np.int64), n - 1)  # (R, M)
    flat = column if table is None else column + np.asarray(table)[:, None] * n  # (R, M), into the raveled tables
    return np.where(alias_uniform < np.take(prob, flat), column, np.take(alias, flat))


#: ``propose(rows, m) -> (len(rows), m)`` item draws with replacement for the requests ``rows``.
Proposer = Callable[[NDArray[np.int64], int], NDArray[np.int64]]
#: ``accept(rows, draws) -> (len(rows), m)`` bool: whether each draw is accepted for its request.
Acceptor = Callable[[NDArray[np.int64], NDArray[np.int64]], NDArray[np.bool_]]
#: ``weights(rows) -> (len(rows), I)``: each item's sampling weight (proposal x acceptance) for the requests ``rows``.
Weights = Callable[[NDArray[np.int64]], NDArray[np.float64]]


def successive_sample(
    num_rows: int,
    count: int,
    propose: Proposer,
    accept: Acceptor,
    rng: np.random.Generator,
    weights: Weights,
    rounds: int = 4,
) -> NDArray[np.int64]:
    """``count`` distinct items per row, sampled without replacement in proportion to the accepted proposal weight.

    Successive sampling: draw with replacement, keep accepted draws, and keep the first ``count`` distinct items
    of each row; conditional on being new, each item then comes in proportion to its weight among those left,
    which is weighted sampling without replacement. Rows short of ``count`` are drawn again with twice the
    proposals; rows still short after ``rounds`` rounds (``count`` close to the number of eligible items, where
    successive sampling would need ever more draws) take the same distribution exactly from their full ``weights``
    (:func:`weighted_sample`), so the cost is bounded. Returns ``(num_rows, count)`` in draw order (shuffle it if
    order must carry no information); raises ``ValueError`` if a row has fewer than ``count`` eligible items.
    """
    items = np.zeros((num_rows, count), dtype=np.int64)
    todo, proposals = np.arange(num_rows), 4 * count
    for _ in range(rounds):
        draws = propose(todo, proposals)  # (R, M)
        draws = np.where(accept(todo, draws), draws, -1)
        # Draws by item, then by position (a stable argsort, done as a sort of one key: ~15x faster).
        key = np.sort((draws + 1) * proposals + np.arange(proposals), axis=1)  # (R, M)
        ordered, order = key // proposals - 1, key % proposals
        first = np.ones(ordered.shape, dtype=bool)
        first[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
        keep = np.zeros(ordered.shape, dtype=bool)
        np.put_along_axis(keep, order, first & (ordered >= 0), axis=1)  # first accepted draw of each item
        keep &= np.cumsum(keep, axis=1) <= count
        done = keep.sum(axis=1) == count
        items[todo[done]] = draws[done][keep[done]].reshape(-1, count)
        todo, proposals = todo[~done], 2 * proposals
        if not len(todo):
            return items
    items[todo] = weighted_sample(rng, weights(todo), count)
    return items


def weighted_sample(rng: np.random.Generator, weights: NDArray[np.float64], count: int) -> NDArray[np.int64]:
    """``count`` distinct items per row of ``weights`` ``(R, I)``, without replacement in proportion to the weights.

    Efraimidis and Spirakis: each item gets the key ``log(u) / w``; the ``count`` largest keys, in decreasing order,
    are distributed as successive draws without replacement. Raises ``ValueError`` naming the first row with fewer
    than ``count`` items of positive weight.
    """
    positive = (weights > 0).sum(axis=1)
    if (positive < count).any():
        row = int(np.flatnonzero(positive < count)[0])
        raise ValueError(f"could not sample {count} distinct eligible items: row {row} has only {int(positive[row])}")
    with np.errstate(divide="ignore"):
        keys = np.where(weights > 0, np.log(rng.random(weights.shape)) / np.where(weights > 0, weights, 1.0), -np.inf)
    top = np.argpartition(-keys, count - 1, axis=1)[:, :count]  # (R, count), the largest keys, unordered
    order = np.argsort(-np.take_along_axis(keys, top, axis=1), axis=1)
    return np.take_along_axis(top, order, axis=1)
