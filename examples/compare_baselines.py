"""Compare need-blind and need-aware rankers per need on the same seeded requests.

    python examples/compare_baselines.py [--episodes 300]

Random, popularity (all-time and recent), BPR and SASRec (trained on the scenario's histories), the need-aware
heuristic, and the oracle (the upper bound, not a recommender), evaluated with one routine on the true relevance.
"""

from __future__ import annotations

import argparse

from agents.evaluation import evaluate
from agents.registry import make_agent
from flexrec_env.needs import held_out_needs, training_needs

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--episodes", type=int, default=300)
args = parser.parse_args()

needs = [n.name for n in (*training_needs(), *held_out_needs())]
env_kwargs = {"need": [n.name for n in training_needs()]}
for name in ("random", "popularity", "popularity-recent", "bpr", "sasrec", "need-aware", "oracle"):
    agent = make_agent(name)
    if hasattr(agent, "learn"):
        agent.learn(env_kwargs, total_steps=150_000, seed=0)  # need-blind: fitted on interaction histories only
    print(evaluate(agent, env_kwargs, needs=needs, episodes=args.episodes).table(("NDCG@5", "Recall@5")), "\n")
