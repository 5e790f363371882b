"""The FlexRec trainer and agent: rollouts from group envs, no ground truth in training, learning, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from agents.baselines import RandomAgent
from agents.cli import main
from agents.evaluation import evaluate
from agents.flexrec import FlexRecAgent
from agents.policy import TransformerPolicyConfig, TransformerRankingPolicy
from agents.registry import load_agent
from agents.trainer import FlexRecTrainer, TrainerConfig

SMALL = {"need": ["interest", "trending"], "num_candidates": 8, "list_length": 4}
TINY = {"requests_per_batch": 4, "group_size": 4, "minibatch_requests": 2, "epochs": 1, "eval_every": 0}


def dims_fit(env_kwargs=SMALL) -> tuple[int, int, int]:
    from flexrec_env import FlexRecVectorEnv

    space = FlexRecVectorEnv(1, **env_kwargs).single_observation_space
    return space["candidates"].shape[-1], space["user"].shape[0], space["need"].shape[0]


def make_trainer(env_kwargs=SMALL, **settings) -> FlexRecTrainer:
    torch.manual_seed(0)
    policy = TransformerRankingPolicy(*dims_fit(env_kwargs), TransformerPolicyConfig(dim=16, layers=1, heads=2))
    return FlexRecTrainer(policy, env_kwargs, TrainerConfig(**{**TINY, **settings}), seed=0)


@pytest.mark.parametrize("advantage", ["list", "swap", "flexrec"])
def test_one_iteration_of_every_estimator(advantage, tmp_path):
    t = make_trainer(advantage=advantage)
    t.writer = None
    history = t.train(4 * 4 * 4 * 2, progress=False)  # two iterations of B * G * K steps
    assert len(history) == 2 and t.steps == 128
    row = history[-1]
    assert {"reward/list", "train/kl", "train/entropy", "advantage/position_1", "reward/swap_position_4"} <= set(row)
    if advantage == "flexrec":
        assert {"critic/nll", "critic/within_1sigma", "critic/within_2sigma", "critic/mean_weight"} <= set(row)
        assert 0.5 < row["critic/mean_weight"] <= 1.0


def test_rollouts_share_each_request_across_its_group():
    t = make_trainer()
    batch = t.collect()
    assert batch.rankings.shape == (4, 4, 4) and batch.advantages.shape == (4, 4, 4)
    groups = t.env.requests()
    for g in range(4):
        assert len({r.candidates for r in groups[4 * g : 4 * g + 4]}) == 1


@pytest.mark.parametrize("advantage", ["list", "swap"])
def test_ground_truth_never_reaches_training(advantage):
    """With no feedback observed, every training reward is 0: the policy must not move, though the truth is there."""
    no_feedback = {**SMALL, "feedback": {"observe_prob": 0.0}}
    t = make_trainer(no_feedback, advantage=advantage, kl_coef=0.0, entropy_coef=0.0)
    before = [p.detach().clone() for p in t.policy.parameters()]
    history = t.train(128, progress=False)
    assert history[-1]["train/true_NDCG@5"] > 0  # the truth exists and is logged...
    assert all(torch.equal(a, b) for a, b in zip(before, t.policy.parameters(), strict=True))  # ...but not trained on
    # Control: asking for the truth explicitly does move the policy.
    t = make_trainer({**no_feedback, "reward_labels": "true"}, advantage=advantage, kl_coef=0.0, entropy_coef=0.0)
    t.train(128, progress=False)
    assert not all(torch.equal(a, b) for a, b in zip(before, t.policy.parameters(), strict=True))


def test_flexrec_agent_learns_and_round_trips(tmp_path):
    easy = {"need": "interest", "num_candidates": 10, "list_length": 5, "reward_labels": "true"}
    agent = FlexRecAgent(advantage="swap", requests_per_batch=8, eval_every=2_000, eval_episodes=4, dim=32)
    agent.learn(easy, 12_000, seed=0, logdir=tmp_path)
    trained = np.mean(evaluate(agent, easy, episodes=100).values["interest"]["NDCG@5"])
    random = np.mean(evaluate(RandomAgent(0), easy, episodes=100).values["interest"]["NDCG@5"])
    assert trained > random + 0.1, (trained, random)
    assert any("eval/NDCG@5" in row for row in agent.history) and list(tmp_path.glob("events.out.tfevents.*"))
    path = tmp_path / "flexrec.ckpt"
    agent.save(path)
    reloaded = load_agent(path)
    assert isinstance(reloaded, FlexRecAgent) and reloaded.trainer_config == agent.trainer_config
    again = np.mean(evaluate(reloaded, easy, episodes=100).values["interest"]["NDCG@5"])
    assert again == trained


def test_bad_settings_name_the_value():
    with pytest.raises(ValueError, match="advantage='grpo'"):
        FlexRecAgent(advantage="grpo")
    with pytest.raises(ValueError, match=r"unknown flexrec setting\(s\) \['lr'\]"):
        FlexRecAgent(lr=0.1)
    with pytest.raises(ValueError, match="ensemble=0"):
        FlexRecAgent(critic_ensemble=0)
    with pytest.raises(ValueError, match="group_size=1"):
        TrainerConfig(group_size=1)
    with pytest.raises(RuntimeError, match="untrained"):
        FlexRecAgent().save(__import__("pathlib").Path("never.ckpt"))


def test_cli_trains_flexrec_and_evaluate_reproduces_it(tmp_path):
    runner = CliRunner()
    out = tmp_path / "f.ckpt"
    args = ["train", "--advantage", "flexrec", "--need", "interest", "--steps", "640", "--episodes", "5"]
    args += ["--env-arg", "num_candidates=8", "--env-arg", "list_length=4", "--logdir", str(tmp_path), "--out", str(out)]
    args += ["--set", "requests_per_batch=4", "--set", "eval_every=0", "--set", "dim=16"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert out.is_file() and list((tmp_path / "flexrec-seed0").glob("events.out.tfevents.*"))
    trained_line = next(line for line in result.output.splitlines() if line.startswith("interest"))
    result = runner.invoke(
        main, ["evaluate", "--checkpoint", str(out), "--need", "interest", "--episodes", "5", "--seed", "1000000"]
    )
    assert result.exit_code == 0, result.output
    assert next(line for line in result.output.splitlines() if line.startswith("interest")) == trained_line
    result = runner.invoke(main, ["train", "--agent", "random", "--advantage", "swap"])
    assert result.exit_code != 0 and "--advantage applies to the flexrec agents" in result.output


@pytest.mark.parametrize("impute", ["all", "anchored"])
def test_critic_fills_in_unobserved_labels_only_where_the_feedback_saw_a_relevant_item(impute):
    t = make_trainer(advantage="flexrec", impute=impute)
    batch = t.collect()  # builds the critic
    assert t.critic is not None
    for member in t.critic.members:
        torch.nn.init.constant_(member[-1].bias, 1.0)  # the critic now predicts a positive gain everywhere
    rankings = batch.rankings.numpy()
    labels = np.zeros((4, 8))
    observed = np.zeros((4, 8), dtype=bool)
    labels[0, 2], observed[0, [2, 3]] = 1.0, True  # request 0: one relevant item observed
    observed[1, [0, 1]] = True  # request 1: only irrelevant items observed
    needs = np.array(["interest"] * 4, dtype=object)
    rewards, std, _ = t.critic_rewards(batch.inputs, rankings, labels, observed, np.zeros(rankings.shape), needs)
    assert np.abs(rewards[0]).sum() > 0  # request 0 is completed by the critic either way
    if impute == "anchored":
        np.testing.assert_array_equal(rewards[1:], 0.0)  # nothing relevant observed: no invented credit
    else:
        assert np.abs(rewards[1:]).sum() > 0
