"""Episode generation and batched dynamics shared by ``FlexRecEnv`` and ``FlexRecVectorEnv``.

The rules are documented once, in :class:`~flexrec_env.env.FlexRecEnv`'s docstring; this module implements them.

Randomness. All randomness of an episode is drawn at reset, as need-independent material (:class:`EpisodeNoise`:
the request and a fixed set of uniforms), so the same draws serve any need. A generator's episodes are drawn in
blocks of :data:`BLOCK_SIZE` (one vectorised call per block, :class:`EpisodeStream`): the episodes of a seed are
fixed by the seed and the block size. :func:`materialise` turns the material into an :class:`EpisodeBatch` for a
tuple of needs: the need of each episode, its true relevance, its feedback labels and the reward labels.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from flexrec_env.config import INVALID_ACTION_PENALTY, EnvConfig
from flexrec_env.feedback import feedback_labels, simulate_clicks
from flexrec_env.metrics import dcg, discounts, evaluation_metrics, gains, ideal_dcg
from flexrec_env.needs import Need, need_id
from flexrec_env.swap import (
    marginal_reward,
    next_item_values,
    step_swap_reward,
    swap_from_values,
    swap_rewards,
    swap_rewards_generic,
)
from scenarios import RequestBatch, Scenario

#: Episodes drawn per call of a generator (part of what a seed determines).
BLOCK_SIZE = 64


def _take_rows(batch: Any, rows: NDArray[np.int64] | slice) -> dict[str, Any]:
    return {f.name: getattr(batch, f.name)[rows] for f in fields(batch) if isinstance(getattr(batch, f.name), np.ndarray)}


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


def draw_noise(rng: np.random.Generator, num: int, config: EnvConfig, scenario: Scenario) -> EpisodeNoise:
    """Draw the material of ``num`` episodes: the requests, then all uniforms in one call."""
    n, k = config.num_candidates, config.list_length
    requests = scenario.sample_requests(rng, num, n)
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
        """This batch with ``rows`` replaced by the episodes of ``new`` (one per row)."""
        merged = EpisodeBatch.concatenate([self, new])
        order = np.arange(len(self))
        order[rows] = len(self) + np.arange(len(new))
        return merged.take(order)


def same_needs(a: tuple[Need, ...], b: tuple[Need, ...]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


def union_needs(*groups: tuple[Need, ...]) -> tuple[Need, ...]:
    out: list[Need] = []
    for need in (n for group in groups for n in group):
        if not any(need is m for m in out):
            out.append(need)
    return tuple(out)


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


class EpisodeStream:
    """The episodes of one generator, drawn in blocks and materialised per block for the needs asked for."""

    def __init__(self, rng: np.random.Generator, config: EnvConfig, scenario: Scenario, block_size: int = BLOCK_SIZE) -> None:
        self.rng, self.config, self.scenario, self.block_size = rng, config, scenario, block_size
        self._noise: EpisodeNoise | None = None
        self._row = 0
        self._ready: EpisodeBatch | None = None  # the rest of the block, materialised
        self._ready_from = 0

    def next_row(self, needs: tuple[Need, ...]) -> tuple[EpisodeBatch, int]:
        """The next episode for ``needs``, as (a materialised batch, its row in it)."""
        if self._noise is None or self._row >= len(self._noise):
            self._noise, self._row, self._ready = draw_noise(self.rng, self.block_size, self.config, self.scenario), 0, None
        if self._ready is None or not same_needs(self._ready.needs, needs):
            rest = self._noise.take(slice(self._row, None))
            self._ready, self._ready_from = materialise(rest, needs, self.config, self.scenario), self._row
        self._row += 1
        return self._ready, self._row - 1 - self._ready_from

    def next(self, needs: tuple[Need, ...]) -> EpisodeBatch:
        """The next episode for ``needs`` as a batch of one."""
        batch, row = self.next_row(needs)
        return batch.take(slice(row, row + 1))


# --------------------------------------------------------------------------------------------------------------------
# Rewards and end-of-episode information, as pure functions of episodes and lists.


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
            values[selection] = marginal_reward(dcg(lists[selection], relevance[r], k), 1.0, episodes.reward_idcg[r])
    return values


def list_level_step_rewards(
    episodes: EpisodeBatch,
    rows: NDArray[np.int64],
    prefix: NDArray[np.int64],
    actions: NDArray[np.int64],
    placed: NDArray[np.bool_],
    k: int,
    with_marginal: bool = False,
) -> tuple[NDArray, NDArray]:
    """``(marginal, swap)`` step rewards of list-level needs for ``rows`` at one position (``prefix`` ``(R, t)``).

    The marginal reward ``f(prefix + s_t) - f(prefix)`` costs a second evaluation and is 0 unless asked for.
    """
    marginal, swap = np.zeros(len(rows)), np.zeros(len(rows))
    for need, selection, r in need_groups(episodes, rows):
        rel, cats, pre = episodes.reward_relevance[r], episodes.requests.category[r], prefix[selection]
        values = next_item_values(need.metric, pre, rel, cats, k)  # (R, N)
        swap[selection] = swap_from_values(values, actions[selection], placed[selection])
        if with_marginal:
            before = need.metric(pre, rel, cats, k) if pre.shape[1] else 0.0
            marginal[selection] = np.take_along_axis(values, actions[selection, None], axis=1)[:, 0] - before
    return marginal, swap


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
    episodes: EpisodeBatch, rows: NDArray[np.int64], rankings: NDArray[np.int64], config: EnvConfig, max_grade: int
) -> dict[str, Any]:
    """Batched end-of-episode info of ``rows`` whose finished lists are ``rankings`` ``(F, K)``."""
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
    return {
        "ranking": rankings.copy(),
        "swap_rewards": exact_swap_rewards(episodes, rows, rankings, config.k),
        "list_reward": list_metric(episodes, rows, rankings, config.k),
        "feedback_labels": episodes.labels[rows],
        "feedback_labels_observed": episodes.observed[rows].astype(np.int8),
        "reward_labels": episodes.reward_relevance[rows].astype(np.int64),
        "reward_labels_observed": (
            episodes.observed[rows] if config.reward_labels == "feedback" else np.ones_like(episodes.observed[rows])
        ).astype(np.int8),
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
        swap = step_swap_reward(gain, self.discount[t], pool_gain, pool_size, ep.reward_idcg)  # (B,)
        mode = self.config.reward_mode
        rewards = swap.copy() if mode == "swap" else np.zeros(self.batch_size)
        if mode == "marginal":
            rewards = marginal_reward(gain, self.discount[t], ep.reward_idcg)
        for position, group in self._list_level_positions(valid & ep.list_level, t):
            marginal, swap[group] = list_level_step_rewards(
                ep, group, self.ranking[group, :position], actions[group], self.placed[group], self.config.k, mode == "marginal"
            )
            rewards[group] = swap[group] if mode == "swap" else marginal if mode == "marginal" else 0.0
        rewards = np.where(invalid, INVALID_ACTION_PENALTY, np.where(valid, rewards, 0.0))

        self.placed[rows[valid], actions[valid]] = True
        self.ranking[rows[valid], t[valid]] = actions[valid]
        self.pool_gain[valid] = pool_gain[valid]
        self.position[valid] += 1
        self.invalid_count[invalid] += 1
        terminated = valid & (self.position == self.config.list_length)
        truncated = invalid & (self.invalid_count >= self.config.num_candidates)
        if mode == "list" and terminated.any():
            finished = np.flatnonzero(terminated)
            rewards[finished] = list_metric(ep, finished, self.ranking[finished], self.config.k)
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

    def final_info(self, rows: NDArray[np.int64]) -> dict[str, Any]:
        assert self.episodes is not None
        return final_info(self.episodes, rows, self.ranking[rows], self.config, self.scenario.max_grade)


def invalid_action_message(action: int, valid: NDArray[np.bool_], env_index: int | None = None) -> str:
    where = "" if env_index is None else f" (env {env_index})"
    return (
        f"action {action} places a candidate that is already placed{where}; allowed: one of "
        f"{np.flatnonzero(valid).tolist()} (the action mask), or make the env with invalid_action='penalize'"
    )
