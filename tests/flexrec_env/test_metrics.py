"""Tests of flexrec_env.metrics: hand-worked values, the batched fast path, brute-force ideals, broadcasting."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flexrec_env.metrics import (
    DEFAULT_GAMMA,
    EVALUATION_METRICS,
    alpha_dcg,
    alpha_ndcg,
    dcg,
    discounts,
    evaluation_metrics,
    gains,
    ideal_alpha_dcg,
    ideal_dcg,
    ndcg,
    recall,
)

LOG2_3 = math.log2(3.0)  # 1.5849625...


def arr(values: list) -> np.ndarray:
    return np.asarray(values, dtype=np.int64)


# --------------------------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------------------------


def test_gains_are_two_to_the_relevance_minus_one():
    # 2**0 - 1 = 0, 2**1 - 1 = 1, 2**2 - 1 = 3, 2**3 - 1 = 7
    np.testing.assert_array_equal(gains(arr([0, 1, 2, 3])), [0.0, 1.0, 3.0, 7.0])
    assert gains(arr([[0, 2]])).dtype == np.float64


def test_discounts_are_log_discounts_cut_at_k():
    # positions 1..4 with k=2: 1/log2(2) = 1, 1/log2(3), then 0, 0
    np.testing.assert_allclose(discounts(4, 2), [1.0, 1.0 / LOG2_3, 0.0, 0.0], rtol=0, atol=1e-15)
    # k beyond the length: every position counts, the 4th is 1/log2(5)
    np.testing.assert_allclose(discounts(4, 10), [1.0, 1.0 / LOG2_3, 0.5, 1.0 / math.log2(5.0)], rtol=0, atol=1e-15)
    assert discounts(0, 5).shape == (0,)
    with pytest.raises(ValueError):
        discounts(3, 3)[0] = 2.0  # cached, so it must be read-only


# --------------------------------------------------------------------------------------------------------------------
# Known answers, worked by hand
# --------------------------------------------------------------------------------------------------------------------

# relevance [2, 0, 1] -> gains [3, 0, 1]; the ideal order of gains is 3, 1, 0:
# IDCG@3 = 3/log2(2) + 1/log2(3) + 0/log2(4) = 3 + 0.6309298 = 3.6309298
REL = arr([2, 0, 1])
IDCG3 = 3.0 + 1.0 / LOG2_3


def test_dcg_known_answers():
    # ranking [0, 2, 1]: gains in list order 3, 1, 0 -> DCG@3 = 3/1 + 1/log2(3) + 0/2 = 3.6309298
    assert dcg(arr([0, 2, 1]), REL, 3) == pytest.approx(3.0 + 1.0 / LOG2_3, abs=1e-12)
    # ranking [2, 0, 1]: gains 1, 3, 0 -> DCG@3 = 1/1 + 3/log2(3) + 0 = 1 + 1.8927893 = 2.8927893
    assert dcg(arr([2, 0, 1]), REL, 3) == pytest.approx(1.0 + 3.0 / LOG2_3, abs=1e-12)
    # ranking [1, 2, 0] at k=2: gains 0, 1, (3 past k) -> DCG@2 = 0/1 + 1/log2(3) = 0.6309298
    assert dcg(arr([1, 2, 0]), REL, 2) == pytest.approx(1.0 / LOG2_3, abs=1e-12)
    # k=1 keeps only the first position: ranking [0, 2, 1] -> 3
    assert dcg(arr([0, 2, 1]), REL, 1) == pytest.approx(3.0, abs=1e-12)
    # a list shorter than k: ranking [2] at k=3 -> 1/1 = 1
    assert dcg(arr([2]), REL, 3) == pytest.approx(1.0, abs=1e-12)
    # an empty list has DCG 0
    assert dcg(np.zeros(0, dtype=np.int64), REL, 3) == pytest.approx(0.0, abs=0)


def test_ideal_dcg_known_answers():
    assert ideal_dcg(REL, 3) == pytest.approx(IDCG3, abs=1e-12)
    # k=1: best single gain = 3; k=2: 3 + 1/log2(3)
    assert ideal_dcg(REL, 1) == pytest.approx(3.0, abs=1e-12)
    assert ideal_dcg(REL, 2) == pytest.approx(3.0 + 1.0 / LOG2_3, abs=1e-12)
    # k larger than N: there are only 3 candidates, so the same as k=3
    assert ideal_dcg(REL, 10) == pytest.approx(IDCG3, abs=1e-12)
    # relevance [3, 3]: gains 7, 7 -> 7/1 + 7/log2(3) = 7 + 4.4165 = 11.4165
    assert ideal_dcg(arr([3, 3]), 5) == pytest.approx(7.0 + 7.0 / LOG2_3, abs=1e-12)
    # nothing relevant: IDCG = 0
    assert ideal_dcg(arr([0, 0, 0]), 3) == 0.0
    # batched: (2, 3) -> (2,)
    np.testing.assert_allclose(ideal_dcg(arr([[2, 0, 1], [0, 0, 0]]), 3), [IDCG3, 0.0], rtol=0, atol=1e-12)


def test_ndcg_known_answers():
    # the ideal ranking [0, 2, 1] scores exactly 1
    assert ndcg(arr([0, 2, 1]), REL, k=3) == pytest.approx(1.0, abs=1e-12)
    # ranking [2, 0, 1]: (1 + 3/log2(3)) / (3 + 1/log2(3)) = 2.8927893 / 3.6309298 = 0.7967075
    assert ndcg(arr([2, 0, 1]), REL, k=3) == pytest.approx((1.0 + 3.0 / LOG2_3) / IDCG3, abs=1e-12)
    assert ndcg(arr([2, 0, 1]), REL, k=3) == pytest.approx(0.7967075, abs=1e-7)
    # ranking [1, 2, 0] at k=2: (1/log2(3)) / (3 + 1/log2(3)) = 0.6309298 / 3.6309298 = 0.1737653
    assert ndcg(arr([1, 2, 0]), REL, k=2) == pytest.approx((1.0 / LOG2_3) / (3.0 + 1.0 / LOG2_3), abs=1e-12)
    assert ndcg(arr([1, 2, 0]), REL, k=2) == pytest.approx(0.1737653, abs=1e-7)
    # list shorter than k: [2] at k=3 -> 1 / 3.6309298 = 0.2754116
    assert ndcg(arr([2]), REL, k=3) == pytest.approx(1.0 / IDCG3, abs=1e-12)
    assert ndcg(arr([2]), REL, k=3) == pytest.approx(0.2754116, abs=1e-7)
    # k larger than N: IDCG@10 = IDCG@3, DCG@10 = DCG@3
    assert ndcg(arr([2, 0, 1]), REL, k=10) == pytest.approx((1.0 + 3.0 / LOG2_3) / IDCG3, abs=1e-12)


def test_ndcg_is_zero_when_idcg_is_zero():
    # relevance all 0 -> IDCG = 0 -> NDCG defined as 0 (not NaN, no warning)
    with np.errstate(all="raise"):
        values = ndcg(arr([[0, 1, 2], [2, 1, 0]]), arr([[0, 0, 0], [0, 0, 0]]), k=3)
    np.testing.assert_array_equal(values, [0.0, 0.0])
    # mixed batch: only the row without relevant items is 0
    values = ndcg(arr([[0, 2, 1], [0, 1, 2]]), arr([[2, 0, 1], [0, 0, 0]]), k=3)
    np.testing.assert_allclose(values, [1.0, 0.0], rtol=0, atol=1e-12)


def test_recall_known_answers():
    # relevance [2, 0, 1, 0, 3]: relevant = {0, 2, 4}, 3 of them
    rel = arr([2, 0, 1, 0, 3])
    ranking = arr([1, 2, 4])
    # k=1: top [1] holds no relevant item -> 0/3
    assert recall(ranking, rel, k=1) == pytest.approx(0.0, abs=0)
    # k=2: top [1, 2] holds item 2 -> 1/3
    assert recall(ranking, rel, k=2) == pytest.approx(1.0 / 3.0, abs=1e-15)
    # k=3: top [1, 2, 4] holds items 2, 4 -> 2/3
    assert recall(ranking, rel, k=3) == pytest.approx(2.0 / 3.0, abs=1e-15)
    # list shorter than k (and k larger than N): still 2/3, the list has only 3 items
    assert recall(ranking, rel, k=4) == pytest.approx(2.0 / 3.0, abs=1e-15)
    assert recall(ranking, rel, k=50) == pytest.approx(2.0 / 3.0, abs=1e-15)
    # the full ideal list recalls everything
    assert recall(arr([4, 0, 2, 1, 3]), rel, k=3) == pytest.approx(1.0, abs=1e-15)
    # graded relevance does not matter: any rel > 0 counts once
    assert recall(arr([4]), rel, k=1) == pytest.approx(1.0 / 3.0, abs=1e-15)


def test_recall_is_zero_when_nothing_is_relevant():
    with np.errstate(all="raise"):
        values = recall(arr([[0, 1], [2, 3]]), arr([[0, 0, 0, 0], [0, 0, 0, 1]]), k=2)
    # row 0: no relevant item at all -> 0 (not NaN); row 1: the only relevant item, 3, is in the top 2 of [2, 3] -> 1/1
    np.testing.assert_array_equal(values, [0.0, 1.0])


def test_alpha_ndcg_known_answer_with_repeated_categories():
    # relevance [1, 1, 2, 1] -> gains [1, 1, 3, 1]; categories [0, 0, 1, 0]; gamma = 0.5, k = 3
    rel, cats = arr([1, 1, 2, 1]), arr([0, 0, 1, 0])
    # ranking [0, 1, 2]: categories in order 0, 0, 1 -> repeats j = 0, 1, 0 -> earned 1*1, 1*0.5, 3*1
    # alpha-DCG@3 = 1/1 + 0.5/log2(3) + 3/log2(4) = 1 + 0.3154649 + 1.5 = 2.8154649
    dcg_value = 1.0 + 0.5 / LOG2_3 + 3.0 / 2.0
    assert alpha_dcg(arr([0, 1, 2]), rel, cats, 3, 0.5) == pytest.approx(dcg_value, abs=1e-12)
    # ideal: category 0 gains 1, 1, 1 attenuate to 1, 0.5, 0.25; category 1 gives 3.
    # sorted 3, 1, 0.5, 0.25 -> top 3: 3/1 + 1/log2(3) + 0.5/2 = 3 + 0.6309298 + 0.25 = 3.8809298
    ideal = 3.0 + 1.0 / LOG2_3 + 0.25
    assert ideal_alpha_dcg(rel, cats, 3, 0.5) == pytest.approx(ideal, abs=1e-12)
    # alpha-NDCG@3 = 2.8154649 / 3.8809298 = 0.7254614
    assert alpha_ndcg(arr([0, 1, 2]), rel, cats, k=3, gamma=0.5) == pytest.approx(dcg_value / ideal, abs=1e-12)
    assert alpha_ndcg(arr([0, 1, 2]), rel, cats, k=3, gamma=0.5) == pytest.approx(0.7254614, abs=1e-7)
    # gamma=0.5 is the default
    assert DEFAULT_GAMMA == 0.5
    assert alpha_ndcg(arr([0, 1, 2]), rel, cats, k=3) == pytest.approx(dcg_value / ideal, abs=1e-12)
    # ranking [2, 0, 3] reaches the ideal: gains 3, 1, 1 with categories 1, 0, 0 -> 3, 1, 0.5 -> 1.0
    assert alpha_ndcg(arr([2, 0, 3]), rel, cats, k=3, gamma=0.5) == pytest.approx(1.0, abs=1e-12)
    # plain NDCG does not care about categories: [0, 1, 2] has DCG 1 + 1/log2(3) + 3/2 = 3.1309298
    # against IDCG 3 + 1/log2(3) + 1/2 = 4.1309298
    assert ndcg(arr([0, 1, 2]), rel, cats, k=3) == pytest.approx((1 + 1 / LOG2_3 + 1.5) / (3 + 1 / LOG2_3 + 0.5), abs=1e-12)


def test_alpha_ndcg_third_repeat_and_k_cut():
    # all in one category, gains [1, 3, 7] (relevance [1, 2, 3]); gamma 0.5, k = 2
    rel, cats = arr([1, 2, 3]), arr([4, 4, 4])
    # ranking [0, 1, 2]: earned 1, 3*0.5 = 1.5, 7*0.25 (past k) -> 1/1 + 1.5/log2(3) = 1.9463946
    assert alpha_dcg(arr([0, 1, 2]), rel, cats, 2, 0.5) == pytest.approx(1.0 + 1.5 / LOG2_3, abs=1e-12)
    # ideal: 7, 3*0.5 = 1.5 -> 7 + 1.5/log2(3) = 7.9463946
    assert ideal_alpha_dcg(rel, cats, 2, 0.5) == pytest.approx(7.0 + 1.5 / LOG2_3, abs=1e-12)
    # nothing relevant -> 0
    assert alpha_ndcg(arr([0, 1]), arr([0, 0, 0]), cats, k=2) == 0.0


def test_alpha_ndcg_with_distinct_categories_is_ndcg():
    rng = np.random.default_rng(0)
    rel = rng.integers(0, 4, size=(20, 8))
    rankings = np.argsort(rng.random((20, 8)), axis=-1)[:, :5]
    cats = np.broadcast_to(np.arange(8), (20, 8))
    for k in (1, 3, 5, 10):
        np.testing.assert_allclose(alpha_ndcg(rankings, rel, cats, k=k, gamma=0.3), ndcg(rankings, rel, k=k), rtol=0, atol=1e-12)


def test_alpha_ndcg_with_gamma_one_is_ndcg():
    rng = np.random.default_rng(1)
    rel = rng.integers(0, 4, size=(20, 8))
    rankings = np.argsort(rng.random((20, 8)), axis=-1)[:, :6]
    cats = rng.integers(0, 2, size=(20, 8))
    np.testing.assert_allclose(alpha_ndcg(rankings, rel, cats, k=4, gamma=1.0), ndcg(rankings, rel, k=4), rtol=0, atol=1e-12)


# --------------------------------------------------------------------------------------------------------------------
# Random batches
# --------------------------------------------------------------------------------------------------------------------


@st.composite
def batches(draw, max_n: int = 12, min_length: int = 0):
    """A random batch: (rankings (B, L) of distinct candidates, relevance (B, N), categories (B, N))."""
    batch = draw(st.integers(1, 4))
    n = draw(st.integers(max(1, min_length), max_n))
    length = draw(st.integers(min_length, n))
    max_grade = draw(st.integers(0, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    relevance = rng.integers(0, max_grade + 1, size=(batch, n))
    categories = rng.integers(0, 3, size=(batch, n))
    rankings = np.argsort(rng.random((batch, n)), axis=-1)[:, :length].astype(np.int64)
    return rankings, relevance, categories


@settings(max_examples=150, deadline=None)
@given(batches())
def test_evaluation_metrics_equals_each_metric(case):
    rankings, relevance, categories = case
    out = evaluation_metrics(rankings, relevance, categories)
    assert set(out) == set(EVALUATION_METRICS) == {"NDCG@5", "NDCG@10", "Recall@5", "Recall@10"}
    for name, (metric, k) in EVALUATION_METRICS.items():
        expected = metric(rankings, relevance, categories, k)
        assert out[name].shape == (len(rankings),)
        np.testing.assert_allclose(out[name], expected, rtol=0, atol=1e-12, err_msg=name)
        assert np.all((out[name] >= 0) & (out[name] <= 1 + 1e-12))


def test_evaluation_metrics_metric_table():
    assert EVALUATION_METRICS["NDCG@5"] == (ndcg, 5)
    assert EVALUATION_METRICS["NDCG@10"] == (ndcg, 10)
    assert EVALUATION_METRICS["Recall@5"] == (recall, 5)
    assert EVALUATION_METRICS["Recall@10"] == (recall, 10)


@settings(max_examples=150, deadline=None)
@given(batches(max_n=9))
def test_metrics_agree_with_a_loop_over_one_list(case):
    rankings, relevance, categories = case
    for k in (1, 2, 5, 12):
        for b in range(len(rankings)):
            s, rel = [int(x) for x in rankings[b]], relevance[b]
            g = [2.0 ** int(rel[i]) - 1.0 for i in s]
            expected_dcg = sum(gp / math.log2(p + 2) for p, gp in enumerate(g) if p < k)
            ideal = sorted((2.0 ** int(r) - 1.0 for r in rel), reverse=True)
            expected_idcg = sum(gp / math.log2(p + 2) for p, gp in enumerate(ideal) if p < k)
            assert dcg(rankings, relevance, k)[b] == pytest.approx(expected_dcg, abs=1e-12)
            assert ideal_dcg(relevance, k)[b] == pytest.approx(expected_idcg, abs=1e-12)
            expected_ndcg = expected_dcg / expected_idcg if expected_idcg > 0 else 0.0
            assert ndcg(rankings, relevance, categories, k)[b] == pytest.approx(expected_ndcg, abs=1e-12)
            relevant = int((rel > 0).sum())
            hits = sum(1 for i in s[:k] if rel[i] > 0)
            assert recall(rankings, relevance, categories, k)[b] == pytest.approx(hits / relevant if relevant else 0.0, abs=1e-15)


@st.composite
def small_alpha_cases(draw):
    n = draw(st.integers(1, 6))
    relevance = np.array(draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)), dtype=np.int64)
    categories = np.array(draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)), dtype=np.int64)
    k = draw(st.integers(1, n + 2))
    gamma = draw(st.sampled_from([0.0, 0.25, 0.5, 0.8, 1.0]))
    return relevance, categories, k, gamma


@settings(max_examples=120, deadline=None)
@given(small_alpha_cases())
def test_ideal_alpha_dcg_is_the_best_permutation(case):
    relevance, categories, k, gamma = case
    perms = np.array(list(itertools.permutations(range(len(relevance)))), dtype=np.int64)  # (N!, N)
    brute = alpha_dcg(perms, relevance, categories, k, gamma).max()
    assert ideal_alpha_dcg(relevance, categories, k, gamma) == pytest.approx(brute, abs=1e-12)
    # and no permutation beats it (alpha-NDCG <= 1)
    assert np.all(alpha_ndcg(perms, relevance, categories, k=k, gamma=gamma) <= 1.0 + 1e-12)
    # the plain IDCG is also the best permutation
    assert ideal_dcg(relevance, k) == pytest.approx(dcg(perms, relevance, k).max(), abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_ideal_alpha_dcg_batched_equals_per_row(seed):
    rng = np.random.default_rng(seed)
    relevance, categories = rng.integers(0, 4, size=(3, 2, 7)), rng.integers(0, 3, size=(3, 2, 7))
    batched = ideal_alpha_dcg(relevance, categories, 4, 0.5)
    assert batched.shape == (3, 2)
    for i in range(3):
        for j in range(2):
            assert batched[i, j] == pytest.approx(float(ideal_alpha_dcg(relevance[i, j], categories[i, j], 4, 0.5)), abs=1e-12)


# --------------------------------------------------------------------------------------------------------------------
# Broadcasting: one request scored against many alternative lists
# --------------------------------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 3), st.integers(1, 4), st.integers(1, 8), st.integers(1, 10))
def test_relevance_broadcasts_against_many_lists(seed, batch, variants, n, k):
    rng = np.random.default_rng(seed)
    length = int(rng.integers(1, n + 1))
    relevance = rng.integers(0, 4, size=(batch, n))
    categories = rng.integers(0, 3, size=(batch, n))
    rankings = np.argsort(rng.random((batch, variants, n)), axis=-1)[..., :length]  # (B, V, L)
    metrics = {
        "dcg": lambda r, rel, cat: dcg(r, rel, k),
        "ndcg": lambda r, rel, cat: ndcg(r, rel, cat, k),
        "recall": lambda r, rel, cat: recall(r, rel, cat, k),
        "alpha_dcg": lambda r, rel, cat: alpha_dcg(r, rel, cat, k, 0.5),
        "alpha_ndcg": lambda r, rel, cat: alpha_ndcg(r, rel, cat, k),
    }
    for name, metric in metrics.items():
        values = metric(rankings, relevance, categories)
        assert values.shape == (batch, variants), name
        looped = np.array(
            [
                [float(metric(rankings[b, v][None], relevance[b][None], categories[b][None])[0]) for v in range(variants)]
                for b in range(batch)
            ]
        )
        np.testing.assert_allclose(values, looped, rtol=0, atol=1e-12, err_msg=name)
        # also the same as 1-D inputs one at a time
        for b in range(batch):
            for v in range(variants):
                assert float(metric(rankings[b, v], relevance[b], categories[b])) == pytest.approx(looped[b, v], abs=1e-12)
        # and a single (N,) relevance against (V, L) lists
        single = metric(rankings[0], relevance[0], categories[0])
        assert single.shape == (variants,)
        np.testing.assert_allclose(single, looped[0], rtol=0, atol=1e-12, err_msg=name)
