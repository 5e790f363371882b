"""The off-policy estimators: unbiased on a case enumerated by hand, self-normalised weights, intervals."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from agents.behaviour import BehaviourConfig, explore
from agents.off_policy import cascade_ips, importance_weights, ips, on_policy, self_normalised_weights, snips

# 3 candidates, lists of 2: the 6 ordered slates. The behaviour is epsilon-greedy (epsilon 0.6) and the target a
# softmax (T = 1) over the scores of a ranking 0 > 1 > 2; each slate has a value and per-position rewards.
SCORES = np.array([0.0, -1.0, -2.0])
BEHAVIOUR = BehaviourConfig("epsilon-greedy", epsilon=0.6)
TARGET = BehaviourConfig("softmax", temperature=1.0)
SLATES = list(itertools.permutations(range(3), 2))
REWARDS = {s: (0.1 * (s[0] + 1), 0.05 * (3 - s[1])) for s in SLATES}  # r_1 depends on s_1, r_2 on s_2


def step_probabilities(slate: tuple[int, int], config: BehaviourConfig) -> tuple[float, float]:
    first = explore(SCORES, config)[slate[0]]
    second = explore(np.where(np.arange(3) == slate[0], -np.inf, SCORES), config)[slate[1]]
    return float(first), float(second)


def test_the_step_probabilities_are_those_worked_out_by_hand():
    # epsilon-greedy: 0.4 + 0.6/3 for the best, 0.6/3 for the others; then 0.4 + 0.6/2 or 0.6/2 among the two left
    assert step_probabilities((0, 1), BEHAVIOUR) == pytest.approx((0.6, 0.7))
    assert step_probabilities((2, 0), BEHAVIOUR) == pytest.approx((0.2, 0.7))
    assert step_probabilities((1, 2), BEHAVIOUR) == pytest.approx((0.2, 0.3))
    z = 1 + np.exp(-1) + np.exp(-2)  # softmax of 0, -1, -2
    assert step_probabilities((1, 0), TARGET) == pytest.approx((np.exp(-1) / z, 1 / (1 + np.exp(-2))))
    for config in (BEHAVIOUR, TARGET):  # each distribution over the 6 slates sums to 1
        assert sum(np.prod(step_probabilities(s, config)) for s in SLATES) == pytest.approx(1.0)


def test_ips_and_cascade_ips_are_unbiased_by_enumeration():
    """The exact expectation over logs drawn by the behaviour equals the target's true value (logs of 1 and 2 lists)."""
    mu = {s: step_probabilities(s, BEHAVIOUR) for s in SLATES}
    pi = {s: step_probabilities(s, TARGET) for s in SLATES}
    value = {s: sum(REWARDS[s]) for s in SLATES}
    truth = sum(np.prod(pi[s]) * value[s] for s in SLATES)
    for size in (1, 2):
        expected_ips = expected_cascade = expected_snips = 0.0
        for log in itertools.product(SLATES, repeat=size):
            probability = np.prod([np.prod(mu[s]) for s in log])
            values = [value[s] for s in log]
            list_pi, list_mu = [np.prod(pi[s]) for s in log], [np.prod(mu[s]) for s in log]
            expected_ips += probability * ips(values, list_pi, list_mu, reps=1).value
            expected_snips += probability * snips(values, list_pi, list_mu, reps=1).value
            steps = [REWARDS[s] for s in log], [pi[s] for s in log], [mu[s] for s in log]
            expected_cascade += probability * cascade_ips(*steps, reps=1).value
        assert expected_ips == pytest.approx(truth, rel=1e-12)
        assert expected_cascade == pytest.approx(truth, rel=1e-12)
        if size == 1:  # one list: SNIPS is its value, so its expectation is the behaviour's value, not the target's
            behaviour_value = sum(np.prod(mu[s]) * value[s] for s in SLATES)
            assert expected_snips == pytest.approx(behaviour_value) and abs(expected_snips - truth) > 0.01


def test_the_importance_weights_average_to_one_under_the_behaviour():
    target = [np.prod(step_probabilities(s, TARGET)) for s in SLATES]
    behaviour = [np.prod(step_probabilities(s, BEHAVIOUR)) for s in SLATES]
    weights = importance_weights(target, behaviour)
    assert weights.shape == (len(SLATES),) and float(np.dot(behaviour, weights)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="the behaviour's > 0"):
        importance_weights(target, [0.0, *behaviour[1:]])


def test_self_normalised_weights_sum_to_one_and_snips_is_their_weighted_mean():
    rng = np.random.default_rng(0)
    values, pi, mu = rng.random(50), rng.random(50), rng.random(50) + 0.1
    weights = importance_weights(pi, mu)
    normalised = self_normalised_weights(weights)
    assert normalised.sum() == pytest.approx(1.0) and np.all(normalised >= 0)
    assert snips(values, pi, mu).value == pytest.approx(float(normalised @ values))
    assert snips(values, 3 * pi, mu).value == pytest.approx(snips(values, pi, mu).value)  # scale-free
    assert ips(values, 3 * pi, mu).value == pytest.approx(3 * ips(values, pi, mu).value)  # IPS is not


def test_the_target_as_its_own_behaviour_gives_the_plain_mean_with_full_sample_size():
    rng = np.random.default_rng(1)
    values, mu = rng.random(200), rng.random(200) + 0.05
    plain = on_policy(values)
    for estimate in (ips(values, mu, mu), snips(values, mu, mu)):
        assert estimate.value == pytest.approx(values.mean())
        assert estimate.effective_sample_size == pytest.approx(200)
        assert (estimate.low, estimate.high) == pytest.approx((plain.low, plain.high))
    assert plain.low < values.mean() < plain.high


def test_bad_propensities_are_refused():
    with pytest.raises(ValueError, match="behaviour's > 0"):
        ips([1.0], [0.5], [0.0])
    with pytest.raises(ValueError, match="same shape"):
        ips([1.0, 2.0], [0.5, 0.5], [0.5])
    with pytest.raises(ValueError, match="every importance weight is 0"):
        self_normalised_weights([0.0, 0.0])
