"""The environment's constructor arguments as one validated value, and the one step that acts on them.

:class:`EnvConfig` only checks its fields: it builds nothing and registers nothing. :func:`resolve` (called by both
envs' ``__init__``) builds and checks the scenario, registers its needs and resolves the needs to draw from.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from flexrec_env.feedback import FeedbackConfig
from flexrec_env.needs import Need, covered_needs, resolve_needs, union_needs
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


@dataclass(frozen=True)
class SessionConfig:
    """The session arguments of ``gym.make("FlexRecSession-v0", ...)``; every other argument is :class:`EnvConfig`'s."""

    session_length: int = 4
    """R, the requests of a session (one user); an episode is R lists of K positions."""
    stay_probability: float = 0.5
    """Probability that the need stays from one request to the next; otherwise it switches uniformly to one of the
    other M - 1 needs: the need-transition matrix ``s I + (1 - s) / (M - 1) (J - I)`` over the env's M needs."""
    need_transition: tuple[tuple[float, ...], ...] | None = None
    """An explicit M x M need-transition matrix (row i: the next need's probabilities after need i, needs in the
    order of ``need``; rows sum to 1); replaces ``stay_probability``."""
    need_schedule: tuple[str, ...] | str | None = None
    """The need of each request, in order (R need names, or one comma-separated string of them): a fixed schedule
    instead of the random process. The env's needs are then the schedule's, and ``need`` is not used."""
    announce_switch: bool = True
    """State a switch in the instruction (``"Now, <instruction>"``); False: the new need's instruction alone."""
    fatigue: float = 0.0
    """The user's feedback thins over a session: at request r (0-based) a candidate's label is observed with
    probability ``observe_prob * (1 - fatigue)**r``; 0 (default) is no fatigue."""

    def __post_init__(self) -> None:
        schedule, matrix = self.need_schedule, self.need_transition
        if isinstance(schedule, str):  # "a,b,c" as on a command line
            schedule = tuple(s.strip() for s in schedule.split(",") if s.strip())
        if isinstance(matrix, (list, tuple)) and all(isinstance(row, (list, tuple)) for row in matrix):
            matrix = tuple(tuple(row) for row in matrix)
        object.__setattr__(self, "need_schedule", tuple(schedule) if isinstance(schedule, list) else schedule)
        object.__setattr__(self, "need_transition", matrix)
        check_fields(self, {"session_length": ">= 1", "stay_probability": "[0, 1]", "fatigue": "[0, 1)"})
        if self.need_schedule is not None and len(self.need_schedule) != self.session_length:
            raise ValueError(
                f"need_schedule={list(self.need_schedule)} has {len(self.need_schedule)} needs; allowed: one need per "
                f"request, {self.session_length} (session_length)"
            )
        if self.need_transition is not None:
            matrix = self.need_transition
            square = all(len(row) == len(matrix) for row in matrix) and len(matrix) > 0
            probabilities = [p for row in matrix for p in row]
            invalid = not all(math.isfinite(p) and p >= 0 for p in probabilities)
            if not square or invalid or any(abs(sum(row) - 1) > 1e-9 for row in matrix):
                raise ValueError(
                    f"need_transition={matrix!r}; allowed: a square matrix of non-negative probabilities whose rows sum to 1"
                )

    @staticmethod
    def given(kwargs: Mapping[str, Any]) -> bool:
        """Whether ``kwargs`` hold a session argument: the arguments of a ``FlexRecSession-v0`` env, not FlexRec-v0."""
        return any(key in SessionConfig.__dataclass_fields__ for key in kwargs)

    @staticmethod
    def split(kwargs: Mapping[str, Any]) -> tuple[SessionConfig, dict[str, Any]]:
        """The session arguments among ``kwargs`` as a config, and the rest (``EnvConfig``'s)."""
        names = set(SessionConfig.__dataclass_fields__)
        return SessionConfig(**{k: v for k, v in kwargs.items() if k in names}), {
            k: v for k, v in kwargs.items() if k not in names
        }


def resolve_session(config: EnvConfig, session: SessionConfig) -> tuple[Scenario, tuple[Need, ...]]:
    """:func:`resolve` for a session env: the scenario, its size and the needs.

    A session's R requests are dealt from one draw of R x N candidates, so the scenario must supply that many; the
    needs are the schedule's when there is one.
    """
    scenario, needs = resolve(config)
    total, limit = session.session_length * config.num_candidates, scenario.max_candidates()
    if total > limit:
        raise ValueError(
            f"session_length * num_candidates = {total}; allowed: at most {limit} for {scenario!r} (a session's requests "
            "share no candidate); lower session_length or num_candidates"
        )
    if session.need_schedule is not None:
        needs = union_needs(resolve_needs(list(session.need_schedule)))
    check_need_transition(session, needs)
    return scenario, needs


def check_need_transition(session: SessionConfig, needs: Sequence[Need]) -> None:
    """``need_transition`` must have one row and column per need a session draws from (made, or reset with other needs)."""
    if session.need_transition is not None and len(session.need_transition) != len(needs):
        raise ValueError(
            f"need_transition is {len(session.need_transition)} x {len(session.need_transition)}; allowed: "
            f"{len(needs)} x {len(needs)}, one row and column per need of {[n.name for n in needs]}"
        )
