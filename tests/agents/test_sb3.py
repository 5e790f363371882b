"""stable-baselines3 agents: the set-structured network, the vector-env adapter, training, checkpoints."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

from agents.baselines import RandomAgent
from agents.evaluation import evaluate
from agents.registry import load_agent
from agents.sb3 import MASKED_SCORE, CandidateSetExtractor, SB3Agent, SB3Config, SB3VecEnv, random_valid_actions
from flexrec_env import FlexRecVectorEnv

EASY = {"need": "interest", "reward_labels": "true", "num_candidates": 10, "list_length": 5}


def preprocessed(obs: dict, space) -> dict[str, torch.Tensor]:
    """The observation as sb3 hands it to the extractor (Discrete entries one-hot, shape (B, 1, n))."""
    out = {key: torch.as_tensor(np.array(value), dtype=torch.float32) for key, value in obs.items()}
    for key in ("position", "need_id"):
        out[key] = torch.nn.functional.one_hot(torch.as_tensor(obs[key]).long(), int(space[key].n)).float()[:, None]
    return out


def test_extractor_scores_candidates_as_a_set():
    env = gym.make("FlexRec-v0", **EASY)
    obs, _ = env.reset(seed=0)
    obs, *_ = env.step(3)
    extractor = CandidateSetExtractor(env.observation_space, hidden=16)
    batch = {key: np.asarray(value)[None] for key, value in obs.items()}
    scores = extractor(preprocessed(batch, env.observation_space))[0, :10]
    assert scores[3] == MASKED_SCORE and (scores[np.arange(10) != 3] > MASKED_SCORE).all()
    permutation = np.random.default_rng(0).permutation(10)
    shuffled = dict(batch)
    for key in ("candidates", "placed", "action_mask"):
        shuffled[key] = batch[key][:, permutation]
    shuffled_scores = extractor(preprocessed(shuffled, env.observation_space))[0, :10]
    torch.testing.assert_close(shuffled_scores, scores[permutation])  # scores follow the candidates, not the slots


def test_vec_env_adapter_reports_terminal_observations_and_masks():
    vector = FlexRecVectorEnv(num_envs=3, autoreset_mode=AutoresetMode.SAME_STEP, shared_rng=True, **EASY)
    venv = SB3VecEnv(vector, seed=1)
    obs = venv.reset()
    assert obs["candidates"].shape == (3, 10, vector.scenario.candidate_feature_dim)
    for _ in range(5):
        actions = random_valid_actions(np.stack(venv.env_method("action_masks")))
        obs, rewards, dones, infos = venv.step(actions)
        assert rewards.shape == (3,) and rewards.dtype == np.float32
    assert dones.all() and all(info["terminal_observation"]["position"] == 5 for info in infos)
    assert all("NDCG@5" in info["metrics"] for info in infos)
    assert (obs["position"] == 0).all()  # already reset for the next episode
    with pytest.raises(ValueError, match="SAME_STEP"):
        SB3VecEnv(FlexRecVectorEnv(num_envs=2, **EASY))


def test_random_valid_actions_respect_the_mask():
    mask = np.zeros((500, 6), dtype=np.int8)
    mask[:, [1, 4]] = 1
    actions = random_valid_actions(mask)
    assert set(actions.tolist()) == {1, 4}


def test_maskable_ppo_learns_and_checkpoint_round_trips(tmp_path):
    agent = SB3Agent(algorithm="maskable-ppo", eval_every=5_000, eval_episodes=5, n_steps=32).learn(
        EASY, 15_000, seed=0, logdir=tmp_path
    )
    trained = np.mean(evaluate(agent, EASY, episodes=100).values["interest"]["NDCG@5"])
    random = np.mean(evaluate(RandomAgent(0), EASY, episodes=100).values["interest"]["NDCG@5"])
    assert trained > random + 0.08, (trained, random)
    assert len(agent.eval_history) >= 2 and list(tmp_path.glob("maskable-ppo_1/events.out.tfevents.*"))
    first, second = (row["steps"] for row in agent.eval_history[:2])  # the first step count at or past each 5,000
    assert 5_000 <= first < 5_000 + agent.config.num_envs and 10_000 <= second < 10_000 + agent.config.num_envs
    assert all(set(row) == {"steps", "NDCG@5", "Recall@5"} for row in agent.eval_history)
    path = tmp_path / "agent.ckpt"
    agent.save(path)
    reloaded = load_agent(path)
    assert isinstance(reloaded, SB3Agent) and reloaded.config == agent.config and reloaded.env_kwargs == EASY
    assert reloaded.eval_history == agent.eval_history
    env = gym.make("FlexRec-v0", **EASY)
    for seed in range(5):
        obs, _ = env.reset(seed=seed)
        assert agent.act(obs, env) == reloaded.act(obs, env)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


@pytest.mark.parametrize("algorithm", ["ppo", "dqn"])
def test_ppo_and_dqn_train_on_valid_actions_only_and_round_trip(algorithm, tmp_path):
    agent = SB3Agent(algorithm=algorithm, eval_every=0, learning_starts=200, n_steps=16).learn(EASY, 1_500, seed=0)
    result = evaluate(agent, EASY, episodes=5)  # any invalid action would raise in the env
    assert len(result.values["interest"]["NDCG@5"]) == 5
    agent.save(tmp_path / "x.ckpt")
    reloaded = evaluate(load_agent(tmp_path / "x.ckpt"), EASY, episodes=5)
    assert reloaded.values["interest"]["NDCG@5"] == result.values["interest"]["NDCG@5"]


def test_bad_settings_and_checkpoints(tmp_path):
    with pytest.raises(ValueError, match="algorithm='a2c'"):
        SB3Config(algorithm="a2c")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_envs=0"):
        SB3Config(num_envs=0)
    with pytest.raises(ValueError, match="total_steps=0"):
        SB3Agent().learn(EASY, 0)
    bogus = tmp_path / "bogus.ckpt"
    bogus.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bogus.ckpt"):
        load_agent(bogus)
    with pytest.raises(RuntimeError, match="not been trained"):
        SB3Agent().save(tmp_path / "x.ckpt")


def test_extra_takes_only_the_algorithms_other_arguments():
    assert "n_epochs" not in SB3Config(algorithm="dqn").extra_arguments()  # a PPO argument
    assert "learning_rate" not in SB3Config(algorithm="ppo").extra_arguments()  # a field of its own
    with pytest.raises(ValueError, match=r"unknown dqn argument\(s\) in extra \['n_epochs'\]; allowed: \["):
        SB3Config(algorithm="dqn", extra={"n_epochs": 2})
    assert SB3Config(algorithm="ppo", extra={"target_kl": 0.1}).algorithm_kwargs()["target_kl"] == 0.1


def test_checkpoints_keep_the_feature_sizes_of_training(tmp_path):
    small = {"need": "interest", "num_candidates": 6, "list_length": 2, "scenario_kwargs": {"latent_dim": 4}}
    trained = SB3Agent(algorithm="ppo", num_envs=2, n_steps=4, batch_size=8, eval_every=0).learn(small, 16, seed=0)
    assert trained.feature_sizes()["candidates"] == 15  # latent_dim + categories + 3 = 4 + 8 + 3
    trained.save(tmp_path / "a.ckpt")
    assert load_agent(tmp_path / "a.ckpt").feature_sizes() == trained.feature_sizes()
