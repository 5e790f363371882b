"""Fuzzing FlexRec-v0: random settings and action sequences end in the documented behaviour or a documented error.

Documented errors are a ``ValueError``/``TypeError`` that names the value and says what is ``allowed`` (bad settings,
actions out of range or of the wrong type, a repeated candidate with ``invalid_action="raise"``). Anything else (a
raw ``IndexError``, a ``KeyError``, a hang, a non-finite reward, an observation outside its space) fails the test.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flexrec_env  # noqa: F401  (registers FlexRec-v0)

NEEDS = ["interest", "diverse", "fresh+niche", "trending,niche", ("interest", "diverse"), " niche"]
BAD_NEEDS = ["bogus", "trending+trending", "", None]


def mostly(valid: list, invalid: object) -> st.SearchStrategy:
    """A valid value most of the time, the invalid one now and then."""
    return st.one_of(st.sampled_from(valid), st.sampled_from(valid), st.sampled_from(valid), st.just(invalid))


@st.composite
def env_settings(draw: st.DrawFn, valid: bool = True) -> dict:
    """FlexRec-v0 keyword arguments; with ``valid=False`` any of them may be out of what is allowed."""

    def pick(choices: list, bad: object) -> object:
        return draw(st.sampled_from(choices) if valid else mostly(choices, bad))

    n = pick(list(range(2, 13)), draw(st.sampled_from([-1, 1, 10**9])))
    sizes = list(range(1, n + 1)) if isinstance(n, int) and 2 <= n <= 12 else [1]
    kwargs = {
        "num_candidates": n,
        "list_length": pick(sizes, draw(st.sampled_from([0, 14]))),
        "metric_k": draw(st.none()) if draw(st.booleans()) else pick(sizes, 0),
        "reward_mode": pick(["swap", "marginal", "list"], "dense"),
        "reward_labels": pick(["feedback", "true"], "clicks"),
        "invalid_action": pick(["raise", "penalize"], "ignore"),
        "info_level": pick(["full", "lean"], "none"),
        "need": pick(NEEDS, draw(st.sampled_from(BAD_NEEDS))),
        "expose_truth": draw(st.booleans()),
    }
    if draw(st.booleans()):
        observe_prob = pick([0.0, 0.3, 1.0], draw(st.sampled_from([-0.1, 1.5, float("nan")])))
        kwargs["feedback"] = {"observe_prob": observe_prob, "click_model": draw(st.sampled_from(["cascade", "position"]))}
    return kwargs


#: Mostly candidate indices, now and then out of range or not an integer.
ACTIONS = st.lists(mostly(list(range(12)), st.sampled_from([-1, 14, 1.5, "3", None, True, np.int64(2)])), max_size=60)


def assert_documented(error: Exception) -> None:
    assert isinstance(error, (ValueError, TypeError)), repr(error)
    assert "allowed" in str(error), str(error)


@settings(max_examples=300, deadline=None)
@given(env_settings(valid=False))
def test_any_settings_make_an_env_or_a_documented_error(kwargs):
    try:
        env = gym.make("FlexRec-v0", **kwargs)
    except Exception as error:  # noqa: BLE001  (the assertion says which errors are documented)
        assert_documented(error)
        return
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(env_settings(), ACTIONS, st.integers(0, 3))
def test_random_actions_end_in_documented_behaviour(kwargs, actions, seed):
    env = gym.make("FlexRec-v0", **kwargs).unwrapped
    obs, _ = env.reset(seed=seed)
    placed = 0
    for action in actions:
        try:
            obs, reward, terminated, truncated, info = env.step(action)
        except Exception as error:  # noqa: BLE001
            assert_documented(error)
            continue
        assert np.isfinite(reward) and env.observation_space.contains(obs)
        placed += not info["invalid_action"]
        assert info["position"] == placed - 1 if not info["invalid_action"] else info["position"] == placed
        assert terminated == (placed == env.config.list_length)
        if terminated:
            assert set(info["ranking"].tolist()) <= set(range(env.config.num_candidates))
            assert np.isfinite(info["list_reward"])
        if terminated or truncated:
            obs, _ = env.reset()
            placed = 0
