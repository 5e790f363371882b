"""The supervised baseline and the critic ranker: same budget as FlexRec, ranking by the critic's expected gain."""

import numpy as np
import pytest
import torch

from agents.baselines import RandomAgent
from agents.evaluation import evaluate
from agents.flexrec import FlexRecAgent
from agents.registry import load_agent, make_agent
from agents.supervised import SupervisedAgent, collect_feedback

SMALL = {"need": ["interest", "trending"], "num_candidates": 8, "list_length": 4}


def test_collect_feedback_reads_only_the_observed_reward_labels():
    features, labels, observed, max_grade, noise = collect_feedback(SMALL, requests=10, seed=0, chunk=4)
    assert features.shape[:2] == (10, 8) and labels.shape == observed.shape == (10, 8)
    assert max_grade == 2 and noise == pytest.approx(0.1)
    assert np.all(labels[~observed] == 0) and 0.1 < observed.mean() < 0.6
    *_, truth_noise = collect_feedback({**SMALL, "reward_labels": "true"}, requests=3, seed=0)
    assert truth_noise == 0.0
    _, _, all_observed, _, _ = collect_feedback({**SMALL, "reward_labels": "true"}, requests=3, seed=0)
    assert all_observed.all()


def test_supervised_learns_from_the_feedback_budget_and_round_trips(tmp_path):
    torch.manual_seed(0)
    agent = make_agent("supervised", epochs=30)
    assert isinstance(agent, SupervisedAgent)
    agent.learn({"need": "interest"}, 48_000, seed=0)  # 600 requests of 20 candidates, 30% observed
    assert len(agent.learner.labels) == pytest.approx(600 * 20 * 0.3, rel=0.15)
    trained = np.mean(evaluate(agent, {}, "interest", episodes=100).values["interest"]["NDCG@5"])
    random = np.mean(evaluate(RandomAgent(0), {}, "interest", episodes=100).values["interest"]["NDCG@5"])
    assert trained > random + 0.15, (trained, random)
    agent.save(tmp_path / "s.ckpt")
    again = load_agent(tmp_path / "s.ckpt")
    assert np.mean(evaluate(again, {}, "interest", episodes=100).values["interest"]["NDCG@5"]) == trained


def test_supervised_settings_are_checked():
    with pytest.raises(ValueError, match=r"unknown supervised setting\(s\) \['lr'\]"):
        SupervisedAgent(lr=1)
    with pytest.raises(ValueError, match="epochs=0"):
        SupervisedAgent(epochs=0)
    with pytest.raises(RuntimeError, match="untrained"):
        SupervisedAgent().save(__import__("pathlib").Path("never.ckpt"))


def test_flexrec_critic_ranker_and_checkpoint_keep_the_critic(tmp_path):
    agent = FlexRecAgent(requests_per_batch=4, group_size=4, minibatch_requests=2, eval_every=0, dim=16)
    agent.learn(SMALL, 4 * 4 * 4 * 3, seed=0)
    ranker = agent.critic_ranker()
    env = {k: v for k, v in SMALL.items() if k != "need"}
    scores = evaluate(ranker, env, "interest", episodes=5)
    assert len(scores.values["interest"]["NDCG@5"]) == 5
    agent.save(tmp_path / "f.ckpt")
    again = load_agent(tmp_path / "f.ckpt")
    assert isinstance(again, FlexRecAgent) and again.critic is not None and again.uses_prior
    same = evaluate(again, env, "interest", episodes=20).values["interest"]["NDCG@5"]
    assert same == evaluate(agent, env, "interest", episodes=20).values["interest"]["NDCG@5"]
    with pytest.raises(RuntimeError, match="no critic"):
        FlexRecAgent(advantage="swap").critic_ranker()


def test_learning_curve_measures_the_agent_as_it_ranks_with_its_critic():
    agent = FlexRecAgent(
        requests_per_batch=4, group_size=4, minibatch_requests=2, eval_every=64, eval_episodes=6, dim=16, critic_refit_epochs=0
    )
    agent.learn(SMALL, 4 * 4 * 4 * 2, seed=0)
    assert agent.uses_prior
    env = {k: v for k, v in SMALL.items() if k != "need"}
    result = evaluate(agent, env, SMALL["need"], 6, 10_000, ("NDCG@5",))
    expected = np.mean([np.mean(v["NDCG@5"]) for v in result.values.values()])
    assert agent.eval_history[-1]["NDCG@5"] == pytest.approx(expected)


def test_pickled_checkpoints_of_older_versions_are_refused_clearly(tmp_path):
    path = tmp_path / "old.ckpt"
    torch.save({"format": "flexrec-checkpoint-v1", "kind": "flexrec", "settings": {}}, path)
    with pytest.raises(ValueError, match="torch.save .pickle. file, as older FlexRec versions wrote.*train it again"):
        load_agent(path)


def test_a_checkpoint_on_other_feature_sizes_is_a_clear_error_naming_both(tmp_path):
    small = {"need": "interest", "num_candidates": 6, "list_length": 2, "scenario_kwargs": {"latent_dim": 4}}
    agent = make_agent("supervised", epochs=1).learn(small, 200, seed=0)  # type: ignore[attr-defined]
    assert agent.feature_sizes()["candidates"] == 15  # latent_dim + categories + 3 = 4 + 8 + 3
    agent.save(tmp_path / "s.ckpt")
    again = load_agent(tmp_path / "s.ckpt")
    assert again.feature_sizes() == agent.feature_sizes()
    with pytest.raises(ValueError, match="candidates features of size 15, but scenario 'synthetic' gives size 19"):
        evaluate(again, {"num_candidates": 6, "list_length": 2}, "interest", episodes=1)


def test_a_checkpoint_without_feature_sizes_ranks_any_sizes(tmp_path):
    from agents.checkpoints import load_checkpoint, save_checkpoint

    small = {"need": "interest", "num_candidates": 6, "list_length": 2}
    make_agent("supervised", epochs=1).learn(small, 200, seed=0).save(tmp_path / "s.ckpt")  # type: ignore[attr-defined]
    data = load_checkpoint(tmp_path / "s.ckpt", "supervised")
    del data["feature_sizes"]  # as written before the sizes were recorded
    save_checkpoint(tmp_path / "old.ckpt", "supervised", data)
    assert load_agent(tmp_path / "old.ckpt").feature_sizes() == {}
