"""The native vector env against gymnasium's SyncVectorEnv over single envs: same episodes, same layout."""

from __future__ import annotations

from dataclasses import replace

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.error import ResetNeeded
from gymnasium.vector import AutoresetMode

import flexrec_env  # noqa: F401
from flexrec_env import FlexRecVectorEnv

CONFIGS = [
    {"need": ["trending", "diverse", "niche"]},
    {"need": "interest", "invalid_action": "penalize", "reward_mode": "list", "num_candidates": 6, "list_length": 4},
    {"need": "fresh+niche", "reward_mode": "marginal", "expose_truth": True, "feedback": {"click_model": "cascade"}},
    {"need": ["interest", "diverse"], "info_level": "lean", "num_candidates": 5, "list_length": 2},
    # One-step episodes and random invalid actions: envs fall out of step and draw new blocks at different times.
    {"need": "trending", "invalid_action": "penalize", "num_candidates": 3, "list_length": 2, "steps": 260},
]


def assert_same(a, b, path=""):
    """Exact equality of nested obs/info structures (floats to 1e-12: batch sums may round differently)."""
    if isinstance(a, dict):
        assert set(a) == set(b), (path, sorted(set(a) ^ set(b)))
        for key in a:
            assert_same(a[key], b[key], f"{path}/{key}")
    elif isinstance(a, np.ndarray) and a.dtype == object:
        assert a.shape == b.shape, path
        for x, y in zip(a, b, strict=True):
            assert_same(x, y, path + "[]")
    elif isinstance(a, np.ndarray):
        b = np.asarray(b)
        assert a.dtype == b.dtype and a.shape == b.shape, (path, a.dtype, b.dtype, a.shape, b.shape)
        if np.issubdtype(a.dtype, np.floating):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12, err_msg=path)
        else:
            np.testing.assert_array_equal(a, b, err_msg=path)
    else:
        assert a == b, (path, a, b)


def random_actions(rng, obs, config):
    if config.get("invalid_action") == "penalize":
        return rng.integers(0, config["num_candidates"], len(obs["action_mask"]))
    return np.array([rng.choice(np.flatnonzero(mask)) for mask in obs["action_mask"]])


def compare_with_sync(env_id, config, mode, seed=7, check=None):
    """Step the native vector env of ``env_id`` and SyncVectorEnv over its single envs with the same random actions.

    ``config`` may hold ``steps`` (default 35); ``check(sync, native)`` runs after every step.
    """
    config = dict(config)
    steps, num_envs = config.pop("steps", 35), 3
    sync = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync", vector_kwargs={"autoreset_mode": mode}, **config)
    native = gym.make_vec(env_id, num_envs=num_envs, autoreset_mode=mode, **config)
    assert native.metadata["autoreset_mode"] == mode
    obs, info = sync.reset(seed=seed)
    assert_same(obs, native.reset(seed=seed)[0], "reset obs")
    assert_same(info, native.reset(seed=seed)[1], "reset info")
    rng = np.random.default_rng(0)
    for step in range(steps):  # several episodes, autoresets included
        actions = random_actions(rng, obs, config)
        expected, got = sync.step(actions), native.step(actions)
        for name, a, b in zip(("obs", "reward", "terminated", "truncated", "info"), expected, got, strict=True):
            assert_same(a, b, f"step {step} {name}")
        if check is not None:
            check(sync, native)
        obs = expected[0]
        done = expected[2] | expected[3]
        if mode == AutoresetMode.DISABLED and done.any():  # the caller resets finished envs
            expected, got = sync.reset(options={"reset_mask": done}), native.reset(options={"reset_mask": done})
            for name, a, b in zip(("obs", "info"), expected, got, strict=True):
                assert_same(a, b, f"step {step} reset {name}")
            obs = expected[0]
    return native


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP, AutoresetMode.DISABLED])
@pytest.mark.parametrize("config", CONFIGS)
def test_native_vector_env_equals_sync_vector_env(mode, config):
    native = compare_with_sync("FlexRec-v0", config, mode)
    assert isinstance(native.unwrapped, FlexRecVectorEnv)


def test_shared_rng_is_reproducible_and_valid():
    def run(seed):
        envs = gym.make_vec("FlexRec-v0", num_envs=16, shared_rng=True, need=["interest", "diverse"])
        obs, _ = envs.reset(seed=seed)
        rewards = []
        for _ in range(25):
            obs, reward, terminated, truncated, info = envs.step(np.argmax(obs["action_mask"], axis=1))
            rewards.append(reward)
        return np.array(rewards), obs

    a, obs_a = run(1)
    b, obs_b = run(1)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(obs_a["candidates"], obs_b["candidates"])
    assert not np.array_equal(a, run(2)[0])
    assert len({tuple(c) for c in obs_a["candidates"][:, :, 0]}) == 16  # envs get different requests


def test_disabled_autoreset_needs_masked_reset():
    envs = gym.make_vec("FlexRec-v0", num_envs=2, autoreset_mode="Disabled", num_candidates=4, list_length=2)
    envs.reset(seed=0)
    envs.step(np.array([0, 1]))
    _, _, terminated, _, _ = envs.step(np.array([1, 0]))
    assert terminated.all()
    with pytest.raises(ResetNeeded, match="reset_mask"):
        envs.step(np.array([2, 2]))
    obs, _ = envs.reset(options={"reset_mask": np.array([True, False])})
    assert obs["position"].tolist() == [0, 2]
    envs.reset(options={"reset_mask": np.array([False, True])})
    envs.step(np.array([3, 3]))


@pytest.mark.parametrize(
    ("actions", "words"),
    [
        (np.array([0, 1, 2]), ["shape (3,)", "2 integers"]),
        (np.array([0.0, 1.0]), ["float64"]),
        (np.array([0, 9]), ["action 9 of env 1"]),
    ],
)
def test_bad_vector_actions(actions, words):
    envs = gym.make_vec("FlexRec-v0", num_envs=2, num_candidates=5, list_length=2)
    envs.reset(seed=0)
    with pytest.raises(ValueError) as error:
        envs.step(actions)
    for word in words:
        assert word in str(error.value)


def test_bad_vector_arguments():
    with pytest.raises(ValueError, match="num_envs=0"):
        FlexRecVectorEnv(num_envs=0)
    with pytest.raises(ValueError, match="autoreset_mode='sometimes'"):
        FlexRecVectorEnv(num_envs=2, autoreset_mode="sometimes")
    with pytest.raises(ValueError, match="3 seeds for 2 envs"):
        FlexRecVectorEnv(num_envs=2).reset(seed=[1, 2, 3])


def test_groups_share_one_episode_and_reset_whole():
    env = FlexRecVectorEnv(6, group_size=3, autoreset_mode="Disabled", need=["trending", "niche"], shared_rng=True)
    obs, info = env.reset(seed=0)
    for group in (slice(0, 3), slice(3, 6)):
        assert (obs["candidates"][group] == obs["candidates"][group][:1]).all()
        assert len(set(info["instruction"][group])) == 1
    assert not np.array_equal(obs["candidates"][0], obs["candidates"][3])
    rankings = np.stack([np.random.default_rng(i).permutation(20)[:10] for i in range(6)])
    for t in range(10):
        obs, _, terminated, _, info = env.step(rankings[:, t])
    assert terminated.all()
    labels = info["feedback_labels"]
    assert (labels[:3] == labels[0]).all() and (labels[3:] == labels[3]).all()  # one set of labels per group
    requests = env.requests([0, 2, 3])
    assert requests[0].candidates == requests[1].candidates != requests[2].candidates
    with pytest.raises(ValueError, match=r"reset rows \[1, 2\] split a group"):
        env.reset(options={"reset_mask": np.array([0, 1, 1, 0, 0, 0], dtype=bool)})


def test_group_size_errors_name_the_value():
    with pytest.raises(ValueError, match="group_size=4; allowed: an integer >= 1 that divides num_envs=6"):
        FlexRecVectorEnv(6, group_size=4, autoreset_mode="Disabled")
    with pytest.raises(ValueError, match="group_size=2 needs autoreset_mode='Disabled'"):
        FlexRecVectorEnv(6, group_size=2)


def test_per_env_streams_serve_groups_and_reseeded_subsets_as_single_envs_would():
    """Groups draw from their first env's stream only, and a reset with a seed and a mask rebuilds the streams: both
    start from an empty block store, which then holds every env's first block."""
    groups = FlexRecVectorEnv(4, group_size=2, autoreset_mode="Disabled", need="trending")
    obs, _ = groups.reset(seed=0)
    single = {i: gym.make("FlexRec-v0", need="trending").unwrapped.reset(seed=i)[0] for i in (0, 2)}
    for env, first in ((0, 0), (1, 0), (2, 2), (3, 2)):
        np.testing.assert_array_equal(obs["candidates"][env], single[first]["candidates"])
    envs = FlexRecVectorEnv(3, autoreset_mode="Disabled", need="trending")
    envs.reset(seed=0)
    obs, _ = envs.reset(seed=[5, None, None], options={"reset_mask": [True, False, False]})
    expected = gym.make("FlexRec-v0", need="trending").unwrapped.reset(seed=5)[0]
    np.testing.assert_array_equal(obs["candidates"][0], expected["candidates"])


def test_block_store_takes_longer_histories_on_a_partial_refill():
    """A new block whose histories are longer than the store's widens the store; the other envs' rows are kept."""
    from flexrec_env.core import EpisodeNoise

    envs = FlexRecVectorEnv(2, need="interest")
    envs.reset(seed=0)
    noise = envs._streams.noise
    wide = noise.take(np.arange(64))
    wide = EpisodeNoise(
        requests=replace(wide.requests, history=np.pad(wide.requests.history, ((0, 0), (0, 3)), constant_values=7)),
        **{k: getattr(wide, k) for k in ("need_uniform", "instruction_uniform", "observe_uniform", "noise_uniform",
                                         "grade_uniform", "click_uniform")},
    )  # fmt: skip
    kept = noise.requests.candidates[64:].copy()
    merged = noise.assign(np.arange(64), wide)
    assert merged.requests.history.shape[1] == noise.requests.history.shape[1] + 3
    np.testing.assert_array_equal(merged.requests.history[:64, -3:], 7)
    np.testing.assert_array_equal(merged.requests.history[64:, -3:], -1)
    np.testing.assert_array_equal(merged.requests.candidates[64:], kept)
