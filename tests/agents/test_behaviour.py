"""Behaviour policies: the documented probabilities of each kind of agent, and the flexrec policy's own distribution."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import flexrec_env  # noqa: F401
from agents.base import Agent
from agents.baselines import NeedAwareHeuristic, RandomAgent
from agents.behaviour import BehaviourConfig, BehaviourPolicy, explore
from agents.flexrec import FlexRecAgent
from agents.policy import RankingInputs

ENV_KWARGS = {"need": "trending", "num_candidates": 6, "list_length": 4}


def test_explore_by_hand():
    scores = np.array([1.0, -np.inf, 0.0, 2.0])
    e = np.exp([1.0, 0.0, 2.0])
    assert explore(scores, BehaviourConfig()) == pytest.approx([e[0] / e.sum(), 0.0, e[1] / e.sum(), e[2] / e.sum()])
    assert explore(scores, BehaviourConfig(temperature=0.5))[3] == pytest.approx(np.exp(4) / np.exp([2, 0, 4]).sum())
    assert explore(scores, BehaviourConfig("epsilon-greedy", epsilon=0.3)) == pytest.approx([0.1, 0.0, 0.1, 0.8])
    with pytest.raises(ValueError, match="no candidate left"):
        explore(np.full(3, -np.inf), BehaviourConfig())


def test_bad_settings_name_what_is_allowed():
    with pytest.raises(ValueError, match="temperature=0"):
        BehaviourConfig(temperature=0.0)
    with pytest.raises(ValueError, match="epsilon=1.5"):
        BehaviourConfig("epsilon-greedy", epsilon=1.5)
    with pytest.raises(ValueError, match="exploration='greedy'"):
        BehaviourConfig("greedy")  # type: ignore[arg-type]


def play(behaviour: BehaviourPolicy, seed: int = 0) -> list[np.ndarray]:
    """The probabilities at every step of one episode, following each step's most likely candidate."""
    env = gym.make("FlexRec-v0", **ENV_KWARGS)
    observation, info = env.reset(seed=seed)
    steps = []
    for _ in range(ENV_KWARGS["list_length"]):
        probabilities = behaviour.probabilities(observation, info, env)
        steps.append(probabilities)
        observation, _, _, _, info = env.step(int(np.argmax(probabilities)))
    return steps


def test_random_is_uniform_over_the_pool_whatever_the_exploration():
    for config in (BehaviourConfig(), BehaviourConfig("epsilon-greedy", epsilon=0.2)):
        for t, probabilities in enumerate(play(BehaviourPolicy(RandomAgent(), config))):
            pool = probabilities > 0
            assert pool.sum() == 6 - t and probabilities[pool] == pytest.approx(1 / (6 - t))


def test_a_ranking_agent_draws_its_next_item_with_the_documented_probability():
    temperature = 0.7
    for t, probabilities in enumerate(play(BehaviourPolicy(NeedAwareHeuristic(), BehaviourConfig(temperature=temperature)))):
        pool = 6 - t
        top = (1 - np.exp(-1 / temperature)) / (1 - np.exp(-pool / temperature))
        assert probabilities.max() == pytest.approx(top) and probabilities.sum() == pytest.approx(1.0)


def test_an_agent_that_only_acts_gets_epsilon_greedy_only():
    class FirstFree(Agent):
        name = "first-free"

        def act(self, observation, env):
            return int(np.flatnonzero(observation["action_mask"])[0])

    with pytest.raises(ValueError, match="allowed: exploration='epsilon-greedy'"):
        BehaviourPolicy(FirstFree())
    steps = play(BehaviourPolicy(FirstFree(), BehaviourConfig("epsilon-greedy", epsilon=0.4)))
    assert steps[0] == pytest.approx([0.6 + 0.4 / 6] + [0.4 / 6] * 5)


def test_the_flexrec_softmax_is_the_distribution_its_policy_samples_from():
    torch.manual_seed(0)
    agent = FlexRecAgent(dim=16, layers=1, heads=2)
    policy = agent.init_policy(ENV_KWARGS)
    torch.nn.init.normal_(policy.key.weight, std=0.5)  # not uniform
    behaviour = BehaviourPolicy(agent)
    env = gym.make("FlexRec-v0", **ENV_KWARGS)
    observation, info = env.reset(seed=3)
    inputs = RankingInputs.from_observation(observation)
    ranking, log_probability = [], 0.0
    for _ in range(ENV_KWARGS["list_length"]):
        probabilities = behaviour.probabilities(observation, info, env)
        action = int(np.argsort(probabilities)[-2])  # not the greedy choice: any prefix works
        ranking.append(action)
        log_probability += np.log(probabilities[action])
        observation, _, _, _, info = env.step(action)
    with torch.no_grad():
        chosen, _ = policy.log_probs(inputs, torch.tensor([[ranking]]))
    assert log_probability == pytest.approx(float(chosen.sum()), abs=1e-5)
    assert np.max(probabilities) < 0.99  # a real distribution, not a one-hot
