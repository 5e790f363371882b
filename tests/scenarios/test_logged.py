"""LogScenario: requests from a hand-built log (time split, positives, negatives), errors, and MovieTweetings."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import flexrec_env  # noqa: F401  (registers FlexRec-v0)
from flexrec_env.metrics import ndcg
from flexrec_env.needs import get_need, registered_needs
from scenarios import check_scenario, make_scenario
from scenarios.logged import LogScenario
from scenarios.logs import InteractionLog

NUM_USERS, NUM_ITEMS, PER_USER = 4, 30, 10


def tiny_log() -> InteractionLog:
    """User u rates items (7u + k) % 30 at times 100k + u, k = 0..9: five before the median time, five after.

    After the split, user 0's last rating is 1 star (not liked) and user 1 rates an item of its history again.
    """
    k = np.tile(np.arange(PER_USER), NUM_USERS)  # (40,)
    users = np.repeat(np.arange(NUM_USERS), PER_USER)
    items = (7 * users + k) % NUM_ITEMS
    items[(users == 1) & (k == 9)] = 7  # user 1's first item again
    ratings = np.full(len(k), 5.0)
    ratings[(users == 0) & (k == 9)] = 1.0
    times = 100.0 * k + users
    order = np.argsort(times, kind="stable")
    return InteractionLog(
        users=users[order],
        items=items[order],
        times=times[order],
        ratings=ratings[order],
        rating_range=(1.0, 5.0),
        user_ids=np.arange(NUM_USERS),
        item_ids=np.arange(NUM_ITEMS).astype(str),
        item_titles=np.array([f"Item {i}" for i in range(NUM_ITEMS)]),
        item_category=np.arange(NUM_ITEMS, dtype=np.int64) % 3,
        category_names=("a", "b", "c"),
        item_release=np.full(NUM_ITEMS, np.nan),
        source="tiny",
    )


def interactions(user: int, after: bool | None = None, liked: bool = False) -> set[int]:
    k = np.arange(PER_USER)
    items = (7 * user + k) % NUM_ITEMS
    if user == 1:
        items[9] = 7
    keep = np.ones(PER_USER, bool) if after is None else (k >= 5) == after
    if liked and user == 0:
        keep &= k != 9
    return set(items[keep].tolist())


@pytest.fixture(scope="module")
def scenario():
    return LogScenario(tiny_log(), min_history=2, history_length=4)


def test_split_and_histories(scenario):
    assert 400 < scenario.split_time < 500  # the median of the times 0..903
    np.testing.assert_array_equal(scenario.eligible_users, [0, 1, 2, 3])
    for user in range(NUM_USERS):
        expected = [(7 * user + k) % NUM_ITEMS for k in range(1, 5)]  # the last 4 of the 5 before the split
        np.testing.assert_array_equal(scenario.histories[user], expected)


def test_candidates_positives_and_negatives(scenario):
    batch = scenario.sample_requests(np.random.default_rng(0), 64, 12)
    assert batch.candidates.shape == (64, 12) and all(len(set(row)) == 12 for row in batch.candidates)
    np.testing.assert_array_equal(batch.history, scenario.histories[batch.user_ids])
    np.testing.assert_array_equal(batch.category, batch.candidates % 3)
    for user, candidates, interest in zip(batch.user_ids, batch.candidates, batch.interest, strict=True):
        positives = set(candidates[interest > 0].tolist())
        # held-out positives: liked after the split, never seen before it; all of them fit (<= N // 2)
        assert positives == interactions(user, after=True, liked=True) - interactions(user, after=False)
        assert set(interest[interest > 0].tolist()) == {2}  # 5 stars: grade 2
        assert not set(candidates[interest == 0].tolist()) & interactions(user)  # negatives: never interacted with
    assert {len(interactions(u, True, True) - interactions(u, False)) for u in range(4)} == {4, 5}
    check_scenario(scenario, num_candidates=12, min_fraction=0.0)


def test_same_seed_same_requests(scenario):
    a, b = (scenario.sample_requests(np.random.default_rng(3), 16, 10) for _ in range(2))
    assert a.equals(b)
    assert not a.equals(scenario.sample_requests(np.random.default_rng(4), 16, 10))


def test_errors(scenario):
    with pytest.raises(ValueError, match="num_candidates=30 needs a catalogue larger than tiny's 30 items"):
        scenario.sample_requests(np.random.default_rng(0), 4, 30)
    with pytest.raises(ValueError, match="tiny: too few items a user has not seen for num_candidates=26"):
        scenario.sample_requests(np.random.default_rng(0), 4, 26)  # 20 unseen items + 4 or 5 positives < 26
    with pytest.raises(ValueError, match=r"no user of tiny has >= 6 interactions before the split time.*lower min_history"):
        LogScenario(tiny_log(), min_history=6)
    with pytest.raises(ValueError, match=r"unknown log scenario setting\(s\) \['split'\]"):
        LogScenario(tiny_log(), split=0.5)
    with pytest.raises(ValueError, match=r"split_quantile=1.5"):
        LogScenario(tiny_log(), split_quantile=1.5)


def test_named_factories_and_their_errors(tmp_path):
    path = tmp_path / "log.csv"
    log = tiny_log()
    rows = np.column_stack([log.users, log.items, log.times.astype(int), log.ratings.astype(int)])
    path.write_text("uid,iid,ts,stars\n" + "".join(f"{u},{i},{t},{r}\n" for u, i, t, r in rows))
    columns = {"user_col": "uid", "item_col": "iid", "time_col": "ts", "rating_col": "stars", "rating_range": [1, 5]}
    built = make_scenario("logged", {"path": str(path), "min_history": 2, **columns}, check=False)  # too small for trending
    assert isinstance(built, LogScenario) and built.num_items == NUM_ITEMS and len(built.eligible_users) == NUM_USERS
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['split'\] for the auto log scenario; allowed: the LogConfig"):
        make_scenario("logged", {"path": str(path), "split": 0.5})
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['user_col'\] for the movietweetings log scenario"):
        make_scenario("movietweetings", {"path": str(tmp_path), "user_col": "uid"})
    with pytest.raises(FileNotFoundError, match="missing does not exist"):
        make_scenario("movielens", {"path": str(tmp_path / "missing")})


# ------------------------------------------------------------------------------------------------------------------
# MovieTweetings 100K (shared data, skipped when absent).


@pytest.fixture(scope="module")
def movietweetings_kwargs(shared_data):
    return {"path": str(shared_data / "data" / "movietweetings-100k")}


def test_movietweetings_episodes_for_every_need(movietweetings_kwargs):
    for name in registered_needs():
        env = gym.make("FlexRec-v0", scenario="movietweetings", scenario_kwargs=movietweetings_kwargs, need=name)
        obs, _ = env.reset(seed=0)
        for _ in range(env.unwrapped.config.list_length):
            obs, reward, terminated, truncated, info = env.step(int(np.flatnonzero(obs["action_mask"])[0]))
            assert np.isfinite(reward)
        assert terminated and info["need"] == name
    scenario = env.unwrapped.scenario
    assert isinstance(scenario, LogScenario) and len(scenario.log) == 100_000
    few_good_men = int(np.flatnonzero(scenario.log.item_ids == "0104257")[0])
    assert scenario.item_title(few_good_men) == "A Few Good Men (1992) [Crime]"


def test_movietweetings_needs_disagree(movietweetings_kwargs):
    """Ranking by the oracle of one need scores clearly worse under another (requests with a relevant item)."""
    scenario = make_scenario("movietweetings", movietweetings_kwargs)
    check_scenario(scenario)
    requests = scenario.sample_requests(np.random.default_rng(0), 2000, 20)
    rel = {name: get_need(name).relevance(requests).astype(float) for name in ("trending", "niche", "fresh")}
    crosses = []
    for target, relevance in rel.items():
        has = (relevance > 0).any(axis=1)
        assert has.mean() > 0.5, target
        for other in rel:
            score = ndcg(np.argsort(-rel[other], axis=1, kind="stable")[:, :10], relevance, None, 5)[has].mean()
            if other == target:
                assert score == pytest.approx(1.0)
            else:
                assert score < 0.8, (other, target, score)
                crosses.append(score)
    assert np.mean(crosses) < 0.55
