"""One evaluation routine for every agent: seeded episodes per need, true-relevance metrics with 95% CIs.

Every agent sees the same requests: episode i of a need is played with ``seed + i`` whatever the agent, so
differences between agents are paired. Metrics come from ``info["metrics"]`` (true relevance), never from the
feedback labels the agents may have trained on.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

import flexrec_env  # noqa: F401  (registers FlexRec-v0)
from agents.base import Agent, play_episode
from agents.progress import Progress
from flexrec_env.needs import Need, resolve_needs
from scenarios.settings import check_value

#: The metrics reported by default, in table order.
REPORTED_METRICS = ("NDCG@5", "NDCG@10", "Recall@5", "Recall@10")


def mean_ci(values: Sequence[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% confidence interval (normal approximation; 0 for one value)."""
    array = np.asarray(values, dtype=np.float64)
    if len(array) == 0:
        raise ValueError("mean_ci needs at least one value")
    half = 1.96 * array.std(ddof=1) / math.sqrt(len(array)) if len(array) > 1 else 0.0
    return float(array.mean()), float(half)


def stats(values: Sequence[float]) -> dict[str, float]:
    """``{"mean", "ci95", "n"}`` of ``values`` (:func:`mean_ci`): one cell of a report."""
    mean, ci95 = mean_ci(values)
    return {"mean": mean, "ci95": ci95, "n": len(values)}


def evaluation_needs(trained: Sequence[str]) -> list[str]:
    """The needs to report: the trained ones, then the held-out ones (unseen needs)."""
    from flexrec_env.needs import held_out_needs

    return [*trained, *(n.name for n in held_out_needs() if n.name not in trained)]


def format_ci(mean: float, half_width: float) -> str:
    return f"{mean:.3f} ± {half_width:.3f}"


def need_table(
    cells: Mapping[str, Mapping[str, Sequence[float]]],
    held_out: Mapping[str, bool],
    label_width: int = 18,
    cell_width: int = 18,
    label: str = "need",
) -> list[str]:
    """Text table lines: a header, a rule, then one row per need (held-out needs marked ``*``).

    ``cells[need][column]`` are per-episode values, shown as ``mean ± ci95``; the columns are those of the first need.
    ``label`` heads the first column (rows may be other things than needs: agents).
    """
    columns = list(next(iter(cells.values()), {}))
    header = f"{label:<{label_width}}" + "".join(f"{column:>{cell_width}}" for column in columns)
    lines = [header, "-" * len(header)]
    for need, row in cells.items():
        label = need + (" *" if held_out.get(need) else "")
        lines.append(f"{label:<{label_width}}" + "".join(f"{format_ci(*mean_ci(row[c])):>{cell_width}}" for c in columns))
    return lines


@dataclass
class Evaluation:
    """Per-episode metric values of one agent, per need."""

    agent: str
    values: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    """``values[need][metric]``: one value per episode."""
    held_out: dict[str, bool] = field(default_factory=dict)

    def summary(self) -> dict[str, dict[str, dict[str, float]]]:
        """``{need: {metric: {"mean", "ci95", "n"}}}``."""
        return {need: {m: stats(v) for m, v in metrics.items()} for need, metrics in self.values.items()}

    def to_json(self) -> str:
        return json.dumps({"agent": self.agent, "held_out": self.held_out, "metrics": self.summary()}, indent=2)

    def table(self, metrics: Sequence[str] = REPORTED_METRICS) -> str:
        """A text table: one row per need (held-out needs marked ``*``), ``mean ± ci95`` per metric."""
        cells = {need: {m: values[m] for m in metrics} for need, values in self.values.items()}
        return "\n".join([f"agent: {self.agent}", *need_table(cells, self.held_out)])


def check_feature_sizes(agent: Agent, space: gym.Space[Any], env_kwargs: Mapping[str, Any]) -> None:
    """A ``ValueError`` naming both sizes unless ``space`` has the feature sizes ``agent`` was built for."""
    for key, size in agent.feature_sizes().items():
        found = space[key].shape[-1]  # type: ignore[index]
        if found != size:
            scenario = env_kwargs.get("scenario", "synthetic")
            raise ValueError(
                f"the {agent.name} agent was built for {key} features of size {size}, but scenario {scenario!r} gives "
                f"size {found}; evaluate it on the scenario (and scenario arguments) it was trained on"
            )


def evaluate(
    agent: Agent,
    env_kwargs: dict[str, Any] | None = None,
    needs: str | Need | Sequence[str | Need] | None = None,
    episodes: int = 200,
    seed: int = 0,
    metrics: Sequence[str] = REPORTED_METRICS,
    progress: bool = False,
) -> Evaluation:
    """Play ``episodes`` seeded episodes per need with ``agent`` and collect the true-relevance metrics.

    ``env_kwargs`` are ``gym.make("FlexRec-v0", ...)`` arguments (the need is set per evaluation); ``needs``
    defaults to the env's ``need`` argument. With ``progress``, episodes are counted as they end
    (:class:`~agents.progress.Progress`: a bar in a terminal, log lines otherwise). A ``ValueError`` names both
    sizes when the env's features differ in size from those the agent was built for (another scenario's).
    """
    check_value("episodes", episodes, int, ">= 1")
    env_kwargs = dict(env_kwargs or {})
    chosen = resolve_needs(needs if needs is not None else env_kwargs.pop("need", "interest"))
    env_kwargs.pop("need", None)
    result = Evaluation(agent=agent.name)
    bar = Progress(len(chosen) * episodes, f"evaluate {agent.name}", unit="episode", enabled=progress)
    for need in chosen:
        env = gym.make("FlexRec-v0", need=need, expose_truth=agent.needs_truth, **env_kwargs)
        check_feature_sizes(agent, env.observation_space, env_kwargs)
        agent.seed(seed)
        infos = []
        for i in range(episodes):
            infos.append(play_episode(env, agent, seed=seed + i))
            bar.update(1)
        unknown = sorted(set(metrics) - set(infos[0]["metrics"]))
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; allowed: {sorted(infos[0]['metrics'])}")
        result.values[need.name] = {m: [float(info["metrics"][m]) for info in infos] for m in metrics}
        result.held_out[need.name] = need.held_out
    bar.close()
    return result


# --------------------------------------------------------------------------------------------------------------------
# Sessions (FlexRecSession-v0): how an agent follows a need that shifts.

#: The request groups of a session evaluation, in table order.
SESSION_GROUPS = ("all requests", "first request", "after switch", "no switch")


@dataclass
class SessionEvaluation:
    """NDCG@5 (true relevance) of one agent's requests in sessions, pooled by where the request sits in its session.

    ``values[group]`` holds one value per request: ``"all requests"``; ``"first request"`` (request 0 of each
    session); ``"after switch"`` (the requests right after a need switch); ``"no switch"`` (later requests whose need
    stayed). The CI treats requests as independent (requests of one session are not quite).
    """

    agent: str
    values: dict[str, list[float]] = field(default_factory=lambda: {group: [] for group in SESSION_GROUPS})
    sessions: int = 0

    def add(self, request_metric: Sequence[float], switched: Sequence[bool]) -> None:
        """One finished session's per-request NDCG@5 and switches (``info["session_metrics"]``)."""
        self.sessions += 1
        for index, (value, switch) in enumerate(zip(request_metric, switched, strict=True)):
            self.values["all requests"].append(float(value))
            group = "first request" if index == 0 else "after switch" if switch else "no switch"
            self.values[group].append(float(value))

    def summary(self) -> dict[str, dict[str, float]]:
        """``{group: {"mean", "ci95", "n"}}`` (groups without requests left out)."""
        return {g: stats(v) for g, v in self.values.items() if v}

    def to_json(self) -> str:
        return json.dumps({"agent": self.agent, "sessions": self.sessions, "NDCG@5": self.summary()}, indent=2)

    def table(self) -> str:
        return "\n".join(session_table([self]))


def session_table(evaluations: Sequence[SessionEvaluation]) -> list[str]:
    """One row per agent, NDCG@5 ``mean ± ci95`` per request group (a group without requests is left out)."""
    groups = [g for g in SESSION_GROUPS if all(e.values[g] for e in evaluations)]
    cells = {e.agent: {g: e.values[g] for g in groups} for e in evaluations}
    return ["NDCG@5 of the requests in sessions", *need_table(cells, {}, label="agent")]


def evaluate_sessions(
    agent: Agent,
    env_kwargs: dict[str, Any] | None = None,
    sessions: int = 100,
    seed: int = 0,
    progress: bool = False,
) -> SessionEvaluation:
    """Play ``sessions`` seeded sessions of ``gym.make("FlexRecSession-v0", **env_kwargs)`` with ``agent``.

    Session i is played with ``seed + i`` whatever the agent (paired comparisons: the same users, requests and need
    switches). Each request's NDCG@5 on the true relevance is pooled by its place in the session
    (:class:`SessionEvaluation`).
    """
    check_value("sessions", sessions, int, ">= 1")
    env = gym.make("FlexRecSession-v0", expose_truth=agent.needs_truth, **(env_kwargs or {}))
    check_feature_sizes(agent, env.observation_space, env_kwargs or {})
    agent.seed(seed)
    result = SessionEvaluation(agent=agent.name)
    bar = Progress(sessions, f"evaluate {agent.name} on sessions", unit="session", enabled=progress)
    for i in range(sessions):
        info = play_episode(env, agent, seed=seed + i)
        if "session_metrics" not in info:
            raise RuntimeError(f"agent {agent.name!r} did not finish session {i} (truncated)")
        metrics = info["session_metrics"]
        result.add(metrics["request_NDCG@5"], metrics["switched"])
        bar.update(1)
    bar.close()
    return result
