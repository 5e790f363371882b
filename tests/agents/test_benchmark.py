"""The benchmark: a minimal configuration end to end, the files it writes, and resuming."""

from __future__ import annotations

import doctest
import json
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents import benchmark
from agents.benchmark import BenchmarkConfig, main_agent, need_groups, run_benchmark, seed_matrices, summarise
from agents.benchmark_report import best_baseline, markdown, steps_to_reach
from agents.statistics import iqm


def test_minimal_benchmark_writes_table_json_and_plots_and_resumes(tmp_path):
    config = BenchmarkConfig(
        agents=("random", "need-aware", "flexrec-swap"), needs=("interest",), seeds=2, steps=1280, episodes=4
    )
    messages: list[str] = []
    report = run_benchmark(config, tmp_path, progress=messages.append)
    assert sorted(p.name for p in (tmp_path / "cells").iterdir()) == [
        "flexrec-swap-seed0.json", "flexrec-swap-seed1.json", "need-aware-seed0.json", "random-seed0.json",
    ]  # fmt: skip
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results) == {"config", "metrics", "held_out", "curves", "paired", "aggregate", "ablation", "budget", "sessions"}
    needs = {"interest", "fresh+niche", "trending+fresh"}  # the training need, then the held-out ones
    assert set(results["metrics"]["random"]) == needs and results["held_out"]["fresh+niche"] is True
    entry = results["metrics"]["flexrec-swap"]["interest"]["NDCG@5"]
    assert entry["n"] == 8 and 0 <= entry["mean"] <= 1 and entry["ci95"] >= 0  # two seeds' episodes pooled
    table = (tmp_path / "results.md").read_text()
    assert "### NDCG@5" in table and "| fresh+niche * |" in table and "%)" in table  # relative change of the learner
    # Without flexrec the paired tables compare the learned entry that ran with every other agent.
    assert set(results["paired"]["flexrec-swap"]) == {"random", "need-aware"} and results["budget"] == 1280
    assert set(results["paired"]["flexrec-swap"]["random"]["fresh+niche"]["NDCG@5"]) == {
        "diff", "low", "high", "rel", "rel_low", "rel_high",
    }  # fmt: skip
    assert set(results["aggregate"]["random"]) == {"training", "held-out"} and results["ablation"] == {}
    assert "### Paired differences: flexrec-swap − other, NDCG@5" in table and "### Aggregate over needs: Recall@5" in table
    assert (tmp_path / "needs.png").stat().st_size > 1000
    # A second run recomputes nothing and reports the same numbers.
    messages.clear()
    again = run_benchmark(config, tmp_path, progress=messages.append)
    assert all("done before with the same settings, kept" in m for m in messages) and len(messages) == 4
    assert again == report  # the intervals too: the bootstrap is seeded
    # Other settings recompute exactly the cells they change, and say why; config and results then agree with the cells.
    messages.clear()
    fewer = replace(config, episodes=config.episodes - 1)
    run_benchmark(fewer, tmp_path, progress=messages.append)
    assert len(messages) == 4 and all("(recomputed: other settings (episodes))" in m for m in messages), messages
    cell = json.loads((tmp_path / "cells" / "random-seed0.json").read_text())
    assert cell["settings"]["episodes"] == fewer.episodes and len(cell["values"]["interest"]["NDCG@5"]) == fewer.episodes
    assert json.loads((tmp_path / "config.json").read_text())["episodes"] == fewer.episodes
    (tmp_path / "cells" / "random-seed0.json").write_text(json.dumps({k: v for k, v in cell.items() if k != "settings"}))
    messages.clear()
    run_benchmark(fewer, tmp_path, progress=messages.append)
    assert "random seed 0: " in messages[0] and "written without its settings (an older FlexRec)" in messages[0], messages


def test_best_baseline_ignores_learners_and_the_oracle():
    metrics = {
        name: {"n": {"NDCG@5": {"mean": value}}}
        for name, value in {"random": 0.2, "need-aware": 0.5, "flexrec": 0.9, "oracle": 1.0}.items()
    }
    assert best_baseline(metrics, "n", "NDCG@5") == ("need-aware", 0.5)


def test_bad_benchmark_settings_name_the_value():
    with pytest.raises(ValueError, match=r"unknown benchmark agent\(s\) \['ppo2'\]"):
        BenchmarkConfig(agents=("ppo2",))
    with pytest.raises(ValueError, match="seeds=0"):
        BenchmarkConfig(seeds=0)


def _cell(agent, seed, values, curve=()):
    """A cell as run_cell writes it; ``values[need][metric]`` per episode, ``fresh+niche`` held out."""
    return {
        "agent": agent,
        "seed": seed,
        "values": values,
        "held_out": {need: need == "fresh+niche" for need in values},
        "train_seconds": 0.0,
        "curve": [list(point) for point in curve],
    }


def _values(interest, shift):
    """NDCG@5 on ``interest`` as given, every other need and metric the same values moved by ``shift``."""
    other = [round(v + shift, 3) for v in interest]
    return {
        "interest": {"NDCG@5": interest, "Recall@5": other},
        "niche": {"NDCG@5": other, "Recall@5": other},
        "fresh+niche": {"NDCG@5": other, "Recall@5": interest},
    }


FLEXREC = ([0.5, 0.6, 0.7, 0.8, 0.9], [0.4, 0.5, 0.6, 0.7, 0.8])  # seed 0, seed 1; mean 0.65
FLEXREC_LIST = ([0.3, 0.4, 0.5, 0.6, 0.7], [0.3, 0.4, 0.5, 0.6, 0.7])  # mean 0.5
NEED_AWARE = [0.2, 0.3, 0.4, 0.5, 0.6]  # evaluated once; mean 0.4


def _fake_cells():
    flexrec_curves = ([(100, 0.2), (200, 0.4), (300, 0.6)], [(100, 0.2), (200, 0.4), (300, 0.5)])
    return [
        _cell("need-aware", 0, _values(NEED_AWARE, 0.05)),
        *(_cell("flexrec-list", s, _values(FLEXREC_LIST[s], 0.0), [(100, 0.1), (200, 0.2), (300, 0.3)]) for s in (0, 1)),
        *(_cell("flexrec", s, _values(FLEXREC[s], 0.1), flexrec_curves[s]) for s in (0, 1)),
    ]


def test_paired_differences_on_hand_built_cells():
    report = summarise(_fake_cells(), budget=1000, reps=200)
    versus_baseline = report["paired"]["flexrec"]["need-aware"]["interest"]["NDCG@5"]
    # Seed 0 is 0.3 above need-aware on every episode, seed 1 0.2: the difference is 0.25, and the resampled
    # means can only be 0.2, 0.25 or 0.3 (both seeds drawn as seed 1, one of each, both as seed 0).
    assert versus_baseline["diff"] == pytest.approx(0.25) and versus_baseline["rel"] == pytest.approx(0.65 / 0.4 - 1)
    assert (versus_baseline["low"], versus_baseline["high"]) == pytest.approx((0.2, 0.3))
    versus_list = report["paired"]["flexrec"]["flexrec-list"]["interest"]["NDCG@5"]
    assert versus_list["diff"] == pytest.approx(0.15)  # seeds paired with seeds: 0.2 and 0.1 above
    assert set(report["paired"]) == {"flexrec"} and set(report["paired"]["flexrec"]) == {"need-aware", "flexrec-list"}
    assert set(report["paired"]["flexrec"]["need-aware"]) == {"interest", "niche", "fresh+niche"}


def test_aggregates_and_ablation_on_hand_built_cells():
    report = summarise(_fake_cells(), budget=1000, reps=200)
    training = report["aggregate"]["need-aware"]["training"]["NDCG@5"]
    assert training["needs"] == ["interest", "niche"]
    assert (
        training["mean"] == pytest.approx((0.4 + 0.45) / 2) and training["mean_low"] <= training["mean"] <= training["mean_high"]
    )
    assert training["iqm"] == pytest.approx(iqm(NEED_AWARE + [v + 0.05 for v in NEED_AWARE]))
    held_out = report["aggregate"]["flexrec"]["held-out"]["Recall@5"]
    assert held_out["needs"] == ["fresh+niche"] and held_out["mean"] == pytest.approx(0.65)
    # flexrec over flexrec-list on the training needs side by side: means 0.7 and 0.5 (0.65 and 0.75; 0.5 and 0.5).
    change = report["ablation"]["flexrec"]["training"]["NDCG@5"]
    assert change["diff"] == pytest.approx(0.2) and change["rel"] == pytest.approx(0.7 / 0.5 - 1)
    assert change["rel_low"] <= change["rel"] <= change["rel_high"] and set(report["ablation"]) == {"flexrec"}


def test_markdown_shows_the_new_tables():
    report = summarise(_fake_cells(), budget=1000, reps=200)
    text = markdown(report, metrics=("NDCG@5", "Recall@5"))
    for heading in (
        "### NDCG@5",  # the existing tables stay
        "### Paired differences: flexrec − other, NDCG@5",
        "### Paired differences: flexrec − other, Recall@5",
        "### Aggregate over needs: NDCG@5",
        "### Ablation: change over flexrec-list",
        "### Learning curves: true NDCG@5 on the training needs (mean over seeds)",
    ):
        assert heading in text
    assert "| interest | +0.250 [+0.200, +0.300] > | +0.150 [+0.100, +0.200] > |" in text
    assert "≈: it contains 0" in text
    assert "| flexrec-list | 0.500 (reference) |" in text and "| flexrec | 0.700 (+40.0% [" in text
    assert "| flexrec | 0.200 @ 0.1k | 0.400 @ 0.2k | 0.550 @ 0.3k |" in text
    # flexrec's mean curve 0.2 -> 0.4 between 100 and 200 steps passes flexrec-list's final 0.3 at 150.
    assert "Steps for flexrec to reach flexrec-list's final NDCG@5 (0.300): 150 (15% of the budget)" in text
    # The report read back from results.json gives the same Markdown.
    assert markdown(json.loads(json.dumps(report)), metrics=("NDCG@5", "Recall@5")) == text


def test_markdown_without_learned_agents_keeps_only_the_metric_tables():
    report = summarise([_cell("need-aware", 0, _values(NEED_AWARE, 0.05))], reps=50)
    assert report["paired"] == {} and report["ablation"] == {}
    text = markdown(report, metrics=("NDCG@5",))
    assert "Paired differences" not in text and "Ablation" not in text and "Learning curves" not in text
    assert "### Aggregate over needs: NDCG@5" in text


def test_seed_matrices_stack_seeds_and_reject_ragged_episodes():
    matrices = seed_matrices(list(reversed(_fake_cells())))
    assert list(matrices) == ["flexrec", "flexrec-list", "need-aware"]
    assert np.array_equal(matrices["flexrec"]["interest"]["NDCG@5"], np.array(FLEXREC))  # rows in seed order
    assert matrices["need-aware"]["niche"]["Recall@5"].shape == (1, 5)
    ragged = [_cell("flexrec", 0, _values([0.1, 0.2], 0.0)), _cell("flexrec", 1, _values([0.1], 0.0))]
    with pytest.raises(ValueError, match=r"flexrec on interest \(NDCG@5\): the seeds have \[1, 2\] episodes"):
        seed_matrices(ragged)


def test_main_agent_and_need_groups():
    assert main_agent(["random", "flexrec-swap", "flexrec", "oracle"]) == "flexrec"
    assert main_agent(["random", "maskable-ppo", "flexrec-swap"]) == "flexrec-swap"
    assert main_agent(["random", "oracle"]) is None
    assert need_groups(["a", "b", "c"], {"b": True}) == {"training": ["a", "c"], "held-out": ["b"]}
    assert need_groups(["a"], {}) == {"training": ["a"]}


def test_the_docstring_examples_hold():
    assert doctest.testmod(benchmark).failed == 0


def test_steps_to_reach_worked_by_hand():
    curve = [(100, 0.2), (200, 0.4), (300, 0.5)]
    assert steps_to_reach(curve, 0.3) == pytest.approx(150.0)  # interpolated between 100 and 200
    assert steps_to_reach(curve, 0.4) == 200.0  # reached exactly at a point
    assert steps_to_reach(curve, 0.1) == 100.0  # already at the first point: its steps
    assert steps_to_reach(curve, 0.6) is None and steps_to_reach([], 0.0) is None
    assert steps_to_reach([(100, 0.5), (200, 0.1), (300, 0.3)], 0.2) == 100.0  # the first point reaching it counts
    assert steps_to_reach([(100, 0.1), (200, 0.05), (300, 0.25)], 0.2) == pytest.approx(275.0)
    with pytest.raises(ValueError, match=r"curve steps \[200.0, 100.0\]; allowed: strictly increasing"):
        steps_to_reach([(200, 0.1), (100, 0.2)], 0.15)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=8), st.floats(0, 1))
def test_steps_to_reach_against_a_dense_scan(values, target):
    curve = [(100 * (i + 1), v) for i, v in enumerate(values)]
    reached = steps_to_reach(curve, target)
    first = next((i for i, v in enumerate(values) if v >= target), None)
    if first is None:
        assert reached is None
    elif first == 0:
        assert reached == 100
    else:
        # Between the last point below and the first point at or above, where the straight line meets the target.
        assert curve[first - 1][0] <= reached <= curve[first][0]
        line = np.interp(reached, [curve[first - 1][0], curve[first][0]], [values[first - 1], values[first]])
        assert line == pytest.approx(target, abs=1e-9)


def test_derived_entries_are_evaluated_from_their_source_run(tmp_path):
    config = BenchmarkConfig(agents=("critic", "flexrec"), needs=("interest",), seeds=1, steps=1280, episodes=12)
    messages: list[str] = []
    run_benchmark(config, tmp_path, progress=messages.append)
    assert len(messages) == 1 and messages[0].startswith("critic, flexrec seed 0: ")  # one training run, two cells
    critic, flexrec = (json.loads((tmp_path / "cells" / f"{n}-seed0.json").read_text()) for n in ("critic", "flexrec"))
    assert critic["train_seconds"] == flexrec["train_seconds"] and critic["curve"] == []
    assert critic["values"] != flexrec["values"]  # the critic ranks alone, the policy with its residual
    # A missing derived cell is recomputed alone; the source's cell is kept.
    (tmp_path / "cells" / "critic-seed0.json").unlink()
    messages.clear()
    run_benchmark(config, tmp_path, progress=messages.append)
    assert messages[0].startswith("critic seed 0: ") and messages[1] == "flexrec seed 0: done before with the same settings, kept"
    assert json.loads((tmp_path / "cells" / "critic-seed0.json").read_text())["values"] == critic["values"]


def test_sessions_report_how_agents_follow_a_need_switch(tmp_path):
    """With sessions, every cell also plays FlexRecSession-v0; the report has NDCG@5 by request group."""
    config = BenchmarkConfig(agents=("popularity", "need-aware"), needs=("trending", "niche"), episodes=2, sessions=6)
    report = run_benchmark(config, tmp_path, progress=lambda message: None)
    figures = report["sessions"]
    assert set(figures) == {"popularity", "need-aware"}
    assert figures["need-aware"]["all requests"]["n"] == 6 * config.session_length
    assert figures["need-aware"]["first request"]["n"] == 6
    assert "### Sessions whose need shifts: NDCG@5 by request" in (tmp_path / "results.md").read_text()
    cell = json.loads((tmp_path / "cells" / "popularity-seed0.json").read_text())
    assert cell["settings"]["sessions"] == [6, 4] and len(cell["sessions"]["all requests"]) == 24
