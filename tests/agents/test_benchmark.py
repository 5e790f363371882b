"""The benchmark: a minimal configuration end to end, the files it writes, and resuming."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from agents.benchmark import BenchmarkConfig, best_baseline, run_benchmark
from agents.cli import main


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
    assert set(results) == {"config", "metrics", "held_out", "curves"}
    needs = {"interest", "fresh+niche", "trending+fresh"}  # the training need, then the held-out ones
    assert set(results["metrics"]["random"]) == needs and results["held_out"]["fresh+niche"] is True
    entry = results["metrics"]["flexrec-swap"]["interest"]["NDCG@5"]
    assert entry["n"] == 8 and 0 <= entry["mean"] <= 1 and entry["ci95"] >= 0  # two seeds' episodes pooled
    table = (tmp_path / "results.md").read_text()
    assert "### NDCG@5" in table and "| fresh+niche * |" in table and "%)" in table  # relative change of the learner
    assert (tmp_path / "needs.png").stat().st_size > 1000
    # A second run recomputes nothing and reports the same numbers.
    messages.clear()
    again = run_benchmark(config, tmp_path, progress=messages.append)
    assert all("done before, kept" in m for m in messages) and len(messages) == 4
    assert again["metrics"] == report["metrics"]


def test_best_baseline_ignores_learners_and_the_oracle():
    metrics = {
        name: {"n": {"NDCG@5": {"mean": value}}}
        for name, value in {"random": 0.2, "need-aware": 0.5, "flexrec": 0.9, "oracle": 1.0}.items()
    }
    assert best_baseline(metrics, "n", "NDCG@5") == ("need-aware", 0.5)


def test_bad_benchmark_settings_name_the_value(tmp_path):
    with pytest.raises(ValueError, match=r"unknown benchmark agent\(s\) \['ppo2'\]"):
        BenchmarkConfig(agents=("ppo2",))
    with pytest.raises(ValueError, match="seeds=0"):
        BenchmarkConfig(seeds=0)
    result = CliRunner().invoke(main, ["benchmark", "--agents", "random,bogus", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "bogus" in result.output
