"""The FlexRec trainer and agent: rollouts from group envs, no ground truth in training, learning, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.advantages import Rewards
from agents.baselines import RandomAgent
from agents.evaluation import evaluate
from agents.flexrec import FlexRecAgent
from agents.policy import RankingInputs, TransformerPolicyConfig, TransformerRankingPolicy
from agents.registry import load_agent
from agents.trainer import FlexRecTrainer, TrainerConfig

SMALL = {"need": ["interest", "trending"], "num_candidates": 8, "list_length": 4}
TINY = {"requests_per_batch": 4, "group_size": 4, "minibatch_requests": 2, "epochs": 1, "eval_every": 0}


def dims_fit(env_kwargs=SMALL) -> tuple[int, int, int]:
    from flexrec_env import FlexRecVectorEnv, SessionConfig

    space = FlexRecVectorEnv(1, **SessionConfig.split(env_kwargs)[1]).single_observation_space
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
        assert {"critic/nll", "critic/ece", "critic/within_1sigma", "critic/within_2sigma", "critic/mean_weight"} <= set(row)
        assert 0.0 < row["critic/mean_weight"] <= 1.0


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
    assert list(tmp_path.glob("events.out.tfevents.*"))
    logged = [(row["steps"], row["eval/NDCG@5"]) for row in agent.history if "eval/NDCG@5" in row]  # TensorBoard's
    assert logged and logged == [(row["steps"], row["NDCG@5"]) for row in agent.eval_history]
    path = tmp_path / "flexrec.ckpt"
    agent.save(path)
    reloaded = load_agent(path)
    assert isinstance(reloaded, FlexRecAgent) and reloaded.trainer_config == agent.trainer_config
    assert reloaded.eval_history == agent.eval_history
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


def test_flexrec_reads_the_reward_labels_the_env_was_asked_for():
    """The critic learns from the feedback's observed labels only, or from every true label with reward_labels="true"."""
    t = make_trainer({**SMALL, "feedback": {"observe_prob": 0.0}}, advantage="flexrec")
    t.collect()
    assert t.critic is not None and len(t.critic.labels) == 0  # nothing observed: nothing reaches the critic
    t = make_trainer({**SMALL, "reward_labels": "true"}, advantage="flexrec")
    t.collect()
    truth = t.env._core.episodes.relevance[::4]  # (B, N): each group's request
    assert t.critic is not None and t.critic.labels.tolist() == truth.reshape(-1).tolist()
    # With every label known, the critic-completed swap rewards are the env's exact ones.
    completed = completed_with_every_label_known(t)
    np.testing.assert_allclose(completed.critic_rewards, completed.swap_rewards, atol=1e-12)


def completed_with_every_label_known(t: FlexRecTrainer) -> Rewards:
    """Step the trainer's env with fixed random rankings and complete their rewards with the critic (B = 4, G = 4)."""
    rankings = np.stack([np.argsort(np.random.default_rng(i).random((4, 8)), axis=1)[:, :4] for i in range(4)])
    obs, _ = t.env.reset()
    for step in range(4):
        _, _, _, _, info = t.env.step(rankings.reshape(16, 4)[:, step])
    rewards = Rewards(info["list_reward"].reshape(4, 4), info["swap_rewards"].reshape(4, 4, 4))
    inputs = RankingInputs.from_observation({k: v[::4] for k, v in obs.items()})
    features = t.unwrapped_policy.critic_inputs(inputs)
    assert t.critic is not None
    completed, _ = t.critic_rewards(features, t.critic.predict(features), rankings, rewards, info)
    return completed


def test_flexrec_policy_starts_from_the_critic_and_is_anchored_to_it():
    t = make_trainer(advantage="flexrec")
    assert t.config.kl == 0.5 and t.reference is not None
    batch = t.collect()
    assert batch.inputs.prior is not None and batch.inputs.prior.shape == (4, 8)
    # The residual logits start at zero: the policy's first placement is the softmax of the prior.
    logp, _ = t.unwrapped_policy.log_probs(batch.inputs, batch.rankings)
    first = torch.log_softmax(t.unwrapped_policy.prior_weight * batch.inputs.prior, dim=-1)
    np.testing.assert_allclose(logp[:, :, 0].detach(), first.gather(1, batch.rankings[:, :, 0]).detach(), atol=1e-5)
    assert make_trainer(advantage="swap").config.kl == 0.0 and make_trainer(advantage="swap").reference is None
    assert make_trainer(advantage="flexrec", critic_prior=False).collect().inputs.prior is None


@pytest.mark.parametrize("setting", [{"completion": "dr"}, {"completion": "none"}, {"weight": "none"}, {"weight": "sigmoid"}])
def test_every_flexrec_variant_trains(setting):
    t = make_trainer(advantage="flexrec", **setting)
    row = t.train(128, progress=False)[-1]
    assert {"critic/ece", "critic/within_1sigma", "critic/within_1sigma_predicted", "critic/mean_weight"} <= set(row)
    if setting.get("weight") == "none":
        assert row["critic/mean_weight"] == 1.0
    with pytest.raises(ValueError, match="completion='zero'"):
        TrainerConfig(completion="zero")  # type: ignore[arg-type]


def test_diverse_rewards_use_the_critic_completed_gains():
    # With every label known, the generic swap rewards of the completed gains are the env's exact alpha-NDCG ones.
    t = make_trainer({**SMALL, "need": "diverse", "reward_labels": "true"}, advantage="flexrec")
    t.collect()  # builds the critic
    completed = completed_with_every_label_known(t)
    assert np.abs(completed.swap_rewards).sum() > 0
    np.testing.assert_allclose(completed.critic_rewards, completed.swap_rewards, atol=1e-12)


def test_every_epoch_draws_its_own_minibatch_order(monkeypatch):
    """The minibatch order is drawn anew for every epoch, from a generator seeded once: epochs differ, runs repeat."""
    orders: list[list[int]] = []
    draw = torch.randperm

    def recorded(*args, **kwargs):
        order = draw(*args, **kwargs)
        orders.append(order.tolist())
        return order

    monkeypatch.setattr(torch, "randperm", recorded)
    for _ in range(2):
        t = make_trainer(requests_per_batch=8, epochs=3)
        t.update(t.collect())
        t.update(t.collect())
    first_run, second_run = orders[:6], orders[6:]
    assert len(first_run) == len(second_run) == 6 and all(sorted(order) == list(range(8)) for order in orders)
    assert len({tuple(order) for order in first_run}) == 6, "every epoch of every iteration has its own order"
    assert first_run == second_run, "the orders follow from the seed"


RESUMABLE = {**TINY, "eval_every": 128, "eval_episodes": 2, "dim": 16, "layers": 1, "heads": 2}


def same_run(a: FlexRecAgent, b: FlexRecAgent) -> None:
    """Both agents hold the same weights (policy and critic), curves and evaluations."""
    assert a.policy is not None and b.policy is not None and a.critic is not None and b.critic is not None
    for x, y in ((a.policy, b.policy), (a.critic.critic, b.critic.critic)):
        first, second = x.state_dict(), y.state_dict()
        assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    untimed = [[{k: v for k, v in row.items() if not k.startswith("time/")} for row in agent.history] for agent in (a, b)]
    assert untimed[0] == untimed[1] and a.eval_history == b.eval_history and len(a.eval_history) == 2


def test_a_run_resumed_from_its_training_checkpoint_ends_with_the_same_weights(tmp_path):
    from agents.resume import Checkpointing

    path = tmp_path / "flexrec.resume.ckpt"
    straight = FlexRecAgent(**RESUMABLE).learn(SMALL, 256, seed=3, checkpointing=Checkpointing(path, every=128))
    assert load_agent(path).training_state["steps"] == 128  # written after iteration 2 of 4
    resumed = load_agent(path).resume()
    assert isinstance(resumed, FlexRecAgent)
    same_run(straight, resumed)
    with pytest.raises(ValueError, match="holds no training state"):
        straight.resume()
    with pytest.raises(ValueError, match="cannot checkpoint during training"):
        from agents.supervised import SupervisedAgent

        SupervisedAgent().learn(SMALL, 64, checkpointing=Checkpointing(path))


def test_ctrl_c_stops_at_the_end_of_the_iteration_with_a_checkpoint_that_resumes(tmp_path, monkeypatch):
    import signal

    from agents.resume import Checkpointing, TrainingInterrupted

    straight = FlexRecAgent(**RESUMABLE).learn(SMALL, 256, seed=3)
    iterate = FlexRecTrainer.iterate

    def interrupted(trainer: FlexRecTrainer) -> None:
        if trainer.iteration == 1:  # Ctrl-C during the second iteration: the handler the trainer installed runs
            signal.getsignal(signal.SIGINT)(signal.SIGINT, None)
        iterate(trainer)

    monkeypatch.setattr(FlexRecTrainer, "iterate", interrupted)
    path = tmp_path / "flexrec.resume.ckpt"
    with pytest.raises(TrainingInterrupted) as stopped:
        FlexRecAgent(**RESUMABLE).learn(SMALL, 256, seed=3, checkpointing=Checkpointing(path))
    assert stopped.value.path == path and stopped.value.steps == 128
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is removed again
    monkeypatch.setattr(FlexRecTrainer, "iterate", iterate)
    same_run(straight, load_agent(path).resume())


def test_session_training_ranks_every_request_of_a_session():
    """With session arguments each collect ranks the sessions' next request; a new batch is drawn after the last."""
    from flexrec_env import FlexRecSessionVectorEnv

    session = {**SMALL, "need": ["interest", "trending", "diverse"], "session_length": 3}
    t = make_trainer(session, advantage="flexrec")
    assert isinstance(t.env, FlexRecSessionVectorEnv)
    for after in (1, 2, 2, 1):  # the index the sessions are at after each collect (the last request ends a session)
        batch = t.collect()
        assert batch.rankings.shape == (4, 4, 4)
        assert (t.env._session_core.request_index == after).all()
        t.update(batch)
    assert t.steps == 4 * 16 * 4


def test_doubly_robust_completion_divides_by_each_requests_own_observe_prob(monkeypatch):
    """With fatigue, request r's labels are observed with probability p (1 - fatigue)**r: the DR correction uses that."""
    import agents.trainer

    seen: list[np.ndarray] = []

    def spy(labels, observed, mean, var, completion, observe_prob):
        seen.append(np.asarray(observe_prob, dtype=float))
        return agents.critic.completed_gains(labels, observed, mean, var, completion, observe_prob)

    monkeypatch.setattr(agents.trainer, "completed_gains", spy)
    session = {**SMALL, "need": ["interest", "trending"], "session_length": 3, "fatigue": 0.5}
    t = make_trainer(session, advantage="flexrec", completion="dr")
    for _ in range(2):
        t.update(t.collect())
    p = t.env.config.reward_noise[0]
    assert [float(s.ravel()[0]) for s in seen] == pytest.approx([p, p * 0.5])  # requests 0, then 1


def test_a_training_state_that_names_a_function_is_refused():
    """The episode stream's bit generator is looked up by name among numpy's, never fetched with getattr."""
    t = make_trainer()
    state = t.state_dict()
    state["random"]["episodes"] = {**state["random"]["episodes"], "bit_generator": "seed"}  # np.random.seed
    with pytest.raises(ValueError, match=r"bit_generator='seed'; allowed: \['MT19937', 'PCG64'"):
        t.load_state_dict(state)
