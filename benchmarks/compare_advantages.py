"""Train the transformer policy with the ``list``, ``swap`` and ``flexrec`` advantages on identical budgets and seeds.

The default synthetic scenario, sparse noisy feedback (30% of labels observed, 10% flipped: the env's defaults),
training on the five built-in needs, evaluation on them and on the held-out needs (never trained on). Every
estimator sees the same evaluation requests (episode i of a need uses seed 1,000,000 + i), so the comparison is
paired. Prints NDCG@5 and Recall@5 per need, mean ± 95% CI over all episodes of all seeds, and each estimator's
relative change over ``list``; writes everything as JSON.

    python benchmarks/compare_advantages.py                      # 3 seeds x 150k steps: about 15 minutes on 2 cores
    python benchmarks/compare_advantages.py --steps 20000 --seeds 1 --episodes 20   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from agents.evaluation import mean_ci
from agents.flexrec import FlexRecAgent
from flexrec_env.needs import held_out_needs, training_needs

ESTIMATORS = ("list", "swap", "flexrec")
METRICS = ("NDCG@5", "Recall@5")


def run(estimator: str, seed: int, steps: int, episodes: int, env_kwargs: dict) -> dict[str, dict[str, list[float]]]:
    from agents.evaluation import evaluate

    agent = FlexRecAgent(advantage=estimator, eval_every=0).learn(env_kwargs, steps, seed=seed)
    needs = [*env_kwargs["need"], *(n.name for n in held_out_needs())]
    result = evaluate(agent, {k: v for k, v in env_kwargs.items() if k != "need"}, needs, episodes, 1_000_000, METRICS)
    return result.values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=150_000, help="environment steps per training run")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds per estimator")
    parser.add_argument("--episodes", type=int, default=100, help="evaluation episodes per need and run")
    parser.add_argument("--estimators", default=",".join(ESTIMATORS), help="comma-separated subset of list,swap,flexrec")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/compare_advantages.json"))
    args = parser.parse_args()
    env_kwargs = {"need": [n.name for n in training_needs()]}
    estimators = [e.strip() for e in args.estimators.split(",") if e.strip()]
    results: dict[str, dict[str, dict[str, list[float]]]] = {}
    seconds: dict[str, float] = {}
    for estimator in estimators:
        started = time.perf_counter()
        for seed in range(args.seeds):
            for need, values in run(estimator, seed, args.steps, args.episodes, env_kwargs).items():
                for metric, scores in values.items():
                    results.setdefault(estimator, {}).setdefault(need, {}).setdefault(metric, []).extend(scores)
        seconds[estimator] = time.perf_counter() - started
        print(f"{estimator}: {args.seeds} seeds x {args.steps} steps in {seconds[estimator]:.0f}s", flush=True)

    held_out = {n.name for n in held_out_needs()}
    for metric in METRICS:
        print(f"\n{metric} (mean ± 95% CI over {args.seeds} seeds x {args.episodes} episodes; * held out)")
        print(f"| need | {' | '.join(estimators)} |")
        print(f"|---|{'---|' * len(estimators)}")
        for need in results[estimators[0]]:
            cells = []
            for estimator in estimators:
                mean, half = mean_ci(results[estimator][need][metric])
                cell = f"{mean:.3f} ± {half:.3f}"
                if estimator != "list" and "list" in results:
                    base = float(np.mean(results["list"][need][metric]))
                    cell += f" ({(mean - base) / base:+.0%})" if base > 0 else ""
                cells.append(cell)
            print(f"| {need}{' *' if need in held_out else ''} | {' | '.join(cells)} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    summary = {
        e: {n: {m: dict(zip(("mean", "ci95"), mean_ci(v), strict=True)) for m, v in ms.items()} for n, ms in r.items()}
        for e, r in results.items()
    }
    args.out.write_text(
        json.dumps({"args": vars(args) | {"out": str(args.out)}, "seconds": seconds, "summary": summary}, indent=2)
    )
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
