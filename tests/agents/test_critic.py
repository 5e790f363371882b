"""The uncertainty-aware critic: gain moments and calibration by hand, completion and swap rewards, learning."""

import numpy as np
import pytest
import torch

from agents.critic import (
    CriticConfig,
    CriticLearner,
    GradeCritic,
    calibration_report,
    completed_gains,
    completed_swap_rewards,
    expected_calibration_error,
    gain_moments,
    interval_coverage,
    noisy_channel,
)
from flexrec_env.swap import swap_rewards


def test_gain_moments_by_hand():
    # Grades 0, 1, 2 have gains 0, 1, 3. p = (0.5, 0.25, 0.25): mean 1/4 + 3/4 = 1; E[g^2] = 1/4 + 9/4 = 2.5 -> var 1.5.
    mean, var = gain_moments(np.array([[0.5, 0.25, 0.25], [1.0, 0.0, 0.0]]))
    np.testing.assert_allclose(mean, [1.0, 0.0])
    np.testing.assert_allclose(var, [1.5, 0.0])


def test_mixture_variance_adds_the_members_disagreement():
    # Two sure members that disagree (grade 0 vs grade 2): mixture (0.5, 0, 0.5), mean 1.5, var 2.25.
    mean, var = gain_moments(np.mean([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], axis=0))
    assert (mean, var) == (pytest.approx(1.5), pytest.approx(2.25))


def test_noisy_channel_by_hand():
    # eps = 0.3, M = 2: P(obs = y) = 0.7 p_y + 0.15 (1 - p_y); a sure grade 2 is observed as 0 or 1 with 0.15 each.
    probs = noisy_channel(torch.tensor([[0.0, 0.0, 1.0], [0.2, 0.3, 0.5]]), 0.3)
    np.testing.assert_allclose(probs[0].numpy(), [0.15, 0.15, 0.7], atol=1e-7)
    np.testing.assert_allclose(probs.sum(-1).numpy(), 1.0, atol=1e-7)


def test_expected_calibration_error_by_hand():
    # Two bins: confidence 0.9 with 2/2 right (gap 0.1), confidence 0.6 with 1/2 right (gap 0.1): ECE 0.1.
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    assert expected_calibration_error(probs, np.array([0, 0, 0, 1])) == pytest.approx(0.1)
    # Labels drawn from the predicted probabilities: calibrated, ECE near 0.
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(3), size=20_000)
    labels = (rng.random(20_000)[:, None] > np.cumsum(p, axis=1)).sum(axis=1)
    assert expected_calibration_error(p, labels) < 0.02


def test_interval_coverage_matches_its_prediction_for_a_calibrated_critic():
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(3), size=20_000)
    labels = (rng.random(20_000)[:, None] > np.cumsum(p, axis=1)).sum(axis=1)
    coverage = interval_coverage(p, labels)
    for w in ("1", "2"):
        assert coverage[f"within_{w}sigma"] == pytest.approx(coverage[f"within_{w}sigma_predicted"], abs=0.01)
    # By hand: p = (0.9, 0.08, 0.02) -> mean 0.14, sigma ~0.49: only grade 0 (gain 0) lies within one sigma.
    assert interval_coverage(np.array([[0.9, 0.08, 0.02]]), np.array([0]))["within_1sigma_predicted"] == pytest.approx(0.9)


def test_completed_gains_by_hand():
    labels, observed = np.array([[2, 0, 0]]), np.array([[True, True, False]])
    mean, var = np.array([[1.0, 0.5, 0.25]]), np.array([[0.1, 0.2, 0.4]])
    gain, gain_var = completed_gains(labels, observed, mean, var, "impute")
    np.testing.assert_allclose(gain, [[3.0, 0.0, 0.25]])
    np.testing.assert_allclose(gain_var, [[0.0, 0.0, 0.4]])
    # Doubly robust, p_obs = 0.5: mu + o / p (g - mu) -> 1 + 2 (3 - 1) = 5; 0.5 + 2 (0 - 0.5) = -0.5; 0.25.
    gain, gain_var = completed_gains(labels, observed, mean, var, "dr", observe_prob=0.5)
    np.testing.assert_allclose(gain, [[5.0, -0.5, 0.25]])
    np.testing.assert_allclose(gain_var, var)  # var (1/p - 1)**2 = var at p = 1/2 where observed, var elsewhere
    _, gain_var = completed_gains(labels, observed, mean, var, "dr", observe_prob=0.25)
    np.testing.assert_allclose(gain_var, [[0.9, 1.8, 0.4]])  # (1/0.25 - 1)**2 = 9 times var where observed
    gain, gain_var = completed_gains(labels, observed, mean, var, "none")
    np.testing.assert_allclose(gain, [[3.0, 0.0, 0.0]])
    np.testing.assert_allclose(gain_var, [[0.0, 0.0, 0.4]])
    with pytest.raises(ValueError, match="completion='zero'"):
        completed_gains(labels, observed, mean, var, "zero")  # type: ignore[arg-type]


def test_doubly_robust_gains_are_unbiased_whatever_the_critic():
    # Averaged over the observation draws, mu + o / p (g - mu) equals g even for a wrong mu.
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 3, size=(1, 6))
    mu = rng.random((1, 6)) * 3
    draws = [
        completed_gains(labels, rng.random((1, 6)) < 0.3, mu, np.ones((1, 6)), "dr", observe_prob=0.3)[0] for _ in range(40_000)
    ]
    np.testing.assert_allclose(np.mean(draws, axis=0), np.exp2(labels) - 1, atol=0.05)


def test_completed_swap_rewards_by_hand():
    # N = 3, K = k = 1, ranking [0]: r = (g0 - (g1 + g2) / 2) / IDCG. Item 0 observed with gain 1, item 1 observed
    # with gain 0, item 2 unobserved with predicted gain 0 and variance 1 -> IDCG = 1, r = 1, std = 0.5.
    gain, var = completed_gains(np.array([[1, 0, 0]]), np.array([[True, True, False]]), np.zeros((1, 3)), np.ones((1, 3)))
    mean, std = completed_swap_rewards(np.array([[[0]]]), gain, var, k=1)
    assert mean[0, 0, 0] == pytest.approx(1.0) and std[0, 0, 0] == pytest.approx(0.5)


def test_completed_swap_rewards_equal_the_env_swap_rewards_when_everything_is_observed():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, size=(5, 8))
    rankings = np.stack([np.argsort(rng.random((3, 8)), axis=1)[:, :4] for _ in range(5)])  # (B=5, G=3, K=4)
    observed = np.ones_like(labels, dtype=bool)
    gain, var = completed_gains(labels, observed, rng.random(labels.shape), rng.random(labels.shape))
    mean, std = completed_swap_rewards(rankings, gain, var, k=3)
    expected = swap_rewards(rankings.reshape(15, 4), np.repeat(labels, 3, axis=0), 3).reshape(5, 3, 4)
    np.testing.assert_allclose(mean, expected, atol=1e-12)
    np.testing.assert_array_equal(std, 0.0)


def test_reward_std_grows_with_the_unobserved_candidates_variance():
    labels, observed = np.array([[2, 0, 1, 0]]), np.array([[True, False, True, False]])
    rankings = np.array([[[0, 1]]])
    stds = [
        completed_swap_rewards(rankings, *completed_gains(labels, observed, np.zeros((1, 4)), np.full((1, 4), v)), k=2)[1]
        for v in (0.0, 0.1, 1.0)
    ]
    assert stds[0].max() == 0 and np.all(stds[1] > 0) and np.all(stds[2] > stds[1])


def noisy_grades(rng: np.random.Generator, x: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """True grade from x's sign (0 left, 2 right, 1 in the middle), observed through the uniform noise channel."""
    true = np.where(x < -0.3, 0, np.where(x > 0.3, 2, 1))
    flip = rng.random(len(x)) < eps
    other = (true + rng.integers(1, 3, len(x))) % 3
    return true, np.where(flip, other, true)


def test_critic_learns_the_true_grade_through_the_noise_and_is_calibrated():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, 6000)
    true, observed = noisy_grades(rng, x, eps=0.2)
    features = torch.as_tensor(x, dtype=torch.float32)[:, None, None]  # (B=6000, N=1, F=1)
    learner = CriticLearner(1, 2, label_noise=0.2, config=CriticConfig(hidden=32, ensemble=2, batch_size=256), seed=0)
    learner.add(features, observed[:, None], np.ones((6000, 1), dtype=bool))
    held_out = torch.linspace(-1, 1, 401)[:, None]
    before = calibration_report(learner.predict(held_out), noisy_grades(rng, held_out[:, 0].numpy(), 0.2)[1], 0.2)
    learner.fit(600)
    probs = learner.predict(held_out)
    accuracy = (probs.argmax(-1) == noisy_grades(rng, held_out[:, 0].numpy(), 0.0)[0]).mean()
    assert accuracy > 0.9  # the true grade, although 20% of the labels it saw were wrong
    assert probs[held_out[:, 0] > 0.6].max(-1).mean() > 0.9  # noise-aware: confident despite the noise
    after = calibration_report(probs, noisy_grades(rng, held_out[:, 0].numpy(), 0.2)[1], 0.2)
    assert after["nll"] < before["nll"] - 0.2 and after["ece"] < 0.08
    for w in ("1", "2"):
        assert after[f"within_{w}sigma"] == pytest.approx(after[f"within_{w}sigma_predicted"], abs=0.08)


def test_buffer_keeps_only_observed_labels_and_the_most_recent():
    learner = CriticLearner(2, 2, config=CriticConfig(buffer_size=3))
    features = torch.arange(8, dtype=torch.float32).reshape(1, 4, 2)
    learner.add(features, np.array([[0, 1, 2, 1]]), np.array([[True, False, True, True]]))
    assert learner.labels.tolist() == [0, 2, 1]
    learner.add(features[:, :1], np.array([[2]]), np.array([[True]]))
    assert learner.labels.tolist() == [2, 1, 2] and learner.inputs[0].tolist() == [4.0, 5.0]


def test_payload_round_trips_the_predictions():
    learner = CriticLearner(3, 2, label_noise=0.1, config=CriticConfig(hidden=8, ensemble=2))
    x = torch.randn(5, 3)
    copy = CriticLearner.from_payload(learner.payload(), learner.config)
    np.testing.assert_allclose(copy.predict(x), learner.predict(x))
    assert copy.label_noise == 0.1


def test_critic_config_errors_name_the_bad_value():
    with pytest.raises(ValueError, match="ensemble=0"):
        CriticConfig(ensemble=0)
    with pytest.raises(ValueError, match="noise_aware=1"):
        CriticConfig(noise_aware=1)  # type: ignore[arg-type]
    assert GradeCritic(4, 2)(torch.zeros(7, 4)).shape == (7, 3)


def test_refit_starts_afresh_and_fits_every_label():
    torch.manual_seed(0)
    learner = CriticLearner(1, 2, config=CriticConfig(hidden=16, ensemble=2, batch_size=64), seed=0)
    x = torch.linspace(-1, 1, 512)[:, None, None]
    labels = (x[:, :, 0] > 0).long().numpy() * 2  # grade 2 on the right, 0 on the left
    learner.add(x, labels, np.ones_like(labels, dtype=bool))
    learner.fit(200)
    fitted = learner.predict(x[:, 0])
    learner.refit(0)  # re-initialised, no step taken: the fit is gone
    assert np.abs(learner.predict(x[:, 0]) - fitted).max() > 0.2
    learner.refit(40)
    assert (learner.predict(x[:, 0]).argmax(-1) == labels[:, 0]).mean() > 0.95


def test_learner_moves_with_its_buffer():
    learner = CriticLearner(2, 2, config=CriticConfig(hidden=4, ensemble=1))
    learner.add(torch.ones(1, 3, 2), np.array([[0, 1, 2]]), np.ones((1, 3), dtype=bool))
    assert learner.to("cpu") is learner and learner.labels.device.type == "cpu"
    assert np.isfinite(learner.fit(2))
