"""What the ``train``, ``evaluate`` and ``log`` commands do with their options.

Build the agent and its env, check output paths, train (or resume) and save, report. ``agents/cli.py`` declares the
commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

import flexrec_env  # noqa: F401  (registers FlexRec-v0)
from agents.base import Agent, TrainableAgent, close_process_group, is_main_process
from agents.cli_options import (
    agent_settings_from,
    env_kwargs_from,
    set_threads,
)
from agents.evaluation import Evaluation, SessionEvaluation
from agents.flexrec import PolicyAgent
from agents.llm import FlexRecLLMAgent
from agents.registry import load_agent, make_agent
from agents.resume import Checkpointing, TrainingInterrupted, check_output_path, resume_path


def usable_output(path: Path, option: str, folder: bool = False) -> None:
    """A usage error naming ``option`` unless ``path`` can be written (checked before any work is done)."""
    try:
        check_output_path(path, option, folder)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint=option) from None


def report(evaluation: Evaluation | SessionEvaluation, out: Path | None) -> None:
    """Print the evaluation's table and what it shows; write its JSON to ``out`` if given."""
    click.echo(evaluation.table())
    if isinstance(evaluation, SessionEvaluation):
        click.echo("(per request of the sessions, pooled by its place: mean ± 95% CI over requests; true relevance)")
    else:
        click.echo("(* held out from training: unseen needs; mean ± 95% CI over episodes; true relevance)")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(evaluation.to_json())
        click.echo(f"results written to {out}")


def train_and_save(
    learner: TrainableAgent,
    env_kwargs: dict[str, Any],
    steps: int | None,
    seed: int,
    run_dir: Path,
    checkpoint: Path,
    checkpoint_every: int,
    resume: Path | None,
    options: dict[str, Any] | None = None,
) -> bool:
    """Train (or resume, to ``steps`` or the run's own budget) and save to ``checkpoint``; False in other processes.

    The other processes of a data-parallel run save nothing. Ctrl-C ends the command (exit status 130) naming the
    training checkpoint to resume from.
    """
    checkpointing = Checkpointing(resume_path(checkpoint), checkpoint_every, options or {}) if learner.resumable else None
    try:
        if resume is not None:
            learner.resume(steps, logdir=run_dir, checkpointing=checkpointing)
        else:
            assert steps is not None
            learner.learn(env_kwargs, steps, seed=seed, logdir=run_dir, checkpointing=checkpointing)
    except TrainingInterrupted as stop:
        if stop.path is not None:
            click.echo(f"interrupted after {stop.steps} steps; checkpoint written to {stop.path}", err=True)
            click.echo(f"resume with: flexrec-agent train --resume {stop.path}", err=True)
        raise SystemExit(130) from None
    except KeyboardInterrupt:  # a second Ctrl-C: stopped at once, mid-iteration
        last = checkpointing.path if checkpointing is not None and checkpointing.path.is_file() else None
        if last is None:
            click.echo("interrupted; no training checkpoint was written", err=True)
        else:
            click.echo(f"interrupted; the last training checkpoint is {last}: resume with: "
                       f"flexrec-agent train --resume {last}", err=True)  # fmt: skip
        raise SystemExit(130) from None
    except ValueError as error:  # resuming: a budget the run has done; fresh: a setting only training can check
        hint = "--resume/--steps" if resume is not None else "--set/--env-arg/--scenario-arg"
        raise click.BadParameter(str(error), param_hint=hint) from None
    main = is_main_process()
    if main:
        learner.save(checkpoint)
        click.echo(f"checkpoint written to {checkpoint}")
        if checkpointing is not None and checkpointing.path != checkpoint:
            learner.discard_checkpoint(checkpointing.path)  # the run is complete: its training checkpoint is spent
    close_process_group()  # every process trained and the checkpoint is written: evaluation needs no group
    return main


def run_options(
    context: click.Context,
    options: dict[str, Any],
    logdir: Path,
    out: Path | None,
    episodes: int,
    checkpoint_every: int,
    threads: int | None,
) -> tuple[Path, Path | None, int, int, int | None]:
    """A resumed run's ``--logdir``, ``--out``, ``--episodes``, ``--checkpoint-every`` and threads.

    Each is the run's own unless given on the command line; a thread count other than the run's is refused (the
    weights depend on it).
    """

    def given(name: str) -> bool:
        return context.get_parameter_source(name) not in (ParameterSource.DEFAULT, None)

    if threads is not None and "threads" in options and threads != options["threads"]:
        message = f"{threads}; allowed: the run's {options['threads']} (the weights depend on the thread count)"
        raise click.BadParameter(message, param_hint="--threads")
    return (
        logdir if given("logdir") else Path(options.get("logdir", logdir)),
        out if out is not None or "out" not in options else Path(options["out"]),
        episodes if given("episodes") else int(options.get("episodes", episodes)),
        checkpoint_every if given("checkpoint_every") else int(options.get("checkpoint_every", checkpoint_every)),
        options.get("threads", threads),
    )


#: ``train`` options (parameter: option) that a resumed run takes from its checkpoint.
RUN_OPTIONS = {"agent": "--agent", "advantage": "--advantage", "scenario": "--scenario", "scenario_args": "--scenario-arg",
               "need": "--need", "env_name": "--env", "env_args": "--env-arg", "seed": "--seed", "model": "--model",
               "settings": "--set",
               "config": "--config"}  # fmt: skip


def resumed_run(context: click.Context, path: Path) -> tuple[TrainableAgent, dict[str, Any], int, dict[str, Any]]:
    """The run of training checkpoint ``path``: agent, environment arguments, seed and command options.

    The options are how the run was started (``--logdir``, ``--out``, ``--episodes``, ``--checkpoint-every``, the
    thread count); usage errors for options a resumed run may not change.
    """
    given = [name for name in RUN_OPTIONS if context.get_parameter_source(name) not in (ParameterSource.DEFAULT, None)]
    if given:
        options = ", ".join(RUN_OPTIONS[name] for name in given)
        raise click.UsageError(f"--resume continues a run as it was set up: drop {options} (they come from {path})")
    try:
        learner = load_agent(path)
        if not learner.resumable or getattr(learner, "training_state", None) is None:
            raise ValueError(f"{path} is not a training checkpoint (written beside --out as *.resume.ckpt); nothing to resume")
    except (ValueError, FileNotFoundError) as error:
        raise click.BadParameter(str(error), param_hint="--resume") from None
    env_kwargs = dict(learner.env_kwargs)  # type: ignore[attr-defined]
    run = learner.training_state["run"]  # type: ignore[attr-defined]
    return learner, env_kwargs, int(run["seed"]), dict(run.get("options", {}))


def agent_and_env(
    agent: str | None,
    checkpoint: Path | None,
    model: str | None,
    settings: tuple[str, ...],
    threads: int | None,
    env_options: tuple[str, tuple[str, ...], str | None, tuple[str, ...], str],
) -> tuple[Agent, dict[str, Any]]:
    """The agent of ``--agent``/``--checkpoint`` ready to rank, and the env arguments of the env options.

    ``env_options`` are ``--scenario``, ``--scenario-arg``, ``--need``, ``--env-arg`` and ``--env``; a checkpoint's list shapes
    are kept unless given. An untrained trainable agent is refused (but the LLM, which ranks zero-shot).
    """
    if (agent is None) == (checkpoint is None):
        raise click.UsageError("give exactly one of --agent NAME or --checkpoint PATH")
    if checkpoint is not None and (model is not None or settings):
        raise click.UsageError("--model and --set go with --agent; a checkpoint carries its own settings")
    agent_settings = agent_settings_from(str(agent), settings, None, model) if agent is not None else {}
    try:
        ranker = load_agent(checkpoint) if checkpoint is not None else make_agent(str(agent), **agent_settings)
    except (ValueError, FileNotFoundError) as error:
        raise click.BadParameter(str(error), param_hint="--agent/--checkpoint") from error
    if checkpoint is None and isinstance(ranker, TrainableAgent) and not isinstance(ranker, FlexRecLLMAgent):
        hint = f"give --checkpoint PATH written by `flexrec-agent train --agent {agent}`"
        raise click.BadParameter(f"{agent} is a trainable agent and untrained: {hint}", param_hint="--agent")
    set_threads(threads, ranker.name)
    env_kwargs = env_kwargs_from(*env_options)
    if isinstance(ranker, PolicyAgent) and ranker.policy is None:
        try:
            ranker.init_policy(env_kwargs)
        except (ValueError, OSError) as error:  # a model that cannot be loaded or read as a ranker
            raise click.BadParameter(str(error), param_hint="--model") from error
        click.echo(f"{ranker.policy_config.model}: zero-shot (a fresh adapter: the base model)")
    trained = dict(getattr(ranker, "env_kwargs", {}) or {})
    for key in ("num_candidates", "list_length", "metric_k"):  # the shapes the agent was trained with
        if key in trained and key not in env_kwargs:
            env_kwargs[key] = trained[key]
    return ranker, env_kwargs
