"""BPR and SASRec: what they learn from histories, need-blindness, checkpoints and settings (the CLI round trip: test_cli.py)."""

from __future__ import annotations

from dataclasses import replace

import gymnasium as gym
import numpy as np
import pytest
import torch

from agents.recommenders import BPRAgent, BPRConfig, SASRecAgent, SASRecConfig, right_aligned, sample_negatives
from agents.registry import load_agent, make_agent
from scenarios import Request
from scenarios.synthetic import SyntheticScenario

TINY = {
    "need": "interest",
    "scenario_kwargs": {"num_users": 40, "num_items": 80, "history_length": 6},
    "num_candidates": 10,
    "list_length": 5,
}
AGENTS = [BPRAgent, SASRecAgent]


class HandMade(SyntheticScenario):
    """The synthetic world with hand-made interaction histories (requests in the tests are built by hand)."""

    def __init__(self, histories: np.ndarray, num_items: int = 100) -> None:
        super().__init__(num_users=len(histories), num_items=num_items, history_length=2)
        self.histories = np.asarray(histories, dtype=np.int64)


def request(template: Request, user_id: int, history: tuple[int, ...], candidates: tuple[int, ...]) -> Request:
    """``template`` with another user, history and candidate set (the other fields are not read by these agents)."""
    n = len(candidates)
    zeros = np.zeros(n, dtype=np.float32)
    return replace(
        template,
        user_id=user_id,
        history=history,
        candidates=candidates,
        candidate_titles=("",) * n,
        category=np.zeros(n, dtype=np.int64),
        popularity=zeros,
        recent_popularity=zeros,
        freshness=zeros,
    )


def template_request() -> Request:
    env = gym.make("FlexRec-v0", **TINY)
    env.reset(seed=0)
    return env.unwrapped.request


# --------------------------------------------------------------------------------------------------------------------
# Helpers.


def test_right_aligned_keeps_the_most_recent_items():
    histories = np.array([[3, 4, 5, -1], [-1, -1, -1, -1], [1, 2, 3, 4], [7, -1, 8, 9]])
    expected = np.array([[4, 5, 6], [0, 0, 0], [3, 4, 5], [8, 9, 10]])  # ids + 1, 0 padded on the left
    np.testing.assert_array_equal(right_aligned(histories, 3), expected)
    np.testing.assert_array_equal(right_aligned(histories[:1], 5), [[0, 0, 4, 5, 6]])


def test_negatives_avoid_the_history():
    num_items = 10
    keys = np.array([u * num_items + i for u in range(3) for i in range(9) if i != u])  # user u has seen all but u, 9
    users = np.repeat(np.arange(3), 500)
    negatives = sample_negatives(np.random.default_rng(0), users, keys, num_items)
    for u in range(3):
        assert set(negatives[users == u].tolist()) == {u, 9}


# --------------------------------------------------------------------------------------------------------------------
# Behaviour.


def test_bpr_ranks_the_users_cluster_first():
    # Users 0-9 interact with 6 of items 0-9, users 10-19 with 6 of items 10-19 (each item 6 times, in shuffled
    # order); items 20-99 are never seen.
    rng = np.random.default_rng(0)
    histories = np.stack([rng.permutation((u + np.arange(6)) % 10) + 10 * (u >= 10) for u in range(20)])
    agent = BPRAgent(dim=8).learn({"scenario": HandMade(histories), "num_candidates": 10}, 20_000, seed=0)
    assert agent.loss_history[-1][1] < 0.5 * agent.loss_history[0][1]
    template = template_request()
    for user, history in enumerate(histories):
        cluster = set(range(10 * (user >= 10), 10 * (user >= 10) + 10))
        unseen = tuple(sorted(cluster - set(history.tolist())))  # 4 items of the user's cluster
        others = tuple(sorted(set(range(40)) - cluster))  # the other cluster and never-seen items
        candidates = others[:8] + unseen + others[8:]
        top = agent.rank(request(template, user, tuple(history.tolist()), candidates), {}, {})[:4]
        assert {candidates[i] for i in top} == set(unseen), user
    # A user id the model has never seen is scored from its history: the cluster it came from first.
    cold = request(template, 1_000, (0, 1, 2), tuple(range(3, 20)))
    assert {cold.candidates[i] for i in agent.rank(cold, {}, {})[:7]} == set(range(3, 10))


def test_sasrec_predicts_the_next_item_of_a_sequence_pattern():
    # Every user walks the catalogue in order: item i is always followed by item i + 1 (mod 30).
    num_items, length = 30, 8
    histories = np.array([[(start + t) % num_items for t in range(length)] for start in range(num_items)] * 2)
    agent = SASRecAgent(dim=32, dropout=0.0).learn({"scenario": HandMade(histories), "num_candidates": 10}, 40_000)
    template = template_request()
    hits = 0
    for last in range(num_items):
        history = tuple((last - t) % num_items for t in range(3, -1, -1))  # four steps ending at `last`
        candidates = tuple(i for i in range(num_items) if i not in history)
        best = candidates[agent.rank(request(template, 0, history, candidates), {}, {})[0]]
        hits += best == (last + 1) % num_items
    assert hits >= 27, hits


@pytest.mark.parametrize("agent_class", AGENTS)
def test_ranks_are_permutations_and_need_blind(agent_class):
    agent = agent_class(dim=8).learn(TINY, 500, seed=0)
    for seed in range(3):
        rankings, needs, candidates = [], [], []
        for need in ("interest", "trending"):
            env = gym.make("FlexRec-v0", **{**TINY, "need": need})
            observation, info = env.reset(seed=seed)
            rankings.append(agent.rank(env.unwrapped.request, observation, info))
            needs.append(observation["need"])
            candidates.append(env.unwrapped.request.candidates)
        assert candidates[0] == candidates[1] and not np.array_equal(*needs)  # same request, another need
        assert sorted(rankings[0].tolist()) == list(range(TINY["num_candidates"]))
        np.testing.assert_array_equal(rankings[0], rankings[1])


@pytest.mark.parametrize("agent_class", AGENTS)
def test_learning_is_seeded(agent_class):
    rng_state, threads = torch.get_rng_state(), torch.get_num_threads()
    first, again, other = (agent_class(dim=8).learn(TINY, 300, seed=s) for s in (1, 1, 2))
    assert torch.equal(torch.get_rng_state(), rng_state) and torch.get_num_threads() == threads  # the caller's, untouched
    assert first.loss_history == again.loss_history and first.loss_history != other.loss_history
    assert sum(size for size in np.diff([0] + [n for n, _ in first.loss_history])) == 300  # the budget, exactly


# --------------------------------------------------------------------------------------------------------------------
# Checkpoints and settings.


@pytest.mark.parametrize("agent_class", AGENTS)
def test_checkpoint_round_trip(agent_class, tmp_path):
    agent = agent_class(dim=8).learn(TINY, 500, seed=0)
    path = tmp_path / f"{agent.name}.pt"
    agent.save(path)
    reloaded = load_agent(path)
    assert type(reloaded) is agent_class and reloaded.config == agent.config and reloaded.env_kwargs == TINY
    env = gym.make("FlexRec-v0", **TINY)
    for seed in range(5):
        env.reset(seed=seed)
        r = env.unwrapped.request
        np.testing.assert_array_equal(agent.scores(r), reloaded.scores(r))
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left
    other = SASRecAgent if agent_class is BPRAgent else BPRAgent
    with pytest.raises(ValueError, match=f"holds a '{agent.name}' checkpoint, not a '{other.name}' one"):
        other.load(path)


def test_a_run_on_a_scenario_object_saves_what_it_can_keep(tmp_path):
    """A scenario object is not data: the checkpoint keeps the other env arguments (as the other agents do)."""
    from scenarios import make_scenario

    scenario = make_scenario("synthetic", TINY["scenario_kwargs"])
    env_kwargs = {k: v for k, v in TINY.items() if k != "scenario_kwargs"}
    agent = BPRAgent(dim=8).learn({**env_kwargs, "scenario": scenario}, 200, seed=0)
    agent.save(tmp_path / "bpr.ckpt")
    assert "scenario" not in load_agent(tmp_path / "bpr.ckpt").env_kwargs


def test_bad_settings_say_what_is_allowed(tmp_path):
    with pytest.raises(ValueError, match=r"dim=0; allowed: an integer >= 1"):
        BPRConfig(dim=0)
    with pytest.raises(ValueError, match=r"lr=0; allowed: a number in \(0, 1\)"):
        BPRAgent(lr=0)
    with pytest.raises(ValueError, match="reg=-1; allowed: a finite number >= 0"):
        BPRAgent(reg=-1)
    with pytest.raises(ValueError, match=r"dropout=1.0; allowed: a number in \[0, 1\)"):
        SASRecConfig(dropout=1.0)
    with pytest.raises(ValueError, match="dim=64 is not divisible by heads=3"):
        SASRecAgent(heads=3)
    with pytest.raises(ValueError, match="layers=-1"):
        make_agent("sasrec", layers=-1)
    with pytest.raises(ValueError, match="bad settings"):
        make_agent("bpr", epochs=3)  # not a BPR setting
    with pytest.raises(ValueError, match="total_steps=0"):
        BPRAgent().learn(TINY, 0)
    with pytest.raises(RuntimeError, match="not been trained"):
        SASRecAgent().save(tmp_path / "x.pt")
    with pytest.raises(RuntimeError, match="no model yet"):
        BPRAgent().rank(template_request(), {}, {})
    agent = BPRAgent(dim=4).learn(TINY, 100)
    with pytest.raises(ValueError, match="outside the catalogue of 80 items"):
        agent.rank(request(template_request(), 0, (), (1, 200)), {}, {})


def test_checkpoints_keep_the_feature_sizes_of_training(tmp_path):
    small = {"need": "interest", "num_candidates": 6, "list_length": 2, "scenario_kwargs": {"latent_dim": 4}}
    trained = make_agent("bpr").learn(small, 16, seed=0)  # type: ignore[attr-defined]
    assert trained.feature_sizes()["candidates"] == 15  # latent_dim + categories + 3 = 4 + 8 + 3
    trained.save(tmp_path / "a.ckpt")
    assert load_agent(tmp_path / "a.ckpt").feature_sizes() == trained.feature_sizes()
