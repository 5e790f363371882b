"""The agent API and the evaluation routine: maths, pairing of seeds, training budgets and histories, the baselines."""

from __future__ import annotations

import json
import math

import gymnasium as gym
import numpy as np
import pytest

from agents.base import TRAINING_EVAL_SEED, Agent, TrainableAgent, play_episode
from agents.baselines import NeedAwareHeuristic, OracleAgent, PopularityAgent, RandomAgent
from agents.evaluation import Evaluation, SessionEvaluation, evaluate, evaluate_sessions, format_ci, mean_ci
from agents.registry import AGENTS, make_agent

SMALL = {"num_candidates": 10, "list_length": 5}


def test_mean_ci_by_hand():
    # values 1, 2, 3: mean 2, sample sd 1, half-width 1.96 / sqrt(3)
    mean, half = mean_ci([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(1.96 / math.sqrt(3))
    assert mean_ci([0.5]) == (0.5, 0.0)
    assert format_ci(0.41234, 0.0129) == "0.412 ± 0.013"
    with pytest.raises(ValueError, match="at least one value"):
        mean_ci([])


def test_evaluation_summary_table_and_json():
    result = Evaluation(agent="demo", values={"niche": {"NDCG@5": [0.0, 1.0]}}, held_out={"niche": True})
    summary = result.summary()["niche"]["NDCG@5"]
    assert summary["mean"] == 0.5 and summary["n"] == 2
    assert summary["ci95"] == pytest.approx(1.96 * math.sqrt(0.5) / math.sqrt(2))
    assert "niche *" in result.table(("NDCG@5",)) and "0.500 ± 0.980" in result.table(("NDCG@5",))
    assert json.loads(result.to_json())["metrics"]["niche"]["NDCG@5"]["n"] == 2


def test_evaluate_matches_manual_episodes():
    agent = NeedAwareHeuristic()
    result = evaluate(agent, SMALL, needs="trending", episodes=6, seed=3)
    env = gym.make("FlexRec-v0", need="trending", **SMALL)
    manual = [play_episode(env, agent, seed=3 + i)["metrics"]["NDCG@5"] for i in range(6)]
    assert result.values["trending"]["NDCG@5"] == manual


def test_same_seeds_give_same_requests_to_every_agent():
    seen = []

    class Spy(Agent):
        name = "spy"

        def rank(self, request, observation, info):
            seen.append(request.candidates)
            return np.arange(len(request.candidates))

    evaluate(Spy(), SMALL, needs="interest", episodes=3, seed=0)
    evaluate(Spy(), SMALL, needs="interest", episodes=3, seed=0)
    assert seen[:3] == seen[3:]


def test_step_agents_work_through_act():
    class FirstFree(Agent):
        name = "first-free"

        def act(self, observation, env):
            return int(np.flatnonzero(observation["action_mask"])[0])

    info = play_episode(gym.make("FlexRec-v0", **SMALL), FirstFree(), seed=0)
    assert info["ranking"].tolist() == [0, 1, 2, 3, 4]


def test_baselines_order_by_their_signal():
    env = gym.make("FlexRec-v0", expose_truth=True, **SMALL)
    obs, info = env.reset(seed=1)
    request = env.unwrapped.request
    ranking = PopularityAgent("all").rank(request, obs, info)
    assert (np.diff(request.popularity[ranking]) <= 0).all()
    ranking = PopularityAgent("recent").rank(request, obs, info)
    assert (np.diff(request.recent_popularity[ranking]) <= 0).all()
    assert (np.diff(info["relevance"][OracleAgent().rank(request, obs, info)]) <= 0).all()
    with pytest.raises(ValueError, match="expose_truth=True"):
        OracleAgent().rank(request, obs, {})
    with pytest.raises(ValueError, match="window='weekly'"):
        PopularityAgent("weekly")  # type: ignore[arg-type]


def test_oracle_is_the_ceiling_and_heuristic_beats_random():
    needs = ["interest", "trending", "niche"]
    scores = {
        a.name: evaluate(a, {}, needs=needs, episodes=60, seed=0) for a in (RandomAgent(0), NeedAwareHeuristic(), OracleAgent())
    }
    for need in needs:
        ndcg = {name: np.mean(r.values[need]["NDCG@5"]) for name, r in scores.items()}
        assert ndcg["oracle (upper bound)"] >= ndcg["need-aware"] > ndcg["random"] + 0.1, (need, ndcg)
        assert ndcg["oracle (upper bound)"] > 0.9


def test_evaluate_rejects_bad_arguments():
    with pytest.raises(ValueError, match="episodes=0"):
        evaluate(RandomAgent(), SMALL, episodes=0)
    with pytest.raises(ValueError, match="unknown metric"):
        evaluate(RandomAgent(), SMALL, episodes=1, metrics=("MRR",))


class Scripted(TrainableAgent):
    """Ranks candidates in index order; "training" records an evaluation at 10 and at 20 steps."""

    name = "scripted"

    def __init__(self) -> None:
        super().__init__()
        self.seeds: list[int] = []

    def rank(self, request, observation, info):
        return np.arange(len(request.candidates))

    def _learn(self, env_kwargs, total_steps, seed, logdir, checkpointing):
        self.seeds.append(seed)
        for steps in (10, 20):
            self.evaluate_during_training(env_kwargs, steps, episodes=3)

    def save(self, path):
        raise NotImplementedError

    @classmethod
    def load(cls, path):
        raise NotImplementedError


def test_learn_checks_the_budget_and_keeps_one_evaluation_history():
    agent = Scripted()
    env_kwargs = {**SMALL, "need": ["interest", "niche"]}
    assert agent.learn(env_kwargs, 20) is agent and agent.seeds == [0]
    result = evaluate(agent, SMALL, ["interest", "niche"], 3, TRAINING_EVAL_SEED, ("NDCG@5", "Recall@5"))
    expected = {m: np.mean([np.mean(result.values[n][m]) for n in ("interest", "niche")]) for m in ("NDCG@5", "Recall@5")}
    assert agent.eval_history == [{"steps": 10.0, **expected}, {"steps": 20.0, **expected}]
    agent.default_seed = 7
    agent.learn(env_kwargs, 20)
    agent.learn(env_kwargs, 20, seed=3)
    assert agent.seeds == [0, 7, 3] and len(agent.eval_history) == 2, "each run starts a fresh history"
    for budget in (0, 2.5, True):
        with pytest.raises(ValueError, match=f"total_steps={budget!r}; allowed: an integer >= 1"):
            agent.learn(env_kwargs, budget)  # type: ignore[arg-type]
    assert agent.seeds == [0, 7, 3], "a bad budget is refused before training"


@pytest.mark.parametrize("name", [name for name, spec in AGENTS.items() if spec.trainable])
def test_every_trainable_agent_refuses_a_bad_budget(name):
    with pytest.raises(ValueError, match="total_steps=0; allowed: an integer >= 1"):
        make_agent(name).learn(SMALL, 0)  # type: ignore[attr-defined]


def test_registry_builds_every_non_trainable_agent():
    for name, spec in AGENTS.items():
        if not spec.trainable:
            assert isinstance(make_agent(name), Agent)
    with pytest.raises(ValueError, match="unknown agent 'lightgcn'"):
        make_agent("lightgcn")
    with pytest.raises(ValueError, match="bad settings"):
        make_agent("need-aware", temperature=3)


def test_session_evaluation_pools_requests_by_place():
    result = SessionEvaluation(agent="x")
    result.add([0.1, 0.2, 0.3], [False, True, False])
    result.add([0.5, 0.6, 0.7], [False, False, True])
    assert result.values == {
        "all requests": [0.1, 0.2, 0.3, 0.5, 0.6, 0.7],
        "first request": [0.1, 0.5],
        "after switch": [0.2, 0.7],
        "no switch": [0.3, 0.6],
    }
    assert result.summary()["after switch"]["mean"] == pytest.approx(0.45) and result.sessions == 2


def test_need_aware_follows_a_switch_better_than_popularity():
    env_kwargs = {"need_schedule": ["trending", "niche", "niche"], "session_length": 3, "num_candidates": 10, "list_length": 5}
    aware = evaluate_sessions(make_agent("need-aware"), env_kwargs, sessions=30)
    blind = evaluate_sessions(make_agent("popularity"), env_kwargs, sessions=30)
    assert len(aware.values["after switch"]) == 30  # request 1 of each session, the switch to niche
    assert np.mean(aware.values["after switch"]) > np.mean(blind.values["after switch"]) + 0.2
