r"""Confidence intervals a reviewer can check: paired differences between agents and aggregates over needs.

Pure functions of score arrays (numpy only). The two estimators of Agarwal et al. (2021), *Deep reinforcement
learning at the edge of the statistical precipice* (NeurIPS; the ``rliable`` library), are written out here: the
interquartile mean :func:`iqm` and the stratified bootstrap :func:`stratified_bootstrap_ci`. Every interval is a
percentile bootstrap interval (the 2.5th and 97.5th percentiles of the resampled statistic) with a fixed seed, so a
report computed twice from the same episodes shows the same intervals.

Paired comparisons (:func:`paired_difference`, :func:`relative_difference`, :func:`paired_comparison`)
    Two agents ``a`` and ``b`` played the same E episodes (episode ``i`` of a need uses the same request for every
    agent), ``a`` with S training seeds, ``b`` with S seeds or evaluated once. The scores are arrays ``(S, E)``;
    an array with one row is broadcast against the other (a baseline evaluated once is compared with each seed
    of a trained agent on the same episodes). The estimate is the mean over seeds and episodes,
    ``mean(a) - mean(b)`` or ``mean(a) / mean(b) - 1``.

    The interval comes from a *two-level paired bootstrap over seeds and episodes*: each resample draws S seed rows
    with replacement and E episode columns with replacement, and reads ``a`` and ``b`` at the same (row, column)
    pairs. The episode columns are drawn once per resample and shared by every drawn seed row, because episode
    ``i`` is the same request for every seed: seeds and episodes are *crossed* factors, not episodes nested in
    seeds (this is Owen's 2007 "pigeonhole" bootstrap for crossed random effects). Why this method:

    * seeds are the unit of replication of a trained agent (two seeds differ by more than episode noise), so the
      seed level is resampled; an interval over pooled episodes alone would treat S x E episodes as independent
      and be too narrow;
    * requests are the other unit: an agent that is better on some requests is better on them with every seed,
      and a baseline evaluated once contributes the same episode values to every seed row. Drawing episodes
      independently within each seed (the nested bootstrap) averages that shared part away: in simulations of
      3 or 5 seeds against a baseline run once, the nested 95% interval covered the true difference in only
      74-83% of cases, this one in 92-96% (``tests/agents/test_statistics.py`` keeps such a check; with one
      seed and 30-50 episodes about 91%, the small-sample narrowness of any percentile interval);
    * with one seed the seed level is a no-op and the method is the ordinary paired bootstrap over episodes, the
      right interval for a deterministic baseline or a single trained run;
    * pairing removes the variance of the requests shared by the two agents (the same indices in ``a`` and
      ``b``), which is what makes small differences visible;
    * it assumes no distribution of the scores (bounded, skewed metrics such as NDCG@5) and serves the ratio
      as well as the difference from the same resamples.

    Known behaviour: when the seeds do not differ, the interval is conservative (the seed-by-episode noise is
    counted in both levels; coverage about 99% in simulation); when they differ a lot, S = 3 resampled seeds
    cannot show the whole seed-to-seed spread and the coverage falls to about 92%. With few seeds the interval
    is an approximation, and no interval shows seed-to-seed variation that one seed does not contain.

Aggregates over needs (:func:`iqm`, :func:`stratified_bootstrap_ci`)
    Scores ``(runs, tasks)``: one column per need (task), one row per run (in the benchmark a run is one episode
    of one seed). The stratified bootstrap resamples the runs of each task independently, so every resample
    keeps every task, and recomputes the aggregate statistic (the IQM or the mean over all runs x tasks).
"""

from __future__ import annotations

from typing import Protocol, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]

#: Bootstrap resamples of every interval (Agarwal et al. use 2,000 as well, and more for final figures).
REPS = 2000
#: The interval's percentiles: a 95% percentile bootstrap interval.
PERCENTILES = (2.5, 97.5)
#: Score values held in memory at once by one batch of bootstrap resamples.
_BATCH_VALUES = 1_000_000


def _check_reps(reps: int) -> None:
    if isinstance(reps, bool) or not isinstance(reps, int) or reps < 1:
        raise ValueError(f"reps={reps!r}; allowed: an integer >= 1")


def _scores(values: ArrayLike, name: str) -> FloatArray:
    """``values`` as a finite 2-D float array, or a ValueError that names the argument and its shape."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2 or array.size == 0:
        raise ValueError(
            f"{name} has shape {array.shape}; allowed: a non-empty 2-D array (seeds or runs, episodes or tasks); "
            f"pass one run as x[None, :]"
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite values; allowed: finite scores")
    return array


def _paired_scores(a: ArrayLike, b: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """``a`` and ``b`` as ``(S, E)`` arrays of the same episodes, the one-row array broadcast against the other."""
    first, second = _scores(a, "a"), _scores(b, "b")
    rows_match = first.shape[0] == second.shape[0] or 1 in (first.shape[0], second.shape[0])
    if first.shape[1] != second.shape[1] or not rows_match:
        raise ValueError(
            f"a has shape {first.shape} and b has shape {second.shape}; allowed: (S, E) and (S, E) of the same "
            f"E episodes, or one of them (1, E) (an agent evaluated once)"
        )
    seeds = max(first.shape[0], second.shape[0])
    return np.broadcast_to(first, (seeds, first.shape[1])), np.broadcast_to(second, (seeds, second.shape[1]))


def _interval(resampled: FloatArray) -> tuple[float, float]:
    low, high = np.percentile(resampled, PERCENTILES)
    return float(low), float(high)


def paired_resample_means(a: ArrayLike, b: ArrayLike, reps: int = REPS, seed: int = 0) -> tuple[FloatArray, FloatArray]:
    """The means of ``a`` and ``b`` in each of ``reps`` two-level paired resamples: two arrays ``(reps,)``.

    A resample draws S seed rows and E episode columns, each with replacement, and reads ``a`` and ``b`` at the
    rows x columns grid (every drawn row at the same drawn columns). Random draws from
    ``numpy.random.default_rng(seed)``.
    """
    _check_reps(reps)
    first, second = _paired_scores(a, b)
    seeds, episodes = first.shape
    rng = np.random.default_rng(seed)
    batch = max(1, _BATCH_VALUES // first.size)
    means_a, means_b = [], []
    for start in range(0, reps, batch):
        size = min(batch, reps - start)
        rows = rng.integers(0, seeds, size=(size, seeds, 1))  # (B, S, 1)
        columns = rng.integers(0, episodes, size=(size, 1, episodes))  # (B, 1, E), shared by the S drawn rows
        flat = rows * episodes + columns  # (B, S, E) positions in the row-major (S, E) arrays
        means_a.append(np.take(first, flat).mean(axis=(1, 2)))
        means_b.append(np.take(second, flat).mean(axis=(1, 2)))
    return np.concatenate(means_a), np.concatenate(means_b)


def paired_comparison(a: ArrayLike, b: ArrayLike, reps: int = REPS, seed: int = 0) -> dict[str, float]:
    """Difference and relative change of ``a`` over ``b``, each with its 95% interval, from the same resamples.

    Returns ``{"diff", "low", "high", "rel", "rel_low", "rel_high"}``: ``diff = mean(a) - mean(b)`` and
    ``rel = mean(a) / mean(b) - 1``, with the bounds of their two-level paired bootstrap intervals (see the
    module docstring). The relative change is NaN (all three) when ``mean(b)`` is 0 in the data or in a resample:
    no finite ratio is defined there.
    """
    first, second = _paired_scores(a, b)
    resampled_a, resampled_b = paired_resample_means(first, second, reps, seed)
    result = {"diff": float(first.mean() - second.mean())}
    result["low"], result["high"] = _interval(resampled_a - resampled_b)
    if second.mean() == 0 or np.any(resampled_b == 0):
        return result | {"rel": float("nan"), "rel_low": float("nan"), "rel_high": float("nan")}
    result["rel"] = float(first.mean() / second.mean() - 1)
    result["rel_low"], result["rel_high"] = _interval(resampled_a / resampled_b - 1)
    return result


def paired_difference(a: ArrayLike, b: ArrayLike, reps: int = REPS, seed: int = 0) -> tuple[float, float, float]:
    """``(mean(a) - mean(b), low, high)``: the paired difference and its 95% two-level bootstrap interval.

    ``a`` and ``b`` are ``(S, E)`` scores of the same E episodes (S seeds), or one of them ``(1, E)``, broadcast.

    >>> paired_difference([[0.5, 0.75], [0.25, 1.0]], [[0.25, 0.5], [0.0, 0.75]])  # a - b is 0.25 everywhere
    (0.25, 0.25, 0.25)
    """
    result = paired_comparison(a, b, reps, seed)
    return result["diff"], result["low"], result["high"]


def relative_difference(a: ArrayLike, b: ArrayLike, reps: int = REPS, seed: int = 0) -> tuple[float, float, float]:
    """``(mean(a) / mean(b) - 1, low, high)``: the relative change of ``a`` over ``b`` with its 95% interval.

    Same arrays and resamples as :func:`paired_difference`; NaN when ``mean(b)`` can be 0.

    >>> relative_difference([[1.5, 3.0]], [[1.0, 2.0]])  # a is b + 50% on every episode
    (0.5, 0.5, 0.5)
    """
    result = paired_comparison(a, b, reps, seed)
    return result["rel"], result["rel_low"], result["rel_high"]


Axes = int | tuple[int, ...] | None


def _last_axis(scores: ArrayLike, axis: Axes) -> FloatArray:
    """``scores`` with the ``axis`` values (all of them for None) flattened into the last axis: ``(..., n)``."""
    values = np.asarray(scores, dtype=np.float64)
    if axis is None:
        return values.reshape(-1)
    axes = tuple(np.atleast_1d(axis).tolist())
    moved = np.moveaxis(values, axes, tuple(range(-len(axes), 0)))
    return moved.reshape(*moved.shape[: moved.ndim - len(axes)], -1)


@overload
def iqm(scores: ArrayLike, axis: None = None) -> float: ...
@overload
def iqm(scores: ArrayLike, axis: int | tuple[int, ...]) -> FloatArray: ...
def iqm(scores: ArrayLike, axis: Axes = None) -> float | FloatArray:
    """Interquartile mean: the mean of the middle 50% of the values, with fractional weights at the edges.

    The sorted values ``x_(1) <= ... <= x_(n)`` each hold a share ``1/n`` of the data, ``x_(i)`` the interval
    ``[(i-1)/n, i/n]``; the IQM is the mean of the values over ``[0.25, 0.75]``, each weighted by the length of its
    overlap with that interval: ``IQM = 2 * sum_i x_(i) * |[(i-1)/n, i/n] ∩ [0.25, 0.75]|``. When ``n`` is a
    multiple of 4 this is the mean of the middle ``n/2`` values, which ``scipy.stats.trim_mean(x, 0.25)`` and
    rliable's IQM compute; otherwise scipy drops only ``floor(n/4)`` values at each end and keeps a little more
    than half, while this definition keeps exactly half (a value on the edge counts for the part inside).

    ``axis`` as in numpy's reductions: None for all values (a number), or the axes to reduce (an array of the
    other axes, e.g. ``axis=(1, 2)`` for a batch of ``(runs, tasks)`` tables).

    >>> iqm([1, 2, 3, 4, 5, 6, 7, 8])  # the mean of 3, 4, 5, 6
    4.5
    >>> iqm([0, 1, 2, 4, 100])  # 1 and 4 count for 3/4 each: 2 * (0.75 * 1 + 2 + 0.75 * 4) / 5
    2.3
    """
    values = np.sort(_last_axis(scores, axis), axis=-1)  # (..., n)
    count = values.shape[-1]
    if count == 0:
        raise ValueError("iqm needs at least one value")
    starts, ends = np.arange(count) / count, np.arange(1, count + 1) / count
    overlap = np.clip(np.minimum(ends, 0.75) - np.maximum(starts, 0.25), 0.0, None)  # (n,) sums to 0.5
    result = 2.0 * (values @ overlap)  # (...)
    return float(result) if axis is None else np.asarray(result)


@overload
def mean(scores: ArrayLike, axis: None = None) -> float: ...
@overload
def mean(scores: ArrayLike, axis: int | tuple[int, ...]) -> FloatArray: ...
def mean(scores: ArrayLike, axis: Axes = None) -> float | FloatArray:
    """The mean of the values: of all of them (``axis=None``, a number) or over ``axis`` (an array)."""
    result = _last_axis(scores, axis).mean(axis=-1)
    return float(result) if axis is None else np.asarray(result)


class Aggregate(Protocol):
    """An aggregate statistic with numpy's ``axis`` argument, such as :func:`iqm` and :func:`mean`."""

    def __call__(self, scores: ArrayLike, axis: tuple[int, ...]) -> FloatArray: ...


def stratified_bootstrap_ci(
    scores_per_task: ArrayLike, statistic: Aggregate, reps: int = REPS, seed: int = 0
) -> tuple[float, float, float]:
    """``(statistic(scores), low, high)``: an aggregate over tasks and its 95% stratified bootstrap interval.

    ``scores_per_task`` is ``(runs, tasks)``; each resample draws, for every task (column) independently, ``runs``
    of its rows with replacement. ``statistic`` reduces a score table to a number, over all runs x tasks (e.g.
    :func:`iqm` or :func:`mean`); it is called as ``statistic(x, axis=(-2, -1))`` on batches ``(B, runs, tasks)``
    of resamples. Random draws from ``numpy.random.default_rng(seed)``.

    >>> stratified_bootstrap_ci([[0.5, 0.5], [0.5, 0.5]], iqm)  # nothing to resample: a zero-width interval
    (0.5, 0.5, 0.5)
    """
    _check_reps(reps)
    scores = _scores(scores_per_task, "scores_per_task")
    runs, tasks = scores.shape
    rng = np.random.default_rng(seed)
    batch = max(1, _BATCH_VALUES // scores.size)
    resampled = []
    for start in range(0, reps, batch):
        rows = rng.integers(0, runs, size=(min(batch, reps - start), runs, tasks))  # (B, runs, tasks)
        resampled.append(statistic(np.take_along_axis(scores[None], rows, axis=1), axis=(-2, -1)))  # (B,)
    point = statistic(scores[None], axis=(-2, -1))  # (1,)
    return (float(point[0]), *_interval(np.concatenate(resampled)))
