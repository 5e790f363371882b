"""Agents by name (for the command line and the benchmark), and loading any checkpoint."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.base import Agent, TrainableAgent
from agents.baselines import NeedAwareHeuristic, OracleAgent, PopularityAgent, RandomAgent


@dataclass(frozen=True)
class AgentSpec:
    """How to build an agent: a factory taking the agent's settings, and a one-line description."""

    factory: Callable[..., Agent]
    description: str
    trainable: bool = False

    def setting_types(self) -> dict[str, Any]:
        """The settings the factory takes (``--set KEY=VALUE``), with their annotations."""
        declared = getattr(self.factory, "setting_types", None)
        return dict(declared()) if callable(declared) else {}


def _sb3(algorithm: str) -> Callable[..., Agent]:
    def build(**settings: Any) -> Agent:
        from agents.sb3 import SB3Agent  # heavy imports only when used

        return SB3Agent(algorithm=algorithm, **settings)

    def setting_types() -> dict[str, Any]:
        from agents.sb3 import SB3Agent

        return SB3Agent.setting_types()

    build.setting_types = setting_types  # type: ignore[attr-defined]
    return build


def _lazy(module: str, attribute: str) -> Callable[..., Agent]:
    def build(**settings: Any) -> Agent:
        import importlib

        cls = getattr(importlib.import_module(module), attribute)
        return cls(**settings)

    def setting_types() -> dict[str, Any]:
        import importlib

        types: dict[str, Any] = getattr(importlib.import_module(module), attribute).setting_types()
        return types

    build.setting_types = setting_types  # type: ignore[attr-defined]
    return build


AGENTS: dict[str, AgentSpec] = {
    "random": AgentSpec(RandomAgent, "uniformly random ranking"),
    "popularity": AgentSpec(lambda: PopularityAgent("all"), "all-time popularity (need-blind)"),
    "popularity-recent": AgentSpec(lambda: PopularityAgent("recent"), "popularity in the recent window (need-blind)"),
    "need-aware": AgentSpec(NeedAwareHeuristic, "hand-written scoring from the need's features"),
    "oracle": AgentSpec(OracleAgent, "sorts by the true relevance: the upper bound, not a recommender"),
    "bpr": AgentSpec(_lazy("agents.recommenders", "BPRAgent"), "BPR matrix factorisation on histories (need-blind)", True),
    "sasrec": AgentSpec(_lazy("agents.recommenders", "SASRecAgent"), "SASRec self-attentive sequential model (need-blind)", True),
    "supervised": AgentSpec(
        _lazy("agents.supervised", "SupervisedAgent"), "pointwise model fitted on the RL agents' feedback budget", True
    ),
    "flexrec": AgentSpec(
        _lazy("agents.flexrec", "FlexRecAgent"), "transformer ranking policy trained by FlexRec (swap rewards + critic)", True
    ),
    "flexrec-llm": AgentSpec(
        _lazy("agents.llm", "FlexRecLLMAgent"), "LLM (LoRA) ranking policy trained by FlexRec; reads the request as text", True
    ),
    "maskable-ppo": AgentSpec(_sb3("maskable-ppo"), "sb3-contrib MaskablePPO over the candidate set", True),
    "ppo": AgentSpec(_sb3("ppo"), "stable-baselines3 PPO over the candidate set (masked scores)", True),
    "dqn": AgentSpec(_sb3("dqn"), "stable-baselines3 DQN over the candidate set (masked Q-values)", True),
}


def make_agent(name: str, **settings: Any) -> Agent:
    """A fresh agent by name, with its settings (e.g. ``learning_rate=1e-3``)."""
    if name not in AGENTS:
        raise ValueError(f"unknown agent {name!r}; allowed: {sorted(AGENTS)}")
    try:
        return AGENTS[name].factory(**settings)
    except TypeError as error:
        raise ValueError(f"bad settings {sorted(settings)} for agent {name!r}: {error}") from error


def load_agent(path: str | Path) -> TrainableAgent:
    """Any checkpoint written by a trainable agent's ``save``: the agent type is read from the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    from agents.checkpoints import read_kind

    kind = read_kind(path)
    spec = AGENTS.get(kind)
    if spec is None or not spec.trainable:
        raise ValueError(f"{path} holds a checkpoint of {kind!r}, which no registered trainable agent reads")
    agent_class = type(spec.factory())
    assert issubclass(agent_class, TrainableAgent)
    return agent_class.load(path)
