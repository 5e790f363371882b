"""``flexrec-agent benchmark``: every agent on the same requests and seeds, per need and on held-out needs.

A *cell* is one agent trained (if it is trainable) with one seed and evaluated on every need: the training needs
and the held-out ones, episode i of a need played with seed ``1_000_000 + i`` whatever the agent, so comparisons
are paired. Each finished cell is written to ``OUT/cells/AGENT-seedS.json`` (atomically) and never recomputed, so
an interrupted run resumes where it stopped. The report pools the episodes of all seeds of an agent:

* ``results.json``: per agent, need and metric the mean, 95% CI and episode count, plus the learning curves;
* ``results.md``: a Markdown table per metric (mean ± CI), with each learned method's relative change over the best
  baseline of that need (the best of the non-learning and need-blind agents, the oracle excluded);
* ``needs.png`` (NDCG@5 per need and agent, with error bars) and ``learning_curves.png`` (true NDCG@5 at the
  evaluation points of the RL methods, mean over seeds).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agents.base import Agent, TrainableAgent
from agents.evaluation import REPORTED_METRICS, evaluate, format_ci, mean_ci
from agents.registry import AGENTS, make_agent
from flexrec_env.needs import held_out_needs, training_needs

#: Benchmark entries: name -> (registered agent, settings). The three FlexRec estimators are separate entries.
ENTRIES: dict[str, tuple[str, dict[str, Any]]] = {
    "random": ("random", {}),
    "popularity": ("popularity", {}),
    "popularity-recent": ("popularity-recent", {}),
    "need-aware": ("need-aware", {}),
    "bpr": ("bpr", {}),
    "sasrec": ("sasrec", {}),
    "maskable-ppo": ("maskable-ppo", {}),
    "flexrec-list": ("flexrec", {"advantage": "list"}),
    "flexrec-swap": ("flexrec", {"advantage": "swap"}),
    "flexrec": ("flexrec", {"advantage": "flexrec"}),
    "flexrec-llm": ("flexrec-llm", {}),
    "oracle": ("oracle", {}),
}
DEFAULT_AGENTS = (
    "random", "popularity", "need-aware", "bpr", "sasrec", "maskable-ppo", "flexrec-list", "flexrec-swap", "flexrec", "oracle",
)  # fmt: skip
#: Agents that learn from the environment's rewards (the others are baselines; the oracle is the ceiling).
LEARNED = ("maskable-ppo", "flexrec-list", "flexrec-swap", "flexrec", "flexrec-llm")
EVAL_SEED = 1_000_000


@dataclass(frozen=True)
class BenchmarkConfig:
    """What the benchmark runs."""

    agents: tuple[str, ...] = DEFAULT_AGENTS
    """Entries of :data:`ENTRIES`."""
    needs: tuple[str, ...] = ()
    """Training needs (default: every built-in need not held out); evaluation adds the held-out needs."""
    scenario: str = "synthetic"
    """Scenario name (or ``package.module:Factory``)."""
    scenario_kwargs: dict[str, Any] = field(default_factory=dict)
    """Arguments of the scenario's factory, e.g. ``{"path": ...}``."""
    seeds: int = 3
    """Training seeds per agent (non-trainable agents are evaluated once)."""
    steps: int = 150_000
    """Environment steps of each RL training run; BPR and SASRec get the same number of training examples."""
    episodes: int = 200
    """Evaluation episodes per need and cell."""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.agents) - set(ENTRIES))
        if unknown:
            raise ValueError(f"unknown benchmark agent(s) {unknown}; allowed: {list(ENTRIES)}")
        for name in ("seeds", "steps", "episodes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r}; allowed: an integer >= 1")

    @classmethod
    def quick(cls, **overrides: Any) -> BenchmarkConfig:
        """A few minutes on a 2-core CPU: one seed, short training, fewer episodes."""
        return cls(**{"seeds": 1, "steps": 30_000, "episodes": 50, **overrides})

    def env_kwargs(self) -> dict[str, Any]:
        needs = list(self.needs) or [n.name for n in training_needs()]
        return {"need": needs, "scenario": self.scenario, "scenario_kwargs": dict(self.scenario_kwargs)}


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (a temporary file moved into place): an interrupted run leaves no half-written cell."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w") as handle:
            json.dump(data, handle, indent=1)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def learning_curve(agent: Agent) -> list[tuple[int, float]]:
    """(steps, true NDCG@5) at the evaluation points of a training run, for the agents that record them."""
    history = getattr(agent, "history", None)
    if history:
        return [(int(row["steps"]), float(row["eval/NDCG@5"])) for row in history if "eval/NDCG@5" in row]
    return [(int(s), float(v)) for s, v in getattr(agent, "eval_history", [])]


def run_cell(name: str, seed: int, config: BenchmarkConfig) -> dict[str, Any]:
    """Train (if trainable) and evaluate one agent with one seed."""
    registered, settings = ENTRIES[name]
    env_kwargs = config.env_kwargs()
    agent = make_agent(registered, **settings)
    started = time.perf_counter()
    if isinstance(agent, TrainableAgent):
        agent.learn(env_kwargs, config.steps, seed=seed)
    trained = time.perf_counter() - started
    needs = [*env_kwargs["need"], *(n.name for n in held_out_needs() if n.name not in env_kwargs["need"])]
    eval_kwargs = {k: v for k, v in env_kwargs.items() if k != "need"}
    result = evaluate(agent, eval_kwargs, needs, config.episodes, EVAL_SEED)
    return {
        "agent": name,
        "seed": seed,
        "values": result.values,
        "held_out": result.held_out,
        "train_seconds": trained,
        "curve": learning_curve(agent),
    }


def run_benchmark(config: BenchmarkConfig, out: Path, progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every missing cell, then write the report (``results.json``, ``results.md``, PNG plots) to ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", asdict(config))
    cells: list[dict[str, Any]] = []
    for name in config.agents:
        trainable = AGENTS[ENTRIES[name][0]].trainable
        for seed in range(config.seeds if trainable else 1):
            path = out / "cells" / f"{name}-seed{seed}.json"
            if path.is_file():
                progress(f"{name} seed {seed}: done before, kept")
            else:
                started = time.perf_counter()
                write_json(path, run_cell(name, seed, config))
                progress(f"{name} seed {seed}: {time.perf_counter() - started:.0f}s")
            cells.append(json.loads(path.read_text()))
    report = summarise(cells)
    write_json(out / "results.json", {"config": asdict(config), **report})
    (out / "results.md").write_text(markdown(report))
    plot(report, out)
    return report


def summarise(cells: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Pool the episodes of each agent's seeds: ``{"metrics": {agent: {need: {metric: {...}}}}, ...}``."""
    pooled: dict[str, dict[str, dict[str, list[float]]]] = {}
    curves: dict[str, list[list[tuple[int, float]]]] = {}
    held_out: dict[str, bool] = {}
    for cell in cells:
        per_need = pooled.setdefault(cell["agent"], {})
        for need, metrics in cell["values"].items():
            for metric, values in metrics.items():
                per_need.setdefault(need, {}).setdefault(metric, []).extend(values)
        held_out.update(cell["held_out"])
        if cell["curve"]:
            curves.setdefault(cell["agent"], []).append([tuple(point) for point in cell["curve"]])
    metrics = {
        agent: {
            need: {m: dict(zip(("mean", "ci95"), mean_ci(v), strict=True)) | {"n": len(v)} for m, v in ms.items()}
            for need, ms in needs.items()
        }
        for agent, needs in pooled.items()
    }
    mean_curves = {}
    for name, runs in curves.items():
        length = min(len(run) for run in runs)
        mean_curves[name] = [(runs[0][i][0], float(np.mean([run[i][1] for run in runs]))) for i in range(length)]
    return {"metrics": metrics, "held_out": held_out, "curves": mean_curves}


def best_baseline(metrics: dict[str, Any], need: str, metric: str) -> tuple[str, float] | None:
    """The best baseline on a need (not learned from rewards, not the oracle)."""
    candidates = [(a, m[need][metric]["mean"]) for a, m in metrics.items() if a not in LEARNED and a != "oracle" and need in m]
    return max(candidates, key=lambda item: item[1]) if candidates else None


def markdown(report: dict[str, Any], metrics: Sequence[str] = REPORTED_METRICS) -> str:
    """One table per metric: needs as rows (held-out ones marked *), agents as columns."""
    table = report["metrics"]
    agents = list(table)
    needs = list(next(iter(table.values())))
    lines = []
    for metric in metrics:
        lines += [f"### {metric}", "", f"| need | {' | '.join(agents)} |", f"|---|{'---|' * len(agents)}"]
        for need in needs:
            base = best_baseline(table, need, metric)
            cells = []
            for agent in agents:
                entry = table[agent][need][metric]
                cell = format_ci(entry["mean"], entry["ci95"])
                if agent in LEARNED and base is not None and base[1] > 0:
                    cell += f" ({(entry['mean'] - base[1]) / base[1]:+.0%})"
                cells.append(cell)
            lines.append(f"| {need}{' *' if report['held_out'].get(need) else ''} | {' | '.join(cells)} |")
        lines.append("")
    lines.append("Mean ± 95% CI over all episodes of all seeds, on the true relevance; * held out from training; "
                 "(±x%): relative change over the best baseline of the need (oracle excluded).")  # fmt: skip
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], out: Path) -> None:
    """``needs.png`` and, when there are learning curves, ``learning_curves.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = report["metrics"]
    agents, needs = list(table), list(next(iter(table.values())))
    width = 0.8 / len(agents)
    figure, axis = plt.subplots(figsize=(max(8, 1.4 * len(needs)), 4.5))
    for i, agent in enumerate(agents):
        means = [table[agent][n]["NDCG@5"]["mean"] for n in needs]
        errors = [table[agent][n]["NDCG@5"]["ci95"] for n in needs]
        axis.bar(np.arange(len(needs)) + i * width, means, width, yerr=errors, label=agent, capsize=2)
    axis.set_xticks(np.arange(len(needs)) + 0.4 - width / 2)
    axis.set_xticklabels([n + (" *" if report["held_out"].get(n) else "") for n in needs])
    axis.set_ylabel("NDCG@5 (true relevance)")
    axis.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    figure.savefig(out / "needs.png", dpi=120)
    plt.close(figure)
    if report["curves"]:
        figure, axis = plt.subplots(figsize=(6, 4))
        for agent, curve in report["curves"].items():
            steps, values = zip(*curve, strict=True)
            axis.plot(steps, values, marker="o", label=agent)
        axis.set_xlabel("environment steps")
        axis.set_ylabel("NDCG@5 (true relevance, training needs)")
        axis.legend(fontsize=8)
        figure.tight_layout()
        figure.savefig(out / "learning_curves.png", dpi=120)
        plt.close(figure)
