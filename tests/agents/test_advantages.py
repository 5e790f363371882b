"""Advantage estimators and confidence weights against hand-worked answers."""

import numpy as np
import pytest

from agents.advantages import (
    confidence_weights,
    flexrec_advantages,
    group_normalise,
    list_advantages,
    relative_uncertainty,
    swap_advantages,
)


def test_list_advantages_share_the_group_normalised_list_reward_across_positions():
    # Group of two: rewards 1 and 0 -> mean 0.5, std 0.5 -> +1 and -1 at every position.
    advantages = list_advantages(np.array([[1.0, 0.0]]), length=3)
    assert advantages.shape == (1, 2, 3)
    np.testing.assert_allclose(advantages[0, 0], [1, 1, 1], atol=1e-6)
    np.testing.assert_allclose(advantages[0, 1], [-1, -1, -1], atol=1e-6)


def test_swap_advantages_normalise_each_position_across_the_group():
    rewards = np.array([[[0.3, 0.1], [0.1, 0.1], [0.2, 0.1]]])  # (B=1, G=3, K=2); position 2 is a tie
    advantages = swap_advantages(rewards)
    std = np.std([0.3, 0.1, 0.2])
    np.testing.assert_allclose(advantages[0, :, 0], [0.1 / std, -0.1 / std, 0.0], atol=1e-6)
    np.testing.assert_allclose(advantages[0, :, 1], 0.0, atol=1e-12)  # no spread: no signal


def test_swap_advantages_credit_positions_separately_where_list_advantages_cannot():
    # Ranking 0 is better at position 1, ranking 1 at position 2, and their list rewards tie.
    swap = np.array([[[0.2, 0.0], [0.0, 0.2]]])
    assert np.all(list_advantages(swap.sum(-1), 2) == 0)
    advantages = swap_advantages(swap)
    assert advantages[0, 0, 0] > 0 > advantages[0, 1, 0] and advantages[0, 1, 1] > 0 > advantages[0, 0, 1]


def test_group_normalise_of_a_group_of_one_is_zero():
    np.testing.assert_array_equal(group_normalise(np.array([[[0.7, 0.2]]])), 0.0)


@pytest.mark.parametrize("form", ["sigmoid", "inverse-variance"])
def test_confidence_weights_are_one_without_uncertainty_and_decrease_with_it(form):
    u = np.array([0.0, 0.1, 0.5, 1.0, 2.0, 5.0, 50.0, 1e6])
    w = confidence_weights(u, form)
    assert w[0] == pytest.approx(1.0)
    assert np.all(np.diff(w) <= 1e-12) and np.all(w > 0) and np.all(w <= 1)
    assert w[-1] < w[2]


def test_confidence_weight_forms_by_hand():
    # sigmoid(-u) + 0.5: u = 0 -> 1, u = ln 3 -> 1/4 + 1/2, u -> inf -> 1/2.
    np.testing.assert_allclose(confidence_weights(np.array([0.0, np.log(3.0), 1e9]), "sigmoid"), [1.0, 0.75, 0.5])
    # clamp(1 / u**2, floor, 1): flat at 1 up to u = 1, then 1/4 at u = 2, floor at large u.
    np.testing.assert_allclose(confidence_weights(np.array([0.5, 1.0, 2.0, 100.0]), "inverse-variance"), [1, 1, 0.25, 0.05])
    with pytest.raises(ValueError, match="weight form 'cubic'; allowed"):
        confidence_weights(np.zeros(2), "cubic")


def test_flexrec_advantages_equal_swap_advantages_when_the_critic_is_certain():
    rng = np.random.default_rng(0)
    rewards = rng.normal(size=(4, 5, 3))
    advantages, weights = flexrec_advantages(rewards, np.zeros_like(rewards))
    np.testing.assert_allclose(advantages, swap_advantages(rewards))
    np.testing.assert_allclose(weights, 1.0)


def test_flexrec_advantages_shrink_uncertain_positions_relative_to_the_reward_spread():
    rewards = np.array([[[1.0, 1.0], [0.0, 0.0]]])  # spread 0.5 at both positions
    std = np.array([[[0.0, 0.5], [0.0, 0.5]]])  # position 2 as uncertain as the spread
    np.testing.assert_allclose(relative_uncertainty(rewards, std)[0, 0], [0.0, 1.0], atol=1e-6)
    advantages, weights = flexrec_advantages(rewards, std)
    assert weights[0, 0, 0] == pytest.approx(1.0)
    assert weights[0, 0, 1] == pytest.approx(1 / (1 + np.e) + 0.5, rel=1e-6)
    assert abs(advantages[0, 0, 1]) < abs(advantages[0, 0, 0])
    # Scaling the rewards and the std together changes nothing: the weight is scale-free.
    scaled, _ = flexrec_advantages(10 * rewards, 10 * std)
    np.testing.assert_allclose(scaled, advantages, atol=1e-6)
