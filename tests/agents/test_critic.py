"""The uncertainty-aware critic: completed swap rewards by hand and against the env, and learning its NLL."""

import numpy as np
import pytest
import torch

from agents.critic import (
    CriticConfig,
    UncertaintyCritic,
    calibration,
    completed_gains,
    completed_swap_rewards,
    gaussian_nll,
)
from flexrec_env.swap import swap_rewards


def test_completed_swap_rewards_by_hand():
    # N = 3, K = k = 1, ranking [0]: r = (g0 - (g1 + g2) / 2) / IDCG. Item 0 observed with gain 1, item 1 observed
    # with gain 0, item 2 unobserved with predicted gain 0 and variance 1 -> IDCG = 1, r = 1, std = 0.5.
    gain, var = completed_gains(np.array([[1.0, 0.0, 0.0]]), np.array([[True, True, False]]), np.zeros((1, 3)), np.ones((1, 3)))
    np.testing.assert_array_equal(gain, [[1.0, 0.0, 0.0]])
    np.testing.assert_array_equal(var, [[0.0, 0.0, 1.0]])
    mean, std = completed_swap_rewards(np.array([[[0]]]), gain, var, k=1)
    assert mean[0, 0, 0] == pytest.approx(1.0) and std[0, 0, 0] == pytest.approx(0.5)


def test_completed_swap_rewards_equal_the_env_swap_rewards_when_everything_is_observed():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, size=(5, 8)).astype(float)
    rankings = np.stack([np.argsort(rng.random((3, 8)), axis=1)[:, :4] for _ in range(5)])  # (B=5, G=3, K=4)
    observed = np.ones_like(labels, dtype=bool)
    gain, var = completed_gains(labels, observed, rng.random(labels.shape), rng.random(labels.shape))
    mean, std = completed_swap_rewards(rankings, gain, var, k=3)
    expected = swap_rewards(rankings.reshape(15, 4), np.repeat(labels, 3, axis=0), 3).reshape(5, 3, 4)
    np.testing.assert_allclose(mean, expected, atol=1e-12)
    np.testing.assert_array_equal(std, 0.0)


def test_reward_std_grows_with_the_unobserved_candidates_variance():
    labels, observed = np.array([[2.0, 0.0, 1.0, 0.0]]), np.array([[True, False, True, False]])
    rankings = np.array([[[0, 1]]])
    stds = [
        completed_swap_rewards(rankings, *completed_gains(labels, observed, np.zeros((1, 4)), np.full((1, 4), v)), k=2)[1]
        for v in (0.0, 0.1, 1.0)
    ]
    assert stds[0].max() == 0 and np.all(stds[1] > 0) and np.all(stds[2] > stds[1])


def test_gaussian_nll_and_calibration_by_hand():
    nll = gaussian_nll(torch.tensor(0.0), torch.tensor(1.0), torch.tensor(1.0))
    assert float(nll) == pytest.approx(0.5 * (np.log(2 * np.pi) + 1))
    within_1, within_2 = calibration(np.zeros(4), np.ones(4), np.array([0.5, -1.5, 3.0, 0.0]))
    assert (within_1, within_2) == (0.5, 0.75)


def test_critic_learns_a_heteroscedastic_task_and_its_nll_falls():
    torch.manual_seed(0)
    x = torch.rand(2000, 1) * 2 - 1
    noise_std = 0.05 + 0.5 * (x[:, 0] > 0)  # noisy on the right half
    y = 2 * x[:, 0] + noise_std * torch.randn(2000)
    critic = UncertaintyCritic(1, CriticConfig(hidden=32, ensemble=2, loss="gaussian-nll"))
    optimizer = torch.optim.Adam(critic.parameters(), lr=1e-2)

    def nll() -> float:
        with torch.no_grad():
            mean, var = critic(x)
            return float(gaussian_nll(mean, var, y).mean())

    before = nll()
    for _ in range(300):
        optimizer.zero_grad()
        critic.loss(x, y).backward()
        optimizer.step()
    after = nll()
    assert after < before - 1.0
    with torch.no_grad():
        mean, var = critic(x)
    std = var.sqrt()
    assert std[x[:, 0] > 0.2].mean() > 3 * std[x[:, 0] < -0.2].mean()  # it found where the noise is
    within_1, within_2 = calibration(mean.numpy(), std.numpy(), y.numpy())
    assert 0.55 < within_1 < 0.85 and within_2 > 0.88


def test_critic_config_errors_name_the_bad_value():
    with pytest.raises(ValueError, match="ensemble=0"):
        CriticConfig(ensemble=0)
    with pytest.raises(ValueError, match="loss='mse'"):
        CriticConfig(loss="mse")
