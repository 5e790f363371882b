"""LogScenario: requests from hand-built logs (time split, positives, negatives), the training and evaluation phases
(no evaluation positive reaches a training reward), errors, and MovieTweetings."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pytest

import flexrec_env  # noqa: F401  (registers FlexRec-v0)
from agents.recommenders import history_windows
from agents.sb3 import make_training_env
from flexrec_env import EnvConfig
from flexrec_env.metrics import ndcg
from flexrec_env.needs import check_scenario_needs, get_need, registered_needs
from scenarios import check_scenario, make_scenario
from scenarios.logged import DAY, LogConfig, LogScenario
from scenarios.logs import InteractionLog

NUM_USERS, NUM_ITEMS, PER_USER = 4, 30, 10


def make_log(users, items, times, ratings, num_items: int, release=None, source: str = "tiny") -> InteractionLog:
    """A log of the rows (user, item, time, 1..5 stars) in time order; item i is in category i % 3."""
    order = np.argsort(times, kind="stable")
    return InteractionLog(
        users=np.asarray(users, dtype=np.int64)[order],
        items=np.asarray(items, dtype=np.int64)[order],
        times=np.asarray(times, dtype=np.float64)[order],
        ratings=np.asarray(ratings, dtype=np.float64)[order],
        rating_range=(1.0, 5.0),
        user_ids=np.arange(int(np.max(users)) + 1),
        item_ids=np.arange(num_items).astype(str),
        item_titles=np.array([f"Item {i}" for i in range(num_items)]),
        item_category=np.arange(num_items, dtype=np.int64) % 3,
        category_names=("a", "b", "c"),
        item_release=np.full(num_items, np.nan) if release is None else np.asarray(release, dtype=np.float64),
        source=source,
    )


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
    return make_log(users, items, 100.0 * k + users, ratings, NUM_ITEMS)


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
    check_scenario(scenario, num_candidates=12)
    check_scenario_needs(scenario, num_candidates=12, min_fraction=0.0)


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
# Training and evaluation phases.

#: (time, user, item, stars) of a hand-made log: with ``train_quantile=0.25`` and ``split_quantile=0.5`` of the times
#: 0..19, the training time is 4.75 and the split time 9.5.
PHASE_ROWS = [
    (0, 0, 0, 5), (1, 1, 1, 5), (2, 0, 2, 5), (3, 1, 3, 5), (4, 2, 4, 5),  # histories before the training time
    (5, 0, 5, 5),  # user 0 likes item 5: a training positive of grade 2
    (6, 0, 0, 5),  # user 0 sees item 0 again: in its history, not a positive
    (7, 1, 6, 1),  # user 1 dislikes item 6: not a positive
    (8, 1, 7, 4),  # user 1 likes item 7: grade 1 (normalised 0.75)
    (9, 2, 8, 5),  # user 2 likes item 8, but has one interaction before the training time (min_history=2)
    (10, 0, 9, 5), (11, 1, 10, 5), (12, 2, 11, 5), (13, 0, 6, 5), (14, 1, 5, 5),  # after the split: evaluation only
    (15, 0, 3, 2), (16, 1, 2, 5), (17, 2, 0, 5), (18, 0, 7, 5), (19, 1, 9, 5),
]  # fmt: skip
PHASES = {"train_quantile": 0.25, "split_quantile": 0.5, "min_history": 2, "history_length": 2}


def phase_log() -> InteractionLog:
    times, users, items, stars = np.array(PHASE_ROWS).T
    return make_log(users, items, times, stars, num_items=12, source="phases")


def candidates_by_user(scenario: LogScenario, num_candidates: int) -> dict[int, tuple[set[int], dict[int, int]]]:
    """user -> (every candidate seen, {positive item: grade}) over 200 requests."""
    batch = scenario.sample_requests(np.random.default_rng(0), 200, num_candidates)
    seen: dict[int, tuple[set[int], dict[int, int]]] = {}
    for user, candidates, interest in zip(batch.user_ids, batch.candidates, batch.interest, strict=True):
        items, positives = seen.setdefault(int(user), (set(), {}))
        items.update(candidates.tolist())
        positives.update({int(i): int(g) for i, g in zip(candidates, interest, strict=True) if g > 0})
    return seen


def test_training_phase_takes_positives_from_the_window_before_the_split():
    evaluation = LogScenario(phase_log(), **PHASES)
    train = evaluation.training_split()
    assert train.config.phase == "train" and train.config.min_history == 2 and evaluation.config.phase == "eval"
    assert (train.train_time, train.split_time, train.request_time) == (4.75, 9.5, 4.75)
    np.testing.assert_array_equal(train.eligible_users, [0, 1])  # user 2: one interaction before 4.75
    np.testing.assert_array_equal(train.histories, [[0, 2], [1, 3], [4, -1]])  # interactions before 4.75
    seen = candidates_by_user(train, num_candidates=6)
    assert seen[0][1] == {5: 2} and seen[1][1] == {7: 1}  # exactly the liked new items of [4.75, 9.5)
    # negatives: items the user did not interact with before 9.5, among those seen before 9.5 (items 9-11 are not)
    assert seen[0][0] == {1, 3, 4, 5, 6, 7, 8} and seen[1][0] == {0, 2, 4, 5, 7, 8}
    batch = train.sample_requests(np.random.default_rng(1), 8, 6)
    assert (batch.times == 4.75).all()
    # evaluation: the split at 9.5, positives after it; user 2 has two interactions before it
    np.testing.assert_array_equal(evaluation.eligible_users, [0, 1, 2])
    seen = candidates_by_user(evaluation, num_candidates=6)
    assert {user: set(positives) for user, (_, positives) in seen.items()} == {0: {6, 7, 9}, 1: {2, 5, 9, 10}, 2: {0, 11}}


def test_training_split_is_cached_and_its_own():
    evaluation = LogScenario(phase_log(), **PHASES)
    train = evaluation.training_split()
    assert evaluation.training_split() is train and train.training_split() is train
    assert LogScenario(phase_log(), phase="train", **PHASES).training_split().config.phase == "train"
    synthetic = make_scenario("synthetic")
    assert synthetic.training_split() is synthetic
    assert gym.make("FlexRec-v0", split="train").unwrapped.scenario is synthetic


def test_interaction_histories_are_whole_and_requests_keep_the_last_items():
    evaluation = LogScenario(phase_log(), **PHASES)
    np.testing.assert_array_equal(evaluation.interaction_histories(), [[0, 2, 5, 0], [1, 3, 6, 7], [4, 8, -1, -1]])
    np.testing.assert_array_equal(evaluation.histories, [[5, 0], [6, 7], [4, 8]])  # history_length=2
    batch = evaluation.sample_requests(np.random.default_rng(0), 6, 4)
    np.testing.assert_array_equal(batch.history, evaluation.histories[batch.user_ids])
    np.testing.assert_array_equal(evaluation.training_split().interaction_histories(), [[0, 2], [1, 3], [4, -1]])
    # SASRec's training windows of 3 items cover each whole history: every item is a next-item target once (the
    # first too, as padding precedes it in its window): user 0 gets [0, 0+1, 2+1] and [2+1, 5+1, 0+1]
    windows, users = history_windows(evaluation.interaction_histories(), width=3)
    np.testing.assert_array_equal(windows, [[3, 6, 1], [0, 1, 3], [4, 7, 8], [0, 2, 4], [0, 5, 9]])
    np.testing.assert_array_equal(users, [0, 0, 1, 1, 2])


def test_bad_phase_settings_say_what_is_allowed():
    with pytest.raises(ValueError, match=r"train_quantile=0.5; allowed: a number in \(0, split_quantile=0.5\)"):
        LogScenario(tiny_log(), train_quantile=0.5)
    with pytest.raises(ValueError, match=r"train_quantile=0.0; allowed: a number in \(0, split_quantile=0.7\)"):
        LogScenario(tiny_log(), train_quantile=0.0, split_quantile=0.7)
    with pytest.raises(ValueError, match=r"phase='test'; allowed: one of \['train', 'eval'\]"):
        LogScenario(tiny_log(), phase="test")
    with pytest.raises(ValueError, match=r"no user of tiny has >= 4 interactions before the training time.*train_quantile"):
        LogScenario(tiny_log(), min_history=4).training_split()  # 3 interactions before the 0.3 quantile
    with pytest.raises(ValueError, match=r"split='bogus'; allowed: one of \['train', 'eval'\]"):
        EnvConfig(split="bogus")


def random_log(seed: int = 0, num_users: int = 60, num_items: int = 90, per_user: int = 40) -> InteractionLog:
    """Users rate random items with random stars over 200 days; releases spread over the same time."""
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(num_users), per_user)
    items = np.concatenate([rng.permutation(num_items)[:per_user] for _ in range(num_users)])
    times = rng.uniform(0, 200 * DAY, len(users))
    stars = rng.integers(1, 6, len(users))
    return make_log(users, items, times, stars, num_items, rng.uniform(-100 * DAY, 200 * DAY, num_items), "random")


def window_positives(log: InteractionLog) -> tuple[set[tuple[int, int]], set[tuple[int, int]]]:
    """(user, item) liked in [t_train, t_split), and liked only at or after t_split (default quantiles), from the log."""
    defaults = LogConfig()
    t_train, t_split = np.quantile(log.times, [defaults.train_quantile, defaults.split_quantile])
    low, high = log.rating_range
    liked = (log.ratings - low) / (high - low) >= defaults.positive_rating
    pairs = list(zip(log.users.tolist(), log.items.tolist(), strict=True))
    window = {pair for pair, t, ok in zip(pairs, log.times, liked, strict=True) if ok and t_train <= t < t_split}
    later = {pair for pair, t, ok in zip(pairs, log.times, liked, strict=True) if ok and t >= t_split} - window
    return window, later


def training_positives(env_kwargs: dict, episodes: int) -> set[tuple[int, int]]:
    """(user, item) of every candidate that earned a positive feedback label in training episodes (noise-free)."""
    env = gym.make("FlexRec-v0", split="train", need="interest", list_length=2, feedback={"label_noise": 0.0}, **env_kwargs)
    found: set[tuple[int, int]] = set()
    for episode in range(episodes):
        obs, _ = env.reset(seed=episode)
        request = env.unwrapped.request
        for _ in range(2):
            obs, reward, terminated, truncated, info = env.step(int(np.flatnonzero(obs["action_mask"])[0]))
        labels = info["feedback_labels"]
        found.update((request.user_id, request.candidates[i]) for i in np.flatnonzero(labels > 0))
    return found


def test_no_evaluation_positive_reaches_a_training_reward():
    log = random_log()
    positives = training_positives({"scenario": LogScenario(log)}, episodes=300)
    window, later = window_positives(log)
    assert len(positives) > 100 and len(later) > 300
    assert positives <= window and not positives & later


def test_training_requests_ignore_everything_after_the_split():
    """Reshuffling who rated what, and how, after the split changes the evaluation requests, not the training ones."""
    log = random_log()
    after = log.times >= np.quantile(log.times, 0.5)
    rng = np.random.default_rng(1)
    users, items, ratings = np.array(log.users), np.array(log.items), np.array(log.ratings)  # writable copies
    users[after], items[after], ratings[after] = rng.permutation(users[after]), rng.permutation(items[after]), 6 - ratings[after]
    original, reshuffled = LogScenario(log), LogScenario(dataclasses.replace(log, users=users, items=items, ratings=ratings))
    train, train_reshuffled = original.training_split(), reshuffled.training_split()
    for seed in range(3):
        requests = [scenario.sample_requests(np.random.default_rng(seed), 256, 10) for scenario in (train, train_reshuffled)]
        assert requests[0].equals(requests[1])
        requests = [scenario.sample_requests(np.random.default_rng(seed), 256, 10) for scenario in (original, reshuffled)]
        assert not requests[0].equals(requests[1])


def test_sb3_trains_on_the_training_split():
    scenario = LogScenario(random_log())
    venv = make_training_env({"scenario": scenario, "need": "interest"}, num_envs=2, seed=0)
    assert venv.venv.env.scenario is scenario.training_split()
    venv = make_training_env({"scenario": scenario, "need": "interest", "split": "eval"}, num_envs=2, seed=0)
    assert venv.venv.env.scenario is scenario


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


def test_movietweetings_training_rewards_come_from_the_training_window(movietweetings_kwargs):
    env_kwargs = {"scenario": "movietweetings", "scenario_kwargs": movietweetings_kwargs}
    positives = training_positives(env_kwargs, episodes=300)
    scenario = gym.make("FlexRec-v0", **env_kwargs).unwrapped.scenario
    window, later = window_positives(scenario.log)
    assert len(positives) > 200
    assert positives <= window and not positives & later
    assert len(scenario.eligible_users) == 2988 and len(scenario.training_split().eligible_users) == 1953
    assert scenario.interaction_histories().shape == (16_554, 305)  # the widest history before the split
