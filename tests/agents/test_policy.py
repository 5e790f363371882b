"""Ranking policies: valid rankings, sampling equals teacher forcing, and an update moves the right way."""

import itertools

import numpy as np
import pytest
import torch

from agents.policy import (
    RankingInputs,
    TransformerPolicyConfig,
    TransformerRankingPolicy,
    masked_log_softmax,
    prefix_masks,
)
from agents.trainer import policy_loss


def make(seed: int = 0, batch: int = 3, n: int = 6) -> tuple[TransformerRankingPolicy, RankingInputs]:
    torch.manual_seed(seed)
    policy = TransformerRankingPolicy(4, 3, 8, TransformerPolicyConfig(dim=16, layers=1, heads=2))
    inputs = RankingInputs(torch.randn(batch, n, 4), torch.randn(batch, 3), torch.randn(batch, 8))
    return policy, inputs


def test_sampled_rankings_never_repeat_an_item():
    policy, inputs = make()
    for length in (1, 4, 6):
        rankings = policy.sample(inputs, 16, length, generator=torch.Generator().manual_seed(1)).rankings
        assert rankings.shape == (3, 16, length)
        flat = rankings.reshape(-1, length)
        assert all(len(set(row.tolist())) == length for row in flat)
        assert flat.min() >= 0 and flat.max() < 6


def test_teacher_forced_log_probs_equal_the_sampling_log_probs():
    policy, inputs = make()
    rollout = policy.sample(inputs, 8, 5, generator=torch.Generator().manual_seed(2))
    log_probs, entropy = policy.log_probs(inputs, rollout.rankings)
    torch.testing.assert_close(log_probs, rollout.log_probs, atol=1e-5, rtol=0)
    assert torch.all(entropy >= 0)
    assert float(entropy[..., -1].max().detach()) <= np.log(2) + 1e-5  # two candidates left at position 5 of 6


def test_probabilities_of_all_full_rankings_sum_to_one():
    policy, inputs = make(batch=1, n=4)
    rankings = torch.tensor(list(itertools.permutations(range(4))))[None]  # (1, 24, 4)
    log_probs, _ = policy.log_probs(inputs, rankings)
    assert float(log_probs.detach().sum(-1).exp().sum()) == pytest.approx(1.0, abs=1e-5)


def test_sampling_follows_the_policy_distribution():
    policy, inputs = make(batch=1, n=3)
    rollout = policy.sample(inputs, 20_000, 1, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        logits = policy.next_logits(policy.start(policy.encode(inputs), 1))
    expected = torch.softmax(logits, -1)[0].numpy()
    frequencies = np.bincount(rollout.rankings.flatten().numpy(), minlength=3) / 20_000
    np.testing.assert_allclose(frequencies, expected, atol=0.015)


def test_greedy_rank_takes_the_most_likely_item_first_and_is_a_permutation():
    policy, inputs = make()
    ranking = policy.rank(inputs, 6)
    assert sorted(ranking[0].tolist()) == list(range(6))
    with torch.no_grad():
        first = policy.next_logits(policy.start(policy.encode(inputs), 1)).argmax(-1)
    torch.testing.assert_close(ranking[:, 0], first)


def test_masks_and_masked_softmax():
    placed = prefix_masks(torch.tensor([[2, 0, 1]]), 4)
    assert placed.tolist() == [[[False] * 4, [False, False, True, False], [True, False, True, False]]]
    logp = masked_log_softmax(torch.zeros(1, 4), torch.tensor([[True, False, True, False]]), 1.0)
    torch.testing.assert_close(logp.exp(), torch.tensor([[0.0, 0.5, 0.0, 0.5]]))


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_one_update_moves_placements_in_the_direction_of_their_advantage(sign):
    policy, inputs = make()
    rollout = policy.sample(inputs, 4, 3, generator=torch.Generator().manual_seed(4))
    advantages = torch.zeros(3, 4, 3)
    advantages[:, 0] = sign  # only ranking 0 of every group carries an advantage
    optimizer = torch.optim.SGD(policy.parameters(), lr=0.05)
    log_probs, entropy = policy.log_probs(inputs, rollout.rankings)
    loss, _ = policy_loss(log_probs, rollout.log_probs, rollout.log_probs, entropy, advantages, 0.2, 0.0, 0.0)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    after, _ = policy.log_probs(inputs, rollout.rankings)
    change = (after - rollout.log_probs).sum(-1).detach()  # (B, G) change of each ranking's log-probability
    assert torch.all(sign * change[:, 0] > 0)


def test_clipping_stops_the_gradient_beyond_the_trust_region():
    log_probs = torch.tensor([0.5, -0.5], requires_grad=True)  # ratio e^0.5 and e^-0.5 against old log-prob 0
    loss, stats = policy_loss(
        log_probs, torch.zeros(2), log_probs.detach(), torch.zeros(2), torch.tensor([1.0, -1.0]), 0.2, 0.0, 0.0
    )
    loss.backward()
    assert log_probs.grad is not None and torch.all(log_probs.grad == 0)  # both pushed past the clip: no gradient
    assert float(stats["clip_fraction"]) == 1.0


def test_k3_kl_is_zero_at_the_reference_and_positive_elsewhere():
    zeros = torch.zeros(3)
    _, at_reference = policy_loss(zeros, zeros, zeros, zeros, zeros, 0.2, 1.0, 0.0)
    _, away = policy_loss(zeros, zeros, torch.tensor([0.5, -0.5, 1.0]), zeros, zeros, 0.2, 1.0, 0.0)
    assert float(at_reference["kl"]) == 0.0 and float(away["kl"]) > 0


def test_policy_config_errors_name_the_bad_value():
    with pytest.raises(ValueError, match="heads=3"):
        TransformerPolicyConfig(dim=16, heads=3)
    policy, inputs = make()
    with pytest.raises(ValueError, match="length=7; allowed: 1..6"):
        policy.sample(inputs, 2, 7)
