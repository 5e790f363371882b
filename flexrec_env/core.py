"""The rules of FlexRec-v0, shared by ``FlexRecEnv`` and ``FlexRecVectorEnv``: every rule lives here, once.

The rules are documented once, in :class:`~flexrec_env.env.FlexRecEnv`'s docstring; this module implements them:

* what an agent sees: :func:`observation_space`, :func:`build_request`, :func:`episode_needs`,
  :func:`validate_action`;
* episodes: :func:`draw_noise` (the random material), :func:`materialise` (need, relevance, feedback and reward
  labels), :class:`EpisodeStreams` (many generators' episodes, for the vector env) and :class:`EpisodeStream` (one
  generator's, for the single env);
* rewards: :func:`step_reward` (the one place the reward modes are defined), fed by :func:`step_rewards` (NDCG
  needs, on Python floats or arrays) or :func:`list_level_step_rewards` (list-level needs), and
  :func:`final_info` (the last step's info);
* :class:`RankingCore`, the batched dynamics of the vector env. The single env runs the same functions on Python
  floats for one episode (a batch of one through numpy costs ten times more per step).

Randomness. All randomness of an episode is drawn at reset, as need-independent material (:class:`EpisodeNoise`:
the request and a fixed set of uniforms), so the same draws serve any need. A generator's episodes are drawn in
blocks of :data:`BLOCK_SIZE` (one vectorised call per block, :class:`EpisodeStream`): the episodes of a seed are
fixed by the seed and the block size. :func:`materialise` turns the material into an :class:`EpisodeBatch` for a
tuple of needs: the need of each episode, its true relevance, its feedback labels and the reward labels.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
from gymnasium import spaces
from numpy.typing import NDArray

from flexrec_env.config import INVALID_ACTION_PENALTY, EnvConfig, RewardMode
from flexrec_env.feedback import feedback_labels, simulate_clicks
from flexrec_env.metrics import dcg, discounts, evaluation_metrics, gains, ideal_dcg
from flexrec_env.needs import MAX_NEEDS, NEED_FEATURE_DIM, Need, need_id, resolve_needs, same_needs, union_needs
from flexrec_env.swap import generic_step_rewards, marginal_reward, step_swap_reward, swap_rewards, swap_rewards_generic
from scenarios import Request, RequestBatch, Scenario

#: Episodes drawn per call of a generator (part of what a seed determines).
BLOCK_SIZE = 64


def _take_rows(batch: Any, rows: NDArray[np.int64] | slice) -> dict[str, Any]:
    return {f.name: getattr(batch, f.name)[rows] for f in fields(batch) if isinstance(getattr(batch, f.name), np.ndarray)}


def _assign_rows(batch: Any, rows: NDArray[np.int64], new: Any) -> dict[str, Any]:
    """Write ``new``'s array fields into ``rows`` of ``batch``'s, in place; returns them."""
    arrays = {name: getattr(batch, name) for name in _take_rows(batch, slice(0, 0))}
    for name, value in arrays.items():
        value[rows] = getattr(new, name)
    return arrays


@dataclass(frozen=True)
class EpisodeNoise:
    """Need-independent random material of B episodes."""

    requests: RequestBatch
    need_uniform: NDArray[np.float64]  # (B,)
    instruction_uniform: NDArray[np.float64]  # (B,)
    observe_uniform: NDArray[np.float64]  # (B, N)
    noise_uniform: NDArray[np.float64]  # (B, N)
    grade_uniform: NDArray[np.float64]  # (B, N)
    click_uniform: NDArray[np.float64]  # (B, K)

    def __len__(self) -> int:
        return len(self.need_uniform)

    def take(self, rows: NDArray[np.int64] | slice) -> EpisodeNoise:
        return EpisodeNoise(requests=self.requests.take(rows), **_take_rows(self, rows))

    def assign(self, rows: NDArray[np.int64], new: EpisodeNoise) -> EpisodeNoise:
        """``rows`` set to the episodes of ``new``, in place (see :meth:`RequestBatch.assign`)."""
        return replace(self, requests=self.requests.assign(rows, new.requests), **_assign_rows(self, rows, new))

    @staticmethod
    def concatenate(parts: Sequence[EpisodeNoise], out: EpisodeNoise | None = None) -> EpisodeNoise:
        """Stack along the batch axis; into ``out`` in place when it has the same layout (no new memory)."""
        requests = RequestBatch.concatenate([p.requests for p in parts], out=None if out is None else out.requests)
        names = list(_take_rows(parts[0], slice(0, 0)))
        if (
            out is None
            or requests is not out.requests
            or any(getattr(out, n).shape[1:] != getattr(parts[0], n).shape[1:] for n in names)
        ):
            return EpisodeNoise(requests=requests, **{n: np.concatenate([getattr(p, n) for p in parts]) for n in names})
        for name in names:
            np.concatenate([getattr(p, name) for p in parts], out=getattr(out, name))
        return out


def draw_noise(rng: np.random.Generator, num: int, config: EnvConfig, scenario: Scenario) -> EpisodeNoise:
    """Draw the material of ``num`` episodes: the requests, then all uniforms in one call."""
    return episode_noise(scenario.sample_requests(rng, num, config.num_candidates), rng, config)


def episode_noise(requests: RequestBatch, rng: np.random.Generator, config: EnvConfig) -> EpisodeNoise:
    """The material of one episode per request of ``requests``: their uniforms drawn in one call."""
    num, n, k = len(requests), config.num_candidates, config.list_length
    u = rng.random((num, 2 + 3 * n + k))
    return EpisodeNoise(
        requests=requests,
        need_uniform=u[:, 0],
        instruction_uniform=u[:, 1],
        observe_uniform=u[:, 2 : 2 + n],
        noise_uniform=u[:, 2 + n : 2 + 2 * n],
        grade_uniform=u[:, 2 + 2 * n : 2 + 3 * n],
        click_uniform=u[:, 2 + 3 * n :],
    )


@dataclass(frozen=True)
class EpisodeBatch:
    """B episodes ready to run: request, need, truth, feedback and the reward labels derived from them."""

    needs: tuple[Need, ...]
    """The needs ``need_index`` points into."""
    requests: RequestBatch
    need_index: NDArray[np.int64]  # (B,)
    instruction_index: NDArray[np.int64]  # (B,)
    relevance: NDArray[np.int64]  # (B, N), true need-specific relevance: evaluation only
    labels: NDArray[np.float32]  # (B, N), observed feedback labels, 0 where unobserved
    observed: NDArray[np.bool_]  # (B, N)
    click_uniform: NDArray[np.float64]  # (B, K)
    reward_relevance: NDArray[np.float64]  # (B, N), the labels rewards are computed from
    reward_gains: NDArray[np.float64]  # (B, N)
    reward_idcg: NDArray[np.float64]  # (B,)
    list_level: NDArray[np.bool_]  # (B,)
    need_ids: NDArray[np.int64]  # (B,), registry ids
    need_features: NDArray[np.float32]  # (B, D)

    def __len__(self) -> int:
        return len(self.need_index)

    def take(self, rows: NDArray[np.int64] | slice) -> EpisodeBatch:
        return EpisodeBatch(needs=self.needs, requests=self.requests.take(rows), **_take_rows(self, rows))

    def need_names(self, rows: NDArray[np.int64] | Sequence[int] | None = None) -> NDArray[np.object_]:
        """Object array of the need names of ``rows`` (default: all)."""
        index = self.need_index if rows is None else self.need_index[np.asarray(rows)]
        return np.array([n.name for n in self.needs], dtype=object)[index]

    def instructions(self, rows: NDArray[np.int64] | Sequence[int] | None = None) -> NDArray[np.object_]:
        """Object array of the sampled instruction texts of ``rows`` (default: all)."""
        rows = np.arange(len(self)) if rows is None else np.asarray(rows)
        flat = np.array([text for n in self.needs for text in n.instructions], dtype=object)
        offsets = np.cumsum([0] + [len(n.instructions) for n in self.needs])
        return flat[offsets[self.need_index[rows]] + self.instruction_index[rows]]

    def with_needs(self, needs: tuple[Need, ...]) -> EpisodeBatch:
        """The same episodes with ``need_index`` pointing into ``needs`` (which must contain this batch's needs)."""
        if same_needs(needs, self.needs):
            return self
        slots = np.array([next(i for i, n in enumerate(needs) if n is need) for need in self.needs], dtype=np.int64)
        return replace(self, needs=needs, need_index=slots[self.need_index])

    @staticmethod
    def concatenate(batches: Sequence[EpisodeBatch]) -> EpisodeBatch:
        """Stack batches along the batch axis (their needs are united)."""
        needs = union_needs(*(b.needs for b in batches))
        batches = [b.with_needs(needs) for b in batches]
        arrays = {name: np.concatenate([getattr(b, name) for b in batches]) for name in _take_rows(batches[0], slice(0, 0))}
        return EpisodeBatch(needs=needs, requests=RequestBatch.concatenate([b.requests for b in batches]), **arrays)

    def replace_rows(self, rows: NDArray[np.int64], new: EpisodeBatch) -> EpisodeBatch:
        """This batch with ``rows`` replaced by the episodes of ``new`` (one per row), in place for the same needs."""
        if same_needs(self.needs, new.needs):
            return replace(self, requests=self.requests.assign(rows, new.requests), **_assign_rows(self, rows, new))
        merged = EpisodeBatch.concatenate([self, new])
        order = np.arange(len(self))
        order[rows] = len(self) + np.arange(len(new))
        return merged.take(order)


def materialise(noise: EpisodeNoise, needs: tuple[Need, ...], config: EnvConfig, scenario: Scenario) -> EpisodeBatch:
    """Episodes for ``needs`` from need-independent material: need, relevance, feedback and reward labels."""
    b = len(noise)
    need_index = np.minimum(np.floor(noise.need_uniform * len(needs)), len(needs) - 1).astype(np.int64)
    counts = np.array([len(n.instructions) for n in needs])[need_index]
    instruction_index = np.minimum(np.floor(noise.instruction_uniform * counts), counts - 1).astype(np.int64)
    relevance = np.zeros(noise.requests.candidates.shape, dtype=np.int64)
    for i in np.unique(need_index):
        rows = np.flatnonzero(need_index == i)
        relevance[rows] = needs[i].relevance(noise.requests if len(rows) == b else noise.requests.take(rows))
    labels, observed = feedback_labels(
        relevance, noise.observe_uniform, noise.noise_uniform, noise.grade_uniform, scenario.max_grade, config.feedback_config
    )
    reward_relevance = (relevance if config.reward_labels == "true" else labels).astype(np.float64)
    return EpisodeBatch(
        needs=needs,
        requests=noise.requests,
        need_index=need_index,
        instruction_index=instruction_index,
        relevance=relevance,
        labels=labels,
        observed=observed,
        click_uniform=noise.click_uniform,
        reward_relevance=reward_relevance,
        reward_gains=gains(reward_relevance),
        reward_idcg=ideal_dcg(reward_relevance, config.k),
        list_level=np.array([n.is_list_level for n in needs])[need_index],
        need_ids=np.array([need_id(n) for n in needs], dtype=np.int64)[need_index],
        need_features=np.stack([n.feature_vector for n in needs])[need_index],
    )


class EpisodeStreams:
    """The episodes of B generators (env i draws from ``rngs[i]``), served for many envs at once.

    Each generator's episodes are drawn in blocks of ``block_size`` (:meth:`draw`), so env i's episodes depend
    on its generator only. The blocks of all envs sit in one stacked :class:`EpisodeNoise` (env i's at rows
    ``[i * block_size, (i + 1) * block_size)``): episodes for many envs are then one gather and one
    :func:`materialise`, and only the drawing of a new block loops over generators. An episode may span
    ``episode_rows`` consecutive rows of material (a session's requests, :mod:`flexrec_env.session`).
    """

    episode_rows = 1

    def __init__(
        self, rngs: Sequence[np.random.Generator], config: EnvConfig, scenario: Scenario, block_size: int = BLOCK_SIZE
    ) -> None:
        self.rngs, self.config, self.scenario, self.block_size = list(rngs), config, scenario, block_size
        self.noise: EpisodeNoise | None = None
        self.cursor = np.full(len(self.rngs), block_size, dtype=np.int64)  # (B,), next row of each block

    def next(self, envs: NDArray[np.int64], needs: tuple[Need, ...]) -> EpisodeBatch:
        """The next episode of each env in ``envs`` (distinct, ascending) for ``needs``."""
        return materialise(self.next_noise(envs), needs, self.config, self.scenario)

    def next_noise(self, envs: NDArray[np.int64]) -> EpisodeNoise:
        """The material of the next episode of each env in ``envs`` (distinct, ascending)."""
        # The first draw fills every env's block: env j's first block is the same whenever it is drawn.
        self.refill(np.arange(len(self.rngs)) if self.noise is None else envs[self.cursor[envs] >= self.block_size])
        assert self.noise is not None
        rows = envs * self.block_size + self.cursor[envs]  # (E,), episodes
        self.cursor[envs] += 1
        if self.episode_rows > 1:
            rows = (rows[:, None] * self.episode_rows + np.arange(self.episode_rows)).ravel()  # (E * R,)
        return self.noise.take(rows)

    def draw(self, rng: np.random.Generator, num: int) -> EpisodeNoise:
        """The material of ``num`` episodes from ``rng`` (``num * episode_rows`` rows)."""
        return draw_noise(rng, num, self.config, self.scenario)

    def refill(self, envs: NDArray[np.int64]) -> None:
        """Draw a new block for each env in ``envs`` from its own generator."""
        if not len(envs):
            return
        blocks = [self.draw(self.rngs[i], self.block_size) for i in envs]
        if len(envs) == len(self.rngs):  # all envs, in order: into the old blocks' memory (nothing else holds it)
            self.noise = EpisodeNoise.concatenate(blocks, out=self.noise)
        else:
            assert self.noise is not None
            size = self.block_size * self.episode_rows
            rows = (envs[:, None] * size + np.arange(size)).ravel()
            self.noise = self.noise.assign(rows, EpisodeNoise.concatenate(blocks))
        self.cursor[envs] = 0


class EpisodeStream:
    """The episodes of one generator, as :class:`EpisodeStreams` of one, materialised per rest of a block."""

    def __init__(self, rng: np.random.Generator, config: EnvConfig, scenario: Scenario, block_size: int = BLOCK_SIZE) -> None:
        self.rng = rng
        self._streams = EpisodeStreams([rng], config, scenario, block_size)
        self._ready: EpisodeBatch | None = None  # the rest of the block, materialised
        self._ready_from = 0

    def next_row(self, needs: tuple[Need, ...]) -> tuple[EpisodeBatch, int]:
        """The next episode for ``needs``, as (a materialised batch, its row in it)."""
        streams = self._streams
        row = int(streams.cursor[0])
        if row >= streams.block_size:
            streams.refill(np.zeros(1, dtype=np.int64))
            row, self._ready = 0, None
        if self._ready is None or not same_needs(self._ready.needs, needs):
            assert streams.noise is not None
            rest = streams.noise.take(np.arange(row, streams.block_size))  # a copy: the blocks' memory is reused
            self._ready, self._ready_from = materialise(rest, needs, streams.config, streams.scenario), row
        streams.cursor[0] = row + 1
        return self._ready, row - self._ready_from


# --------------------------------------------------------------------------------------------------------------------
# What an agent sees: spaces, the request, the needs of an episode, and the check of an action.


def observation_space(config: EnvConfig, scenario: Scenario) -> spaces.Dict:
    """The single-env observation space (see :class:`FlexRecEnv`)."""
    n, k = config.num_candidates, config.list_length
    return spaces.Dict(
        {
            "candidates": spaces.Box(-np.inf, np.inf, (n, scenario.candidate_feature_dim), np.float32),
            "user": spaces.Box(-np.inf, np.inf, (scenario.user_feature_dim,), np.float32),
            "need": spaces.Box(-np.inf, np.inf, (NEED_FEATURE_DIM,), np.float32),
            "need_id": spaces.Discrete(MAX_NEEDS),
            "placed": spaces.MultiBinary(n),
            "position": spaces.Discrete(k + 1),
            "action_mask": spaces.MultiBinary(n),
        }
    )


def episode_needs(
    default: tuple[Need, ...], options: dict[str, Any] | None, allowed: tuple[str, ...] = ("need",)
) -> tuple[Need, ...]:
    """The needs to draw from: ``options["need"]`` for this episode if given, else the env's ``default``.

    ``allowed`` are the reset options the env knows; any other key is an error, not silently ignored.
    """
    unknown = sorted(set(options or {}) - set(allowed))
    if unknown:
        raise ValueError(f"unknown reset option(s) {unknown}; allowed: {list(allowed)}")
    if not options or options.get("need") is None:
        return default
    return resolve_needs(options["need"])


def validate_action(action: Any, num_candidates: int) -> int:
    """The action as an int in ``[0, N)``, or a ``ValueError`` that names it."""
    value = action.item() if isinstance(action, np.ndarray) and action.shape in ((), (1,)) else action
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"action {action!r} is not an integer; allowed: an int in [0, {num_candidates})")
    if not 0 <= value < num_candidates:
        raise ValueError(f"action {int(value)} is out of range; allowed: an int in [0, {num_candidates})")
    return int(value)


def build_request(episodes: EpisodeBatch, row: int, scenario: Scenario) -> Request:
    """Episode ``row`` of ``episodes`` as a :class:`~scenarios.Request` (what text-reading agents see; no truth)."""
    r = episodes.requests
    history = tuple(int(i) for i in r.history[row] if i >= 0)
    candidates = tuple(int(i) for i in r.candidates[row])
    return Request(
        user_id=int(r.user_ids[row]),
        time=float(r.times[row]),
        history=history,
        candidates=candidates,
        need=episodes.need_names([row])[0],
        instruction=episodes.instructions([row])[0],
        history_titles=tuple(scenario.item_title(i) for i in history),
        candidate_titles=tuple(scenario.item_title(i) for i in candidates),
        history_categories=tuple(int(scenario.item_category[i]) for i in history),
        category=r.category[row].copy(),
        popularity=r.popularity[row].copy(),
        recent_popularity=r.recent_popularity[row].copy(),
        freshness=r.freshness[row].copy(),
    )


def invalid_action_message(action: int, valid: NDArray[np.bool_], env_index: int | None = None) -> str:
    where = "" if env_index is None else f" (env {env_index})"
    return (
        f"action {action} places a candidate that is already placed{where}; allowed: one of "
        f"{np.flatnonzero(valid).tolist()} (the action mask), or make the env with invalid_action='penalize'"
    )


# --------------------------------------------------------------------------------------------------------------------
# Rewards and end-of-episode information, as pure functions of episodes and lists. Each works on a batch; the
# per-step ones also on Python floats (the single env's fast path).


def step_reward(mode: RewardMode, swap: Any, marginal: Any, list_value: Callable[[], Any] | None = None) -> Any:
    """The reward of one step under ``reward_mode``: the one place the modes are defined (floats or arrays).

    ``swap`` and ``marginal`` are the step's swap reward and marginal gain (:func:`step_rewards` for NDCG needs,
    :func:`list_level_step_rewards` for list-level ones); ``list_value()`` is f of the finished list on the reward
    labels, passed at an episode's last step (an array with 0 for unfinished rows in a batch).
    """
    if mode == "swap":
        return swap
    if mode == "marginal":
        return marginal
    assert mode == "list", mode
    return list_value() if list_value is not None else 0.0 * swap


def step_rewards(gain: Any, discount: Any, pool_gain: Any, pool_size: Any, idcg: Any) -> tuple[Any, Any]:
    """``(swap, marginal)`` of placing an item of gain ``gain`` at a position of discount ``discount`` (NDCG needs).

    ``pool_gain``/``pool_size``: gain sum and count of the alternatives left in the pool (floats or arrays).
    """
    return step_swap_reward(gain, discount, pool_gain, pool_size, idcg), marginal_reward(gain, discount, idcg)


def need_groups(episodes: EpisodeBatch, rows: NDArray[np.int64]) -> Iterator[tuple[Need, NDArray[np.int64], NDArray[np.int64]]]:
    """``(need, selection into rows, episode rows)`` for each need among ``rows``."""
    index = episodes.need_index[rows]
    if len(rows) == 1:
        yield episodes.needs[int(index[0])], np.zeros(1, dtype=np.int64), rows
        return
    for i in np.unique(index):
        selection = np.flatnonzero(index == i)
        yield episodes.needs[int(i)], selection, rows[selection]


def list_metric(
    episodes: EpisodeBatch, rows: NDArray[np.int64], lists: NDArray[np.int64], k: int, truth: bool = False
) -> NDArray:
    """Each row's need metric at k of ``lists`` ``(len(rows), L)``, on the reward labels (or the truth)."""
    relevance = episodes.relevance if truth else episodes.reward_relevance
    values = np.zeros(len(rows))
    for need, selection, r in need_groups(episodes, rows):
        if need.is_list_level or truth:
            values[selection] = need.metric(lists[selection], relevance[r], episodes.requests.category[r], k)
        else:  # NDCG@k with the IDCG computed at reset
            values[selection] = ndcg_value(dcg(lists[selection], relevance[r], k), episodes.reward_idcg[r])
    return values


def ndcg_value(dcg: Any, idcg: Any) -> Any:
    """The list value of an NDCG need: DCG@k on the reward labels over the IDCG (0 when IDCG is 0); floats or arrays.

    The envs sum the DCG as items are placed (``G(s_t) d_t``, the marginal rewards' numerators).
    """
    return marginal_reward(dcg, 1.0, idcg)


def list_level_step_rewards(
    episodes: EpisodeBatch,
    rows: NDArray[np.int64],
    prefix: NDArray[np.int64],
    actions: NDArray[np.int64],
    placed: NDArray[np.bool_],
    k: int,
    with_marginal: bool = True,
) -> tuple[NDArray, NDArray]:
    """``(swap, marginal)`` of list-level needs for ``rows`` at one position (``prefix`` ``(R, t)``).

    Each need's metric f through :func:`flexrec_env.swap.generic_step_rewards`.
    """
    marginal, swap = np.zeros(len(rows)), np.zeros(len(rows))
    for need, selection, r in need_groups(episodes, rows):
        rel, cats = episodes.reward_relevance[r], episodes.requests.category[r]
        swap[selection], marginal[selection] = generic_step_rewards(
            need.metric, prefix[selection], actions[selection], placed[selection], rel, cats, k, with_marginal
        )
    return swap, marginal


def exact_swap_rewards(episodes: EpisodeBatch, rows: NDArray[np.int64], rankings: NDArray[np.int64], k: int) -> NDArray:
    """``(len(rows), K)`` exact swap rewards on the reward labels: closed form, generic path for list-level needs."""
    out = np.zeros(rankings.shape)
    for need, selection, r in need_groups(episodes, rows):
        if need.is_list_level:
            out[selection] = swap_rewards_generic(
                need.metric, rankings[selection], episodes.reward_relevance[r], episodes.requests.category[r], k
            )
        else:
            out[selection] = swap_rewards(rankings[selection], episodes.reward_relevance[r], k)
    return out


def final_info(
    episodes: EpisodeBatch,
    rows: NDArray[np.int64],
    rankings: NDArray[np.int64],
    config: EnvConfig,
    max_grade: int,
    list_value: NDArray | None = None,
) -> dict[str, Any]:
    """Batched end-of-episode info of ``rows`` whose finished lists are ``rankings`` ``(F, K)``.

    ``ranking`` and ``list_reward`` always; the rest only with ``info_level="full"``. ``list_value`` is f of the
    lists on the reward labels where the caller has it already (:func:`list_metric` otherwise).
    """
    if list_value is None:
        list_value = list_metric(episodes, rows, rankings, config.k)
    info: dict[str, Any] = {"ranking": rankings.copy(), "list_reward": list_value}
    if config.info_level == "lean":
        return info
    truth, categories = episodes.relevance[rows], episodes.requests.category[rows]
    metrics = evaluation_metrics(rankings, truth, categories)
    metrics["need_metric"] = list_metric(episodes, rows, rankings, config.k, truth=True)
    feedback = config.feedback_config
    clicks = simulate_clicks(
        feedback.click_model,
        np.take_along_axis(truth, rankings, axis=1),
        episodes.click_uniform[rows],
        max_grade,
        feedback.examination_eta,
    )
    observed = episodes.observed[rows]
    return info | {
        "swap_rewards": exact_swap_rewards(episodes, rows, rankings, config.k),
        "feedback_labels": episodes.labels[rows],
        "feedback_labels_observed": observed.astype(np.int8),
        "reward_labels": episodes.reward_relevance[rows].astype(np.int64),
        "reward_labels_observed": (observed if config.reward_labels == "feedback" else np.ones_like(observed)).astype(np.int8),
        "clicks": clicks,
        "metrics": metrics,
        "need": episodes.need_names(rows),
    }


# --------------------------------------------------------------------------------------------------------------------
# Batched dynamics (the vector env).


class RankingCore:
    """State and dynamics of B ranking episodes over N candidates and K positions (numpy over the batch)."""

    def __init__(self, config: EnvConfig, scenario: Scenario, batch_size: int) -> None:
        self.config, self.scenario, self.batch_size = config, scenario, batch_size
        n, k = config.num_candidates, config.list_length
        self.discount = discounts(k, config.k)  # (K,)
        self.placed = np.zeros((batch_size, n), dtype=bool)
        self.ranking = np.full((batch_size, k), -1, dtype=np.int64)
        self.position = np.zeros(batch_size, dtype=np.int64)
        self.invalid_count = np.zeros(batch_size, dtype=np.int64)
        self.pool_gain = np.zeros(batch_size)  # (B,), gain sum of the candidates not yet placed
        self.dcg = np.zeros(batch_size)  # (B,), DCG@k of each list so far on the reward labels
        self.episodes: EpisodeBatch | None = None
        self._rows = np.arange(batch_size)

    def load(self, episodes: EpisodeBatch, rows: NDArray[np.int64] | None = None) -> None:
        """Start fresh episodes in ``rows`` (default: all) from ``episodes`` (one per row)."""
        if rows is None or self.episodes is None or len(rows) == self.batch_size:
            assert len(episodes) == self.batch_size
            self.episodes, rows = episodes, self._rows  # rows come sorted, so all rows means in order
        else:
            self.episodes = self.episodes.replace_rows(rows, episodes)
        self.placed[rows] = False
        self.ranking[rows] = -1
        self.position[rows] = 0
        self.invalid_count[rows] = 0
        self.pool_gain[rows] = self.episodes.reward_gains[rows].sum(axis=-1)
        self.dcg[rows] = 0.0

    def action_masks(self) -> NDArray[np.bool_]:
        return ~self.placed

    def observation(self, copy: bool = True) -> dict[str, NDArray]:
        """Batched observation; with ``copy=False`` the arrays fixed during an episode are the episodes' own."""
        ep = self.episodes
        assert ep is not None
        placed = self.placed.astype(np.int8)
        fixed = (ep.requests.candidate_features, ep.requests.user_features, ep.need_features, ep.need_ids)
        candidates, user, need, ids = (x.copy() for x in fixed) if copy else fixed
        return {
            "candidates": candidates,
            "user": user,
            "need": need,
            "need_id": ids,
            "placed": placed,
            "position": self.position.copy(),
            "action_mask": 1 - placed,
        }

    def step(self, actions: NDArray[np.int64], active: NDArray[np.bool_]) -> tuple[NDArray, NDArray, NDArray, dict[str, Any]]:
        """Place ``actions`` (validated to lie in ``[0, N)``) in the ``active`` rows.

        Returns rewards, terminated, truncated and the batched per-step info (rows that are not active hold zeros).
        """
        ep = self.episodes
        assert ep is not None
        rows = self._rows
        invalid = active & self.placed[rows, actions]
        if invalid.any() and self.config.invalid_action == "raise":
            row = int(np.flatnonzero(invalid)[0])
            raise ValueError(invalid_action_message(int(actions[row]), ~self.placed[row], row))
        valid = active & ~invalid
        t = np.minimum(self.position, self.config.list_length - 1)  # (B,), the position being filled
        gain = ep.reward_gains[rows, actions]  # (B,)
        pool_gain = self.pool_gain - gain  # (B,), gain sum of the alternatives P_t \ {s_t}
        pool_size = self.config.num_candidates - 1 - t  # (B,)
        swap, marginal = step_rewards(gain, self.discount[t], pool_gain, pool_size, ep.reward_idcg)  # (B,), (B,)
        for position, group in self._list_level_positions(valid & ep.list_level, t):
            prefix, placed = self.ranking[group, :position], self.placed[group]
            swap[group], marginal[group] = list_level_step_rewards(
                ep, group, prefix, actions[group], placed, self.config.k, self.config.reward_mode == "marginal"
            )

        self.placed[rows[valid], actions[valid]] = True
        self.ranking[rows[valid], t[valid]] = actions[valid]
        self.pool_gain[valid] = pool_gain[valid]
        self.dcg[valid] += gain[valid] * self.discount[t[valid]]
        self.position[valid] += 1
        self.invalid_count[invalid] += 1
        terminated = valid & (self.position == self.config.list_length)
        truncated = invalid & (self.invalid_count >= self.config.num_candidates)

        def list_value() -> NDArray:  # f of the lists finished by this step, 0 elsewhere
            values, finished = np.zeros(self.batch_size), np.flatnonzero(terminated)
            values[finished] = self.list_values(finished)
            return values

        rewards = step_reward(self.config.reward_mode, swap, marginal, list_value if terminated.any() else None)
        rewards = np.where(invalid, INVALID_ACTION_PENALTY, np.where(valid, rewards, 0.0))
        info = {
            "position": np.where(valid, t, self.position),
            "item_id": np.where(valid, ep.requests.candidates[rows, actions], -1),
            "feedback": np.where(valid, ep.labels[rows, actions], 0.0).astype(np.float64),
            "feedback_observed": valid & ep.observed[rows, actions],
            "swap_reward": np.where(valid, swap, 0.0),
            "invalid_action": invalid,
        }
        return rewards, terminated, truncated, info

    def _list_level_positions(self, mask: NDArray[np.bool_], t: NDArray[np.int64]) -> Iterator[tuple[int, NDArray[np.int64]]]:
        selected = np.flatnonzero(mask)
        for position in np.unique(t[selected]):
            yield int(position), selected[t[selected] == position]

    def list_values(self, rows: NDArray[np.int64]) -> NDArray:
        """The list value f of ``rows`` on the reward labels: the summed DCG for NDCG needs, else the need's metric."""
        ep = self.episodes
        assert ep is not None
        values = ndcg_value(self.dcg[rows], ep.reward_idcg[rows])
        level = ep.list_level[rows]
        if level.any():
            values[level] = list_metric(ep, rows[level], self.ranking[rows[level]], self.config.k)
        return values

    def list_infos(self, terminated: NDArray[np.bool_]) -> list[tuple[NDArray[np.int64], dict[str, Any]]]:
        """``(rows, info)`` of the lists the last step finished: here the terminated episodes, with their final info."""
        completed = np.flatnonzero(terminated)
        return [(completed, self.final_info(completed))] if len(completed) else []

    def final_info(self, rows: NDArray[np.int64]) -> dict[str, Any]:
        assert self.episodes is not None
        rankings = self.ranking[rows]
        return final_info(self.episodes, rows, rankings, self.config, self.scenario.max_grade, self.list_values(rows))
