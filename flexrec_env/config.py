"""The environment's constructor arguments as one validated value, and the one step that acts on them.

:class:`EnvConfig` only checks its fields: it builds nothing and registers nothing. :func:`resolve` (called by both
envs' ``__init__``) builds and checks the scenario, registers its needs and resolves the needs to draw from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from flexrec_env.feedback import FeedbackConfig
from flexrec_env.needs import Need, covered_needs, resolve_needs
from scenarios import Scenario, make_scenario
from scenarios.settings import check_fields

RewardMode = Literal["swap", "marginal", "list"]
RewardLabels = Literal["feedback", "true"]
InvalidAction = Literal["raise", "penalize"]
RenderMode = Literal["ansi"]
InfoLevel = Literal["full", "lean"]
Split = Literal["train", "eval"]

#: Reward of an invalid action (an already placed candidate) with ``invalid_action="penalize"``.
INVALID_ACTION_PENALTY = -1.0


@dataclass(frozen=True)
class EnvConfig:
    """Everything ``gym.make("FlexRec-v0", ...)`` accepts (all keyword arguments)."""

    need: str | Need | Sequence[str | Need] = "interest"
    """A need name, a ``Need``, ``"a+b"`` (all of a and b), or a sequence of them sampled uniformly per episode."""
    scenario: str | Scenario = "synthetic"
    """A registered scenario name or a ``Scenario`` object."""
    scenario_kwargs: Mapping[str, Any] = field(default_factory=dict)
    """Arguments of a named scenario's factory, e.g. ``{"path": ...}`` for data-backed scenarios."""
    split: Split = "eval"
    """``"train"``: requests come from the scenario's training split (``Scenario.training_split()``), e.g. an earlier
    time window of a log, so training feedback never touches the positives evaluation scores; ``"eval"``: the
    scenario as given."""
    num_candidates: int = 20
    """N, the size of the candidate set; the action space is ``Discrete(N)``."""
    list_length: int = 10
    """K, the number of positions to fill (``1 <= K <= N``); an episode is K valid steps."""
    metric_k: int | None = None
    """Cut-off k of the reward metric (``1 <= k <= N``); default K."""
    reward_mode: RewardMode = "swap"
    """Per-step reward: ``"swap"``, ``"marginal"`` or ``"list"`` (see the env docstring for the formulas)."""
    reward_labels: RewardLabels = "feedback"
    """``"feedback"``: rewards from the simulated noisy, sparse labels; ``"true"``: from ground truth (ablations)."""
    feedback: FeedbackConfig | Mapping[str, Any] | None = None
    """Feedback parameters (a ``FeedbackConfig`` or a dict of its fields)."""
    invalid_action: InvalidAction = "raise"
    """Placing an already placed candidate: ``"raise"`` a ValueError, or ``"penalize"`` it."""
    expose_truth: bool = False
    """Add the true relevance to every info (``info["relevance"]``); for analysis, never for training."""
    render_mode: RenderMode | None = None
    """``"ansi"`` renders the request and the list so far as text."""

    info_level: InfoLevel = "full"
    """``"full"``: the last info carries the evaluation metrics, the exact swap rewards, clicks and labels (see the
    env docstring); ``"lean"``: only ``ranking`` and ``list_reward`` (the per-step info is the same), for speed."""

    def __post_init__(self) -> None:
        check_fields(self, {"num_candidates": ">= 2", "list_length": ">= 1", "metric_k": ">= 1"})
        n = self.num_candidates
        for name in ("list_length", "metric_k"):
            value = getattr(self, name)
            if value is not None and value > n:
                raise ValueError(f"{name}={value!r}; allowed: an integer between 1 and {n} (num_candidates)")
        if self.metric_k is None:
            object.__setattr__(self, "metric_k", self.list_length)
        if not isinstance(self.need, (str, Need)) and not all(isinstance(n, (str, Need)) for n in self.need):
            raise TypeError(f"need={self.need!r}; allowed: a need name, a Need, or a sequence of them")
        object.__setattr__(self, "feedback", FeedbackConfig.coerce(self.feedback))  # type: ignore[arg-type]

    @property
    def feedback_config(self) -> FeedbackConfig:
        assert isinstance(self.feedback, FeedbackConfig)
        return self.feedback

    @property
    def reward_noise(self) -> tuple[float, float]:
        """``(observe_prob, label_noise)`` of the labels the rewards use (``(1, 0)`` with ``reward_labels="true"``)."""
        if self.reward_labels == "true":
            return 1.0, 0.0
        return self.feedback_config.observe_prob, self.feedback_config.label_noise

    @property
    def k(self) -> int:
        assert self.metric_k is not None
        return self.metric_k


def resolve_scenario(spec: str | Scenario, kwargs: Mapping[str, Any] | None = None, split: Split = "eval") -> Scenario:
    """A scenario ready for the environment: built, checked, its needs registered.

    Builds the scenario (or looks up one built with the same arguments), checks it against the data contract
    (:func:`scenarios.check_scenario`) and the needs (:func:`flexrec_env.needs.check_scenario_needs`) if this process
    has not seen it, registers its own needs, and with ``split="train"`` does the same for its training split.
    """
    scenario = make_scenario(spec, kwargs)
    covered_needs(scenario)
    if split == "train":
        scenario = make_scenario(scenario.training_split())
        covered_needs(scenario)
    return scenario


def check_sizes(config: EnvConfig, scenario: Scenario) -> None:
    """``num_candidates`` against what the scenario can supply, before anything of that size is built."""
    limit = scenario.max_candidates()
    if config.num_candidates > limit:
        raise ValueError(
            f"num_candidates={config.num_candidates}; allowed: at most {limit} for {scenario!r} (the fewest eligible "
            "items of any request); lower num_candidates or enlarge the catalogue"
        )


def resolve(config: EnvConfig) -> tuple[Scenario, tuple[Need, ...]]:
    """The one step that acts on a config: the scenario, its size and the needs an env runs on.

    :func:`resolve_scenario`, then :func:`check_sizes`, then the needs. Both envs call it in their ``__init__``; the
    config itself stays a value.
    """
    scenario = resolve_scenario(config.scenario, config.scenario_kwargs, config.split)
    check_sizes(config, scenario)
    return scenario, resolve_needs(config.need)
