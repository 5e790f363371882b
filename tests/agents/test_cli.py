"""The command line (``flexrec-agent``, :mod:`agents.cli`): every command is listed, settings reach the configs,
``train`` writes a checkpoint and TensorBoard events, and ``evaluate`` of that checkpoint reproduces the results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest
from click.testing import CliRunner

from agents.advantages import Estimator
from agents.baselines import NeedAwareHeuristic, RandomAgent
from agents.cli import main
from agents.evaluation import evaluate

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = {"quickstart", "train", "evaluate", "fetch-model", "agents", "needs", "scenarios", "benchmark"}


def test_help_lists_every_command():
    assert set(main.commands) == COMMANDS
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # one thread: tests/conftest.py sets OMP_NUM_THREADS
    done = subprocess.run([sys.executable, "-m", "agents.cli", "--help"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    listed = {line.split()[0] for line in done.stdout.split("Commands:")[1].splitlines() if line.strip()}
    assert listed == COMMANDS


def test_advantage_choices_are_the_estimators():
    option = next(param for param in main.commands["train"].params if param.name == "advantage")
    assert list(option.type.choices) == list(get_args(Estimator))  # type: ignore[attr-defined]
    result = CliRunner().invoke(main, ["train", "--advantage", "grpo"])
    assert result.exit_code == 2 and "'grpo' is not one of 'list', 'swap', 'flexrec'" in result.output


def test_quickstart_reports_what_evaluate_measures(tmp_path):
    result = CliRunner().invoke(main, ["quickstart", "--episodes", "2", "--seed", "3", "--out", str(tmp_path / "q.json")])
    assert result.exit_code == 0, result.output
    reported = json.loads((tmp_path / "q.json").read_text())
    assert "need                       random NDCG@5       need-aware NDCG@5\n" + "-" * 64 in result.output
    assert "\nfresh+niche *  " in result.output, "held-out needs are marked"
    env_kwargs = {"scenario": "synthetic", "scenario_kwargs": {}}
    for agent in (RandomAgent(3), NeedAwareHeuristic()):
        expected = evaluate(agent, env_kwargs, ["interest", "trending"], episodes=2, seed=3, metrics=("NDCG@5",)).summary()
        for need in ("interest", "trending"):
            assert reported[need][agent.name] == expected[need]["NDCG@5"]
    assert set(reported) >= {"interest", "trending", "niche", "fresh", "diverse"}
    result = CliRunner().invoke(main, ["quickstart", "--episodes", "0"])
    assert result.exit_code == 2 and "0 is not in the range x>=1" in result.output


def test_benchmark_names_an_unknown_entry(tmp_path):
    result = CliRunner().invoke(main, ["benchmark", "--agents", "random,bogus", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "bogus" in result.output


# --------------------------------------------------------------------------------------------------------------------
# train writes a checkpoint and TensorBoard events; evaluate reproduces the training-end results.


def test_cli_trains_flexrec_and_evaluate_reproduces_it(tmp_path):
    runner = CliRunner()
    out = tmp_path / "f.ckpt"
    args = ["train", "--advantage", "flexrec", "--need", "interest", "--steps", "640", "--episodes", "5"]
    args += ["--env-arg", "num_candidates=8", "--env-arg", "list_length=4", "--logdir", str(tmp_path), "--out", str(out)]
    args += ["--set", "requests_per_batch=4", "--set", "eval_every=0", "--set", "dim=16"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert out.is_file() and list((tmp_path / "flexrec-seed0").glob("events.out.tfevents.*"))
    trained_line = next(line for line in result.output.splitlines() if line.startswith("interest"))
    result = runner.invoke(
        main, ["evaluate", "--checkpoint", str(out), "--need", "interest", "--episodes", "5", "--seed", "1000000"]
    )
    assert result.exit_code == 0, result.output
    assert next(line for line in result.output.splitlines() if line.startswith("interest")) == trained_line


@pytest.mark.parametrize("name", ["bpr", "sasrec"])
def test_cli_train_then_evaluate(name, tmp_path):
    runner = CliRunner()
    small = ["--scenario-arg", "num_users=100", "--scenario-arg", "num_items=200", "--env-arg", "num_candidates=10"]
    small += ["--env-arg", "list_length=5"]
    checkpoint = tmp_path / f"{name}.pt"
    train = ["train", "--agent", name, "--steps", "2000", "--logdir", str(tmp_path), "--out", str(checkpoint)]
    result = runner.invoke(main, [*train, "--episodes", "20", "--set", "dim=16", *small])
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / f"{name}-seed0"
    assert checkpoint.is_file() and list(run_dir.glob("events.out.tfevents.*"))
    evaluate = ["evaluate", "--checkpoint", str(checkpoint), "--episodes", "20", "--seed", "1000000"]
    result = runner.invoke(main, [*evaluate, "--out", str(tmp_path / "again.json"), *small])
    assert result.exit_code == 0, result.output
    trained = json.loads((run_dir / "results.json").read_text())
    assert json.loads((tmp_path / "again.json").read_text()) == trained
    assert set(trained["metrics"]) >= {"interest", "trending"}


@pytest.mark.parametrize("model", ["tiny", "tied_model"])
def test_cli_trains_the_llm_agent_and_evaluate_reproduces_it(model, request, tmp_path):
    """The built-in tiny model, and a user's model folder whose candidate labels are added tokens (``tied_model``)."""
    model = request.getfixturevalue(model) if model == "tied_model" else model
    runner = CliRunner()
    env = ["--env-arg", "num_candidates=4", "--env-arg", "list_length=2", "--need", "trending", "--episodes", "3"]
    settings = ("requests_per_batch=2", "group_size=4", "minibatch_requests=2", "epochs=1", "max_history=2", "eval_every=0")
    args = ["train", "--agent", "flexrec-llm", "--model", model, "--steps", "48", *env, "--logdir", str(tmp_path)]
    result = runner.invoke(main, [*args, "--set=learning_rate=0.01", *(f"--set={s}" for s in settings)])
    assert result.exit_code == 0, result.output
    checkpoint = tmp_path / "flexrec-llm-seed0" / "flexrec-llm.ckpt"
    trained = json.loads((tmp_path / "flexrec-llm-seed0" / "results.json").read_text())["metrics"]
    evaluate = ["evaluate", "--checkpoint", str(checkpoint), *env, "--seed", "1000000", "--out", str(tmp_path / "e.json")]
    result = runner.invoke(main, evaluate)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "e.json").read_text())["metrics"]["trending"] == trained["trending"]


def test_options_of_another_agent_are_usage_errors():
    result = CliRunner().invoke(main, ["train", "--agent", "random", "--advantage", "swap"])
    assert result.exit_code == 2 and "--advantage applies to the flexrec agents" in result.output
    result = CliRunner().invoke(main, ["train", "--agent", "flexrec", "--model", "tiny"])
    assert result.exit_code == 2 and "--model applies to the flexrec-llm agent" in result.output


def test_cli_evaluates_a_model_zero_shot_without_a_checkpoint(tied_model, tmp_path):
    runner = CliRunner()
    env = ["--env-arg", "num_candidates=4", "--env-arg", "list_length=2", "--need", "trending", "--episodes", "2"]
    result = runner.invoke(main, ["evaluate", "--agent", "flexrec-llm", "--model", tied_model, *env])
    assert result.exit_code == 0, result.output
    assert "zero-shot" in result.output and "trending" in result.output
    result = runner.invoke(main, ["evaluate", "--agent", "flexrec", *env])
    assert result.exit_code != 0 and "untrained" in result.output
    result = runner.invoke(main, ["evaluate", "--agent", "flexrec-llm", "--model", str(tmp_path / "missing.gguf"), *env])
    assert result.exit_code != 0 and "missing.gguf" in result.output


# --------------------------------------------------------------------------------------------------------------------
# No lost work: output paths checked first, Ctrl-C saves a training checkpoint, --resume ends where a straight run does.

TINY_RUN = ["train", "--need", "interest", "--steps", "640", "--episodes", "2", "--env-arg", "num_candidates=8"]
TINY_RUN += ["--env-arg", "list_length=4", "--set", "requests_per_batch=4", "--set", "eval_every=0", "--set", "dim=16"]


def test_unwritable_output_paths_are_usage_errors_before_training(tmp_path, monkeypatch):
    import agents.flexrec

    monkeypatch.setattr(agents.flexrec.FlexRecAgent, "learn", lambda *a, **k: pytest.fail("trained before checking"))
    afile = tmp_path / "afile"
    afile.write_text("")
    (tmp_path / "folder").mkdir()
    cases = {
        ("--out", str(afile / "x.ckpt")): f"{afile} is a file, not a folder",
        ("--out", str(tmp_path / "folder")): "is a directory",
        ("--logdir", str(afile)): "is a file",
        ("--logdir", str(afile / "sub")): f"{afile}/sub/flexrec-seed0 cannot be created: {afile} is a file",
    }
    for (option, value), message in cases.items():
        result = CliRunner().invoke(main, [*TINY_RUN, "--logdir", str(tmp_path), option, value])
        assert result.exit_code == 2 and message in result.output and option in result.output, result.output
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != tmp_path / "locked")
    (tmp_path / "locked").mkdir()
    result = CliRunner().invoke(main, [*TINY_RUN, "--logdir", str(tmp_path), "--out", str(tmp_path / "locked" / "x.ckpt")])
    assert result.exit_code == 2 and f"{tmp_path / 'locked'} is not writable" in result.output


def test_ctrl_c_saves_a_checkpoint_and_resume_ends_where_a_straight_run_does(tmp_path, monkeypatch):
    import signal

    import torch

    from agents.registry import load_agent
    from agents.trainer import FlexRecTrainer

    runner = CliRunner()
    straight = tmp_path / "straight.ckpt"
    assert runner.invoke(main, [*TINY_RUN, "--logdir", str(tmp_path), "--out", str(straight)]).exit_code == 0
    assert not (tmp_path / "straight.resume.ckpt").exists(), "a finished run's training checkpoint is removed"
    iterate = FlexRecTrainer.iterate

    def interrupted(trainer: FlexRecTrainer) -> None:
        if trainer.iteration == 2:
            signal.getsignal(signal.SIGINT)(signal.SIGINT, None)  # Ctrl-C: the handler the trainer installed
        iterate(trainer)

    monkeypatch.setattr(FlexRecTrainer, "iterate", interrupted)
    out = tmp_path / "resumed.ckpt"
    result = runner.invoke(main, [*TINY_RUN, "--logdir", str(tmp_path / "logs"), "--out", str(out)])
    saved = tmp_path / "resumed.resume.ckpt"
    assert result.exit_code == 130 and f"resume with: flexrec-agent train --resume {saved} --out {out}" in result.output
    assert not out.exists() and saved.is_file()
    monkeypatch.setattr(FlexRecTrainer, "iterate", iterate)
    result = runner.invoke(main, ["train", "--resume", str(saved), "--seed", "1"])
    assert result.exit_code == 2 and "drop --seed" in result.output
    result = runner.invoke(main, ["train", "--resume", str(saved), "--out", str(out), "--logdir", str(tmp_path / "logs")])
    assert result.exit_code == 0, result.output
    first, second = (load_agent(path).policy.state_dict() for path in (straight, out))
    assert all(torch.equal(first[key], second[key]) for key in first)
    result = runner.invoke(main, ["train", "--resume", str(out)])
    assert result.exit_code == 2 and "not a training checkpoint" in result.output
