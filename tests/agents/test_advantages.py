"""Advantage estimators, confidence weights and position weights against hand-worked answers."""

from typing import get_args

import numpy as np
import pytest

from agents.advantages import (
    ESTIMATORS,
    WEIGHTS,
    Estimator,
    Rewards,
    Weight,
    confidence_weights,
    flexrec_advantages,
    group_normalise,
    list_advantages,
    position_weights,
    relative_uncertainty,
    swap_advantages,
)
from agents.trainer import TrainerConfig
from scenarios.settings import field_types


def rewards(swap, list_rewards=None, critic=None, std=None) -> Rewards:
    swap = np.asarray(swap, dtype=float)
    list_rewards = swap.sum(-1) if list_rewards is None else np.asarray(list_rewards, dtype=float)
    return Rewards(list_rewards, swap, critic, std)


def test_list_advantages_share_the_group_normalised_list_reward_across_positions():
    # Group of two: rewards 1 and 0 -> mean 0.5, std 0.5 -> +1 and -1 at every position.
    advantages, weights = list_advantages(rewards(np.zeros((1, 2, 3)), [[1.0, 0.0]]))
    assert advantages.shape == (1, 2, 3)
    np.testing.assert_allclose(advantages[0, 0], [1, 1, 1], atol=1e-6)
    np.testing.assert_allclose(advantages[0, 1], [-1, -1, -1], atol=1e-6)
    np.testing.assert_array_equal(weights, 1.0)


def test_swap_advantages_normalise_each_position_across_the_group():
    swap = np.array([[[0.3, 0.1], [0.1, 0.1], [0.2, 0.1]]])  # (B=1, G=3, K=2); position 2 is a tie
    advantages, _ = swap_advantages(rewards(swap))
    std = np.std([0.3, 0.1, 0.2])
    np.testing.assert_allclose(advantages[0, :, 0], [0.1 / std, -0.1 / std, 0.0], atol=1e-6)
    np.testing.assert_allclose(advantages[0, :, 1], 0.0, atol=1e-12)  # no spread: no signal


def test_swap_advantages_credit_positions_separately_where_list_advantages_cannot():
    # Ranking 0 is better at position 1, ranking 1 at position 2, and their list rewards tie.
    swap = np.array([[[0.2, 0.0], [0.0, 0.2]]])
    assert np.all(list_advantages(rewards(swap))[0] == 0)
    advantages, _ = swap_advantages(rewards(swap))
    assert advantages[0, 0, 0] > 0 > advantages[0, 1, 0] and advantages[0, 1, 1] > 0 > advantages[0, 0, 1]


def test_estimators_are_looked_up_by_name():
    # the registry holds one estimator per choice of the Literal that TrainerConfig.advantage is annotated with
    assert list(ESTIMATORS) == list(get_args(Estimator)) == ["list", "swap", "flexrec"]
    assert field_types(TrainerConfig)["advantage"] is Estimator
    swap = np.random.default_rng(0).normal(size=(2, 3, 4))
    np.testing.assert_array_equal(ESTIMATORS["swap"](rewards(swap), "shrinkage", 1.0)[0], swap_advantages(rewards(swap))[0])


def test_group_normalise_of_a_group_of_one_is_zero():
    np.testing.assert_array_equal(group_normalise(np.array([[[0.7, 0.2]]])), 0.0)


@pytest.mark.parametrize("form", ["shrinkage", "sigmoid"])
def test_confidence_weights_are_one_without_uncertainty_and_decrease_with_it(form):
    u = np.array([0.0, 0.1, 0.5, 1.0, 2.0, 5.0, 50.0, 1e6])
    w = confidence_weights(u, form)
    assert w[0] == pytest.approx(1.0)
    assert np.all(np.diff(w) <= 1e-12) and np.all(w > 0) and np.all(w <= 1)
    assert w[-1] < w[2]


def test_confidence_weight_forms_by_hand():
    assert WEIGHTS == get_args(Weight) == ("shrinkage", "sigmoid", "none") and field_types(TrainerConfig)["weight"] is Weight
    # shrinkage 1 / (1 + u**2): 1, 1/2 at u = 1, 1/5 at u = 2, near 0 where the critic knows nothing.
    np.testing.assert_allclose(confidence_weights(np.array([0.0, 1.0, 2.0, 1e3]), "shrinkage"), [1.0, 0.5, 0.2, 1e-6], rtol=1e-6)
    # sigmoid(-u) + 0.5: u = 0 -> 1, u = ln 3 -> 1/4 + 1/2, u -> inf -> 1/2 (never below a half).
    np.testing.assert_allclose(confidence_weights(np.array([0.0, np.log(3.0), 1e9]), "sigmoid"), [1.0, 0.75, 0.5])
    np.testing.assert_array_equal(confidence_weights(np.array([0.0, 7.0]), "none"), [1.0, 1.0])
    # The temperature scales u.
    np.testing.assert_allclose(confidence_weights(np.array([1.0]), "shrinkage", temperature=2.0), [0.2])
    with pytest.raises(ValueError, match="weight='cubic'; allowed"):
        confidence_weights(np.zeros(2), "cubic")  # type: ignore[arg-type]


def test_flexrec_advantages_equal_swap_advantages_when_the_critic_is_certain():
    swap = np.random.default_rng(0).normal(size=(4, 5, 3))
    advantages, weights = flexrec_advantages(rewards(swap, critic=swap, std=np.zeros_like(swap)))
    np.testing.assert_allclose(advantages, swap_advantages(rewards(swap))[0])
    np.testing.assert_allclose(weights, 1.0)


def test_flexrec_advantages_shrink_uncertain_positions_relative_to_the_reward_spread():
    critic = np.array([[[1.0, 1.0], [0.0, 0.0]]])  # spread 0.5 at both positions
    std = np.array([[[0.0, 0.5], [0.0, 0.5]]])  # position 2 as uncertain as the spread
    np.testing.assert_allclose(relative_uncertainty(critic, std)[0, 0], [0.0, 1.0], atol=1e-6)
    advantages, weights = flexrec_advantages(rewards(np.zeros_like(critic), critic=critic, std=std))
    assert weights[0, 0, 0] == pytest.approx(1.0)
    assert weights[0, 0, 1] == pytest.approx(0.5, rel=1e-6)  # shrinkage at u = 1
    assert abs(advantages[0, 0, 1]) == pytest.approx(0.5 * abs(advantages[0, 0, 0]), rel=1e-6)
    # Scaling the rewards and the std together changes nothing: the weight is scale-free.
    scaled, _ = flexrec_advantages(rewards(np.zeros_like(critic), critic=10 * critic, std=10 * std))
    np.testing.assert_allclose(scaled, advantages, atol=1e-6)
    without, unit = flexrec_advantages(rewards(np.zeros_like(critic), critic=critic, std=std), weight="none")
    np.testing.assert_array_equal(unit, 1.0)
    np.testing.assert_allclose(without, group_normalise(critic))


def test_flexrec_advantages_need_the_critic():
    with pytest.raises(ValueError, match="critic_rewards"):
        flexrec_advantages(rewards(np.zeros((1, 2, 2))))


def test_position_weights_follow_the_discount_of_ndcg_at_k():
    # K = 3, k = 2: discounts 1, 1/log2(3), 0 -> normalised to mean 1.
    d = np.array([1.0, 1.0 / np.log2(3.0), 0.0])
    np.testing.assert_allclose(position_weights(3, 2), d / d.mean())
    np.testing.assert_array_equal(position_weights(3, 2, "uniform"), 1.0)
    with pytest.raises(ValueError, match="position_weight='linear'"):
        position_weights(3, 2, "linear")  # type: ignore[arg-type]
