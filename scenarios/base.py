"""The scenario contract: what a user simulator provides to the environment.

A scenario owns an item catalogue and a population of users, and samples *ranking requests*: a user at a context
time with a candidate set of N items. For each request it reports the observable context (features, history,
popularity signals, categories) and one piece of ground truth, the user's interest grade in each candidate, from
which the needs derive relevance. Subclasses implement :meth:`Scenario.sample_requests`; everything else has
defaults.

Randomness: a scenario's fixed world (catalogue, users) comes from its own seed at construction; every request
draw comes from the generator the environment passes in, so episodes are reproducible from the env's seed alone.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import ClassVar, Protocol

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class RequestBatch:
    """A batch of B ranking requests over N candidates each (all arrays have the batch axis first)."""

    user_ids: NDArray[np.int64]
    """``(B,)`` user ids in ``[0, num_users)``."""
    times: NDArray[np.float64]
    """``(B,)`` context times (the scenario's clock)."""
    history: NDArray[np.int64]
    """``(B, H)`` item ids the user interacted with before the request, most recent last, ``-1`` padded."""
    candidates: NDArray[np.int64]
    """``(B, N)`` candidate item ids in ``[0, num_items)``, distinct within a request."""
    candidate_features: NDArray[np.float32]
    """``(B, N, F)`` features of each candidate at the request time."""
    user_features: NDArray[np.float32]
    """``(B, U)`` features of the user at the request time."""
    category: NDArray[np.int64]
    """``(B, N)`` category of each candidate in ``[0, num_categories)``."""
    popularity: NDArray[np.float32]
    """``(B, N)`` percentile of all-time popularity in the catalogue at the request time, in [0, 1]."""
    recent_popularity: NDArray[np.float32]
    """``(B, N)`` percentile of popularity in the recent window before the request time, in [0, 1]."""
    freshness: NDArray[np.float32]
    """``(B, N)`` percentile of release recency in the catalogue (1 = newest), in [0, 1]."""
    interest: NDArray[np.int64]
    """``(B, N)`` ground truth: the user's interest grade in each candidate, in ``[0, max_grade]``."""

    extras: Mapping[str, NDArray] = field(default_factory=dict)
    """Scenario-specific arrays with the batch axis first (e.g. ``{"price": (B, N)}``), for needs of its own."""

    def __len__(self) -> int:
        return int(self.user_ids.shape[0])

    def _arrays(self) -> dict[str, NDArray]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extras"}

    def take(self, index: NDArray[np.integer] | slice | int) -> RequestBatch:
        """The sub-batch at ``index`` (an int keeps a batch axis of 1)."""
        if isinstance(index, (int, np.integer)):
            index = slice(int(index), int(index) + 1)
        arrays = {name: value[index] for name, value in self._arrays().items()}
        return RequestBatch(**arrays, extras={name: value[index] for name, value in self.extras.items()})

    def equals(self, other: RequestBatch) -> bool:
        """Whether both batches hold the same values."""
        mine, theirs = self._arrays(), other._arrays()
        if self.extras.keys() != other.extras.keys():
            return False
        same_extras = all(np.array_equal(value, other.extras[key]) for key, value in self.extras.items())
        return same_extras and all(np.array_equal(mine[name], theirs[name]) for name in mine)

    def assign(self, rows: NDArray[np.integer], new: RequestBatch) -> RequestBatch:
        """This batch with ``rows`` set to the requests of ``new``, written in place.

        A new batch is returned only where the layout differs (a longer history than this batch holds, other extras).
        """
        if self.extras.keys() != new.extras.keys() or new.history.shape[1] > self.history.shape[1]:
            order = np.arange(len(self))
            order[rows] = len(self) + np.arange(len(new))
            return RequestBatch.concatenate([self, new]).take(order)
        for name, value in self._arrays().items():
            if name != "history":
                value[rows] = getattr(new, name)
        for key, value in self.extras.items():
            value[rows] = new.extras[key]
        w = new.history.shape[1]
        self.history[rows, :w], self.history[rows, w:] = new.history, -1
        return self

    @staticmethod
    def concatenate(batches: Sequence[RequestBatch], out: RequestBatch | None = None) -> RequestBatch:
        """Stack batches along the batch axis (histories are padded to the longest).

        ``out``, a batch of the same layout, is filled in place and returned (no new memory), else a new batch.
        """
        width = max(b.history.shape[1] for b in batches)
        total = sum(len(b) for b in batches)
        if out is None or not _same_layout(out, batches[0], total, width):
            history = np.full((total, width), -1, dtype=np.int64)
            names = [f.name for f in fields(RequestBatch) if f.name not in ("history", "extras")]
            arrays = {name: np.concatenate([getattr(b, name) for b in batches]) for name in names}
            extras = {key: np.concatenate([b.extras[key] for b in batches]) for key in batches[0].extras}
            out = RequestBatch(history=history, extras=extras, **arrays)
        else:
            for name, value in out._arrays().items():
                if name != "history":
                    np.concatenate([getattr(b, name) for b in batches], out=value)
            for key, value in out.extras.items():
                np.concatenate([b.extras[key] for b in batches], out=value)
        start = 0
        for b in batches:
            rows, w = slice(start, start + len(b)), b.history.shape[1]
            out.history[rows, :w], out.history[rows, w:] = b.history, -1
            start += len(b)
        return out


def _same_layout(out: RequestBatch, like: RequestBatch, total: int, width: int) -> bool:
    """Whether ``out`` can hold ``total`` requests shaped like ``like`` with histories of ``width``."""
    mine, theirs = out._arrays(), like._arrays()
    if len(out) != total or out.history.shape[1] != width or out.extras.keys() != like.extras.keys():
        return False
    pairs = [*((mine[n], theirs[n]) for n in mine if n != "history"), *((out.extras[k], like.extras[k]) for k in out.extras)]
    return all(a.shape[1:] == b.shape[1:] and a.dtype == b.dtype for a, b in pairs)


@dataclass(frozen=True)
class Request:
    """One ranking request as agents that read text see it (no ground truth)."""

    user_id: int
    time: float
    history: tuple[int, ...]
    """Item ids the user interacted with, most recent last."""
    candidates: tuple[int, ...]
    """Candidate item ids; an action is an index into this tuple."""
    need: str
    instruction: str
    """The natural-language instruction of the need, as sampled for this episode."""
    history_titles: tuple[str, ...]
    candidate_titles: tuple[str, ...]
    history_categories: tuple[int, ...]
    category: NDArray[np.int64]
    """``(N,)`` category of each candidate."""
    popularity: NDArray[np.float32]
    """``(N,)`` all-time popularity percentile of each candidate."""
    recent_popularity: NDArray[np.float32]
    """``(N,)`` recent popularity percentile of each candidate."""
    freshness: NDArray[np.float32]
    """``(N,)`` release recency percentile of each candidate (1 = newest)."""


class ScenarioNeed(Protocol):
    """What a scenario's own need is to the scenario layer: a name and a relevance over its requests.

    The environment's ``flexrec_env.needs.Need`` has these and more (instructions, features, metric); a scenario's
    ``needs()`` returns ``Need`` objects, and the environment checks that they are.
    """

    @property
    def name(self) -> str: ...

    @property
    def held_out(self) -> bool: ...

    @property
    def relevance(self) -> Callable[[RequestBatch], NDArray[np.int64]]: ...


class Scenario(abc.ABC):
    """A user simulator: item catalogue, users, and ranking requests. Subclass and implement ``sample_requests``."""

    name: ClassVar[str] = "custom"
    description: ClassVar[str] = ""
    max_grade: int = 2
    """Largest interest grade; relevance grades are ``0..max_grade``."""

    num_items: int
    num_users: int
    num_categories: int
    candidate_feature_dim: int
    user_feature_dim: int
    item_category: NDArray[np.int64]
    """``(num_items,)`` category of every item."""

    @abc.abstractmethod
    def sample_requests(self, rng: np.random.Generator, num_requests: int, num_candidates: int) -> RequestBatch:
        """Draw ``num_requests`` requests with ``num_candidates`` candidates each, using only ``rng``."""

    def training_split(self) -> Scenario:
        """The scenario whose requests training may draw feedback from; evaluation uses the scenario itself.

        The default is ``self`` (a simulator can draw fresh users for both). A scenario whose ground truth is fixed
        data returns one over separate data, e.g. an earlier time window of a log, so that training rewards never
        come from the positives evaluation scores (``EnvConfig(split="train")`` asks for it).
        """
        return self

    def max_candidates(self) -> int:
        """The largest candidate set every request can hold (default: the catalogue size).

        The environment refuses a larger ``num_candidates`` when it is made; override this where fewer items are
        eligible for some request (the synthetic scenario leaves out unreleased items and the user's history).
        """
        return int(self.num_items)

    def interaction_histories(self) -> NDArray[np.int64]:
        """``(num_users, H)`` item ids each user interacted with (most recent last, ``-1`` padded).

        Trained recommenders (BPR, SASRec) fit on these: every interaction known at the request time, which may be
        more than the ``RequestBatch.history`` of a request holds. The default reads a ``histories`` attribute.
        """
        histories = getattr(self, "histories", None)
        if histories is None:
            raise NotImplementedError(f"{type(self).__name__} has no interaction histories: set self.histories (U, H)")
        return np.asarray(histories, dtype=np.int64)

    def item_title(self, item_id: int) -> str:
        """Human-readable text of an item, for prompts and rendering."""
        return f"item {item_id}"

    def needs(self) -> Sequence[ScenarioNeed]:
        """Needs this scenario defines in addition to the built-ins (``flexrec_env.needs.Need`` objects)."""
        return ()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(items={self.num_items}, users={self.num_users})"
