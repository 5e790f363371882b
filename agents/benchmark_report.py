"""The benchmark's report: Markdown tables (:func:`markdown`) and plots (:func:`plot`).

Both read the figures :func:`agents.benchmark.summarise` computes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agents.benchmark import ABLATION_REFERENCE, ABLATIONS, KEY_METRICS, LEARNED, main_agent
from agents.evaluation import REPORTED_METRICS, SESSION_GROUPS, format_ci


def best_baseline(metrics: dict[str, Any], need: str, metric: str) -> tuple[str, float] | None:
    """The best baseline on a need (not learned from rewards, not the oracle)."""
    candidates = [(a, m[need][metric]["mean"]) for a, m in metrics.items() if a not in LEARNED and a != "oracle" and need in m]
    return max(candidates, key=lambda item: item[1]) if candidates else None


def steps_to_reach(curve: Sequence[Sequence[float]], target: float) -> float | None:
    """The environment steps at which a learning curve first reaches ``target``, or None if it never does.

    ``curve`` is ``[(steps, value), ...]`` with increasing steps. Between the last evaluation point below the
    target and the first at or above it the curve is taken as linear (the answer is interpolated); if the first
    point already reaches the target, its steps are returned (the curve is unknown before it).

    >>> steps_to_reach([(100, 0.2), (200, 0.4), (300, 0.5)], 0.3)  # halfway between 0.2 and 0.4
    150.0
    >>> steps_to_reach([(100, 0.2), (200, 0.4)], 0.9) is None
    True
    """
    steps = [float(point[0]) for point in curve]
    if any(later <= earlier for earlier, later in zip(steps, steps[1:], strict=False)):
        raise ValueError(f"curve steps {steps}; allowed: strictly increasing")
    previous: tuple[float, float] | None = None
    for point in curve:
        step, value = float(point[0]), float(point[1])
        if value >= target:
            if previous is None:
                return step
            return previous[0] + (target - previous[1]) / (value - previous[1]) * (step - previous[0])
        previous = (step, value)
    return None


def _signed_interval(low: float | None, high: float | None, percent: bool = False) -> str:
    if low is None or high is None:
        return "—"
    return f"[{low:+.1%}, {high:+.1%}]" if percent else f"[{low:+.3f}, {high:+.3f}]"


def _mark(entry: dict[str, Any]) -> str:
    """``>`` if the interval lies above 0, ``<`` if below, ``≈`` if it contains 0."""
    return ">" if entry["low"] > 0 else "<" if entry["high"] < 0 else "≈"


def _need_label(need: str, held_out: dict[str, bool]) -> str:
    return need + (" *" if held_out.get(need) else "")


def paired_tables(report: dict[str, Any]) -> list[str]:
    """Markdown lines: for each key metric, needs as rows and the other agents as columns, ``main - other``."""
    if not report.get("paired"):
        return []
    main, figures = next(iter(report["paired"].items()))
    others = list(figures)
    needs = [need for need in report["metrics"][main] if all(need in figures[other] for other in others)]
    lines = []
    for metric in KEY_METRICS:
        lines += [f"### Paired differences: {main} − other, {metric}", ""]
        lines += [f"| need | {' | '.join(others)} |", f"|---|{'---|' * len(others)}"]
        for need in needs:
            entries = [figures[other][need][metric] for other in others]
            cells = [f"{e['diff']:+.3f} {_signed_interval(e['low'], e['high'])} {_mark(e)}" for e in entries]
            lines.append(f"| {_need_label(need, report['held_out'])} | {' | '.join(cells)} |")
        lines.append("")
    lines += [f"{main} − other on the same episodes (mean over seeds and episodes) with a 95% two-level paired bootstrap "
              "interval (seeds and episodes resampled, agents.statistics). >: the interval lies above 0, "
              f"{main} is better; <: it lies below 0, {main} is worse; ≈: it contains 0, no difference shown at this "
              f"number of seeds and episodes (> or ≈: the upper bound is ≥ 0, {main} is not shown to be worse). "
              "* held out from training.", ""]  # fmt: skip
    return lines


def session_tables(report: dict[str, Any]) -> list[str]:
    """NDCG@5 in sessions by request group: whether an agent follows the need right after it switches."""
    sessions = report.get("sessions") or {}
    if not sessions:
        return []
    groups = [g for g in SESSION_GROUPS if all(g in figures for figures in sessions.values())]
    lines = ["### Sessions whose need shifts: NDCG@5 by request", "", f"| agent | {' | '.join(groups)} |"]
    lines.append(f"|---|{'---|' * len(groups)}")
    for agent, figures in sessions.items():
        lines.append(f"| {agent} | {' | '.join(format_ci(figures[g]['mean'], figures[g]['ci95']) for g in groups)} |")
    return [*lines, "", "FlexRecSession-v0 over the training needs; mean ± 95% CI over requests of all seeds.", ""]


def _estimate(entry: dict[str, Any], name: str) -> str:
    return f"{entry[name]:.3f} [{entry[f'{name}_low']:.3f}, {entry[f'{name}_high']:.3f}]"


def aggregate_tables(report: dict[str, Any]) -> list[str]:
    """Markdown lines: for each key metric, agents as rows, IQM and mean over training and held-out needs."""
    aggregate = report.get("aggregate") or {}
    groups = [group for group in ("training", "held-out") if any(group in figures for figures in aggregate.values())]
    if not groups:
        return []
    header = [f"{name}, {group} needs" for group in groups for name in ("IQM", "mean")]
    lines = []
    for metric in KEY_METRICS:
        lines += [f"### Aggregate over needs: {metric}", "", f"| agent | {' | '.join(header)} |", f"|---|{'---|' * len(header)}"]
        for agent, figures in aggregate.items():
            cells = [_estimate(figures[g][metric], name) if g in figures else "—" for g in groups for name in ("iqm", "mean")]
            lines.append(f"| {agent} | {' | '.join(cells)} |")
        lines.append("")
    lines += ["IQM (interquartile mean, Agarwal et al. 2021) and mean of the per-episode values of all seeds and needs "
              "of the group, with 95% stratified bootstrap intervals (episodes resampled within each need, the "
              "episodes of different seeds as independent runs; the paired tables above resample seeds).", ""]  # fmt: skip
    return lines


def ablation_table(report: dict[str, Any]) -> list[str]:
    """Markdown lines: the ablation entries as rows; mean per need group and change over the reference."""
    ablation, aggregate = report.get("ablation") or {}, report.get("aggregate") or {}
    if not ablation or ABLATION_REFERENCE not in aggregate:
        return []
    groups = list(aggregate[ABLATION_REFERENCE])
    columns = [(metric, group) for metric in KEY_METRICS for group in groups]
    header = " | ".join(f"{metric}, {group} needs" for metric, group in columns)
    lines = [f"### Ablation: change over {ABLATION_REFERENCE}", "", f"| entry | {header} |", f"|---|{'---|' * len(columns)}"]
    for entry in (name for name in ABLATIONS if name in aggregate):
        cells = []
        for metric, group in columns:
            cell = f"{aggregate[entry][group][metric]['mean']:.3f}"
            if entry == ABLATION_REFERENCE:
                cell += " (reference)"
            elif (change := ablation[entry][group][metric])["rel"] is not None:
                cell += f" ({change['rel']:+.1%} {_signed_interval(change['rel_low'], change['rel_high'], percent=True)})"
            cells.append(cell)
        lines.append(f"| {entry} | {' | '.join(cells)} |")
    lines += ["", f"Mean over all seeds, episodes and needs of the group; (+x% [low, high]): relative change over "
              f"{ABLATION_REFERENCE} on the same episodes, with a 95% two-level paired bootstrap interval.", ""]  # fmt: skip
    return lines


def _steps(value: float) -> str:
    return f"{value / 1000:.1f}k"


def curve_table(report: dict[str, Any]) -> list[str]:
    """Markdown lines: the mean learning curve of each learned agent, and the main agent's steps to the reference."""
    curves = report.get("curves") or {}
    if not curves:
        return []
    length = max(len(curve) for curve in curves.values())
    lines = ["### Learning curves: true NDCG@5 on the training needs (mean over seeds)", ""]
    lines += [f"| agent | {' | '.join(f'eval {i + 1}' for i in range(length))} |", f"|---|{'---|' * length}"]
    for agent, curve in curves.items():
        cells = [f"{value:.3f} @ {_steps(steps)}" for steps, value in curve] + [""] * (length - len(curve))
        lines.append(f"| {agent} | {' | '.join(cells)} |")
    lines.append("")
    main = main_agent(list(curves))
    if main is not None and main != ABLATION_REFERENCE and ABLATION_REFERENCE in curves:
        target = curves[ABLATION_REFERENCE][-1][1]
        reached = steps_to_reach(curves[main], target)
        budget = report.get("budget") or curves[main][-1][0]
        when = "not reached" if reached is None else f"{reached:,.0f} ({reached / budget:.0%} of the budget)"
        lines += [f"Steps for {main} to reach {ABLATION_REFERENCE}'s final NDCG@5 ({target:.3f}): {when}; "
                  f"budget {budget:,.0f} steps, linear interpolation between evaluation points.", ""]  # fmt: skip
    return lines


def markdown(report: dict[str, Any], metrics: Sequence[str] = REPORTED_METRICS) -> str:
    """One table per metric (needs as rows, held-out ones marked *, agents as columns), then the statistics.

    The statistics (when the report holds them): :func:`paired_tables`, :func:`aggregate_tables`,
    :func:`ablation_table` and :func:`curve_table`.
    """
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
            lines.append(f"| {_need_label(need, report['held_out'])} | {' | '.join(cells)} |")
        lines.append("")
    lines.append("Mean ± 95% CI over all episodes of all seeds, on the true relevance; * held out from training; "
                 "(±x%): relative change over the best baseline of the need (oracle excluded).")  # fmt: skip
    lines.append("")
    lines += session_tables(report) + paired_tables(report) + aggregate_tables(report) + ablation_table(report)
    lines += curve_table(report)
    return "\n".join(lines).rstrip("\n") + "\n"


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
    axis.set_xticklabels([_need_label(n, report["held_out"]) for n in needs])
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
