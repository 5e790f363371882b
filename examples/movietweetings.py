"""Run FlexRec-v0 on real data: the MovieTweetings ratings (a copy lies in ../shared/data/movietweetings-100k).

    python examples/movietweetings.py [PATH]

Builds requests from the log (history before the split time, liked movies after it as ground truth), shows one
request as text, then compares a random and a need-aware ranker per need.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

import flexrec_env  # noqa: F401  (registers FlexRec-v0)
from agents.base import play_episode
from agents.baselines import NeedAwareHeuristic, RandomAgent
from flexrec_env.needs import builtin_needs

DEFAULT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "movietweetings-100k"


def main(path: Path) -> None:
    if not path.is_dir():
        sys.exit(f"no MovieTweetings folder at {path}; pass its path as the first argument")
    started = time.perf_counter()
    env = gym.make("FlexRec-v0", scenario="movietweetings", scenario_kwargs={"path": str(path)}, render_mode="ansi")
    print(f"{env.unwrapped.scenario} built in {time.perf_counter() - started:.2f}s\n")
    env.reset(seed=0, options={"need": "trending"})
    print(env.render())
    for need in builtin_needs():
        row = []
        for agent in (RandomAgent(seed=0), NeedAwareHeuristic()):
            scores = [play_episode(env, agent, seed=i, options={"need": need.name})["metrics"]["NDCG@5"] for i in range(300)]
            row.append(f"{agent.name} {np.mean(scores):.3f}")
        print(f"{need.name:<16} NDCG@5  " + "   ".join(row))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT)
