"""Off-policy evaluation: estimate a target policy's value from another policy's log, then measure it online.

    python examples/off_policy_evaluation.py [--episodes 3000] [--seed 0] [--out runs/ope/behaviour.parquet]

The behaviour policy is the need-aware heuristic, epsilon-greedy (epsilon = 0.5); it plays ``--episodes`` seeded
requests of the synthetic scenario (10 candidates, lists of 5, marginal rewards) and its log is written to Parquet
and read back. The target policy is the same heuristic as a softmax over its ranking (temperature 1). Its value, the
expected NDCG@5 on the feedback labels (the log's ``list_reward``), is estimated from the log alone by IPS,
self-normalised IPS and cascade IPS, then measured online: the target plays the same requests (same seeds) and the
mean of its list rewards is taken. Every figure has a 95% bootstrap interval.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from agents.baselines import NeedAwareHeuristic
from agents.behaviour import BehaviourConfig, BehaviourPolicy
from agents.off_policy import Estimate, cascade_ips, ips, on_policy, snips
from agents.offline import LoggedData, log_episodes, read_log, target_probabilities, write_log

ENV_KWARGS = {"need": ["interest", "trending", "niche", "fresh"], "num_candidates": 10, "list_length": 5,
              "reward_mode": "marginal"}  # fmt: skip
BEHAVIOUR = BehaviourConfig("epsilon-greedy", epsilon=0.5)
TARGET = BehaviourConfig("softmax", temperature=1.0)


def off_policy_evaluation(episodes: int, seed: int, path: Path) -> dict[str, Estimate]:
    """The behaviour's logged value, the target's three estimates from the log, and the target's online value."""
    behaviour = BehaviourPolicy(NeedAwareHeuristic(), BEHAVIOUR)
    write_log(log_episodes(behaviour, ENV_KWARGS, episodes, seed, sampling_seed=seed + 1), path)
    log = read_log(path)
    target = BehaviourPolicy(NeedAwareHeuristic(), TARGET)
    pi, mu = target_probabilities(log, target), log.per_step("propensity")  # (E, K) each
    values = log.per_episode("list_reward")  # (E,)
    online = LoggedData.from_table(log_episodes(target, ENV_KWARGS, episodes, seed, sampling_seed=seed + 2))
    return {
        "behaviour, logged": on_policy(values),
        "target, IPS": ips(values, pi.prod(axis=1), mu.prod(axis=1)),
        "target, SNIPS": snips(values, pi.prod(axis=1), mu.prod(axis=1)),
        "target, cascade IPS": cascade_ips(log.per_step("reward"), pi, mu),
        "target, online": on_policy(online.per_episode("list_reward")),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/ope/behaviour.parquet"))
    args = parser.parse_args()
    results = off_policy_evaluation(args.episodes, args.seed, args.out)
    print(f"NDCG@5 on the feedback, {args.episodes} requests, mean [95% CI] (effective sample size)")
    for label, estimate in results.items():
        print(f"  {label:<22}{estimate}")
    truth = results["target, online"].value
    for label in ("target, IPS", "target, SNIPS", "target, cascade IPS"):
        estimate = results[label]
        inside = "inside" if estimate.low <= truth <= estimate.high else "OUTSIDE"
        print(f"  online value {truth:.4f} is {inside} the {label.split(', ')[1]} interval (error {estimate.value - truth:+.4f})")
    print(f"log written to {args.out} ({args.episodes * ENV_KWARGS['list_length']} rows)")


if __name__ == "__main__":
    main()
