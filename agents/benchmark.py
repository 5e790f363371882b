"""``flexrec-agent benchmark``: every agent on the same requests and seeds, per need and on held-out needs.

A *cell* is one agent trained (if it is trainable) with one seed and evaluated on every need: the training needs
and the held-out ones, episode i of a need played with seed ``1_000_000 + i`` whatever the agent, so comparisons
are paired. Each finished cell is written to ``OUT/cells/AGENT-seedS.json`` (atomically) with the settings it was
computed with, and kept on a rerun only if they are the same, so an interrupted run resumes where it stopped and a
rerun with other settings recomputes what they change. The report (:func:`summarise`, then
:func:`agents.benchmark_report.markdown`):

* ``results.json``: per agent, need and metric the mean, 95% CI and episode count (episodes of all seeds pooled),
  the learning curves, and the figures of the tables below;
* ``results.md``: a Markdown table per metric (mean ± CI), with each learned method's relative change over the best
  baseline of that need (the best of the non-learning and need-blind agents, the oracle excluded); then

  - *paired differences*: the main agent (``flexrec``) minus every other agent on each need, with a 95% interval
    from a two-level paired bootstrap over seeds and episodes (:mod:`agents.statistics`);
  - *aggregates over needs*: each agent's IQM and mean over the training needs and over the held-out needs, with
    95% stratified bootstrap intervals (Agarwal et al. 2021);
  - *ablation* (when two or more of :data:`ABLATIONS` ran): each entry's mean on the training and held-out needs
    and its relative change over :data:`ABLATION_REFERENCE` with a paired interval;
  - *learning curves*: the mean curve of each learned agent, and the steps the main agent takes to reach the
    reference's final value;
* ``needs.png`` (NDCG@5 per need and agent, with error bars) and ``learning_curves.png`` (true NDCG@5 at the
  evaluation points of the RL methods, mean over seeds).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agents.base import Agent, TrainableAgent, use_threads
from agents.checkpoints import atomic_write
from agents.evaluation import evaluate, evaluate_sessions, evaluation_needs, stats
from agents.registry import AGENTS, make_agent
from agents.statistics import REPS, iqm, paired_comparison, stratified_bootstrap_ci
from agents.statistics import mean as overall_mean
from flexrec_env.needs import training_needs
from scenarios.settings import check_fields

#: Benchmark entries: name -> (registered agent, settings). The FlexRec estimators and ablations are separate entries.
ENTRIES: dict[str, tuple[str, dict[str, Any]]] = {
    "random": ("random", {}),
    "popularity": ("popularity", {}),
    "popularity-recent": ("popularity-recent", {}),
    "need-aware": ("need-aware", {}),
    "bpr": ("bpr", {}),
    "sasrec": ("sasrec", {}),
    "supervised": ("supervised", {}),
    "maskable-ppo": ("maskable-ppo", {}),
    "flexrec-list": ("flexrec", {"advantage": "list"}),
    "flexrec-swap": ("flexrec", {"advantage": "swap"}),
    "flexrec-no-prior": ("flexrec", {"advantage": "flexrec", "critic_prior": False}),
    "flexrec-impute-only": ("flexrec", {"advantage": "flexrec", "weight": "none"}),
    "flexrec-weight-only": ("flexrec", {"advantage": "flexrec", "completion": "none"}),
    "flexrec-dr": ("flexrec", {"advantage": "flexrec", "completion": "dr"}),
    "flexrec-no-anchor": ("flexrec", {"advantage": "flexrec", "kl_coef": 0.0}),
    "flexrec": ("flexrec", {"advantage": "flexrec"}),
    "flexrec-llm": ("flexrec-llm", {}),
    "oracle": ("oracle", {}),
}
#: Entries that rank with something another entry's trained agent built: name -> (that entry, agent -> ranker).
#: They are evaluated from the same training run as their source (one run serves both cells of a seed).
DERIVED: dict[str, tuple[str, Callable[[Any], Agent]]] = {"critic": ("flexrec", lambda agent: agent.critic_ranker())}
#: Entries of the ablation table, in table order; each is compared with :data:`ABLATION_REFERENCE`.
ABLATIONS = (
    "flexrec-list", "flexrec-swap", "flexrec-no-prior", "flexrec-impute-only", "flexrec-weight-only", "flexrec-no-anchor",
    "flexrec", "flexrec-dr",
)  # fmt: skip
DEFAULT_AGENTS = (
    "random", "popularity", "need-aware", "bpr", "sasrec", "supervised", "critic", "maskable-ppo", *ABLATIONS, "oracle",
)  # fmt: skip
#: Agents that learn from the environment's rewards (the others are baselines; the oracle is the ceiling).
LEARNED = ("maskable-ppo", *ABLATIONS, "flexrec-llm")
#: The ablation's starting point: the list-reward (GRPO) estimator that every other ablation entry changes.
ABLATION_REFERENCE = "flexrec-list"
#: The method compared with every other agent in the paired tables (if it ran; else the last learned entry that did).
MAIN_AGENT = "flexrec"
#: Metrics of the paired, aggregate and ablation tables.
KEY_METRICS = ("NDCG@5", "Recall@5")
EVAL_SEED = 1_000_000


@dataclass(frozen=True)
class BenchmarkConfig:
    """What the benchmark runs."""

    agents: tuple[str, ...] = DEFAULT_AGENTS
    """Entries of :data:`ENTRIES` or :data:`DERIVED`."""
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
    threads: int = 1
    """torch threads of the whole run (:func:`~agents.base.use_threads`): the compact models gain nothing from more."""
    sessions: int = 0
    """Sessions of FlexRecSession-v0 (the training needs, switching) each cell's ranker also plays: NDCG@5 on the first
    request, right after a need switch and where the need stayed (:func:`~agents.evaluation.evaluate_sessions`)."""
    session_length: int = 4
    """Requests per session."""

    def __post_init__(self) -> None:
        ranges = {"seeds": ">= 1", "steps": ">= 1", "episodes": ">= 1", "threads": ">= 1", "sessions": ">= 0"}
        check_fields(self, {**ranges, "session_length": ">= 2"})
        unknown = sorted(set(self.agents) - set(ENTRIES) - set(DERIVED))
        if unknown:
            raise ValueError(f"unknown benchmark agent(s) {unknown}; allowed: {[*ENTRIES, *DERIVED]}")

    @classmethod
    def quick(cls, **overrides: Any) -> BenchmarkConfig:
        """A few minutes on a 2-core CPU: one seed, short training, fewer episodes."""
        return cls(**{"seeds": 1, "steps": 30_000, "episodes": 50, **overrides})

    def env_kwargs(self) -> dict[str, Any]:
        needs = list(self.needs) or [n.name for n in training_needs()]
        return {"need": needs, "scenario": self.scenario, "scenario_kwargs": dict(self.scenario_kwargs)}


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (:func:`~agents.checkpoints.atomic_write`): an interrupted run leaves no half-written cell."""
    atomic_write(path, lambda temporary: temporary.write_text(json.dumps(data, indent=1)))


def learning_curve(agent: Agent) -> list[tuple[int, float]]:
    """(steps, true NDCG@5) at the evaluation points of a training run (:attr:`TrainableAgent.eval_history`)."""
    history = agent.eval_history if isinstance(agent, TrainableAgent) else []
    return [(int(row["steps"]), float(row["NDCG@5"])) for row in history]


def source_of(name: str) -> str:
    """The entry whose training run a benchmark entry is evaluated from (itself unless it is derived)."""
    return DERIVED[name][0] if name in DERIVED else name


def run_cells(source: str, seed: int, config: BenchmarkConfig, rankers: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Train entry ``source`` once (if trainable) with one seed; evaluate each of ``rankers``: ``{entry: cell}``.

    ``rankers`` are ``source`` itself and/or entries derived from it (:data:`DERIVED`).
    """
    registered, settings = ENTRIES[source]
    env_kwargs = config.env_kwargs()
    agent = make_agent(registered, **settings)
    started = time.perf_counter()
    if isinstance(agent, TrainableAgent):
        agent.learn(env_kwargs, config.steps, seed=seed)
    trained = time.perf_counter() - started
    needs = evaluation_needs(env_kwargs["need"])
    eval_kwargs = {k: v for k, v in env_kwargs.items() if k != "need"}
    cells = {}
    for entry in rankers:
        assert source_of(entry) == source, f"{entry} is not evaluated from {source}"
        ranker = DERIVED[entry][1](agent) if entry in DERIVED else agent
        result = evaluate(ranker, eval_kwargs, needs, config.episodes, EVAL_SEED)
        cells[entry] = {
            "agent": entry,
            "seed": seed,
            "values": result.values,
            "held_out": result.held_out,
            "train_seconds": trained,
            "curve": learning_curve(agent) if entry == source else [],
        }
        if config.sessions:
            session_kwargs = {**env_kwargs, "session_length": config.session_length}
            cells[entry]["sessions"] = evaluate_sessions(ranker, session_kwargs, config.sessions, EVAL_SEED).values
    return cells


def cell_settings(name: str, config: BenchmarkConfig) -> dict[str, Any]:
    """Everything a cell's figures depend on: kept in the cell, so a rerun with other settings recomputes it."""
    registered, settings = ENTRIES[source_of(name)]
    trainable = AGENTS[registered].trainable
    record = {
        "entry": name,
        "agent_settings": settings,
        "steps": config.steps if trainable else None,
        "episodes": config.episodes,
        "sessions": [config.sessions, config.session_length] if config.sessions else None,
        "env": config.env_kwargs(),
        "eval_seed": EVAL_SEED,
    }
    return dict(json.loads(json.dumps(record, default=repr)))  # as it reads back from the cell's file


def stale_reason(path: Path, settings: dict[str, Any]) -> str | None:
    """Why the cell at ``path`` cannot be kept (missing, unreadable, other settings), or None if it can."""
    if not path.is_file():
        return "missing"
    try:
        kept = json.loads(path.read_text()).get("settings")
    except (ValueError, AttributeError):
        return "unreadable"
    if kept is None:
        return "written without its settings (an older FlexRec)"
    changed = sorted(key for key in settings.keys() | kept.keys() if settings.get(key) != kept.get(key))
    return f"other settings ({', '.join(changed)})" if changed else None


def run_benchmark(config: BenchmarkConfig, out: Path, progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every missing or stale cell, then write the report (``results.json``, ``results.md``, PNG plots) to ``out``.

    A cell is kept only if it was written with the same settings (:func:`cell_settings`); otherwise it is recomputed
    and the progress line says why.
    """
    use_threads(config.threads)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", asdict(config))

    def path(name: str, seed: int) -> Path:
        return out / "cells" / f"{name}-seed{seed}.json"

    def stale(name: str, seed: int) -> str | None:
        return stale_reason(path(name, seed), cell_settings(name, config))

    seeds = {name: config.seeds if AGENTS[ENTRIES[source_of(name)][0]].trainable else 1 for name in config.agents}
    cells: list[dict[str, Any]] = []
    written: set[tuple[str, int]] = set()  # cells this call wrote
    for name in config.agents:
        for seed in range(seeds[name]):
            reason = None if (name, seed) in written else stale(name, seed)
            if (name, seed) in written:
                pass
            elif reason is None:
                progress(f"{name} seed {seed}: done before with the same settings, kept")
            else:  # one training run serves every missing or stale entry evaluated from it
                source, started = source_of(name), time.perf_counter()
                rankers = [n for n in config.agents if source_of(n) == source and stale(n, seed) is not None]
                for entry, cell in run_cells(source, seed, config, rankers).items():
                    write_json(path(entry, seed), {**cell, "settings": cell_settings(entry, config)})
                    written.add((entry, seed))
                note = "" if reason == "missing" else f" (recomputed: {reason})"
                progress(f"{', '.join(rankers)} seed {seed}: {time.perf_counter() - started:.0f}s{note}")
            cells.append(json.loads(path(name, seed).read_text()))
    from agents.benchmark_report import markdown, plot  # the report reads this module's constants

    report = summarise(cells, budget=config.steps)
    write_json(out / "results.json", {"config": asdict(config), **report})
    (out / "results.md").write_text(markdown(report))
    plot(report, out)
    return report


Matrices = dict[str, dict[str, dict[str, np.ndarray]]]
"""``matrices[agent][need][metric]``: per-episode values ``(S, E)``, one row per seed (in seed order)."""


def seed_matrices(cells: Sequence[dict[str, Any]]) -> Matrices:
    """Each agent's per-episode values as ``(S, E)`` arrays, one row per seed: trained agents S rows, others one."""
    rows: dict[str, dict[str, dict[str, list[list[float]]]]] = {}
    for cell in sorted(cells, key=lambda cell: cell["seed"]):  # stable: the agents keep their order
        for need, metrics in cell["values"].items():
            for metric, values in metrics.items():
                rows.setdefault(cell["agent"], {}).setdefault(need, {}).setdefault(metric, []).append(values)
    matrices: Matrices = {}
    for agent, needs in rows.items():
        for need, metrics in needs.items():
            for metric, per_seed in metrics.items():
                lengths = sorted({len(values) for values in per_seed})
                if len(lengths) > 1:
                    raise ValueError(
                        f"{agent} on {need} ({metric}): the seeds have {lengths} episodes; allowed: the same number "
                        f"for every seed (cells of one benchmark configuration)"
                    )
                matrices.setdefault(agent, {}).setdefault(need, {})[metric] = np.asarray(per_seed, dtype=np.float64)
    return matrices


def main_agent(agents: Sequence[str]) -> str | None:
    """The agent of the paired tables: :data:`MAIN_AGENT` if it ran, else the last learned entry that ran."""
    if MAIN_AGENT in agents:
        return MAIN_AGENT
    learned = [name for name in LEARNED if name in agents]
    return learned[-1] if learned else None


def need_groups(needs: Sequence[str], held_out: dict[str, bool]) -> dict[str, list[str]]:
    """``{"training": [...], "held-out": [...]}`` in ``needs`` order, without an empty group."""
    groups = {
        "training": [need for need in needs if not held_out.get(need)],
        "held-out": [need for need in needs if held_out.get(need)],
    }
    return {group: members for group, members in groups.items() if members}


def _json_number(value: float) -> float | None:
    """``value``, or None where it is NaN (JSON has no NaN)."""
    return None if np.isnan(value) else value


def _comparison(a: np.ndarray, b: np.ndarray, reps: int) -> dict[str, float | None]:
    return {key: _json_number(value) for key, value in paired_comparison(a, b, reps).items()}


def paired_figures(matrices: Matrices, reps: int = REPS) -> dict[str, Any]:
    """``{main: {other: {need: {metric: {"diff", "low", "high", "rel", "rel_low", "rel_high"}}}}}``.

    The main agent (:func:`main_agent`) minus every other agent, on each need and metric both were evaluated on,
    from :func:`agents.statistics.paired_comparison` (a baseline evaluated once is one row, broadcast over seeds).
    """
    main = main_agent(list(matrices))
    if main is None:
        return {}
    figures: dict[str, Any] = {}
    for other, other_needs in matrices.items():
        if other == main:
            continue
        figures[other] = {
            need: {metric: _comparison(values, other_needs[need][metric], reps) for metric, values in metrics.items()}
            for need, metrics in matrices[main].items()
            if need in other_needs
        }
    return {main: figures}


def pooled_needs(per_need: dict[str, dict[str, np.ndarray]], needs: Sequence[str], metric: str) -> np.ndarray:
    """The episodes of several needs side by side, ``(S, needs x E)``: still paired across agents."""
    return np.concatenate([per_need[need][metric] for need in needs], axis=1)


def aggregate_figures(matrices: Matrices, held_out: dict[str, bool], reps: int = REPS) -> dict[str, Any]:
    """``{agent: {group: {metric: {"iqm", "iqm_low", "iqm_high", "mean", "mean_low", "mean_high", "needs"}}}}``.

    For each group of needs (``training``, ``held-out``) and each of :data:`KEY_METRICS`: the IQM and the mean of
    the per-episode values of all seeds and needs, with 95% stratified bootstrap intervals where a *run* is one
    episode of one seed (``S x E`` runs) and a *task* one need; runs are resampled within each need.
    """
    figures: dict[str, Any] = {}
    for agent, per_need in matrices.items():
        for group, needs in need_groups(list(per_need), held_out).items():
            for metric in KEY_METRICS:
                columns = [per_need[need][metric].ravel() for need in needs]
                if len({len(column) for column in columns}) > 1:
                    raise ValueError(f"{agent}: the needs {needs} have different episode counts; allowed: the same")
                scores = np.column_stack(columns)  # (runs, tasks)
                entry: dict[str, Any] = {"needs": needs}
                for name, statistic in (("iqm", iqm), ("mean", overall_mean)):
                    point, low, high = stratified_bootstrap_ci(scores, statistic, reps)
                    entry |= {name: point, f"{name}_low": low, f"{name}_high": high}
                figures.setdefault(agent, {}).setdefault(group, {})[metric] = entry
    return figures


def ablation_figures(matrices: Matrices, held_out: dict[str, bool], reps: int = REPS) -> dict[str, Any]:
    """``{entry: {group: {metric: paired comparison}}}``: each ablation entry against :data:`ABLATION_REFERENCE`.

    The entry minus the reference (and its relative change) on the episodes of all needs of a group side by side,
    each need's episodes still paired, for :data:`KEY_METRICS`; empty unless the reference and another entry ran.
    """
    if ABLATION_REFERENCE not in matrices:
        return {}
    reference = matrices[ABLATION_REFERENCE]
    groups = need_groups(list(reference), held_out)
    return {
        entry: {
            group: {
                metric: _comparison(pooled_needs(matrices[entry], needs, metric), pooled_needs(reference, needs, metric), reps)
                for metric in KEY_METRICS
            }
            for group, needs in groups.items()
        }
        for entry in ABLATIONS
        if entry in matrices and entry != ABLATION_REFERENCE
    }


def summarise(cells: Sequence[dict[str, Any]], budget: int | None = None, reps: int = REPS) -> dict[str, Any]:
    """The report's figures: ``{"metrics", "held_out", "curves", "paired", "aggregate", "ablation", "budget", "sessions"}``.

    ``metrics[agent][need][metric]`` pools the episodes of an agent's seeds (``mean``, ``ci95``, ``n``);
    ``curves`` are the learning curves averaged over seeds; ``paired``, ``aggregate`` and ``ablation`` are the
    figures of :func:`paired_figures`, :func:`aggregate_figures` and :func:`ablation_figures` (``reps`` bootstrap
    resamples each); ``budget`` is the training budget in environment steps, if known; ``sessions[agent][group]`` the
    session figures (NDCG@5 by request group, pooled over seeds), when the cells have them.
    """
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
        agent: {need: {m: stats(v) for m, v in ms.items()} for need, ms in needs.items()} for agent, needs in pooled.items()
    }
    mean_curves = {}
    for name, runs in curves.items():
        length = min(len(run) for run in runs)
        mean_curves[name] = [(runs[0][i][0], float(np.mean([run[i][1] for run in runs]))) for i in range(length)]
    sessions: dict[str, dict[str, list[float]]] = {}
    for cell in cells:
        for group, values in cell.get("sessions", {}).items():
            sessions.setdefault(cell["agent"], {}).setdefault(group, []).extend(values)
    matrices = seed_matrices(cells)
    return {
        "sessions": {agent: {g: stats(v) for g, v in groups.items() if v} for agent, groups in sessions.items()},
        "metrics": metrics,
        "held_out": held_out,
        "curves": mean_curves,
        "paired": paired_figures(matrices, reps),
        "aggregate": aggregate_figures(matrices, held_out, reps),
        "ablation": ablation_figures(matrices, held_out, reps),
        "budget": budget,
    }
