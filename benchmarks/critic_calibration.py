"""How well calibrated is the FlexRec critic? ECE, NLL and interval coverage, online and after the final refit.

    python benchmarks/critic_calibration.py                                   # synthetic, 3 seeds x 150k steps
    python benchmarks/critic_calibration.py --scenario movietweetings --scenario-arg path=../shared/data/movietweetings-100k

For each seed, trains the default ``flexrec`` agent (one torch thread) and reports:

* **online**: the critic's figures on each iteration's observed labels *before* it trains on them (what the
  trainer logs to TensorBoard), averaged over the last quarter of the iterations;
* **final**: the refit critic that ranks and serves as the policy's prior, on the observed feedback of 1,000 fresh
  evaluation requests (``split="eval"``) it never saw.

Both are on the observed (noisy) labels, through the known noise channel. "within 1/2 sigma" is the fraction of
observed gains inside ``mu ± sigma`` / ``mu ± 2 sigma``; "predicted" is the fraction the critic's own distribution
puts there, the reference for a calibrated critic of three-point labels (not 0.68 / 0.95, which hold for Gaussians).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from agents.critic import calibration_report
from agents.flexrec import FlexRecAgent
from agents.supervised import collect_feedback
from flexrec_env.needs import training_needs

KEYS = ("ece", "nll", "within_1sigma", "within_1sigma_predicted", "within_2sigma", "within_2sigma_predicted")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=150_000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--scenario", default="synthetic")
    parser.add_argument("--scenario-arg", action="append", default=[], help="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    env_kwargs = {
        "need": [n.name for n in training_needs()],
        "scenario": args.scenario,
        "scenario_kwargs": dict(item.split("=", 1) for item in args.scenario_arg),
    }
    rows: dict[str, list[dict[str, float]]] = {"online": [], "final": []}
    weights = []
    for seed in range(args.seeds):
        agent = FlexRecAgent(eval_every=0).learn(env_kwargs, args.steps, seed=seed)
        history = [row for row in agent.history if "critic/ece" in row]
        tail = history[-max(len(history) // 4, 1) :]
        rows["online"].append({key: float(np.nanmean([row[f"critic/{key}"] for row in tail])) for key in KEYS})
        weights.append(
            [float(np.mean([row[f"critic/{key}"] for row in tail])) for key in ("mean_weight", "weight_p10", "weight_p90")]
        )
        features, labels, observed, _, noise = collect_feedback({**env_kwargs, "split": "eval"}, 1_000, seed=10_000 + seed)
        assert agent.critic is not None
        probs = agent.critic.predict(features)
        rows["final"].append(calibration_report(probs[observed], labels[observed], noise))
        print(f"seed {seed}: online {rows['online'][-1]}\n        final  {rows['final'][-1]}", flush=True)
    print(f"\n{args.scenario}: {args.seeds} seeds x {args.steps} steps; mean over seeds (min-max)\n")
    print("| critic | " + " | ".join(KEYS) + " |")
    print("|---|" + "---|" * len(KEYS))
    summary: dict[str, dict[str, list[float]]] = {}
    for name, values in rows.items():
        cells = []
        for key in KEYS:
            column = [v[key] for v in values]
            summary.setdefault(name, {})[key] = column
            cells.append(f"{np.mean(column):.3f} ({min(column):.3f}-{max(column):.3f})")
        print(f"| {name} | " + " | ".join(cells) + " |")
    mean_weight, p10, p90 = np.mean(weights, axis=0)
    print(f"\nconfidence weight over the last quarter of training: mean {mean_weight:.2f}, p10 {p10:.2f}, p90 {p90:.2f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"rows": summary, "weights": weights, "args": vars(args)}, indent=1, default=str))


if __name__ == "__main__":
    main()
