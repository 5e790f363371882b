r"""Logged data for offline RL and off-policy evaluation: play a behaviour policy, write every step, read arrays back.

:func:`log_episodes` plays a :class:`~agents.behaviour.BehaviourPolicy` on seeded episodes (episode i resets with
``seed + i``, as :func:`agents.evaluation.evaluate` does, so a log and an online evaluation see the same requests)
and returns one row per step; :func:`write_log` writes it as Parquet, atomically; :func:`read_log` reads it back as
a :class:`LoggedData`, whose methods give the arrays of d3rlpy and of Open Bandit Pipeline's slate estimators
(neither is imported: the arrays are plain numpy in their formats).

The columns, one row per step (``E`` episodes of ``K`` steps, rows in episode then step order):

=====================  =============  =============================================================================
column                 type           meaning
=====================  =============  =============================================================================
``episode``            int64          0-based episode index in the log
``step``               int64          0-based step, the list position it fills
``seed``               int64          the episode's reset seed: ``gym.make("FlexRec-v0", **env_kwargs)`` reset with
                                      it rebuilds the request (observations, feedback, truth)
``user_id``            int64          the request's user
``candidate_ids``      list<int64>    the request's N candidate item ids; an action indexes this list
``need``               string         the episode's need
``need_id``            int64          its id (as the observation's ``need_id``)
``action``             int64          the candidate index placed
``item_id``            int64          its item id
``propensity``         float64        ``mu(a_t | s_t)``: the behaviour policy's probability of the action
``list_propensity``    float64        ``prod_(u <= t) mu(a_u | s_u)``: the probability of the list so far
``feedback``           float64        the placed item's observed feedback label (0 if unobserved)
``feedback_observed``  bool           whether that label is observed
``reward``             float64        the env's reward of the step (its ``reward_mode``)
``swap_reward``        float64        the per-step swap reward of the step's info
``click``              int8           the click at this position (the last info's ``clicks``, true relevance)
``terminal``           bool           the episode's last step
``list_reward``        float64        f of the finished list on the reward labels (NDCG@k on the feedback for an
                                      NDCG need), the same on every row of the episode
``true_<metric>``      float64        evaluation only: the last info's ``metrics`` on the *true* relevance
                                      (``true_NDCG@5``, ...), the same on every row of the episode
=====================  =============  =============================================================================

The ``true_`` columns carry the field metadata ``{"flexrec": "evaluation only"}``: no learner may read them. The
schema metadata ``flexrec`` is a JSON document: ``format`` (:data:`FORMAT`), ``agent``, ``checkpoint``,
``behaviour`` (the :class:`~agents.behaviour.BehaviourConfig`), ``env_kwargs`` (the portable ones),
``env_complete`` (whether those are all of them, so that the log can be replayed), ``seed``, ``sampling_seed``,
``episodes`` and ``list_length``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from numpy.typing import NDArray

import flexrec_env  # noqa: F401  (registers FlexRec-v0)
from agents.base import portable
from agents.behaviour import BehaviourPolicy
from agents.checkpoints import atomic_write, restored_env_kwargs
from agents.progress import Progress
from scenarios.settings import check_value

FORMAT = "flexrec-log-v1"
METADATA_KEY = b"flexrec"
EVALUATION_ONLY = {b"flexrec": b"evaluation only"}
TRUE_METRICS = ("NDCG@5", "NDCG@10", "Recall@5", "Recall@10", "need_metric")

#: The columns but the ``true_`` ones, with their Arrow types (meanings: the module docstring).
STEP_COLUMNS: dict[str, pa.DataType] = {
    "episode": pa.int64(),
    "step": pa.int64(),
    "seed": pa.int64(),
    "user_id": pa.int64(),
    "candidate_ids": pa.list_(pa.field("element", pa.int64())),  # Parquet's name of a list's items: round-trips as is
    "need": pa.string(),
    "need_id": pa.int64(),
    "action": pa.int64(),
    "item_id": pa.int64(),
    "propensity": pa.float64(),
    "list_propensity": pa.float64(),
    "feedback": pa.float64(),
    "feedback_observed": pa.bool_(),
    "reward": pa.float64(),
    "swap_reward": pa.float64(),
    "click": pa.int8(),
    "terminal": pa.bool_(),
    "list_reward": pa.float64(),
}


def log_schema(metadata: dict[str, Any] | None = None) -> pa.Schema:
    """The Arrow schema of a log (with ``metadata`` as its ``flexrec`` JSON document when given)."""
    fields = [pa.field(name, kind) for name, kind in STEP_COLUMNS.items()]
    fields += [pa.field(f"true_{m}", pa.float64(), metadata=EVALUATION_ONLY) for m in TRUE_METRICS]
    return pa.schema(fields, metadata=None if metadata is None else {METADATA_KEY: json.dumps(metadata)})


def make_env(env_kwargs: dict[str, Any], behaviour: BehaviourPolicy | None = None) -> gym.Env:
    """The env a log is played or replayed in (with the truth exposed where the agent reads it: the oracle)."""
    truth = behaviour is not None and behaviour.agent.needs_truth
    env = gym.make("FlexRec-v0", **{**env_kwargs, "expose_truth": truth or env_kwargs.get("expose_truth", False)})
    if env.unwrapped.config.info_level != "full":  # type: ignore[attr-defined]
        raise ValueError("a log records the clicks and the true metrics: allowed: info_level='full' (the default)")
    return env


def _episode_rows(env: gym.Env, behaviour: BehaviourPolicy, seed: int, rng: np.random.Generator) -> dict[str, list[Any]]:
    """One episode played by ``behaviour`` (actions drawn from its probabilities with ``rng``), as column lists."""
    rows: dict[str, list[Any]] = {name: [] for name in STEP_COLUMNS if name != "episode"}
    observation, info = env.reset(seed=seed)
    request = env.unwrapped.request  # type: ignore[attr-defined]
    list_propensity, terminated = 1.0, False
    while not terminated:
        probabilities = behaviour.probabilities(observation, info, env)
        action = int(rng.choice(len(probabilities), p=probabilities))
        list_propensity *= float(probabilities[action])
        step = int(observation["position"])
        observation, reward, terminated, truncated, info = env.step(action)
        assert not truncated and not info["invalid_action"], "a behaviour policy places only candidates of the pool"
        values = {
            "step": step, "seed": seed, "user_id": request.user_id, "candidate_ids": list(request.candidates),
            "need": request.need, "need_id": int(observation["need_id"]), "action": action,
            "item_id": int(info["item_id"]), "propensity": float(probabilities[action]), "list_propensity": list_propensity,
            "feedback": float(info["feedback"]), "feedback_observed": bool(info["feedback_observed"]),
            "reward": float(reward), "swap_reward": float(info["swap_reward"]), "terminal": bool(terminated),
        }  # fmt: skip
        for name, value in values.items():
            rows[name].append(value)
    rows["click"] = [int(c) for c in info["clicks"]]
    rows["list_reward"] = [float(info["list_reward"])] * len(rows["step"])
    for metric in TRUE_METRICS:
        rows[f"true_{metric}"] = [float(info["metrics"][metric])] * len(rows["step"])
    return rows


def log_episodes(
    behaviour: BehaviourPolicy,
    env_kwargs: dict[str, Any],
    episodes: int,
    seed: int = 0,
    sampling_seed: int | None = None,
    metadata: dict[str, Any] | None = None,
    progress: bool = False,
) -> pa.Table:
    """``episodes`` episodes played by ``behaviour``, one row per step (the module docstring's columns).

    Episode i resets with ``seed + i``; the actions are drawn from the behaviour's probabilities with
    ``numpy.random.default_rng(sampling_seed)`` (default: ``seed``). ``metadata`` (e.g. the agent's checkpoint) is
    added to the schema's ``flexrec`` document.
    """
    check_value("episodes", episodes, int, ">= 1")
    env = make_env(env_kwargs, behaviour)
    behaviour.seed(seed)
    rng = np.random.default_rng(seed if sampling_seed is None else sampling_seed)
    columns: dict[str, list[Any]] = {name: [] for name in log_schema().names}
    bar = Progress(episodes, f"log {behaviour.name}", unit="episode", enabled=progress)
    for episode in range(episodes):
        rows = _episode_rows(env, behaviour, seed + episode, rng)
        columns["episode"] += [episode] * len(rows["step"])
        for name, values in rows.items():
            columns[name] += values
        bar.update(1)
    bar.close()
    document = {
        "format": FORMAT,
        "agent": behaviour.agent.name,
        "checkpoint": None,
        "behaviour": asdict(behaviour.config),
        "env_kwargs": portable(env_kwargs),
        "env_complete": portable(env_kwargs) == env_kwargs,
        "seed": seed,
        "sampling_seed": seed if sampling_seed is None else sampling_seed,
        "episodes": episodes,
        "list_length": env.unwrapped.config.list_length,  # type: ignore[attr-defined]
        **(metadata or {}),
    }
    return pa.table(columns, schema=log_schema(document))


def write_log(table: pa.Table, path: str | Path) -> None:
    """Write a log to ``path`` as Parquet, atomically (an interrupted write leaves no file and the old one intact)."""
    atomic_write(path, lambda temporary: pq.write_table(table, temporary))


@dataclass
class LoggedData:
    """A log as read back: its table and its metadata, and the arrays offline learners and estimators take."""

    table: pa.Table
    """One row per step (the module docstring's columns)."""
    metadata: dict[str, Any]
    """The schema's ``flexrec`` document."""

    @classmethod
    def from_table(cls, table: pa.Table, source: str = "the table") -> LoggedData:
        """A log's table (from :func:`log_episodes` or a file), checked to be of this format."""
        raw = (table.schema.metadata or {}).get(METADATA_KEY)
        try:
            metadata = json.loads(raw) if raw is not None else {}
        except (ValueError, RecursionError):
            metadata = {}
        if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
            found = metadata.get("format") if isinstance(metadata, dict) else None
            raise ValueError(f"{source} is not a FlexRec log of format {FORMAT} (found {found!r})")
        expected = log_schema()
        wrong = [f.name for f in expected if f.name not in table.column_names or table.schema.field(f.name).type != f.type]
        if wrong:
            raise ValueError(f"{source}: columns {wrong} are missing or of another type than a FlexRec log's")
        if not isinstance(metadata.get("env_complete"), bool) or not isinstance(metadata.get("seed"), int):
            raise ValueError(f"{source}: its metadata lacks env_complete (true or false) or seed (an integer)")
        episodes, length = metadata.get("episodes"), metadata.get("list_length")
        if not (isinstance(episodes, int) and isinstance(length, int) and table.num_rows == episodes * length):
            raise ValueError(f"{source}: {table.num_rows} rows, not episodes x list_length = {episodes!r} x {length!r}")
        if "env_kwargs" in metadata:  # a file may name only a registered scenario: replaying it must call no code it names
            metadata["env_kwargs"] = restored_env_kwargs(metadata["env_kwargs"], source)
        return cls(table, metadata)

    @property
    def episodes(self) -> int:
        return int(self.metadata["episodes"])

    @property
    def list_length(self) -> int:
        return int(self.metadata["list_length"])

    def column(self, name: str) -> NDArray:
        """``(E * K,)`` values of a column but ``candidate_ids`` (rows in episode then step order)."""
        if name not in self.table.column_names or name == "candidate_ids":
            allowed = [n for n in self.table.column_names if n != "candidate_ids"]
            raise ValueError(f"no column {name!r} to read as an array; allowed: {allowed}")
        return self.table.column(name).to_numpy()

    def per_step(self, name: str) -> NDArray:
        """``(E, K)`` values of a column, one row per episode."""
        return self.column(name).reshape(self.episodes, self.list_length)

    def per_episode(self, name: str) -> NDArray:
        """``(E,)`` values of an episode-level column (``list_reward``, ``seed``, ``true_NDCG@5``, ...): its last step's."""
        return self.per_step(name)[:, -1]

    def d3rlpy_arrays(self, env_kwargs: dict[str, Any] | None = None) -> dict[str, NDArray]:
        """The arguments of ``d3rlpy.dataset.MDPDataset``, one row per step (E * K rows).

        ``observations`` ``(E*K, D)`` float32, each observation before its step flattened by
        ``gymnasium.spaces.flatten`` (D = ``flatten_space(env.observation_space).shape[0]``), rebuilt by replaying the
        log (:func:`replay`); ``actions`` ``(E*K,)`` int64 candidate indices (a discrete action space of size N:
        ``MDPDataset(**arrays, action_space=ActionSpace.DISCRETE, action_size=N)``); ``rewards`` ``(E*K,)`` float32,
        the env's rewards; ``terminals`` ``(E*K,)`` float32, 1 at each episode's last step; ``timeouts`` ``(E*K,)``
        float32, all 0.
        """
        observations = [gym.spaces.flatten(env.observation_space, obs) for env, obs, _, _ in replay(self, env_kwargs)]
        terminals = self.column("terminal").astype(np.float32)
        return {
            "observations": np.asarray(observations, dtype=np.float32),
            "actions": self.column("action").astype(np.int64),
            "rewards": self.column("reward").astype(np.float32),
            "terminals": terminals,
            "timeouts": np.zeros_like(terminals),
        }

    def obp_slate_arrays(self) -> dict[str, Any]:
        """The logged data of Open Bandit Pipeline's slate estimators (``SlateStandardIPS``, ``SlateRewardInteractionIPS``).

        ``n_rounds`` (E), ``len_list`` (K), ``n_unique_action`` (N); per row ``(E*K,)``: ``slate_id`` (the episode),
        ``position`` (0-based), ``action`` (candidate index), ``reward`` (the env's step reward: with
        ``reward_mode="marginal"`` the K rewards of a slate sum to its NDCG@k on the feedback), ``pscore`` (the
        whole slate's probability, the same on its K rows) and ``pscore_cascade`` (the probability of the slate up
        to this position). OBP's ``pscore_item_position`` (marginal probability of the item at the position) is not
        given: it sums over every prefix. The evaluation policy's ``evaluation_policy_pscore`` and
        ``evaluation_policy_pscore_cascade`` come from :func:`target_pscores`.
        """
        cascade = self.per_step("list_propensity")
        return {
            "n_rounds": self.episodes,
            "len_list": self.list_length,
            "n_unique_action": len(self.table.column("candidate_ids")[0]),
            "slate_id": self.column("episode"),
            "position": self.column("step"),
            "action": self.column("action"),
            "reward": self.column("reward"),
            "pscore": np.repeat(cascade[:, -1], self.list_length),
            "pscore_cascade": cascade.reshape(-1),
        }


def read_log(path: str | Path) -> LoggedData:
    """A log written by :func:`write_log` (a ``ValueError`` naming the file if it is not one of this format)."""
    return LoggedData.from_table(pq.read_table(path), str(path))


def replay(
    log: LoggedData, env_kwargs: dict[str, Any] | None = None, behaviour: BehaviourPolicy | None = None
) -> Iterator[tuple[gym.Env, dict[str, Any], dict[str, Any], int]]:
    """Replay the log's steps in its env: ``(env, observation, info, action)`` before each logged action, in row order.

    Each episode resets with its seed, in ``env_kwargs`` (default: the log's own; a log whose env arguments were
    not all written down needs them given), and steps the logged actions. A ``ValueError`` says when the replay
    does not rebuild the logged requests (other env arguments).
    """
    if env_kwargs is None and not log.metadata["env_complete"]:
        raise ValueError("the log's env arguments include objects it could not keep: pass env_kwargs to replay it")
    env = make_env(dict(log.metadata["env_kwargs"] if env_kwargs is None else env_kwargs), behaviour)
    seeds, users, actions = log.per_episode("seed"), log.per_episode("user_id"), log.per_step("action")
    needs = log.table.column("need").to_pylist()[:: log.list_length]
    candidates = log.table.column("candidate_ids").to_pylist()[:: log.list_length]
    for episode in range(log.episodes):
        observation, info = env.reset(seed=int(seeds[episode]))
        request = env.unwrapped.request  # type: ignore[attr-defined]
        if request.user_id != users[episode] or list(request.candidates) != candidates[episode] or request.need != needs[episode]:
            raise ValueError(
                f"episode {episode} (seed {seeds[episode]}) replays another request than the log's: replay it with the "
                "env arguments it was logged with"
            )
        for action in actions[episode]:
            yield env, observation, info, int(action)
            observation, _, _, _, info = env.step(int(action))


def target_probabilities(log: LoggedData, target: BehaviourPolicy, env_kwargs: dict[str, Any] | None = None) -> NDArray:
    """``(E, K)`` probabilities ``pi(a_t | s_t)`` a target policy gives the logged actions in the logged states."""
    target.seed(int(log.metadata["seed"]))
    values = [target.probabilities(obs, info, env)[action] for env, obs, info, action in replay(log, env_kwargs, target)]
    return np.asarray(values, dtype=np.float64).reshape(log.episodes, log.list_length)


def target_pscores(log: LoggedData, target: BehaviourPolicy, env_kwargs: dict[str, Any] | None = None) -> dict[str, NDArray]:
    """OBP's ``evaluation_policy_pscore`` and ``evaluation_policy_pscore_cascade`` ``(E*K,)`` of a target policy."""
    cascade = np.cumprod(target_probabilities(log, target, env_kwargs), axis=1)  # (E, K)
    return {
        "evaluation_policy_pscore": np.repeat(cascade[:, -1], log.list_length),
        "evaluation_policy_pscore_cascade": cascade.reshape(-1),
    }
