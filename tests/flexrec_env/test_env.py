"""FlexRec-v0 as a Gymnasium env: registration, the contract of spaces, rewards and infos, bad input."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.error import ResetNeeded
from gymnasium.utils.env_checker import check_env
from hypothesis import given, settings
from hypothesis import strategies as st

import flexrec_env
from flexrec_env import INVALID_ACTION_PENALTY, EnvConfig, FlexRecEnv
from flexrec_env.config import resolve
from flexrec_env.core import step_reward, step_rewards
from flexrec_env.metrics import alpha_ndcg, discounts, gains, ideal_dcg, ndcg
from flexrec_env.needs import registered_needs
from flexrec_env.swap import brute_force_swap_rewards

ALL_NEEDS = list(registered_needs())
SMALL = {"num_candidates": 8, "list_length": 4}


def make(**kwargs) -> FlexRecEnv:
    return gym.make("FlexRec-v0", **kwargs).unwrapped


def play(env: gym.Env, seed: int | None = 0, options: dict | None = None, order_seed: int = 0):
    """One episode with random valid actions; returns rewards and infos of every step (reset info first)."""
    rng = np.random.default_rng(order_seed)
    obs, info = env.reset(seed=seed, options=options)
    rewards, infos, done = [], [info], False
    while not done:
        action = int(rng.choice(np.flatnonzero(obs["action_mask"])))
        obs, reward, terminated, truncated, info = env.step(action)
        rewards.append(reward)
        infos.append(info)
        done = terminated or truncated
    return rewards, infos


# ---------------------------------------------------------------------------------------------------------------
# Registration and the Gymnasium contract.


def test_make_with_and_without_import():
    env = gym.make("flexrec_env:FlexRec-v0", need="trending")
    assert isinstance(env.unwrapped, FlexRecEnv)
    assert gym.make("FlexRec-v0", need="niche").unwrapped.needs[0].name == "niche"


@pytest.mark.parametrize("need", ALL_NEEDS)
@pytest.mark.parametrize("reward_mode", ["swap", "marginal", "list"])
def test_check_env_passes(need, reward_mode):
    check_env(make(need=need, reward_mode=reward_mode, **SMALL), skip_render_check=False)


def test_check_env_with_penalize_and_truth():
    check_env(make(need=["interest", "diverse"], invalid_action="penalize", expose_truth=True, render_mode="ansi"))


def test_same_seed_same_episode_and_different_seed_differs():
    env_a, env_b = make(need=["trending", "fresh"]), make(need=["trending", "fresh"])
    for seed in range(3):
        rewards_a, infos_a = play(env_a, seed)
        rewards_b, infos_b = play(env_b, seed)
        assert rewards_a == rewards_b
        np.testing.assert_array_equal(infos_a[-1]["ranking"], infos_b[-1]["ranking"])
        np.testing.assert_array_equal(infos_a[-1]["feedback_labels"], infos_b[-1]["feedback_labels"])
    first = make().reset(seed=1)[0]["candidates"]
    assert not np.array_equal(first, make().reset(seed=2)[0]["candidates"])


def test_observation_layout():
    env = make(need="fresh", **SMALL)
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert obs["candidates"].shape == (8, env.scenario.candidate_feature_dim) and obs["candidates"].dtype == np.float32
    assert obs["position"] == 0 and obs["placed"].sum() == 0
    np.testing.assert_array_equal(obs["action_mask"], info["action_mask"])
    np.testing.assert_array_equal(env.action_masks(), obs["action_mask"].astype(bool))
    obs, *_ = env.step(3)
    assert obs["position"] == 1 and obs["placed"][3] == 1 and obs["action_mask"][3] == 0
    assert not env.action_masks()[3]
    assert obs["need_id"] == flexrec_env.needs.need_id(flexrec_env.get_need("fresh"))


def test_request_has_text_and_no_truth():
    env = make(need="trending", **SMALL)
    env.reset(seed=0)
    request = env.request
    assert request.need == "trending" and request.instruction in flexrec_env.get_need("trending").instructions
    assert len(request.candidates) == 8 and len(request.candidate_titles) == 8
    assert len(request.history) == len(request.history_titles) > 0
    assert not hasattr(request, "interest") and not hasattr(request, "relevance")


def test_render_ansi_shows_need_and_list():
    env = make(need="niche", render_mode="ansi", **SMALL)
    env.reset(seed=0)
    env.step(2)
    text = env.render()
    assert "Need: niche" in text and "Ranking (1/4)" in text and "Pool: 7 candidates left" in text


# ---------------------------------------------------------------------------------------------------------------
# Rewards: exact formulas, on the reward labels.


def _labels(env: FlexRecEnv, last_info: dict) -> np.ndarray:
    return last_info["feedback_labels"].astype(np.float64)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), need=st.sampled_from(ALL_NEEDS), n=st.integers(3, 10), data=st.data())
def test_exact_swap_rewards_equal_brute_force(seed, need, n, data):
    k_list = data.draw(st.integers(1, n))
    metric_k = data.draw(st.integers(1, n))
    env = make(need=need, num_candidates=n, list_length=k_list, metric_k=metric_k, feedback={"observe_prob": 0.7})
    _, infos = play(env, seed, order_seed=seed)
    last = infos[-1]
    categories = env._episodes.requests.category[env._row]
    metric = alpha_ndcg if need == "diverse" else ndcg
    expected = brute_force_swap_rewards(metric, last["ranking"], _labels(env, last), categories, metric_k)
    np.testing.assert_allclose(last["swap_rewards"], expected, atol=1e-12)
    lists = last["ranking"][None]
    assert last["list_reward"] == pytest.approx(metric(lists, _labels(env, last)[None], categories[None], metric_k)[0])


def test_marginal_rewards_sum_to_ndcg_and_list_mode_pays_at_the_end():
    marginal_rewards, infos = play(make(need="interest", reward_mode="marginal", feedback={"observe_prob": 1.0}), seed=4)
    assert sum(marginal_rewards) == pytest.approx(infos[-1]["list_reward"])
    list_rewards, infos = play(make(need="interest", reward_mode="list", feedback={"observe_prob": 1.0}), seed=4)
    assert list_rewards[:-1] == [0.0] * (len(list_rewards) - 1)
    assert list_rewards[-1] == pytest.approx(infos[-1]["list_reward"])


def test_swap_step_reward_formula_by_hand():
    env = make(need="interest", reward_labels="true", expose_truth=True, num_candidates=6, list_length=3)
    _, info = env.reset(seed=11)
    relevance = info["relevance"].astype(float)
    g, idcg, d = gains(relevance), ideal_dcg(relevance, 3), discounts(3, 3)
    pool = list(range(6))
    for t, action in enumerate([5, 0, 2]):
        _, reward, *_ = env.step(action)
        pool.remove(action)
        expected = d[t] * (g[action] - np.mean(g[pool])) / idcg if idcg > 0 else 0.0
        assert reward == pytest.approx(expected)


def test_rewards_come_from_feedback_labels_not_truth():
    """Ground truth must not leak into rewards unless reward_labels='true' is asked for."""
    feedback = {"observe_prob": 0.5, "label_noise": 0.3}
    env = make(need="interest", expose_truth=True, feedback=feedback, reward_mode="list")
    differs = 0
    for seed in range(30):
        rewards, infos = play(env, seed)
        labels, truth, ranking = infos[-1]["feedback_labels"], infos[-1]["relevance"], infos[-1]["ranking"]
        on_labels = ndcg(ranking[None], labels[None].astype(float), None, 10)[0]
        on_truth = ndcg(ranking[None], truth[None].astype(float), None, 10)[0]
        assert rewards[-1] == pytest.approx(on_labels)
        assert infos[-1]["metrics"]["NDCG@10"] == pytest.approx(on_truth)
        differs += not np.isclose(on_labels, on_truth)
    assert differs > 10  # the labels are noisy and sparse, so the two disagree on most episodes
    rewards, infos = play(make(need="interest", expose_truth=True, reward_labels="true", reward_mode="list"), 0)
    truth = infos[-1]["relevance"].astype(float)
    assert rewards[-1] == pytest.approx(ndcg(infos[-1]["ranking"][None], truth[None], None, 10)[0])


def test_info_contract():
    _, infos = play(make(need="trending", **SMALL), seed=3)
    reset, steps = infos[0], infos[1:]
    assert {"action_mask", "position", "need", "instruction"} <= set(reset)
    per_step = {"action_mask", "position", "item_id", "feedback", "feedback_observed", "swap_reward", "invalid_action"}
    for t, info in enumerate(steps):
        assert per_step <= set(info) and info["position"] == t and info["action_mask"].dtype == np.int8
        assert info["feedback"] == 0.0 or info["feedback_observed"]
    last = steps[-1]
    assert last["ranking"].shape == (4,) and last["swap_rewards"].shape == (4,) and last["clicks"].shape == (4,)
    assert last["feedback_labels"].shape == (8,) and last["feedback_labels_observed"].dtype == np.int8
    assert set(last["metrics"]) == {"NDCG@5", "NDCG@10", "Recall@5", "Recall@10", "need_metric"}
    assert last["need"] == "trending" and "relevance" not in last
    for t, info in enumerate(steps):  # the per-step feedback is the label of the placed item
        index = last["ranking"][t]
        assert info["feedback"] == last["feedback_labels"][index]
        assert info["feedback_observed"] == bool(last["feedback_labels_observed"][index])


@pytest.mark.parametrize("need", ["trending", "diverse"])
def test_lean_info_keeps_the_rewards_and_drops_the_evaluation(need):
    full_rewards, full = play(make(need=need, **SMALL), seed=5)
    lean_rewards, lean = play(make(need=need, info_level="lean", **SMALL), seed=5)
    assert lean_rewards == full_rewards
    for full_info, lean_info in zip(full[:-1], lean[:-1], strict=True):  # reset and per-step infos are the same
        assert set(full_info) == set(lean_info)
    assert set(lean[-1]) == set(lean[-2]) | {"ranking", "list_reward"}
    np.testing.assert_array_equal(lean[-1]["ranking"], full[-1]["ranking"])
    assert lean[-1]["list_reward"] == full[-1]["list_reward"]


def test_observation_masks_are_read_only_and_never_change_once_returned():
    env = make(**SMALL)
    obs, _ = env.reset(seed=0)
    seen = [obs]
    for action in (3, 1, 6):
        obs, *_ = env.step(action)
        seen.append(obs)
    assert [o["placed"].tolist() for o in seen] == [
        [0] * 8,
        [0, 0, 0, 1, 0, 0, 0, 0],
        [0, 1, 0, 1, 0, 0, 0, 0],
        [0, 1, 0, 1, 0, 0, 1, 0],
    ]
    assert all((o["action_mask"] == 1 - o["placed"]).all() for o in seen)
    with pytest.raises(ValueError, match="read-only"):
        seen[0]["placed"][0] = 1
    seen[0]["candidates"][0, 0] = 123.0  # the features are the caller's own copy
    assert env.step(0)[0]["candidates"][0, 0] != 123.0


def test_config_is_a_value_and_resolve_is_the_step_that_acts():
    """EnvConfig builds no scenario and registers nothing; resolve() does both (and reports bad names)."""
    config = EnvConfig(need="test-not-yet-registered", scenario="test-no-such-scenario")
    assert config.k == 10 and config == EnvConfig(need="test-not-yet-registered", scenario="test-no-such-scenario")
    with pytest.raises(ValueError, match="'test-no-such-scenario'"):
        resolve(config)
    with pytest.raises(ValueError, match="'test-not-yet-registered'"):
        resolve(EnvConfig(need="test-not-yet-registered"))
    scenario, needs = resolve(EnvConfig(need="trending,niche"))
    assert scenario.name == "synthetic" and [n.name for n in needs] == ["trending", "niche"]


@pytest.mark.parametrize("mode", ["swap", "marginal", "list"])
def test_step_reward_is_the_one_place_a_mode_is_defined(mode):
    """Hand-worked: gains G = 3 (placed) and alternatives of gain sum 4 over 2 items, d = 1, IDCG = 5."""
    swap, marginal = step_rewards(3.0, 1.0, 4.0, 2, 5.0)
    assert (swap, marginal) == (pytest.approx((2 * 3 - 4) / (2 * 5)), pytest.approx(3 / 5))
    expected = {"swap": swap, "marginal": marginal, "list": 0.0}[mode]
    assert step_reward(mode, swap, marginal) == pytest.approx(expected)
    assert step_reward(mode, swap, marginal, lambda: 0.75) == pytest.approx(0.75 if mode == "list" else expected)
    batch = step_reward(mode, np.array([swap, 0.5]), np.array([marginal, 0.25]), lambda: np.array([0.75, 0.0]))
    np.testing.assert_allclose(batch, {"swap": [swap, 0.5], "marginal": [marginal, 0.25], "list": [0.75, 0.0]}[mode])


def test_reset_option_overrides_need_for_one_episode():
    env = make(need="interest")
    _, info = env.reset(seed=0, options={"need": "niche"})
    assert info["need"] == "niche" and env.request.need == "niche"
    _, info = env.reset()
    assert info["need"] == "interest"
    _, info = env.reset(options={"need": "fresh+niche"})
    assert info["need"] == "fresh+niche"


def test_need_sequence_is_sampled_per_episode():
    env = make(need=["interest", "trending", "niche"])
    seen = {play(env, seed)[1][0]["need"] for seed in range(30)}
    assert seen == {"interest", "trending", "niche"}


# ---------------------------------------------------------------------------------------------------------------
# Bad input.


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"need": "popular"}, ["'popular'", "trending"]),
        ({"need": "trending+nope"}, ["'nope'"]),
        ({"scenario": "movielens-9m"}, ["'movielens-9m'", "synthetic"]),
        ({"list_length": 30}, ["list_length=30", "between 1 and 20"]),
        ({"num_candidates": 1}, ["num_candidates=1"]),
        ({"metric_k": 0}, ["metric_k=0"]),
        ({"reward_mode": "dense"}, ["'dense'", "swap", "marginal", "list"]),
        ({"reward_labels": "clicks"}, ["'clicks'", "feedback", "true"]),
        ({"invalid_action": "ignore"}, ["'ignore'", "penalize"]),
        ({"feedback": {"observe_prob": 1.5}}, ["observe_prob=1.5", "[0, 1]"]),
        ({"feedback": {"label_noise": -0.2}}, ["label_noise=-0.2", "[0, 1]"]),
        ({"feedback": {"click": "dbn"}}, ["'click'", "observe_prob"]),
        ({"render_mode": "human"}, ["'human'", "ansi"]),
        ({"info_level": "minimal"}, ["info_level='minimal'", "full", "lean"]),
        ({"scenario_kwargs": {"num_items": 5}}, ["max_candidates() is 0", "at least 2 candidates"]),
        ({"scenario_kwargs": {"num_items": 100}, "num_candidates": 60}, ["num_candidates=60; allowed: at most 48"]),
    ],
)
def test_bad_constructor_arguments_name_the_value(kwargs, words):
    with pytest.raises(ValueError) as error:
        make(**kwargs).reset(seed=0)
    for word in words:
        assert word in str(error.value)


@pytest.mark.parametrize(
    ("action", "words"),
    [
        (8, ["action 8", "[0, 8)"]),
        (-1, ["action -1"]),
        (2.0, ["not an integer"]),
        (True, ["not an integer"]),
        ("1", ["not an integer"]),
    ],
)
def test_bad_actions_raise(action, words):
    env = make(**SMALL)
    env.reset(seed=0)
    with pytest.raises(ValueError) as error:
        env.step(action)
    for word in words:
        assert word in str(error.value)


def test_numpy_integer_actions_are_accepted():
    env = make(**SMALL)
    env.reset(seed=0)
    env.step(np.int64(1))
    env.step(np.array(2))
    assert env.ranking == [1, 2]


def test_repeated_action_raises_or_is_penalized():
    env = make(**SMALL)
    env.reset(seed=0)
    env.step(1)
    with pytest.raises(ValueError, match="already placed.*penalize"):
        env.step(1)
    env = make(invalid_action="penalize", **SMALL)
    env.reset(seed=0)
    env.step(1)
    obs, reward, terminated, truncated, info = env.step(1)
    assert reward == INVALID_ACTION_PENALTY and info["invalid_action"] and obs["position"] == 1
    assert not terminated and not truncated
    for _ in range(6):
        *_, truncated, _ = env.step(1)
    assert not truncated  # 7 invalid actions so far
    *_, truncated, _ = env.step(1)
    assert truncated  # N = 8 invalid actions end the episode


def test_stepping_a_finished_or_unstarted_episode_raises():
    env = make(**SMALL)
    with pytest.raises(ResetNeeded):
        env.step(0)
    play(env)
    with pytest.raises(ResetNeeded):
        env.step(0)


def test_scenario_object_with_kwargs_is_rejected():
    from scenarios import SyntheticScenario

    with pytest.raises(ValueError, match="scenario_kwargs"):
        make(scenario=SyntheticScenario(num_items=200), scenario_kwargs={"seed": 1})


def test_sizes_are_checked_when_the_env_is_made():
    """A candidate set larger than the scenario can fill is refused by gym.make, before anything of that size exists."""
    limit = make().scenario.max_candidates()
    for n in (limit + 1, 10**9):
        with pytest.raises(ValueError, match=rf"num_candidates={n}; allowed: at most {limit} for SyntheticScenario"):
            gym.make("FlexRec-v0", num_candidates=n, list_length=3)
    _, infos = play(make(num_candidates=limit, list_length=3), seed=0)
    assert infos[-1]["ranking"].shape == (3,)


def test_unknown_reset_options_are_refused():
    with pytest.raises(ValueError, match=r"unknown reset option\(s\) \['neeed'\]; allowed: \['need'\]"):
        make().reset(seed=0, options={"neeed": "niche"})
    envs = gym.make_vec("FlexRec-v0", num_envs=2, autoreset_mode="Disabled")
    with pytest.raises(ValueError, match=r"\['mask'\]; allowed: \['need', 'reset_mask'\]"):
        envs.reset(seed=0, options={"mask": [True, False]})


def test_need_names_are_stripped_and_repeated_parts_refused():
    assert make(need=" trending").reset(seed=0)[1]["need"] == "trending"
    assert make(need="fresh + niche").reset(seed=0)[1]["need"] == "fresh+niche"
    with pytest.raises(ValueError, match=r"need 'trending\+trending' repeats \['trending'\]; allowed: each part once"):
        make(need="trending+trending")
    with pytest.raises(ValueError, match="need=None; allowed: a string or a Need"):
        make(need=None)


def test_numpy_scalars_are_accepted_as_settings():
    env = make(num_candidates=np.int64(8), list_length=np.int32(3), feedback={"observe_prob": np.float32(0.5)})
    _, infos = play(env, seed=0)
    assert infos[-1]["ranking"].shape == (3,) and env.observation_space["candidates"].shape[0] == 8
