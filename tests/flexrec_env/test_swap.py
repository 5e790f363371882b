"""Tests of flexrec_env.swap: the closed form and the generic path against the definition, the per-step rewards."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flexrec_env.metrics import alpha_ndcg, dcg, discounts, gains, ideal_dcg, ndcg, recall
from flexrec_env.swap import (
    brute_force_swap_rewards,
    full_order,
    generic_step_rewards,
    marginal_reward,
    step_swap_reward,
    swap_coefficients,
    swap_rewards,
    swap_rewards_generic,
)

LOG2_3 = math.log2(3.0)


@st.composite
def swap_cases(draw):
    """(rankings (B, K), relevance (B, N), categories (B, N), k) with N in 2..9, K in 1..N, k in 1..N+2, grades 0..3."""
    n = draw(st.integers(2, 9))
    length = draw(st.integers(1, n))
    k = draw(st.integers(1, n + 2))
    batch = draw(st.integers(1, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    relevance = rng.integers(0, 4, size=(batch, n))
    if draw(st.booleans()):  # sparse relevance, so IDCG = 0 and ties show up often
        relevance = relevance * (rng.random((batch, n)) < 0.3)
    categories = rng.integers(0, 3, size=(batch, n))
    rankings = np.argsort(rng.random((batch, n)), axis=-1)[:, :length].astype(np.int64)
    return rankings, relevance, categories, k


def brute(metric, rankings, relevance, categories, k):
    return np.stack([brute_force_swap_rewards(metric, rankings[b], relevance[b], categories[b], k) for b in range(len(rankings))])


# --------------------------------------------------------------------------------------------------------------------
# The list-level swap rewards against the definition
# --------------------------------------------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(swap_cases())
def test_swap_rewards_closed_form_and_generic_equal_brute_force(case):
    rankings, relevance, categories, k = case
    expected = brute(ndcg, rankings, relevance, categories, k)
    closed = swap_rewards(rankings, relevance, k)
    generic = swap_rewards_generic(ndcg, rankings, relevance, categories, k)
    assert closed.shape == generic.shape == rankings.shape
    np.testing.assert_allclose(closed, expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(generic, expected, rtol=0, atol=1e-12)


@settings(max_examples=100, deadline=None)
@given(swap_cases())
def test_swap_rewards_generic_alpha_ndcg_equals_brute_force(case):
    rankings, relevance, categories, k = case
    expected = brute(alpha_ndcg, rankings, relevance, categories, k)
    np.testing.assert_allclose(swap_rewards_generic(alpha_ndcg, rankings, relevance, categories, k), expected, rtol=0, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(swap_cases())
def test_swap_rewards_generic_recall_equals_brute_force(case):
    rankings, relevance, categories, k = case
    expected = brute(recall, rankings, relevance, categories, k)
    np.testing.assert_allclose(swap_rewards_generic(recall, rankings, relevance, categories, k), expected, rtol=0, atol=1e-12)


@settings(max_examples=100, deadline=None)
@given(swap_cases())
def test_swap_coefficients_map_gains_to_the_brute_force_swap_rewards(case):
    rankings, relevance, categories, k = case
    idcg = ideal_dcg(relevance, k)
    linear = np.einsum("btn,bn->bt", swap_coefficients(rankings, relevance.shape[1], k), gains(relevance))
    linear = np.divide(linear, idcg[:, None], out=np.zeros_like(linear), where=idcg[:, None] > 0)
    np.testing.assert_allclose(linear, brute(ndcg, rankings, relevance, categories, k), atol=1e-12)


def test_swap_coefficients_hand_worked():
    # N = 3, K = 2, k = 2, list (1, 0), candidate 2 unplaced; d = (1, 1/log2 3). Position 1: m = 2 alternatives,
    # candidate 1 gets (2 d_1 - d_2) / 2, candidate 0 (d_2 - d_1) / 2, candidate 2 (0 - d_1) / 2. Position 2: m = 1,
    # candidate 0 gets d_2, candidate 2 (0 - d_2), candidate 1 (placed before) 0.
    d2 = 1 / LOG2_3
    expected = [[(d2 - 1) / 2, (2 - d2) / 2, -0.5], [d2, 0.0, -d2]]
    np.testing.assert_allclose(swap_coefficients(np.array([[1, 0]]), 3, 2)[0], expected)


def test_swap_rewards_hand_worked():
    # N=3, K=2, k=2. relevance [1, 0, 0] -> gains [1, 0, 0]; IDCG@2 = 1/log2(2) = 1.
    relevance = np.array([[1, 0, 0], [1, 0, 0]])
    rankings = np.array([[0, 1], [1, 0]])
    # Row 0, s = [0, 1]: f(s) = 1/1 + 0 = 1.
    #   t=1: P_1 = {0, 1, 2}, alternatives {1, 2}:
    #        j=1 is later in the list -> [1, 0]: f = 0 + 1/log2(3) = 0.6309298
    #        j=2 is unplaced            -> [2, 1]: f = 0
    #        r_1 = 1 - (0.6309298 + 0) / 2 = 0.6845351
    #   t=2: P_2 = {1, 2}, alternatives {2}: [0, 2]: f = 1 -> r_2 = 1 - 1 = 0
    # Row 1, s = [1, 0]: f(s) = 0 + 1/log2(3) = 0.6309298.
    #   t=1: alternatives {0, 2}: j=0 later -> [0, 1]: f = 1; j=2 unplaced -> [2, 0]: f = 0.6309298
    #        r_1 = 0.6309298 - (1 + 0.6309298) / 2 = -0.1845351
    #   t=2: alternatives {2}: [1, 2]: f = 0 -> r_2 = 0.6309298
    expected = np.array(
        [
            [1.0 - (1.0 / LOG2_3) / 2.0, 0.0],
            [1.0 / LOG2_3 - (1.0 + 1.0 / LOG2_3) / 2.0, 1.0 / LOG2_3],
        ]
    )
    np.testing.assert_allclose(expected, [[0.6845351, 0.0], [-0.1845351, 0.6309298]], rtol=0, atol=1e-7)
    categories = np.zeros_like(relevance)
    np.testing.assert_allclose(swap_rewards(rankings, relevance, 2), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(swap_rewards_generic(ndcg, rankings, relevance, categories, 2), expected, rtol=0, atol=1e-12)
    for b in range(2):
        np.testing.assert_allclose(
            brute_force_swap_rewards(ndcg, rankings[b], relevance[b], categories[b], 2), expected[b], rtol=0, atol=1e-12
        )


def test_swap_rewards_are_zero_without_alternatives_or_relevance():
    # a full list: the last position has no alternative, so its reward is 0 whatever its gain
    rankings, relevance = np.array([[2, 0, 1]]), np.array([[0, 0, 3]])
    assert swap_rewards(rankings, relevance, 3)[0, -1] == 0.0
    assert swap_rewards_generic(ndcg, rankings, relevance, np.zeros_like(relevance), 3)[0, -1] == 0.0
    assert swap_rewards(rankings, relevance, 3)[0, 0] > 0  # the best item first earns a positive reward
    # nothing relevant: IDCG = 0 -> all rewards 0 (no NaN)
    with np.errstate(all="raise"):
        out = swap_rewards(np.array([[0, 1]]), np.array([[0, 0, 0]]), 2)
    np.testing.assert_array_equal(out, [[0.0, 0.0]])
    # a single candidate: nothing to swap
    np.testing.assert_array_equal(swap_rewards(np.array([[0]]), np.array([[2]]), 1), [[0.0]])
    np.testing.assert_array_equal(swap_rewards_generic(ndcg, np.array([[0]]), np.array([[2]]), np.array([[0]]), 1), [[0.0]])


# --------------------------------------------------------------------------------------------------------------------
# full_order
# --------------------------------------------------------------------------------------------------------------------


def test_full_order_hand_example():
    # list [3, 1] over 5 candidates: the list, then the unplaced 0, 2, 4 in index order
    np.testing.assert_array_equal(full_order(np.array([[3, 1], [0, 4]]), 5), [[3, 1, 0, 2, 4], [0, 4, 1, 2, 3]])
    # an empty list is just the index order
    np.testing.assert_array_equal(full_order(np.zeros((1, 0), dtype=np.int64), 3), [[0, 1, 2]])


@settings(max_examples=100, deadline=None)
@given(swap_cases())
def test_full_order_puts_the_list_first_then_unplaced_in_index_order(case):
    rankings, relevance, _, _ = case
    n = relevance.shape[-1]
    order = full_order(rankings, n)
    assert order.shape == (len(rankings), n)
    for b in range(len(rankings)):
        listed = [int(x) for x in rankings[b]]
        assert [int(x) for x in order[b]] == listed + sorted(set(range(n)) - set(listed))


# --------------------------------------------------------------------------------------------------------------------
# Per-step rewards
# --------------------------------------------------------------------------------------------------------------------

finite = st.floats(0.0, 100.0, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(
    gain=finite,
    discount=st.floats(0.0, 1.0),
    pool=st.lists(finite, min_size=1, max_size=10),
    idcg=st.floats(1e-3, 1e3),
)
def test_step_swap_reward_equals_naive_formula_on_floats(gain, discount, pool, idcg):
    out = step_swap_reward(gain, discount, float(sum(pool)), len(pool), idcg)
    assert type(out) is float
    expected = discount * (gain - sum(pool) / len(pool)) / idcg
    assert out == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_step_swap_reward_hand_values():
    # G_t = 3, d_t = 1/log2(3), pool gains {0, 1, 7} -> mean 8/3; IDCG = 2:
    # (1/log2(3)) * (3 - 8/3) / 2 = 0.6309298 * (1/3) / 2 = 0.1051550
    out = step_swap_reward(3.0, 1.0 / LOG2_3, 8.0, 3, 2.0)
    assert out == pytest.approx((1.0 / LOG2_3) * (1.0 / 3.0) / 2.0, abs=1e-15)
    assert out == pytest.approx(0.1051550, abs=1e-7)
    # a worse-than-average item earns a negative reward: G_t = 0 -> 0.6309298 * (-8/3) / 2
    assert step_swap_reward(0.0, 1.0 / LOG2_3, 8.0, 3, 2.0) == pytest.approx(-(1.0 / LOG2_3) * 4.0 / 3.0, abs=1e-15)


def test_step_swap_reward_is_zero_without_pool_or_idcg():
    assert step_swap_reward(3.0, 1.0, 0.0, 0, 2.0) == 0.0  # no alternative
    assert step_swap_reward(3.0, 1.0, 5.0, 2, 0.0) == 0.0  # IDCG = 0
    assert step_swap_reward(3.0, 1.0, 0.0, 0, 0.0) == 0.0
    assert type(step_swap_reward(3.0, 1.0, 0.0, 0, 2.0)) is float
    assert type(step_swap_reward(3, 1, 5, 2, 0)) is float  # ints take the scalar path too
    assert step_swap_reward(np.float64(3.0), 1.0, 5.0, 2, np.float64(4.0)) == pytest.approx((3.0 - 2.5) / 4.0)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 8))
def test_step_swap_reward_on_arrays(seed, batch):
    rng = np.random.default_rng(seed)
    gain = rng.integers(0, 8, size=batch).astype(np.float64)
    discount = rng.random(batch)
    pool_size = rng.integers(0, 5, size=batch)
    pool_gain = np.array([rng.integers(0, 8, size=m).sum() for m in pool_size], dtype=np.float64)
    idcg = rng.random(batch) * 5 * (rng.random(batch) < 0.8)  # some zeros
    with np.errstate(all="raise"):
        out = step_swap_reward(gain, discount, pool_gain, pool_size, idcg)
    assert isinstance(out, np.ndarray) and out.shape == (batch,)
    for b in range(batch):
        if pool_size[b] == 0 or idcg[b] == 0:
            assert out[b] == 0.0
        else:
            expected = discount[b] * (gain[b] - pool_gain[b] / pool_size[b]) / idcg[b]
            assert out[b] == pytest.approx(expected, rel=1e-12, abs=1e-12)
    # scalar discount, per-row everything else (the env passes one discount per step)
    out = step_swap_reward(gain, 0.5, pool_gain, pool_size, idcg)
    assert out.shape == (batch,)
    np.testing.assert_allclose(out, step_swap_reward(gain, np.full(batch, 0.5), pool_gain, pool_size, idcg), rtol=0, atol=0)


def test_step_swap_reward_on_arrays_with_scalar_pool_and_idcg():
    # The docstring promises arrays with broadcasting; a scalar pool_size and IDCG with array gains is such a case.
    gain, pool_gain = np.array([1.0, 3.0]), np.array([2.0, 2.0])
    # expected: 0.5 * (G - 2/2) / 4 -> [0, 0.25]
    out = step_swap_reward(gain, 0.5, pool_gain, 2, 4.0)
    np.testing.assert_allclose(out, [0.0, 0.25], rtol=0, atol=1e-15)
    np.testing.assert_allclose(marginal_reward(gain, 0.5, 4.0), [0.125, 0.375], rtol=0, atol=1e-15)


def test_marginal_reward_floats_and_zero_idcg():
    assert marginal_reward(3.0, 0.5, 2.0) == pytest.approx(0.75)
    assert type(marginal_reward(3.0, 0.5, 2.0)) is float
    assert marginal_reward(3.0, 0.5, 0.0) == 0.0
    np.testing.assert_array_equal(marginal_reward(np.array([3.0, 1.0]), 0.5, np.array([2.0, 0.0])), [0.75, 0.0])


@settings(max_examples=100, deadline=None)
@given(swap_cases())
def test_marginal_rewards_sum_to_ndcg(case):
    rankings, relevance, _, k = case
    length = rankings.shape[1]
    g = gains(np.take_along_axis(relevance, rankings, axis=-1))  # (B, K)
    d = discounts(length, k)  # (K,)
    idcg = ideal_dcg(relevance, k)  # (B,)
    expected = ndcg(rankings, relevance, k=k)
    # array path: one call per step, summed over the list
    total = sum(marginal_reward(g[:, t], d[t], idcg) for t in range(length))
    np.testing.assert_allclose(total, expected, rtol=0, atol=1e-12)
    # float path, row by row
    for b in range(len(rankings)):
        scalar_total = sum(marginal_reward(float(g[b, t]), float(d[t]), float(idcg[b])) for t in range(length))
        assert scalar_total == pytest.approx(float(expected[b]), abs=1e-12)


@st.composite
def step_cases(draw):
    """A batch mid-episode: (prefix (B, t), action (B,), placed (B, N), relevance, categories, k)."""
    n = draw(st.integers(1, 9))
    t = draw(st.integers(0, n - 1))
    k = draw(st.integers(1, n + 2))
    batch = draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    relevance = rng.integers(0, 4, size=(batch, n)) * (rng.random((batch, n)) < draw(st.sampled_from([0.2, 1.0])))
    categories = rng.integers(0, 3, size=(batch, n))
    orders = np.argsort(rng.random((batch, n)), axis=-1).astype(np.int64)
    prefix, action = orders[:, :t], orders[:, t]
    placed = np.zeros((batch, n), dtype=bool)
    np.put_along_axis(placed, prefix, True, axis=-1)
    return prefix, action, placed, relevance, categories, k


@settings(max_examples=150, deadline=None)
@given(step_cases())
def test_step_swap_reward_generic_ndcg_equals_closed_form(case):
    prefix, action, placed, relevance, categories, k = case
    batch, n = placed.shape
    t = prefix.shape[1]
    g_all = gains(relevance)
    pool = ~placed
    pool[np.arange(batch), action] = False  # the alternatives P_t \ {s_t}
    pool_gain = (g_all * pool).sum(axis=-1)
    pool_size = pool.sum(axis=-1)
    assert np.all(pool_size == n - 1 - t)
    discount = discounts(t + 1, k)[t]
    expected = step_swap_reward(g_all[np.arange(batch), action], discount, pool_gain, pool_size, ideal_dcg(relevance, k))
    placed_before = placed.copy()
    out, _ = generic_step_rewards(ndcg, prefix, action, placed, relevance, categories, k)
    np.testing.assert_array_equal(placed, placed_before)  # the mask is not modified
    assert out.shape == (batch,)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)


@settings(max_examples=100, deadline=None)
@given(step_cases())
def test_step_swap_reward_generic_alpha_ndcg_equals_definition(case):
    prefix, action, placed, relevance, categories, k = case
    out, marginal = generic_step_rewards(alpha_ndcg, prefix, action, placed, relevance, categories, k)
    n = placed.shape[1]
    for b in range(len(out)):
        before = [int(x) for x in prefix[b]]

        def f(item, b=b, before=before):
            return float(alpha_ndcg(np.array(before + [item]), relevance[b], categories[b], k=k))

        alternatives = [j for j in range(n) if j not in before and j != int(action[b])]
        expected = f(int(action[b])) - np.mean([f(j) for j in alternatives]) if alternatives else 0.0
        assert out[b] == pytest.approx(expected, abs=1e-12)
        f_prefix = float(alpha_ndcg(np.array([before]), relevance[b][None], categories[b][None], k=k)[0]) if before else 0.0
        assert marginal[b] == pytest.approx(f(int(action[b])) - f_prefix, abs=1e-12)


def test_step_swap_reward_generic_hand_example():
    # N=3, k=2, relevance [1, 0, 0]; nothing placed yet (t=0), action 1:
    # f([1]) = 0; alternatives {0, 2}: f([0]) = 1 / IDCG = 1, f([2]) = 0 -> r = 0 - 1/2 = -0.5
    # second row: prefix [1], action 0 at position 2: f([1, 0]) = 1/log2(3); alternative {2}: f([1, 2]) = 0
    relevance, categories = np.array([[1, 0, 0]]), np.zeros((1, 3), dtype=np.int64)
    out, _ = generic_step_rewards(
        ndcg, np.zeros((1, 0), dtype=np.int64), np.array([1]), np.zeros((1, 3), bool), relevance, categories, 2
    )
    np.testing.assert_allclose(out, [-0.5], rtol=0, atol=1e-15)
    out, _ = generic_step_rewards(
        ndcg, np.array([[1]]), np.array([0]), np.array([[False, True, False]]), relevance, categories, 2
    )
    np.testing.assert_allclose(out, [1.0 / LOG2_3], rtol=0, atol=1e-15)
    # the last item (no alternative left) earns 0
    out, _ = generic_step_rewards(
        ndcg, np.array([[1, 0]]), np.array([2]), np.array([[True, True, False]]), relevance, categories, 2
    )
    np.testing.assert_array_equal(out, [0.0])


def test_step_rewards_match_list_dcg_when_alternatives_are_unplaced():
    # When every alternative is unplaced (the last step of a list of length K < N), the step reward equals the
    # exact list swap reward of that position: D_u = 0 for all alternatives.
    rng = np.random.default_rng(7)
    relevance = rng.integers(0, 4, size=(50, 8))
    rankings = np.argsort(rng.random((50, 8)), axis=-1)[:, :4]
    k = 5
    g_all = gains(relevance)
    placed = np.zeros((50, 8), dtype=bool)
    np.put_along_axis(placed, rankings, True, axis=-1)
    pool_gain = (g_all * ~placed).sum(axis=-1)
    step = step_swap_reward(g_all[np.arange(50), rankings[:, -1]], discounts(4, k)[3], pool_gain, 8 - 4, ideal_dcg(relevance, k))
    np.testing.assert_allclose(step, swap_rewards(rankings, relevance, k)[:, -1], rtol=0, atol=1e-12)
    # and DCG of the list is what the marginal rewards add up to
    np.testing.assert_allclose(
        sum(g_all[np.arange(50), rankings[:, t]] * discounts(4, k)[t] for t in range(4)), dcg(rankings, relevance, k), atol=1e-12
    )
