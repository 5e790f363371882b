"""The options the ``flexrec-agent`` commands share, and the settings they build (:mod:`agents.cli` uses them).

Every value given as text goes through :func:`agents.settings_parser.parse_settings`, typed by the dataclass it
sets: ``--set`` by the agent's settings (:meth:`agents.registry.AgentSpec.setting_types`), ``--env-arg`` by
:class:`flexrec_env.EnvConfig`, ``--scenario-arg`` by the scenario's factory (:func:`scenarios.scenario_settings`).
A configuration file (``--config``) gives option values by option name; its mappings go through the same parser.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from agents.base import use_threads
from agents.language_models import dequantized_copy, is_gguf
from agents.registry import AGENTS
from agents.settings_parser import parse_settings, text_of
from flexrec_env.config import EnvConfig, SessionConfig, resolve_scenario
from flexrec_env.needs import resolve_needs, training_needs
from scenarios import scenario_settings
from scenarios.settings import field_types

#: EnvConfig fields with options of their own, not ``--env-arg``.
ENV_OPTIONS = {"need": "--need", "scenario": "--scenario", "scenario_kwargs": "--scenario-arg"}
#: The agent whose model is large enough to want torch's default thread count.
MANY_THREADS_AGENTS = ("flexrec-llm",)

#: ``ctx.meta`` key of the mappings a configuration file gave the repeatable options (``settings: {dim: 64}``).
FILE_MAPPINGS = "flexrec.config_mappings"

# --------------------------------------------------------------------------------------------------------------------
# Configuration files: keys are option names; options given on the command line override them.


def read_config(path: Path) -> dict[str, Any]:
    """A YAML or TOML file as a dict (``.toml`` is TOML; anything else is read as YAML)."""
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            import tomllib

            data: Any = tomllib.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text) or {}
    except Exception as error:  # noqa: BLE001  (any parse error becomes a usage error naming the file)
        raise click.BadParameter(f"{path}: {error}", param_hint="--config") from error
    if not isinstance(data, dict):
        raise click.BadParameter(f"{path} must hold a mapping of option names to values", param_hint="--config")
    return data


def _option_value(key: str, value: Any, multiple: bool, path: Path) -> Any:
    """A file's value as the text(s) the option would get on the command line.

    A mapping's values also stay as they are in ``ctx.meta`` (:func:`load_config`), where :func:`given_settings`
    finds them: the text here only stands for them.
    """
    if not multiple:
        return ",".join(text_of(v) for v in value) if key == "need" and isinstance(value, list) else text_of(value)
    if isinstance(value, dict):
        return [f"{k}={text_of(v)}" for k, v in value.items()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise click.BadParameter(
        f"{key}={value!r} in {path}; allowed: a mapping of keys to values, or a list of 'KEY=VALUE' strings",
        param_hint="--config",
    )


def load_config(ctx: click.Context, param: click.Parameter, value: Path | None) -> None:
    """Make the file's values the command's defaults (a click callback of ``--config``)."""
    if value is None:
        return
    data = {key.replace("-", "_"): item for key, item in read_config(value).items() if item is not None}
    params = {p.name: p for p in ctx.command.params if p.name and p.name != "config"}
    unknown = sorted(set(data) - set(params))
    if unknown:
        raise click.BadParameter(f"unknown key(s) {unknown} in {value}; allowed: {sorted(params)}", param_hint="--config")
    defaults = {key: _option_value(key, item, params[key].multiple, value) for key, item in data.items()}
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    mappings = {key: item for key, item in data.items() if params[key].multiple and isinstance(item, dict)}
    ctx.meta[FILE_MAPPINGS] = {**ctx.meta.get(FILE_MAPPINGS, {}), **mappings}


def given_settings(name: str, pairs: Sequence[str]) -> Sequence[str] | Mapping[str, Any]:
    """The ``KEY=VALUE`` pairs of option ``name``, or the mapping the configuration file gave it, values as written.

    The file's mapping counts only where the command line did not give the option (then its pairs override it).
    """
    ctx = click.get_current_context(silent=True)
    if ctx is None or ctx.get_parameter_source(name) is not ParameterSource.DEFAULT_MAP:
        return pairs
    mapping: Mapping[str, Any] = ctx.meta.get(FILE_MAPPINGS, {}).get(name, pairs)
    return mapping


# --------------------------------------------------------------------------------------------------------------------
# Shared options.

F = TypeVar("F", bound=Callable[..., Any])

config_option = click.option(
    "--config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    callback=load_config,
    is_eager=True,
    expose_value=False,
    help="YAML or TOML file of option values (keys are option names; --set, --env-arg and --scenario-arg as "
    "mappings); command-line options override it. Examples: configs/.",
)
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
need_option = click.option(
    "--need",
    default=None,
    help="Comma-separated needs (default: every need not held out; see `flexrec-agent needs`).",
)
model_option = click.option(
    "--model",
    default=None,
    metavar="PATH_OR_NAME",
    help="Causal language model of the flexrec-llm agent: a GGUF file (de-quantized once and cached), a local folder "
    "or a hub name (default: the built-in tiny smoke-test model). Same as --set model=...",
)
env_arg_option = click.option(
    "--env-arg",
    "env_args",
    multiple=True,
    metavar="KEY=VALUE",
    help="FlexRec-v0 argument (repeatable; an EnvConfig field other than need and scenario), e.g. --env-arg "
    "list_length=5 --env-arg reward_mode=marginal.",
)
env_option = click.option(
    "--env",
    "env_name",
    type=click.Choice(["request", "session"]),
    default="request",
    show_default=True,
    help="request: FlexRec-v0, one request per episode; session: FlexRecSession-v0, sessions of requests by one user "
    "whose need shifts (session arguments by --env-arg, e.g. session_length=4, stay_probability=0.5, "
    "need_schedule=trending,niche,niche,fresh, announce_switch=false, fatigue=0.1). Training on sessions ranks one "
    "request of each session per iteration; evaluation reports NDCG@5 after a need switch.",
)


def env_options(sessions: bool = True) -> Callable[[F], F]:
    """``--scenario``, ``--scenario-arg``, ``--need``, ``--env`` (with ``sessions``) and ``--env-arg``: what to play on."""

    def decorate(command: F) -> F:
        for option in (env_arg_option, *((env_option,) if sessions else ()), need_option, scenario_arg_option, scenario_option):
            command = option(command)
        return command

    return decorate


threads_option = click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="torch threads for training and evaluation [default: 1; flexrec-llm: torch's default, one per core]. The "
    "compact policies gain nothing from more: on a busy machine extra threads only slow them down.",
)


def seed_option(help_text: str) -> Any:
    """``--seed``: a non-negative integer."""
    return click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0), help=help_text)


# --------------------------------------------------------------------------------------------------------------------
# Settings from the options.


def set_threads(threads: int | None, agent: str | None) -> None:
    """Apply ``--threads`` once, at the start of a command: 1 by default, torch's default for the LLM agent."""
    if threads is None and agent in MANY_THREADS_AGENTS:
        return
    use_threads(threads or 1)


def scenario_kwargs_from(scenario: str, pairs: Sequence[str]) -> dict[str, Any]:
    """``--scenario-arg`` pairs typed by the scenario's factory (unknown keys are refused with the allowed ones)."""
    try:
        types = scenario_settings(scenario)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--scenario") from error
    return parse_settings(given_settings("scenario_args", pairs), types, "--scenario-arg", owner=f"scenario {scenario!r}")


def env_setting_types() -> dict[str, Any]:
    """The ``--env-arg`` keys: :class:`~flexrec_env.EnvConfig`'s fields but those with an option of their own."""
    return {key: annotation for key, annotation in field_types(EnvConfig).items() if key not in ENV_OPTIONS}


def env_kwargs_from(
    scenario: str, scenario_args: tuple[str, ...], need: str | None, env_args: tuple[str, ...], env: str = "request"
) -> dict[str, Any]:
    """``gym.make`` arguments from the options, checked up front: the env's values, the scenario, the needs.

    With ``env="session"`` (``--env session``) they are FlexRecSession-v0's: ``--env-arg`` also takes
    :class:`~flexrec_env.config.SessionConfig`'s fields, and ``session_length`` is always set (it marks the arguments
    as a session env's for the agents).
    """
    types_, owner = env_setting_types(), "FlexRec-v0"
    if env == "session":
        types_, owner = {**types_, **field_types(SessionConfig)}, "FlexRecSession-v0"
    pairs = given_settings("env_args", env_args)
    settings = parse_settings(pairs, types_, "--env-arg", owner=owner, elsewhere=ENV_OPTIONS)
    kwargs = {"scenario": scenario, "scenario_kwargs": scenario_kwargs_from(scenario, scenario_args), **settings}
    if env == "session":
        kwargs.setdefault("session_length", SessionConfig().session_length)
    try:
        _, request_kwargs = SessionConfig.split(kwargs)
        EnvConfig(**request_kwargs)  # values: build nothing
    except (ValueError, TypeError) as error:
        raise click.BadParameter(str(error), param_hint="--env-arg") from error
    try:
        resolve_scenario(scenario, kwargs["scenario_kwargs"])  # registers the scenario's own needs; fails early
    except (ValueError, TypeError, FileNotFoundError) as error:
        raise click.BadParameter(str(error), param_hint="--scenario/--scenario-arg") from error
    kwargs["need"] = [n.name for n in training_needs()] if need is None else [n.strip() for n in need.split(",") if n.strip()]
    try:
        resolve_needs(kwargs["need"])
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--need") from error
    return kwargs


def agent_settings_from(agent: str, settings: tuple[str, ...], advantage: str | None, model: str | None) -> dict[str, Any]:
    """The agent's settings from ``--set`` pairs, ``--advantage`` and ``--model`` (a GGUF file is converted here once)."""
    if agent not in AGENTS:
        raise click.BadParameter(f"unknown agent {agent!r}; allowed: {sorted(AGENTS)}", param_hint="--agent")
    types = AGENTS[agent].setting_types()
    agent_settings = parse_settings(given_settings("settings", settings), types, "--set", owner=f"the {agent} agent")
    if advantage is not None:
        if not agent.startswith("flexrec"):
            raise click.BadParameter(f"--advantage applies to the flexrec agents, not {agent!r}", param_hint="--advantage")
        agent_settings["advantage"] = advantage
    if model is not None:
        if agent != "flexrec-llm":
            raise click.BadParameter(f"--model applies to the flexrec-llm agent, not {agent!r}", param_hint="--model")
        agent_settings["model"] = model
    name = agent_settings.get("model")
    if agent == "flexrec-llm" and isinstance(name, str) and Path(name).expanduser().exists():
        name = agent_settings["model"] = str(Path(name).expanduser().resolve())  # a checkpoint loads from anywhere
    if agent == "flexrec-llm" and isinstance(name, str) and is_gguf(name):
        try:
            copy = dequantized_copy(name, agent_settings.get("model_cache"))
        except (FileNotFoundError, FileExistsError, ImportError) as error:
            raise click.BadParameter(str(error), param_hint="--model") from error
        click.echo(f"{name}: using its de-quantized copy in {copy} (set model_cache=FOLDER to move it)")
    return agent_settings
