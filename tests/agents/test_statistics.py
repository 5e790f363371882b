"""The statistics of the benchmark report: hand-worked answers, brute force, coverage by simulation, errors."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents import statistics
from agents.statistics import (
    iqm,
    mean,
    paired_comparison,
    paired_difference,
    paired_resample_means,
    relative_difference,
    stratified_bootstrap_ci,
)


def test_the_docstring_examples_hold():
    assert doctest.testmod(statistics).failed == 0


def test_a_constant_difference_has_a_zero_width_interval():
    rng = np.random.default_rng(3)
    b = rng.random((3, 7))
    assert paired_difference(b + 0.125, b, reps=200) == pytest.approx((0.125, 0.125, 0.125))
    # A baseline evaluated once is broadcast over the seeds of the trained agent.
    once = rng.random((1, 7))
    assert paired_difference(once + np.array([[0.1], [0.1]]), once, reps=200) == pytest.approx((0.1, 0.1, 0.1))
    assert relative_difference(2 * b, b, reps=200) == pytest.approx((1.0, 1.0, 1.0))


def test_the_estimate_is_the_mean_difference_worked_by_hand():
    a = np.array([[1.0, 0.0, 0.5], [0.5, 0.5, 1.0]])  # mean 3.5 / 6
    b = np.array([[0.5, 0.25, 0.25]])  # mean 1 / 3, evaluated once
    result = paired_comparison(a, b, reps=500)
    assert result["diff"] == pytest.approx(3.5 / 6 - 1 / 3)
    assert result["rel"] == pytest.approx((3.5 / 6) * 3 - 1)
    assert result["low"] < result["diff"] < result["high"] and result["rel_low"] < result["rel"] < result["rel_high"]
    assert paired_comparison(a, b, reps=500) == result  # seeded: the same interval every time


def test_resamples_use_the_same_episodes_for_every_seed_and_both_agents():
    # a encodes (seed, episode) as 10 * seed + episode and b its episode: a resample's mean difference is then
    # 10 x the mean drawn seed, an integer multiple of 10 / S, only if a and b are read at the same columns.
    a = 10.0 * np.arange(3)[:, None] + np.arange(5)[None, :]
    b = np.arange(5, dtype=float)[None, :]
    resampled_a, resampled_b = paired_resample_means(a, b, reps=300)
    steps = (resampled_a - resampled_b) / (10 / 3)
    assert np.allclose(steps, np.round(steps))
    assert len(np.unique(np.round(steps))) > 3  # the seeds were resampled


def _coverage(seeds: int, episodes: int, seed_spread: float, repetitions: int = 200) -> float:
    """Share of 95% intervals that contain the true difference 0, for data with that structure."""
    rng = np.random.default_rng(7)
    hits = 0
    for repetition in range(repetitions):
        requests = rng.normal(size=episodes)  # difficulty shared by both agents: cancels in the difference
        advantage = rng.normal(0.0, 0.5, size=episodes)  # a's request-specific edge, the same for every seed
        a = requests + advantage + rng.normal(0.0, seed_spread, size=(seeds, 1)) + rng.normal(size=(seeds, episodes))
        b = requests[None, :] + rng.normal(size=(1, episodes))  # a baseline evaluated once
        _, low, high = paired_difference(a, b, reps=500, seed=repetition)
        hits += low <= 0.0 <= high
    return hits / repetitions


@pytest.mark.parametrize(("seeds", "episodes", "seed_spread"), [(1, 50, 0.0), (3, 20, 0.3)])
def test_the_interval_covers_a_zero_difference_about_95_percent_of_the_time(seeds, episodes, seed_spread):
    assert 0.88 <= _coverage(seeds, episodes, seed_spread) <= 0.99


def test_paired_inputs_of_the_wrong_shape_name_the_shapes():
    with pytest.raises(ValueError, match=r"a has shape \(2, 5\) and b has shape \(2, 4\)"):
        paired_difference(np.zeros((2, 5)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"a has shape \(3, 5\) and b has shape \(2, 5\)"):
        paired_difference(np.zeros((3, 5)), np.zeros((2, 5)))
    with pytest.raises(ValueError, match=r"a has shape \(5,\); allowed: a non-empty 2-D array"):
        paired_difference(np.zeros(5), np.zeros((1, 5)))
    with pytest.raises(ValueError, match="b contains NaN"):
        paired_difference(np.zeros((1, 2)), [[0.0, np.nan]])
    with pytest.raises(ValueError, match="reps=0"):
        paired_difference(np.zeros((1, 2)), np.zeros((1, 2)), reps=0)


def test_a_relative_change_over_a_zero_baseline_is_nan():
    result = paired_comparison([[0.5, 1.0]], [[0.0, 0.0]], reps=50)
    assert result["diff"] == 0.75 and all(np.isnan(result[k]) for k in ("rel", "rel_low", "rel_high"))


def test_iqm_worked_by_hand():
    assert iqm(np.arange(1, 9)) == pytest.approx(4.5)  # mean of 3, 4, 5, 6
    assert iqm([8, 1, 7, 2, 6, 3, 5, 4]) == pytest.approx(4.5)  # order does not matter
    assert iqm([[0, 1, 2], [4, 100, 2]]) == pytest.approx(2 * (0.5 * 1 + 2 + 2 + 0.5 * 4) / 6)  # all values, n = 6
    assert iqm([0, 1, 2, 4, 100]) == pytest.approx(2.3)  # scipy's trim_mean would give mean(1, 2, 4) = 2.333
    assert iqm([5.0]) == 5.0 and iqm([1.0, 3.0]) == 2.0
    with pytest.raises(ValueError, match="at least one value"):
        iqm([])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-100, 100), min_size=1, max_size=30))
def test_iqm_equals_the_plain_middle_half_of_the_values_repeated_four_times(values):
    # Each value repeated 4 times: the same distribution, and exactly n values in each quarter, so the
    # middle half is a whole set of values with no fractional weights.
    repeated = np.sort(np.repeat(values, 4))
    count = len(values)
    assert iqm(values) == pytest.approx(repeated[count : 3 * count].mean(), abs=1e-9)


def test_stratified_bootstrap_on_a_degenerate_case():
    # Every run of a task scored the same: resampling runs changes nothing.
    scores = np.tile([0.2, 0.6, 0.9], (4, 1))  # (runs, tasks)
    assert stratified_bootstrap_ci(scores, mean, reps=100) == pytest.approx((1.7 / 3, 1.7 / 3, 1.7 / 3))
    # IQM of the 12 values: the sorted positions 4..9 are 0.2, 0.6 x 4, 0.9.
    assert stratified_bootstrap_ci(scores, iqm, reps=100) == pytest.approx((3.5 / 6, 3.5 / 6, 3.5 / 6))


def test_stratified_bootstrap_keeps_every_task_in_every_resample():
    # Task columns 0 and 1000: a resample that dropped a task or mixed runs across tasks would move the mean
    # by hundreds; resampling runs within tasks keeps it within the spread of the first column.
    rng = np.random.default_rng(0)
    scores = np.column_stack([rng.random(20), np.full(20, 1000.0)])
    point, low, high = stratified_bootstrap_ci(scores, mean, reps=300)
    assert point == pytest.approx(scores.mean()) and 500.0 < low < point < high < 501.0
    # The interval of the mean matches the normal approximation of the resampled column.
    half = 1.96 * scores[:, 0].std() / np.sqrt(20) / 2
    assert (high - low) / 2 == pytest.approx(half, rel=0.25)


def test_stratified_bootstrap_errors_name_the_value():
    with pytest.raises(ValueError, match=r"scores_per_task has shape \(3,\)"):
        stratified_bootstrap_ci(np.zeros(3), mean)
    with pytest.raises(ValueError, match="reps=-1"):
        stratified_bootstrap_ci(np.zeros((2, 2)), mean, reps=-1)


def test_iqm_and_mean_reduce_the_given_axes_like_numpy():
    tables = np.random.default_rng(1).random((4, 6, 3))  # a batch of (runs, tasks) tables
    assert np.allclose(iqm(tables, axis=(1, 2)), [iqm(table) for table in tables])
    assert np.allclose(mean(tables, axis=(-2, -1)), tables.mean(axis=(1, 2)))
    assert np.allclose(iqm(tables, axis=0), [[iqm(tables[:, i, j]) for j in range(3)] for i in range(6)])


def test_resamples_in_several_batches_give_every_resample(monkeypatch):
    monkeypatch.setattr(statistics, "_BATCH_VALUES", 7)  # a batch of one or two resamples
    resampled_a, resampled_b = paired_resample_means(np.ones((2, 3)), np.zeros((1, 3)), reps=25)
    assert resampled_a.shape == resampled_b.shape == (25,)
    scores = np.tile([0.2, 0.6], (3, 1))
    assert stratified_bootstrap_ci(scores, mean, reps=25) == pytest.approx((0.4, 0.4, 0.4))
    b = np.random.default_rng(2).random((2, 3))
    assert paired_difference(b + 0.5, b, reps=25) == pytest.approx((0.5, 0.5, 0.5))
