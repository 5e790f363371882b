"""Logged data: a written log round-trips exactly, its propensities are the behaviour's, its arrays have the documented
keys and shapes; the ``log`` command writes one; the off-policy example runs at a tiny size."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from agents.baselines import NeedAwareHeuristic, RandomAgent
from agents.behaviour import BehaviourConfig, BehaviourPolicy
from agents.cli import main
from agents.evaluation import evaluate
from agents.offline import FORMAT, LoggedData, log_episodes, read_log, replay, target_probabilities, target_pscores, write_log

ROOT = Path(__file__).resolve().parents[2]
ENV_KWARGS = {"need": ["trending", "niche"], "num_candidates": 6, "list_length": 3, "reward_mode": "marginal"}
E, K, N = 5, 3, 6


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    behaviour = BehaviourPolicy(NeedAwareHeuristic(), BehaviourConfig("epsilon-greedy", epsilon=0.5))
    table = log_episodes(behaviour, ENV_KWARGS, E, seed=7)
    path = tmp_path_factory.mktemp("log") / "log.parquet"
    write_log(table, path)
    return table, path


def test_a_written_log_round_trips_exactly(written):
    table, path = written
    log = read_log(path)
    assert log.table.equals(table) and log.table.schema.equals(table.schema, check_metadata=True)
    assert log.metadata["format"] == FORMAT and log.metadata["env_kwargs"] == ENV_KWARGS
    assert log.metadata["behaviour"] == {"exploration": "epsilon-greedy", "temperature": 1.0, "epsilon": 0.5}
    assert (log.metadata["agent"], log.metadata["seed"], log.episodes, log.list_length) == ("need-aware", 7, E, K)
    assert log.table.schema.field("true_NDCG@5").metadata == {b"flexrec": b"evaluation only"}
    assert log.table.schema.field("list_reward").metadata is None
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind


def test_the_rows_are_the_episodes_steps_with_consistent_propensities(written):
    log = read_log(written[1])
    assert log.table.num_rows == E * K
    assert np.array_equal(log.per_step("episode"), np.repeat(np.arange(E), K).reshape(E, K))
    assert np.array_equal(log.per_step("step"), np.tile(np.arange(K), (E, 1)))
    assert np.array_equal(log.per_episode("seed"), 7 + np.arange(E))
    assert np.allclose(log.per_step("list_propensity"), np.cumprod(log.per_step("propensity"), axis=1))
    assert np.array_equal(log.per_step("terminal"), np.tile([False, False, True], (E, 1)))
    # marginal rewards sum to the list's NDCG@k on the feedback
    assert np.allclose(log.per_step("reward").sum(axis=1), log.per_episode("list_reward"))
    for row in log.table.slice(0, K).to_pylist():
        assert row["item_id"] == row["candidate_ids"][row["action"]]


def test_the_behaviour_gives_its_logged_actions_their_logged_propensities(written):
    log = read_log(written[1])
    again = BehaviourPolicy(NeedAwareHeuristic(), BehaviourConfig("epsilon-greedy", epsilon=0.5))
    assert np.array_equal(target_probabilities(log, again), log.per_step("propensity"))


def test_random_propensities_and_true_metrics_match_an_online_evaluation():
    log = LoggedData.from_table(log_episodes(BehaviourPolicy(RandomAgent()), {**ENV_KWARGS, "need": "trending"}, E, seed=3))
    assert np.allclose(log.per_step("propensity"), 1 / (N - np.arange(K)))
    # the same seeded requests as evaluate(): the oracle's true NDCG@5 is 1 on both, and its users are the log's
    oracle = evaluate(RandomAgent(), {**ENV_KWARGS, "need": "trending"}, episodes=E, seed=3, metrics=("NDCG@5",))
    assert len(oracle.values["trending"]["NDCG@5"]) == E
    env = gym.make("FlexRec-v0", **{**ENV_KWARGS, "need": "trending"})
    users = [(env.reset(seed=3 + i), env.unwrapped.request.user_id)[1] for i in range(E)]
    assert users == log.per_episode("user_id").tolist()


def test_the_d3rlpy_and_obp_arrays_have_the_documented_keys_and_shapes(written):
    log = read_log(written[1])
    d3 = log.d3rlpy_arrays()
    assert set(d3) == {"observations", "actions", "rewards", "terminals", "timeouts"}
    space = gym.make("FlexRec-v0", **ENV_KWARGS).observation_space
    assert d3["observations"].shape == (E * K, gym.spaces.flatten_space(space).shape[0])
    assert d3["observations"].dtype == np.float32 and d3["actions"].dtype == np.int64
    assert all(d3[key].shape == (E * K,) for key in ("actions", "rewards", "terminals", "timeouts"))
    assert d3["terminals"].sum() == E and not d3["timeouts"].any()
    first = next(replay(log))
    assert np.array_equal(d3["observations"][0], gym.spaces.flatten(first[0].observation_space, first[1]))

    obp = log.obp_slate_arrays()
    assert (obp["n_rounds"], obp["len_list"], obp["n_unique_action"]) == (E, K, N)
    per_row = ("slate_id", "position", "action", "reward", "pscore", "pscore_cascade")
    assert set(obp) == {"n_rounds", "len_list", "n_unique_action", *per_row}
    assert all(obp[key].shape == (E * K,) for key in per_row)
    assert np.allclose(obp["pscore"], np.repeat(np.prod(log.per_step("propensity"), axis=1), K))
    target = target_pscores(log, BehaviourPolicy(NeedAwareHeuristic()))
    assert set(target) == {"evaluation_policy_pscore", "evaluation_policy_pscore_cascade"}
    assert all(v.shape == (E * K,) and np.all((v > 0) & (v <= 1)) for v in target.values())


def test_a_replay_in_another_env_is_refused(written):
    log = read_log(written[1])
    with pytest.raises(ValueError, match="replays another request"):
        next(replay(log, {**ENV_KWARGS, "num_candidates": 7}))


def test_a_foreign_parquet_file_is_refused(tmp_path, written):
    pq.write_table(written[0].replace_schema_metadata(None), tmp_path / "plain.parquet")
    with pytest.raises(ValueError, match="not a FlexRec log"):
        read_log(tmp_path / "plain.parquet")


def test_a_replay_with_another_need_is_refused(written):
    """The need is drawn after the candidates: the same requests under another need would give wrong states."""
    log = read_log(written[1])
    with pytest.raises(ValueError, match="replays another request"):
        list(replay(log, {**ENV_KWARGS, "need": ["fresh"]}))


def test_a_log_file_is_checked_before_anything_is_built_from_it(tmp_path, written):
    """A file naming code to call ('module:Factory'), missing columns or rows that do not add up are refused."""
    import json

    table, _ = written
    metadata = json.loads(table.schema.metadata[b"flexrec"])
    marker = tmp_path / "pwned"
    evil = {**metadata, "env_kwargs": {"scenario": "os:system", "scenario_kwargs": {"command": f"touch {marker}"}}}
    pq.write_table(table.replace_schema_metadata({"flexrec": json.dumps(evil)}), tmp_path / "evil.parquet")
    with pytest.raises(ValueError, match="a saved file may name only a registered scenario"):
        read_log(tmp_path / "evil.parquet")
    assert not marker.exists()
    pq.write_table(table.drop(["propensity"]), tmp_path / "short.parquet")
    with pytest.raises(ValueError, match=r"columns \['propensity'\] are missing"):
        read_log(tmp_path / "short.parquet")
    lacking = {k: v for k, v in metadata.items() if k != "seed"}
    pq.write_table(table.replace_schema_metadata({"flexrec": json.dumps(lacking)}), tmp_path / "bare.parquet")
    with pytest.raises(ValueError, match="lacks env_complete .* or seed"):
        read_log(tmp_path / "bare.parquet")
    pq.write_table(table.slice(0, K), tmp_path / "cut.parquet")
    with pytest.raises(ValueError, match=f"{K} rows, not episodes x list_length = {E} x {K}"):
        read_log(tmp_path / "cut.parquet")


def test_the_log_command_writes_a_log(tmp_path):
    out = tmp_path / "logs" / "random.parquet"
    args = ["log", "--agent", "random", "--episodes", "4", "--need", "trending", "--env-arg", "num_candidates=5"]
    result = CliRunner().invoke(main, [*args, "--env-arg", "list_length=2", "--seed", "5", "--out", str(out)])
    assert result.exit_code == 0, result.output
    log = read_log(out)
    assert (log.episodes, log.list_length, log.metadata["seed"], log.metadata["checkpoint"]) == (4, 2, 5, None)
    assert np.allclose(log.per_step("propensity"), [[1 / 5, 1 / 4]] * 4)
    bad = CliRunner().invoke(main, [*args, "--temperature", "0", "--out", str(out)])
    assert bad.exit_code == 2 and "temperature=0" in bad.output
    untrained = CliRunner().invoke(main, ["log", "--agent", "flexrec", "--out", str(out)])
    assert untrained.exit_code == 2 and "untrained" in untrained.output


def test_the_off_policy_example_runs_at_a_tiny_size(tmp_path):
    spec = importlib.util.spec_from_file_location("off_policy_example", ROOT / "examples" / "off_policy_evaluation.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = module.off_policy_evaluation(episodes=20, seed=0, path=tmp_path / "b.parquet")
    labels = {"behaviour, logged", "target, IPS", "target, SNIPS", "target, cascade IPS", "target, online"}
    assert set(results) == labels
    assert all(math.isfinite(e.value) and e.low <= e.value <= e.high for e in results.values())
    assert read_log(tmp_path / "b.parquet").episodes == 20
