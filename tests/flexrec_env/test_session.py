"""FlexRecSession-v0: the session vector env against SyncVectorEnv over single session envs, check_env, the need
process, no repeated items, and the session metrics worked out by hand."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode
from test_vector_env import compare_with_sync

import flexrec_env  # noqa: F401
from flexrec_env import FlexRecSessionVectorEnv, SessionConfig
from flexrec_env.needs import resolve_needs
from flexrec_env.session import need_sequences, session_instructions, session_metrics, transition_matrix

SMALL = {"num_candidates": 5, "list_length": 2}
CONFIGS = [
    {"need": ["trending", "diverse", "niche"], "session_length": 3, **SMALL},
    {"need": "interest", "invalid_action": "penalize", "reward_mode": "list", "session_length": 2, **SMALL},
    {"need": ["fresh+niche", "interest"], "reward_mode": "marginal", "expose_truth": True, "fatigue": 0.5, **SMALL},
    {"need_schedule": ["trending", "niche", "niche"], "session_length": 3, "info_level": "lean", **SMALL},
    {"need": ["interest", "trending"], "stay_probability": 0.0, "announce_switch": False, "num_candidates": 3,
     "list_length": 1, "session_length": 2, "invalid_action": "penalize", "steps": 160},
]  # fmt: skip


def same_instructions(sync, native):
    assert [r.instruction for r in native.unwrapped.requests()] == [e.unwrapped.request.instruction for e in sync.unwrapped.envs]


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP, AutoresetMode.DISABLED])
@pytest.mark.parametrize("config", CONFIGS)
def test_session_vector_env_equals_sync_vector_env(mode, config):
    """Several sessions, requests and autoresets, step by step (the layout and values of every obs and info)."""
    native = compare_with_sync("FlexRecSession-v0", {"steps": 30, **config}, mode, seed=3, check=same_instructions)
    assert isinstance(native.unwrapped, FlexRecSessionVectorEnv)


@pytest.mark.parametrize("config", CONFIGS[:4])
def test_check_env(config):
    config = {k: v for k, v in config.items() if k != "steps"}
    check_env(gym.make("FlexRecSession-v0", **config).unwrapped, skip_render_check=True)


def play(env, seed, actions=None):
    """One session with the first valid candidate each step: the per-step (obs, info) pairs."""
    obs, info = env.reset(seed=seed)
    trace = [(obs, info)]
    done = False
    while not done:
        obs, _, terminated, truncated, info = env.step(int(np.flatnonzero(obs["action_mask"])[0]))
        trace.append((obs, info))
        done = terminated or truncated
    return trace


def test_schedule_switches_and_announcements():
    env = gym.make(
        "FlexRecSession-v0", need_schedule=["trending", "trending", "niche", "interest"], num_candidates=4, list_length=1
    ).unwrapped
    obs, info = env.reset(seed=1)
    needs, instructions, need_ids = [info["need"]], [env.request.instruction], [int(obs["need_id"])]
    for _ in range(3):
        obs, _, terminated, _, info = env.step(0)
        needs.append(env.request.need)
        instructions.append(env.request.instruction)
        need_ids.append(int(obs["need_id"]))
    assert needs == ["trending", "trending", "niche", "interest"]
    assert need_ids == [1, 1, 2, 0]
    assert [text.startswith("Now, ") for text in instructions] == [False, False, True, True]
    obs, _, terminated, _, info = env.step(0)
    assert terminated and info["session_metrics"]["switched"].tolist() == [False, False, True, True]
    with pytest.raises(ValueError, match="need_schedule"):
        env.reset(options={"need": "fresh"})


def test_need_process_by_hand():
    """Inverse CDF of the transition matrix, worked out for three needs and stay probability 0.5."""
    needs = resolve_needs(["interest", "trending", "niche"])
    session = SessionConfig(session_length=3, stay_probability=0.5)
    np.testing.assert_allclose(transition_matrix(session, 3), [[0.5, 0.25, 0.25], [0.25, 0.5, 0.25], [0.25, 0.25, 0.5]])
    # Session 1: u0 = 0.1 -> need 0; u1 = 0.6 -> row 0 cdf (0.5, 0.75, 1) -> need 1; u2 = 0.2 -> row 1 cdf (.25, .75,
    # 1) -> need 0. Session 2: u0 = 0.9 -> need 2; u1 = 0.8 -> row 2 cdf (.25, .5, 1) -> 2; u2 = 0.49 -> need 1.
    uniform = np.array([[0.1, 0.6, 0.2], [0.9, 0.8, 0.49]])
    assert need_sequences(uniform, needs, session).tolist() == [[0, 1, 0], [2, 2, 1]]
    explicit = SessionConfig(session_length=3, need_transition=[[0, 1, 0], [0, 0, 1], [1, 0, 0]])
    assert need_sequences(uniform, needs, explicit).tolist() == [[0, 1, 2], [2, 0, 1]]
    texts = np.array(["Show me X.", "Show me Y."], dtype=object)
    assert session_instructions(texts, np.array([False, True]), True).tolist() == ["Show me X.", "Now, show me Y."]
    assert session_instructions(texts, np.array([False, True]), False).tolist() == texts.tolist()
    spoken = np.array(["I want new items.", "TV series I would like.", "I'd like hits."], dtype=object)
    assert session_instructions(spoken, np.array([True, True, True]), True).tolist() == [
        "Now, I want new items.", "Now, TV series I would like.", "Now, I'd like hits.",
    ]  # fmt: skip


def test_stay_probability_shows_in_the_switch_rate():
    envs = FlexRecSessionVectorEnv(
        64, need=["interest", "trending"], stay_probability=0.8, session_length=4, num_candidates=3, list_length=1
    )
    obs, _ = envs.reset(seed=0)
    for _ in range(4):
        obs, _, terminated, _, info = envs.step(np.zeros(64, dtype=np.int64))
    assert terminated.all()
    switched = info["session_metrics"]["switched"][:, 1:]
    assert abs(switched.mean() - 0.2) < 0.06  # 192 transitions: 0.2 +- 3 standard errors


def test_no_item_repeats_within_a_session_and_the_user_stays():
    envs = FlexRecSessionVectorEnv(8, need=["interest", "niche"], session_length=5, num_candidates=10, list_length=3)
    envs.reset(seed=4)
    for _ in range(3):  # three sessions per env
        candidates, users = [[] for _ in range(8)], [set() for _ in range(8)]
        for _ in range(5):
            for row, request in enumerate(envs.requests()):
                candidates[row].extend(request.candidates)
                users[row].add(request.user_id)
            for _ in range(3):
                _, _, terminated, _, _ = envs.step(np.argmax(envs.action_masks(), axis=1))
        assert terminated.all()
        assert all(len(c) == len(set(c)) == 50 for c in candidates) and all(len(u) == 1 for u in users)
        envs.step(np.zeros(8, dtype=np.int64))  # the autoreset step


def test_session_metrics_by_hand():
    """Three requests with NDCG@5 0.2, 0.5, 0.8; a switch before the third: mean 0.5, after switch 0.8."""
    metrics = session_metrics(np.array([[0.2, 0.5, 0.8], [1.0, 0.0, 0.5]]), np.array([[0, 0, 1], [0, 1, 1]], dtype=bool))
    np.testing.assert_allclose(metrics["NDCG@5"], [0.5, 0.5])
    np.testing.assert_allclose(metrics["NDCG@5_after_switch"], [0.8, 0.25])
    assert metrics["switches"].tolist() == [1, 2]
    no_switch = session_metrics(np.array([[0.3, 0.4]]), np.zeros((1, 2), dtype=bool))
    assert np.isnan(no_switch["NDCG@5_after_switch"][0])


def test_session_metrics_in_the_env_by_hand():
    """A tiny session (N = 2, K = 1) played with the truth: the request NDCG@5 and the session mean by hand."""
    env = gym.make(
        "FlexRecSession-v0", need_schedule=["interest", "trending"], session_length=2, num_candidates=2, list_length=1,
        expose_truth=True,
    ).unwrapped  # fmt: skip
    _, info = env.reset(seed=5)
    expected = []
    for _ in range(2):
        relevance = info["relevance"]
        action = 1  # NDCG@5 of one item over the ideal of two: gain(rel[1]) / max gain, with d_1 = 1
        gain = 2.0 ** relevance.astype(float) - 1
        expected.append(gain[action] / gain.max() if gain.max() > 0 else 0.0)
        _, _, terminated, _, info = env.step(action)
        assert info["metrics"]["NDCG@5"] == pytest.approx(expected[-1])
    assert terminated
    metrics = info["session_metrics"]
    np.testing.assert_allclose(metrics["request_NDCG@5"], expected)
    assert metrics["NDCG@5"] == pytest.approx(np.mean(expected))
    assert metrics["NDCG@5_after_switch"] == pytest.approx(expected[1])


def test_fatigue_thins_feedback_in_later_requests():
    def observed_share(fatigue):
        envs = FlexRecSessionVectorEnv(32, need="interest", session_length=3, fatigue=fatigue, num_candidates=10, list_length=1)
        envs.reset(seed=0)
        share = []
        for _ in range(3):
            _, _, _, _, info = envs.step(np.zeros(32, dtype=np.int64))
            share.append(info["feedback_labels_observed"].mean())
        return share

    plain, tired = observed_share(0.0), observed_share(0.5)
    assert tired[0] == plain[0] and tired[2] < 0.5 * plain[2]


def test_session_errors_name_the_value():
    with pytest.raises(ValueError, match="session_length \\* num_candidates = 2000"):
        gym.make("FlexRecSession-v0", session_length=100, num_candidates=20)
    with pytest.raises(ValueError, match="need_transition is 2 x 2; allowed: 3 x 3"):
        gym.make("FlexRecSession-v0", need=["interest", "niche", "fresh"], need_transition=[[1, 0], [0, 1]])
    with pytest.raises(ValueError, match="one need per request"):
        gym.make("FlexRecSession-v0", need_schedule=["interest"], session_length=2)


def test_a_reset_refused_for_its_needs_uses_up_no_session():
    """Other needs than need_transition's rows are refused before anything is drawn: the next session is unchanged."""
    kwargs = {"need": ["interest", "niche"], "need_transition": [[0.5, 0.5], [0.5, 0.5]], "session_length": 2}
    plain, refused = (gym.make("FlexRecSession-v0", **kwargs).unwrapped for _ in range(2))
    plain.reset(seed=3)
    refused.reset(seed=3)
    with pytest.raises(ValueError, match="need_transition is 2 x 2; allowed: 3 x 3"):
        refused.reset(options={"need": ["interest", "niche", "fresh"]})
    np.testing.assert_array_equal(plain.reset()[0]["candidates"], refused.reset()[0]["candidates"])


def test_groups_share_a_session():
    envs = FlexRecSessionVectorEnv(4, group_size=2, autoreset_mode="Disabled", need=["trending", "niche"], **SMALL)
    obs, _ = envs.reset(seed=0)
    for _ in range(4 * 2):
        assert (obs["candidates"][0] == obs["candidates"][1]).all() and (obs["need_id"][2] == obs["need_id"][3])
        obs, _, terminated, _, _ = envs.step(np.array([0, 1, 2, 3]) if obs["position"][0] == 0 else np.array([4, 4, 4, 4]))
    assert terminated.all()


def test_sessions_refuse_a_render_mode():
    with pytest.raises(ValueError, match="render_mode='ansi'; allowed: None"):
        gym.make("FlexRecSession-v0", render_mode="ansi")
