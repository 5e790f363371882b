"""The embedded synthetic scenario: shapes, ranges, determinism, and the candidate mix."""

from __future__ import annotations

import numpy as np
import pytest

from scenarios import SyntheticConfig, SyntheticScenario, available_scenarios, make_scenario
from scenarios.tools import alias_draw, alias_table, percentile_ranks, successive_sample, weighted_sample


@pytest.fixture(scope="module")
def scenario():
    return SyntheticScenario()


def test_request_shapes_ranges_and_distinct_candidates(scenario):
    batch = scenario.sample_requests(np.random.default_rng(0), 64, 20)
    assert batch.candidates.shape == (64, 20) and batch.candidate_features.shape == (64, 20, scenario.candidate_feature_dim)
    assert batch.user_features.shape == (64, scenario.user_feature_dim)
    assert batch.candidate_features.dtype == np.float32 and batch.user_features.dtype == np.float32
    assert ((batch.candidates >= 0) & (batch.candidates < scenario.num_items)).all()
    assert all(len(set(row)) == 20 for row in batch.candidates)
    for signal in (batch.popularity, batch.recent_popularity, batch.freshness):
        assert ((signal >= 0) & (signal <= 1)).all()
    assert set(np.unique(batch.interest)) <= {0, 1, 2}
    for user, candidates, history in zip(batch.user_ids, batch.candidates, batch.history, strict=True):
        assert not set(candidates) & set(history)  # consumed items are not recommended again
        np.testing.assert_array_equal(history, scenario.histories[user])


def test_same_generator_same_requests(scenario):
    a = scenario.sample_requests(np.random.default_rng(5), 8, 20)
    b = scenario.sample_requests(np.random.default_rng(5), 8, 20)
    np.testing.assert_array_equal(a.candidates, b.candidates)
    np.testing.assert_array_equal(a.candidate_features, b.candidate_features)
    assert not np.array_equal(a.candidates, scenario.sample_requests(np.random.default_rng(6), 8, 20).candidates)


def test_world_seed_is_separate_from_request_seed():
    world_a, world_b = SyntheticScenario(seed=1), SyntheticScenario(seed=2)
    assert not np.array_equal(world_a.item_latent, world_b.item_latent)
    np.testing.assert_array_equal(world_a.item_latent, SyntheticScenario(seed=1).item_latent)


def test_candidates_mix_positives_and_hard_negatives(scenario):
    batch = scenario.sample_requests(np.random.default_rng(0), 400, 20)
    interesting = (batch.interest > 0).mean()
    assert 0.25 < interesting < 0.7  # positives for every need, but not only positives
    trending_uninteresting = ((batch.recent_popularity >= 0.8) & (batch.interest == 0)).mean()
    assert trending_uninteresting > 0.1  # popularity alone does not solve trending


def test_trending_differs_from_popular(scenario):
    batch = scenario.sample_requests(np.random.default_rng(0), 200, 20)
    corr = np.corrcoef(batch.popularity.ravel(), batch.recent_popularity.ravel())[0, 1]
    assert corr < 0.9
    assert ((batch.recent_popularity >= 0.8) & (batch.popularity < 0.5)).any()


def test_alias_table_samples_in_proportion():
    weights = np.array([0.0, 1.0, 2.0, 4.0, 0.0, 3.0])
    prob, alias = alias_table(weights)
    rng = np.random.default_rng(0)
    column = rng.integers(0, len(weights), 200_000)
    draws = np.where(rng.random(200_000) < prob[column], column, alias[column])
    np.testing.assert_allclose(np.bincount(draws, minlength=6) / 200_000, weights / weights.sum(), atol=0.005)


def test_registry_and_errors():
    assert "synthetic" in available_scenarios()
    assert make_scenario("synthetic", {"num_items": 300}).num_items == 300
    with pytest.raises(ValueError, match="unknown synthetic parameter.*'items'"):
        make_scenario("synthetic", {"items": 3})
    with pytest.raises(ValueError, match="num_users=0"):
        SyntheticConfig(num_users=0)
    with pytest.raises(ValueError, match="num_candidates=20"):
        SyntheticScenario(num_items=12).sample_requests(np.random.default_rng(0), 4, 20)


def test_percentile_ranks_share_ties():
    np.testing.assert_allclose(percentile_ranks(np.array([3.0, 1.0, 1.0, 2.0, 5.0])), [0.75, 0.125, 0.125, 0.5, 1.0])
    valid = np.array([[True, True, False], [True, True, True]])
    np.testing.assert_allclose(
        percentile_ranks(np.array([[3.0, 1.0, 2.0], [1.0, 1.0, 1.0]]), valid), [[1, 0, 0], [0.5, 0.5, 0.5]]
    )


def sequential_probabilities(weights: np.ndarray, count: int) -> dict[tuple[int, ...], float]:
    """Brute force: the probability of every ordered draw of ``count`` items without replacement, by the weights."""
    out: dict[tuple[int, ...], float] = {}

    def walk(prefix: tuple[int, ...], p: float) -> None:
        if len(prefix) == count:
            out[prefix] = p
            return
        left = [i for i in range(len(weights)) if i not in prefix and weights[i] > 0]
        total = sum(weights[i] for i in left)
        for i in left:
            walk((*prefix, i), p * weights[i] / total)

    walk((), 1.0)
    return out


@pytest.mark.parametrize("rounds", [0, 12])
def test_successive_and_exact_sampling_draw_in_order_by_weight(rounds):
    """Successive sampling (rounds=12) and the exact fallback alone (rounds=0) give the brute-force law of ordered
    draws without replacement (proposal 1, 2, 3, 0, 4 times acceptance 1, 1, 1/2, 1, 1)."""
    proposal, acceptance = np.array([1.0, 2.0, 3.0, 0.0, 4.0]), np.array([1.0, 1.0, 0.5, 1.0, 1.0])
    prob, alias = alias_table(proposal)
    rng, rows = np.random.default_rng(1), 40_000

    def propose(todo, m):
        return alias_draw(prob, alias, rng.random((len(todo), m)), rng.random((len(todo), m)))

    def accept(todo, draws):
        return rng.random(draws.shape) < acceptance[draws]

    items = successive_sample(rows, 2, propose, accept, rng, lambda todo: np.tile(proposal * acceptance, (len(todo), 1)), rounds)
    expected = sequential_probabilities(proposal * acceptance, 2)
    pairs, counts = np.unique(items, axis=0, return_counts=True)
    assert {tuple(p) for p in pairs.tolist()} <= set(expected)
    for pair, n in zip(pairs.tolist(), counts, strict=True):
        assert n / rows == pytest.approx(expected[tuple(pair)], abs=0.01), pair


def test_weighted_sample_refuses_rows_without_enough_eligible_items():
    with pytest.raises(ValueError, match="row 1 has only 1"):
        weighted_sample(np.random.default_rng(0), np.array([[1.0, 2.0, 0.0], [0.0, 0.0, 5.0]]), 2)


def test_candidate_sets_up_to_the_limit_cost_little(scenario):
    """At max_candidates (every eligible item of the worst request) the sampler switches to the exact draw."""
    limit = scenario.max_candidates()
    assert 0 < limit < scenario.num_items
    batch = scenario.sample_requests(np.random.default_rng(0), 32, limit)
    assert batch.candidates.shape == (32, limit) and all(len(set(row)) == limit for row in batch.candidates.tolist())
    with pytest.raises(ValueError, match="too few eligible items"):
        scenario.sample_requests(np.random.default_rng(0), 2000, limit + 40)
