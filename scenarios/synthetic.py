"""The embedded default scenario: a latent-factor user/item simulator with drifting popularity.

World (fixed by ``SyntheticConfig.seed``, independent of the environment's seed):

* items belong to one of C categories and have a unit latent vector near their category's centre;
* users have a unit latent vector mixing two categories; affinity is the dot product, and a user's interest grade
  in an item is 2 above the user's 95th affinity percentile, 1 above the 85th, else 0;
* each item has a power-law base popularity, a release period, and one burst of attention of random size some
  time after release (often soon, sometimes much later), so the recent-window popularity (``trending``) differs
  from all-time popularity and from freshness;
* each user has a history of items released before the clock starts, drawn by affinity and popularity.

A request picks a user and a period uniformly and draws N distinct released candidates outside the user's history,
without replacement, with weights that favour interesting items (positives for every need) and trending or fresh
items (hard negatives for need-blind rankers), then shuffles them.

Candidate features (F = d + C + 3): latent vector, one-hot category, popularity, recent popularity and freshness
percentiles. User features (U = d + C): mean latent vector and category histogram of the history.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from scenarios.base import RequestBatch, Scenario
from scenarios.settings import check_fields
from scenarios.tools import alias_draw, alias_table, percentile_ranks, successive_sample

CATEGORY_NAMES = ("Action", "Comedy", "Drama", "Documentary", "Horror", "Romance", "Sci-Fi", "Animation",
                  "Thriller", "Fantasy", "Musical", "Western")  # fmt: skip


@dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of the synthetic world."""

    num_users: int = 1000
    """Number of simulated users."""
    num_items: int = 1000
    """Catalogue size."""
    num_categories: int = 8
    """Number of item categories (at most 12 have names)."""
    latent_dim: int = 8
    """Dimension of user and item latent vectors."""
    history_length: int = 10
    """Items in each user's history."""
    num_periods: int = 52
    """Periods on the request clock; items are released over ``[-num_periods, num_periods)``."""
    recent_window: int = 4
    """Periods that make up "recent" popularity."""
    popularity_exponent: float = 1.0
    """Zipf exponent of base popularity."""
    positive_boost: float = 4.0
    """Candidate sampling weight of interesting items relative to the others."""
    hard_negative_boost: float = 2.0
    """Candidate sampling weight of trending and of fresh items (each), interesting or not."""
    seed: int = 0
    """Seed of the world (catalogue and users); requests use the environment's generator."""

    def __post_init__(self) -> None:
        counts = ("num_users", "num_items", "num_categories", "latent_dim", "history_length", "num_periods", "recent_window")
        weights = ("popularity_exponent", "positive_boost", "hard_negative_boost")
        check_fields(self, {**dict.fromkeys(counts, ">= 1"), **dict.fromkeys(weights, "> 0")})
        if self.num_categories > len(CATEGORY_NAMES):
            raise ValueError(f"synthetic num_categories={self.num_categories}; allowed: at most {len(CATEGORY_NAMES)}")


class SyntheticScenario(Scenario):
    """Latent-factor users and items, categories, drifting power-law popularity and releases."""

    name = "synthetic"
    description = "Embedded latent-factor simulator with categories, drifting popularity and release times."
    max_grade = 2

    def __init__(self, config: SyntheticConfig | None = None, **overrides: object) -> None:
        config = config or SyntheticConfig()
        if overrides:
            unknown = sorted(set(overrides) - set(SyntheticConfig.__dataclass_fields__))
            if unknown:
                raise ValueError(
                    f"unknown synthetic parameter(s) {unknown}; allowed: {sorted(SyntheticConfig.__dataclass_fields__)}"
                )
            config = SyntheticConfig(**{**config.__dict__, **overrides})
        self.config = c = config
        self.num_items, self.num_users, self.num_categories = c.num_items, c.num_users, c.num_categories
        self.candidate_feature_dim = c.latent_dim + c.num_categories + 3
        self.user_feature_dim = c.latent_dim + c.num_categories
        rng = np.random.default_rng(c.seed)

        # Items and users.
        centres = rng.normal(size=(c.num_categories, c.latent_dim))
        self.item_category = rng.integers(0, c.num_categories, size=c.num_items)
        item_latent = centres[self.item_category] + 0.7 * rng.normal(size=(c.num_items, c.latent_dim))
        self.item_latent = (item_latent / np.linalg.norm(item_latent, axis=1, keepdims=True)).astype(np.float32)
        favourite = rng.integers(0, c.num_categories, size=(c.num_users, 2))
        user_latent = 0.6 * centres[favourite[:, 0]] + 0.4 * centres[favourite[:, 1]]
        user_latent += 0.5 * rng.normal(size=user_latent.shape)
        self.user_latent = user_latent / np.linalg.norm(user_latent, axis=1, keepdims=True)
        affinity = self.user_latent @ self.item_latent.T  # (U, I)
        low, high = np.quantile(affinity, [0.85, 0.95], axis=1, keepdims=True)
        self.interest = ((affinity >= low).astype(np.int64) + (affinity >= high)).astype(np.int8)  # (U, I)

        # Popularity over time: base power law times a burst after release.
        periods = np.arange(-c.num_periods, c.num_periods)  # (T,)
        self.release = rng.integers(-c.num_periods, c.num_periods, size=c.num_items)
        base = (1.0 + rng.permutation(c.num_items)) ** -c.popularity_exponent
        peak = self.release + rng.exponential(20.0, size=c.num_items)  # some items take off late (sleeper hits)
        width = rng.uniform(1, 6, size=c.num_items)
        amplitude = rng.uniform(0.0, 4.0, size=c.num_items)
        released = periods[:, None] >= self.release[None, :]  # (T, I)
        rate = base * released * (0.3 + amplitude * np.exp(-0.5 * ((periods[:, None] - peak) / width) ** 2))  # (T, I)
        cumulative = np.cumsum(rate, axis=0)
        recent = cumulative - np.vstack([np.zeros((c.recent_window, c.num_items)), cumulative[: -c.recent_window]])
        clock = slice(c.num_periods, 2 * c.num_periods)  # requests happen at periods 0..num_periods-1
        self._released = released[clock]  # (P, I)
        self._popularity = percentile_ranks(cumulative[clock], self._released)
        self._recent = percentile_ranks(recent[clock], self._released)
        self._freshness = percentile_ranks(np.broadcast_to(self.release.astype(float), self._released.shape), self._released)

        # Histories, drawn before the clock starts.
        logits = 4.0 * affinity + 0.5 * np.log(base) + np.where(self.release < 0, 0.0, -np.inf)
        keys = logits - np.log(rng.standard_exponential(size=logits.shape))
        self.histories = np.argsort(-keys, axis=1)[:, : c.history_length]  # (U, H), sampled without replacement
        in_history = np.zeros((c.num_users, c.num_items), dtype=bool)
        np.put_along_axis(in_history, self.histories, True, axis=1)
        histogram = in_history.astype(np.float32) @ np.eye(c.num_categories, dtype=np.float32)[self.item_category]
        self.user_features = np.hstack([self.item_latent[self.histories].mean(axis=1), histogram / c.history_length])
        self.user_features = self.user_features.astype(np.float32)

        # Candidate sampling weights factor into a per-period proposal (released items; trending and fresh ones
        # boosted) and a per-user acceptance (interesting items 1, others 1 / positive_boost, history 0).
        boost = c.hard_negative_boost ** ((self._recent >= 0.8).astype(np.float64) + (self._freshness >= 0.8))
        proposal = np.where(self._released, boost, 0.0)  # (P, I)
        tables = [alias_table(weights) for weights in proposal]
        self._alias_prob = np.stack([prob for prob, _ in tables]).astype(np.float32)  # (P, I)
        self._alias = np.stack([alias for _, alias in tables])  # (P, I)
        self._acceptance = np.where(in_history, 0.0, np.where(self.interest > 0, 1.0, 1.0 / c.positive_boost)).astype(np.float32)
        self._proposal = proposal.astype(np.float32)  # (P, I)
        # The fewest eligible items (proposal and acceptance both > 0) of any user at any period.
        self._max_candidates = int((self._released.astype(np.float32) @ (self._acceptance > 0).T.astype(np.float32)).min())
        # Candidate features: the fixed part per item, the popularity signals per (period, item).
        self._item_features = np.hstack([self.item_latent, np.eye(c.num_categories, dtype=np.float32)[self.item_category]])
        self._signals = np.stack([self._popularity, self._recent, self._freshness], axis=-1).astype(np.float32)  # (P, I, 3)

    def sample_requests(self, rng: np.random.Generator, num_requests: int, num_candidates: int) -> RequestBatch:
        c = self.config
        users = rng.integers(0, c.num_users, size=num_requests)  # (B,)
        periods = rng.integers(0, c.num_periods, size=num_requests)  # (B,)
        items = self._sample_candidates(rng, users, periods, num_candidates)  # (B, N)
        # Gathers as np.take on raveled tables: several times faster than fancy indexing of the 2-d tables.
        signals = np.take(self._signals.reshape(-1, 3), periods[:, None] * c.num_items + items, axis=0)  # (B, N, 3)
        features = np.concatenate([np.take(self._item_features, items, axis=0), signals], axis=-1)  # (B, N, F)
        popularity, recent, freshness = signals[..., 0], signals[..., 1], signals[..., 2]  # (B, N) each
        category = np.take(self.item_category, items)
        interest = np.take(self.interest, users[:, None] * c.num_items + items)  # (B, N)
        return RequestBatch(
            user_ids=users.astype(np.int64),
            times=periods.astype(np.float64),
            history=self.histories[users].astype(np.int64),
            candidates=items.astype(np.int64),
            candidate_features=features,
            user_features=self.user_features[users],
            category=category.astype(np.int64),
            popularity=popularity,
            recent_popularity=recent,
            freshness=freshness,
            interest=interest.astype(np.int64),
        )

    def _sample_candidates(
        self, rng: np.random.Generator, users: NDArray[np.int64], periods: NDArray[np.int64], num_candidates: int
    ) -> NDArray[np.int64]:
        """N distinct items per request, weighted without replacement (proposal x acceptance), in random order."""

        def propose(rows: NDArray[np.int64], m: int) -> NDArray[np.int64]:
            uniform = rng.random((2, len(rows), m), dtype=np.float32)
            return alias_draw(self._alias_prob, self._alias, uniform[0], uniform[1], table=periods[rows])

        def accept(rows: NDArray[np.int64], draws: NDArray[np.int64]) -> NDArray[np.bool_]:
            acceptance = np.take(self._acceptance, users[rows, None] * self.num_items + draws)  # (R, M)
            return rng.random(draws.shape, dtype=np.float32) < acceptance

        def weights(rows: NDArray[np.int64]) -> NDArray[np.float64]:
            return (self._proposal[periods[rows]] * self._acceptance[users[rows]]).astype(np.float64)  # (R, I)

        try:
            items = successive_sample(len(users), num_candidates, propose, accept, rng, weights)
        except ValueError:
            raise ValueError(
                f"the synthetic catalogue has too few eligible items for num_candidates={num_candidates}; "
                f"increase num_items (now {self.num_items}) or lower num_candidates"
            ) from None
        shuffle = np.argsort(rng.random(items.shape), axis=1)  # position carries no information
        return np.take_along_axis(items, shuffle, axis=1)

    def max_candidates(self) -> int:
        """The fewest released items outside a user's history, over every user and period."""
        return self._max_candidates

    def item_title(self, item_id: int) -> str:
        category = CATEGORY_NAMES[int(self.item_category[item_id])]
        return f"{category} title #{item_id}"
