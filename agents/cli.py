"""The ``flexrec-agent`` command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import gymnasium as gym
from tqdm import tqdm

import flexrec_env  # noqa: F401  (registers FlexRec-v0)
from agents.base import Agent, play_episode
from agents.baselines import NeedAwareHeuristic, RandomAgent
from agents.evaluation import format_ci, mean_ci
from flexrec_env.needs import registered_needs
from scenarios import available_scenarios, make_scenario


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(flexrec_env.__version__, prog_name="flexrec-agent")
def main() -> None:
    """Train and evaluate need-following recommenders on the FlexRec environment."""


def parse_scenario_args(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``key=value`` pairs as scenario keyword arguments; values are JSON when they parse (numbers, booleans)."""
    kwargs: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r}; expected key=value, e.g. path=data/ml-100k", param_hint="--scenario-arg")
        try:
            kwargs[key] = json.loads(value)
        except json.JSONDecodeError:
            kwargs[key] = value
    return kwargs


scenario_option = click.option(
    "--scenario",
    default="synthetic",
    show_default=True,
    help="Scenario: a name from `flexrec-agent scenarios` or package.module:Factory.",
)
scenario_arg_option = click.option(
    "--scenario-arg",
    "scenario_args",
    multiple=True,
    metavar="KEY=VALUE",
    help="Argument of the scenario's factory (repeatable), e.g. --scenario-arg path=data/ml-100k.",
)


@main.command()
@click.option("--episodes", default=300, show_default=True, help="Evaluation episodes per need and agent.")
@click.option("--seed", default=0, show_default=True, help="Seed of the first episode; episode i uses seed + i.")
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
    if episodes < 1:
        raise click.BadParameter(f"{episodes}; allowed: an integer >= 1", param_hint="--episodes")
    agents: list[Agent] = [RandomAgent(seed), NeedAwareHeuristic()]
    try:
        make_scenario(scenario, parse_scenario_args(scenario_args))  # registers the scenario's own needs
    except (ValueError, TypeError, FileNotFoundError) as error:
        raise click.BadParameter(str(error), param_hint="--scenario") from error
    needs = list(registered_needs().values())
    results: dict[str, dict[str, list[float]]] = {}
    with tqdm(total=len(needs) * len(agents) * episodes, desc="quickstart", unit="episode") as bar:
        for need in needs:
            env = gym.make("FlexRec-v0", need=need.name, scenario=scenario, scenario_kwargs=parse_scenario_args(scenario_args))
            for agent in agents:
                agent.seed(seed)
                scores = [play_episode(env, agent, seed=seed + i)["metrics"]["NDCG@5"] for i in range(episodes)]
                results.setdefault(need.name, {})[agent.name] = scores
                bar.update(episodes)
    header = f"{'need':<16}" + "".join(f"{a.name + ' NDCG@5':>24}" for a in agents)
    click.echo(header)
    click.echo("-" * len(header))
    for need in needs:
        row = results[need.name]
        cells = "".join(f"{format_ci(*mean_ci(row[a.name])):>24}" for a in agents)
        click.echo(f"{need.name + (' *' if need.held_out else ''):<16}{cells}")
    click.echo(f"(* held out from training by default; {episodes} episodes per cell, 95% CI; true relevance)")
    if out is not None:
        summary = {
            n: {a: dict(zip(("mean", "ci95"), mean_ci(v), strict=True)) for a, v in row.items()} for n, row in results.items()
        }
        out.write_text(json.dumps(summary, indent=2))


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


if __name__ == "__main__":
    main()
