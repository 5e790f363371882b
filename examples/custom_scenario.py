"""A complete custom user simulator: price-sensitive shoppers, with a ``budget`` need of their own.

    python examples/custom_scenario.py

The simulator is the ``ShopperScenario`` class (about 50 lines); registering it makes it available by name, and
its ``budget`` need joins the built-in ones. The same class can ship in a package of its own and be found through
the ``flexrec.scenarios`` entry point (see the README).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

import flexrec_env  # noqa: F401  (registers FlexRec-v0)
import scenarios
from agents.baselines import NeedAwareHeuristic, RandomAgent
from agents.evaluation import evaluate
from flexrec_env.needs import Need, need_features
from scenarios import RequestBatch, Scenario
from scenarios.tools import percentile_ranks


def affordable_relevance(requests: RequestBatch) -> np.ndarray:
    """The ``budget`` need: interesting items the shopper can afford."""
    return np.where(requests.extras["affordable"], requests.interest, 0)


BUDGET = Need(
    name="budget",
    instructions=("Show me things I can afford.", "Nothing over my budget, please.", "Cheap picks that suit me."),
    relevance=affordable_relevance,
    features=need_features(interest=1.0, custom_0=1.0),
    description="interesting items within the shopper's budget",
)


class ShopperScenario(Scenario):
    """Price-sensitive shoppers: category tastes, budgets, prices, popularity and new arrivals."""

    name = "shoppers"
    description = "Price-sensitive shoppers with category tastes and budgets (example)."

    def __init__(self, num_items: int = 600, num_users: int = 400, num_categories: int = 6, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.num_items, self.num_users, self.num_categories = num_items, num_users, num_categories
        self.item_category = rng.integers(0, num_categories, num_items)
        self.price = rng.lognormal(3.0, 0.6, num_items)
        self.taste = rng.dirichlet(np.full(num_categories, 0.5), num_users)  # (U, C)
        self.budget = rng.lognormal(3.0, 0.4, num_users)
        self.popularity = percentile_ranks(rng.pareto(1.5, num_items))
        self.recent = percentile_ranks(self.popularity + rng.normal(0, 0.3, num_items))
        self.freshness = percentile_ranks(rng.uniform(0, 1, num_items))
        self.histories = np.argsort(-(self.taste[:, self.item_category] + rng.gumbel(size=(num_users, num_items))), axis=1)[:, :5]
        self.candidate_feature_dim, self.user_feature_dim = num_categories + 4, num_categories + 1

    def sample_requests(self, rng: np.random.Generator, num_requests: int, num_candidates: int) -> RequestBatch:
        users = rng.integers(0, self.num_users, num_requests)
        items = np.argsort(rng.random((num_requests, self.num_items)), axis=1)[:, :num_candidates]
        category = self.item_category[items]
        taste = self.taste[users[:, None], category] * self.num_categories  # > 1: likes it more than average
        price = self.price[items] / self.budget[users, None]
        features = [np.eye(self.num_categories)[category], np.log(price)[..., None]]
        features += [signal[items][..., None] for signal in (self.popularity, self.recent, self.freshness)]
        return RequestBatch(
            user_ids=users,
            times=np.zeros(num_requests),
            history=self.histories[users],
            candidates=items,
            candidate_features=np.concatenate(features, axis=-1).astype(np.float32),
            user_features=np.hstack([self.taste[users], np.log(self.budget[users, None])]).astype(np.float32),
            category=category,
            popularity=self.popularity[items],
            recent_popularity=self.recent[items],
            freshness=self.freshness[items],
            interest=(taste > 1.0).astype(np.int64) + (taste > 2.0),
            extras={"affordable": price <= 1.0},
        )

    def needs(self) -> list[Need]:
        return [BUDGET]


if __name__ == "__main__":
    scenarios.register("shoppers", ShopperScenario)
    env = gym.make("FlexRec-v0", scenario="shoppers", need=["budget", "interest"])  # ready for any agent
    for agent in (RandomAgent(seed=0), NeedAwareHeuristic()):
        print(evaluate(agent, {"scenario": "shoppers"}, needs=["budget", "interest", "niche"], episodes=200).table(), "\n")
