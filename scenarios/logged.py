"""Scenarios backed by real interaction logs (MovieLens, MovieTweetings, any CSV/TSV/Parquet, RecBole files).

From a log (:mod:`scenarios.logs` reads it), :class:`LogScenario` builds one ranking request per eligible user at
the split time ``t_split`` (a quantile of the interaction times):

* **history**: the user's interactions before ``t_split`` (requests keep the last ``history_length``;
  :meth:`LogScenario.interaction_histories` returns them all);
* **ground truth**: the user's interactions after ``t_split`` with items not in the history; the interest grade of
  such an item is 1 if its rating (normalised to [0, 1] over the layout's range) is at least ``positive_rating``
  and 2 if at least ``strong_rating`` (implicit logs: every interaction is grade 1);
* **signals at ``t_split``**: all-time popularity (interactions before the split), recent popularity (the
  ``recent_window_days`` before it) and freshness (release time, from the title's year or the first interaction),
  each as a percentile over the catalogue; categories from the first listed genre;
* **candidates**: up to ``max_positives`` held-out positives plus negatives sampled without replacement in
  proportion to ``(count + 1) ** negative_popularity_exponent`` from the items the user has not interacted with,
  so popularity alone does not find the positives; shuffled.

The built-in needs then filter the held-out positives (trending: recent popularity in the top 20%; niche: the less
popular half; fresh: the newest 20%; interest: any positive; diverse: category coverage).

**Training and evaluation phases.** Those requests (``phase="eval"``) are for evaluation. Training feedback must
not come from the positives evaluation scores, so :meth:`LogScenario.training_split` gives the same construction
one step earlier (``phase="train"``): as if the log ended at ``t_split`` and the split were at ``t_train`` (the
``train_quantile`` quantile of the times). Histories and signals are taken at ``t_train``, the ground truth is the
liked interactions in ``[t_train, t_split)``, the catalogue is the items seen before ``t_split``, and no
interaction at or after ``t_split`` affects anything.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from scenarios.base import RequestBatch, Scenario
from scenarios.logs import LOADER_OPTIONS, InteractionLog, load_log
from scenarios.settings import check_fields
from scenarios.tools import alias_draw, alias_table, percentile_ranks, successive_sample

logger = logging.getLogger(__name__)

DAY = 86_400.0

Phase = Literal["train", "eval"]


@dataclass(frozen=True)
class LogConfig:
    """How requests are built from a log."""

    phase: Phase = "eval"
    """``"eval"``: requests at the split time, positives after it (for evaluation); ``"train"``: requests at the
    training time, positives between it and the split time (for training feedback; see the module docstring)."""
    split_quantile: float = 0.5
    """The split time is this quantile of the interaction times; in (0, 1). Half the log is held out by default:
    with a later split most users have too few liked items after it for the niche need (on MovieTweetings 100K,
    0.8 leaves a niche-relevant candidate in only ~40% of requests, 0.5 in ~73%)."""
    train_quantile: float = 0.3
    """The training time is this quantile of the interaction times; in (0, ``split_quantile``). Phase ``"train"``
    draws its positives from between it and the split time."""
    recent_window_days: float = 30.0
    """Length of the window before the split that defines recent popularity (trending)."""
    min_history: int = 3
    """Users need at least this many interactions before the split (the training time in phase ``"train"``)."""
    history_length: int = 20
    """Most recent history items kept per request."""
    positive_rating: float = 0.5
    """Normalised rating at or above which a held-out interaction is relevant (grade 1)."""
    strong_rating: float = 0.8
    """Normalised rating at or above which it is grade 2."""
    max_positives: int | None = None
    """Held-out positives per candidate set; default N // 2."""
    negative_popularity_exponent: float = 0.5
    """Negatives are sampled in proportion to ``(count + 1) ** exponent`` (0: uniform, 1: by popularity)."""
    max_categories: int = 20
    """The most frequent categories kept; the rest (and unknown ones) become "other"."""

    def __post_init__(self) -> None:
        check_fields(
            self,
            {
                "split_quantile": "(0, 1)",
                "recent_window_days": "> 0",
                "min_history": ">= 1",
                "history_length": ">= 1",
                "positive_rating": "[0, 1]",
                "strong_rating": "[0, 1]",
                "max_positives": ">= 1",
                "negative_popularity_exponent": ">= 0",
                "max_categories": ">= 1",
            },
        )
        if self.strong_rating < self.positive_rating:
            raise ValueError(
                f"strong_rating={self.strong_rating!r}; allowed: a number in [positive_rating={self.positive_rating!r}, 1]"
            )
        if not 0.0 < self.train_quantile < self.split_quantile:
            raise ValueError(
                f"train_quantile={self.train_quantile!r}; allowed: a number in (0, split_quantile={self.split_quantile!r})"
            )


def _segments(keys: NDArray[np.int64], size: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Stable order grouping equal keys, and CSR offsets ``(size + 1,)`` of each key's run in that order."""
    order = np.argsort(keys, kind="stable")
    offsets = np.concatenate([[0], np.cumsum(np.bincount(keys, minlength=size))])
    return order, offsets


class LogScenario(Scenario):
    """Ranking requests built from a real interaction log (see the module docstring)."""

    name = "logged"
    description = "Requests from a real interaction log: history before a split time, held-out positives after it."
    max_grade = 2

    def __init__(self, log: InteractionLog, config: LogConfig | None = None, **overrides: Any) -> None:
        allowed = {f.name for f in fields(LogConfig)}
        unknown = sorted(set(overrides) - allowed)
        if unknown:
            raise ValueError(f"unknown log scenario setting(s) {unknown}; allowed: {sorted(allowed)}")
        self.config = c = LogConfig(**{**(config.__dict__ if config else {}), **overrides})
        self.log, started = log, time.perf_counter()
        self.num_items, self.num_users = log.num_items, log.num_users
        self.split_time = float(np.quantile(log.times, c.split_quantile))
        self.train_time = float(np.quantile(log.times, c.train_quantile))
        train = c.phase == "train"
        self.request_time = self.train_time if train else self.split_time
        """Time of the requests: histories and signals stop before it, the ground truth starts at it."""
        self.end_time = self.split_time if train else np.inf
        """The log as this phase sees it ends before this time (nothing from then on is read)."""
        self._training_split: LogScenario | None = self if train else None
        before = log.times < self.request_time
        window = (log.times >= self.request_time) & (log.times < self.end_time)
        self._build_categories(log)
        self._build_histories(log, before)
        self._build_ground_truth(log, window)
        self._build_signals(log, before, before | window)
        self._build_negative_sampler()
        self.user_feature_dim = self.num_categories + 2
        self.candidate_feature_dim = self.num_categories + 5
        logger.info("built %s in %.2fs: %d eligible users", self, time.perf_counter() - started, len(self.eligible_users))

    def training_split(self) -> LogScenario:
        """The same log in phase ``"train"`` (built once; itself if this is the training phase already)."""
        if self._training_split is None:
            self._training_split = LogScenario(self.log, self.config, phase="train")
        return self._training_split

    def interaction_histories(self) -> NDArray[np.int64]:
        """``(num_users, H)`` every interaction of each user before the request time, most recent last, ``-1`` padded.

        H is the longest history (305 before the default split of MovieTweetings 100K: a dense 16,554 x 305 array,
        40 MB, fine at that size); it is built on each call and not kept.
        """
        return self._last_items(max(int(self.history_count.max()), 1))

    # ------------------------------------------------------------------------------------------------------------
    # Construction.

    def _build_categories(self, log: InteractionLog) -> None:
        known = log.item_category[log.item_category >= 0]
        counts = np.bincount(known, minlength=len(log.category_names))
        kept = np.argsort(-counts, kind="stable")[: self.config.max_categories]
        kept = kept[counts[kept] > 0]
        mapping = np.full(len(log.category_names) + 1, len(kept), dtype=np.int64)  # default: "other"
        mapping[kept] = np.arange(len(kept))
        self.item_category = mapping[log.item_category]  # -1 maps to the last entry: "other"
        has_other = bool((self.item_category == len(kept)).any())
        self.category_names = tuple(log.category_names[i] for i in kept) + (("other",) if has_other else ())
        self.num_categories = max(len(self.category_names), 1)

    def _build_histories(self, log: InteractionLog, before: NDArray[np.bool_]) -> None:
        users, items = log.users[before], log.items[before]  # time-sorted
        order, offsets = _segments(users, self.num_users)
        self._history_items, self._history_offsets = items[order], offsets  # each user's run, oldest first
        self.history_count = np.diff(offsets)  # (U,)
        self.histories = self._last_items(self.config.history_length)  # (U, history_length)
        self._consumed = np.unique(users.astype(np.int64) * self.num_items + items)  # sorted (user, item) keys

    def _last_items(self, width: int) -> NDArray[np.int64]:
        """``(U, width)``: each user's last ``width`` history items, most recent last, ``-1`` padded on the right."""
        count = np.minimum(self.history_count, width)  # (U,)
        users = np.repeat(np.arange(self.num_users), self.history_count)  # the user of each history entry
        position = np.arange(len(self._history_items)) - (self._history_offsets[1:][users] - count[users])
        keep = position >= 0
        out = np.full((self.num_users, width), -1, dtype=np.int64)
        out[users[keep], position[keep]] = self._history_items[keep]
        return out

    def _build_ground_truth(self, log: InteractionLog, window: NDArray[np.bool_]) -> None:
        """Positives: the best grade of each liked (user, item) in ``window`` whose item is not in the history."""
        c = self.config
        if log.ratings is None or log.rating_range is None:
            grade = np.ones(int(window.sum()), dtype=np.int64)
        else:
            low, high = log.rating_range
            norm = (log.ratings[window] - low) / max(high - low, 1e-12)
            grade = (norm >= c.positive_rating).astype(np.int64) + (norm >= c.strong_rating)
        keys = log.users[window].astype(np.int64) * self.num_items + log.items[window]
        self._known = np.union1d(self._consumed, keys)  # every (user, item) of the phase's log, liked or not
        fresh = ~np.isin(keys, self._consumed) & (grade > 0)  # items not in the history, liked
        keys, grade = keys[fresh], grade[fresh]
        order = np.lexsort((-grade, keys))  # by key, best grade first
        keys, grade = keys[order], grade[order]
        first = np.ones(len(keys), dtype=bool)
        first[1:] = keys[1:] != keys[:-1]
        keys, grade = keys[first], grade[first]  # one entry per (user, item), its best grade
        pos_users = keys // self.num_items
        _, self._positive_offsets = _segments(pos_users, self.num_users)  # keys are sorted by user already
        self._positive_items, self._positive_grades = keys % self.num_items, grade
        positives = np.diff(self._positive_offsets)
        self.eligible_users = np.flatnonzero((self.history_count >= c.min_history) & (positives >= 1))
        if not len(self.eligible_users):
            raise ValueError(
                f"no user of {log.source} has >= {c.min_history} interactions before {self._phase_window()}; "
                "lower min_history or move the split"
            )

    def _phase_window(self) -> str:
        """Where this phase's histories end and its positives lie, for messages."""
        c = self.config
        if c.phase == "train":
            return (
                "the training time and a liked interaction between it and the split time "
                f"(phase='train', train_quantile={c.train_quantile}, split_quantile={c.split_quantile})"
            )
        return f"the split time and a liked interaction after it (split_quantile={c.split_quantile})"

    def _build_signals(self, log: InteractionLog, before: NDArray[np.bool_], visible: NDArray[np.bool_]) -> None:
        """Popularity signals and user features at the request time (``before`` it); ``visible``: the phase's log."""
        counts = np.bincount(log.items[before], minlength=self.num_items).astype(np.float64)
        window = before & (log.times >= self.request_time - self.config.recent_window_days * DAY)
        recent = np.bincount(log.items[window], minlength=self.num_items).astype(np.float64)
        first_seen = np.full(self.num_items, np.inf)
        np.minimum.at(first_seen, log.items[visible], log.times[visible])
        self.in_catalogue = np.isfinite(first_seen)  # (I,) items seen in the phase's log (all of them in "eval")
        self.release = np.where(np.isnan(log.item_release), first_seen, log.item_release)
        self.counts = counts
        self.popularity = percentile_ranks(counts, self.in_catalogue)
        self.recent_popularity = percentile_ranks(recent, self.in_catalogue)
        self.freshness = percentile_ranks(self.release, self.in_catalogue)
        onehot = np.eye(self.num_categories, dtype=np.float32)
        self._category_onehot = onehot
        valid = self.histories >= 0
        history_items = np.where(valid, self.histories, 0)
        histogram = (onehot[self.item_category[history_items]] * valid[..., None]).sum(axis=1)  # (U, C)
        self.taste = histogram / np.maximum(valid.sum(axis=1, keepdims=True), 1)
        mean_popularity = (self.popularity[history_items] * valid).sum(axis=1) / np.maximum(valid.sum(axis=1), 1)
        history_size = np.log1p(self.history_count) / np.log1p(max(int(self.history_count.max()), 1))
        self.user_features = np.hstack([self.taste, history_size[:, None], mean_popularity[:, None]]).astype(np.float32)
        self._log_count = (np.log1p(counts) / np.log1p(max(counts.max(), 1.0))).astype(np.float32)

    def _build_negative_sampler(self) -> None:
        self._negative_weights = (self.counts + 1.0) ** self.config.negative_popularity_exponent * self.in_catalogue
        self._negative_prob, self._negative_alias = alias_table(self._negative_weights)

    # ------------------------------------------------------------------------------------------------------------
    # Requests.

    def _positives(self, rng: np.random.Generator, users: NDArray[np.int64], limit: int) -> tuple[NDArray, NDArray, NDArray]:
        """Up to ``limit`` random held-out positives per user: items and grades ``(B, limit)`` and counts ``(B,)``."""
        starts, lengths = self._positive_offsets[users], np.diff(self._positive_offsets)[users]  # (B,), (B,)
        rows = np.repeat(np.arange(len(users)), lengths)  # the request of each of the users' positives
        within = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)  # index in its user's run
        flat = np.repeat(starts, lengths) + within  # index into the positive arrays
        order = np.lexsort((rng.random(len(flat)), rows))  # shuffle within each request; requests stay grouped
        flat, keep = flat[order], within < limit  # after the shuffle, position ``within`` holds a random positive
        rows, rank = rows[keep], within[keep]
        items, grades = np.zeros((len(users), limit), dtype=np.int64), np.zeros((len(users), limit), dtype=np.int64)
        items[rows, rank] = self._positive_items[flat[keep]]
        grades[rows, rank] = self._positive_grades[flat[keep]]
        return items, grades, np.minimum(lengths, limit)

    def _negatives(self, rng: np.random.Generator, users: NDArray[np.int64], count: int) -> NDArray[np.int64]:
        """``count`` distinct items per user that the user never interacted with, popularity-weighted."""

        def propose(rows: NDArray[np.int64], m: int) -> NDArray[np.int64]:
            uniform = rng.random((2, len(rows), m))
            return alias_draw(self._negative_prob, self._negative_alias, uniform[0], uniform[1])

        def accept(rows: NDArray[np.int64], draws: NDArray[np.int64]) -> NDArray[np.bool_]:
            keys = users[rows, None] * self.num_items + draws
            at = np.minimum(np.searchsorted(self._known, keys), len(self._known) - 1)
            return self._known[at] != keys

        def weights(rows: NDArray[np.int64]) -> NDArray[np.float64]:
            known = np.zeros((len(rows), self.num_items), dtype=bool)
            for i, user in enumerate(users[rows]):
                known[i, self._known_items(int(user))] = True
            return np.where(known, 0.0, self._negative_weights)  # (R, I)

        return successive_sample(len(users), count, propose, accept, rng, weights)

    def _known_items(self, user: int) -> NDArray[np.int64]:
        """The items ``user`` interacted with in this phase's log."""
        low, high = np.searchsorted(self._known, [user * self.num_items, (user + 1) * self.num_items])
        return self._known[low:high] % self.num_items

    def max_candidates(self) -> int:
        """One positive plus the fewest catalogue items an eligible user never interacted with (the negatives)."""
        known = np.bincount(self._known // self.num_items, minlength=self.num_users)[self.eligible_users]
        return int(min(self.num_items - 1, self.in_catalogue.sum() - known.max() + 1))

    def sample_requests(self, rng: np.random.Generator, num_requests: int, num_candidates: int) -> RequestBatch:
        if num_candidates >= self.num_items:
            raise ValueError(
                f"num_candidates={num_candidates} needs a catalogue larger than {self.log.source}'s {self.num_items} items"
            )
        limit = max(min(self.config.max_positives or num_candidates // 2, num_candidates - 1), 1)
        users = self.eligible_users[rng.integers(0, len(self.eligible_users), num_requests)]  # (B,)
        positives, grades, count = self._positives(rng, users, limit)  # (B, P), (B, P), (B,)
        try:
            negatives = self._negatives(rng, users, num_candidates - int(count.min()))  # (B, N - min positives)
        except ValueError as error:
            raise ValueError(
                f"{self.log.source}: too few items a user has not seen for num_candidates={num_candidates}"
            ) from error
        column = np.arange(num_candidates)[None, :]
        is_positive = column < count[:, None]  # (B, N)
        positive_at = np.minimum(column, limit - 1)
        negative_at = np.maximum(column - count[:, None], 0)
        items = np.where(
            is_positive, np.take_along_axis(positives, positive_at, 1), np.take_along_axis(negatives, negative_at, 1)
        )
        interest = np.where(is_positive, np.take_along_axis(grades, positive_at, 1), 0)
        shuffle = np.argsort(rng.random(items.shape), axis=1)  # position carries no information
        items, interest = np.take_along_axis(items, shuffle, 1), np.take_along_axis(interest, shuffle, 1)
        category = self.item_category[items]
        taste = np.take_along_axis(self.taste[users], category, axis=1)  # (B, N), share of the history in the category
        signals = (self.popularity[items], self.recent_popularity[items], self.freshness[items])
        features = [self._category_onehot[category], *(s[..., None] for s in signals)]
        features += [self._log_count[items][..., None], taste[..., None].astype(np.float32)]
        return RequestBatch(
            user_ids=users,
            times=np.full(num_requests, self.request_time),
            history=self.histories[users],
            candidates=items,
            candidate_features=np.concatenate(features, axis=-1).astype(np.float32),
            user_features=self.user_features[users],
            category=category,
            popularity=signals[0],
            recent_popularity=signals[1],
            freshness=signals[2],
            interest=interest.astype(np.int64),
        )

    def item_title(self, item_id: int) -> str:
        title = str(self.log.item_titles[item_id]) or str(self.log.item_ids[item_id])
        return f"{title} [{self.category_names[self.item_category[item_id]]}]"

    def __repr__(self) -> str:
        users = f"users={len(self.eligible_users)}/{self.num_users}"
        return f"LogScenario({self.log.source}, phase={self.config.phase}, {users}, items={self.num_items})"


# ----------------------------------------------------------------------------------------------------------------
# Named factories (registered in ``scenarios``).


def _from_path(path: str | Path, layout: str, loader_kwargs: dict[str, Any], settings: dict[str, Any]) -> LogScenario:
    config_names = {f.name for f in fields(LogConfig)}
    unknown = sorted(set(settings) - config_names - set(LOADER_OPTIONS.get(layout, ())))
    if unknown:
        raise ValueError(
            f"unknown setting(s) {unknown} for the {layout} log scenario; allowed: the LogConfig fields "
            f"{sorted(config_names)} and the reader options {list(LOADER_OPTIONS.get(layout, ())) or 'none'}"
        )
    config = {k: v for k, v in settings.items() if k in config_names}
    loader_kwargs = {**loader_kwargs, **{k: v for k, v in settings.items() if k not in config_names}}
    return LogScenario(load_log(Path(path), layout=layout, **loader_kwargs), **config)


def movielens(path: str | Path, **settings: Any) -> LogScenario:
    """MovieLens 100K, 1M or latest-small, detected from the folder."""
    return _from_path(path, "movielens", {}, settings)


def movietweetings(path: str | Path, **settings: Any) -> LogScenario:
    """MovieTweetings (ratings.dat and movies.dat with '::')."""
    return _from_path(path, "movietweetings", {}, settings)


def logged(path: str | Path, layout: str = "auto", **settings: Any) -> LogScenario:
    """Any interaction log: CSV/TSV/Parquet (column names configurable) or RecBole atomic files."""
    return _from_path(path, layout, {}, settings)
