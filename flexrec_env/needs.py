"""Needs: what the user asks for, and which candidates that makes relevant.

A :class:`Need` has a name, several natural-language instruction paraphrases (one is sampled per episode, so a
policy learns the need rather than one sentence), a relevance function over a batch of requests, a feature vector
(so unseen needs are representable) and a list metric (NDCG@k unless the need is list-level).

Built-in needs read only the signals every scenario provides (:class:`scenarios.RequestBatch`), so they work on
every conforming scenario. The user's true interest grade ``interest`` (0, 1, 2, ...) gates every need; the need
then filters which interesting candidates count:

=============  ===================================================  ===========================
need           relevance ``rel_i``                                  list metric
=============  ===================================================  ===========================
``interest``   ``interest_i``                                       NDCG@k
``trending``   ``interest_i`` if ``recent_popularity_i >= 0.8``      NDCG@k
``niche``      ``interest_i`` if ``popularity_i <= 0.5``             NDCG@k
``fresh``      ``interest_i`` if ``freshness_i >= 0.8``              NDCG@k
``diverse``    ``interest_i``                                       alpha-NDCG@k (gamma = 0.5)
=============  ===================================================  ===========================

(``popularity``, ``recent_popularity`` and ``freshness`` are percentiles in the scenario's catalogue at the
request time, in [0, 1].) :func:`all_of` composes needs (relevance is the minimum of the components'), and a need
string ``"a+b"`` names that composition. Needs marked ``held_out`` are left out of training by default and serve
to test generalisation to unseen needs.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING
from weakref import WeakSet

import numpy as np
from numpy.typing import NDArray

from flexrec_env.metrics import ListMetric, alpha_ndcg, ndcg
from scenarios import Scenario, ScenarioCheckError

if TYPE_CHECKING:
    from scenarios.base import RequestBatch

#: Named axes of a need's feature vector; the last ones are free for needs that scenarios define.
NEED_FEATURE_NAMES = ("interest", "trending", "niche", "fresh", "diverse", "custom_0", "custom_1", "custom_2")
NEED_FEATURE_DIM = len(NEED_FEATURE_NAMES)
#: Size of the need-id space in observations (``Discrete(MAX_NEEDS)``).
MAX_NEEDS = 64
#: Ids of the five built-in needs that are not compositions.
NUM_BASE_IDS = 5

RelevanceFn = Callable[["RequestBatch"], NDArray[np.int64]]


def need_features(**weights: float) -> tuple[float, ...]:
    """A need feature vector from named axes, e.g. ``need_features(trending=1.0)``."""
    unknown = sorted(set(weights) - set(NEED_FEATURE_NAMES))
    if unknown:
        raise ValueError(f"unknown need feature(s) {unknown}; allowed: {list(NEED_FEATURE_NAMES)}")
    return tuple(float(weights.get(name, 0.0)) for name in NEED_FEATURE_NAMES)


@dataclass(frozen=True)
class Need:
    """A user need: its instructions, the relevance it induces, and how a list is scored under it."""

    name: str
    """Unique name, used in ``gym.make(..., need=name)`` and on the command line."""
    instructions: tuple[str, ...]
    """Natural-language paraphrases of the request; one is sampled per episode."""
    relevance: RelevanceFn
    """``relevance(requests) -> (B, N)`` graded relevance (integers ``>= 0``) of each candidate."""
    features: tuple[float, ...] = field(default_factory=lambda: (0.0,) * NEED_FEATURE_DIM)
    """Feature vector of length ``NEED_FEATURE_DIM`` (see ``NEED_FEATURE_NAMES``)."""
    metric: ListMetric = ndcg
    """The list metric rewards are computed with; NDCG@k unless the need is list-level."""
    held_out: bool = False
    """Left out of training by default; used to test generalisation to unseen needs."""
    description: str = ""
    """One line for listings (``flexrec-agent needs``)."""
    need_id: int | None = None
    """Its ``obs["need_id"]`` in ``[0, MAX_NEEDS)``; default: fixed for the built-ins and their compositions, else
    derived from the name (see the registry notes)."""
    parts: tuple[str, ...] = ()
    """For a composition (:func:`all_of`): the names of the needs it asks for all of, in the order given."""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or any(c.isspace() or c == "," for c in self.name):
            raise ValueError(f"need name {self.name!r} must be a non-empty string without spaces or ','")
        if isinstance(self.instructions, str) or not self.instructions:
            raise ValueError(f"need {self.name!r}: instructions must be a non-empty tuple of strings")
        object.__setattr__(self, "instructions", tuple(str(s) for s in self.instructions))
        if len(self.features) != NEED_FEATURE_DIM:
            raise ValueError(
                f"need {self.name!r}: features has length {len(self.features)}, expected {NEED_FEATURE_DIM} "
                f"(axes {list(NEED_FEATURE_NAMES)}; build it with need_features(...))"
            )
        if self.need_id is not None and (
            isinstance(self.need_id, bool) or not isinstance(self.need_id, int) or not 0 <= self.need_id < MAX_NEEDS
        ):
            raise ValueError(f"need {self.name!r}: need_id={self.need_id!r}; allowed: an integer in [0, {MAX_NEEDS})")
        if not callable(self.relevance):
            raise TypeError(f"need {self.name!r}: relevance must be callable, got {type(self.relevance).__name__}")

    @property
    def is_list_level(self) -> bool:
        """Whether the need scores lists with its own metric (then swap rewards take the generic path)."""
        return self.metric is not ndcg

    @property
    def feature_vector(self) -> NDArray[np.float32]:
        return np.asarray(self.features, dtype=np.float32)


# ---------------------------------------------------------------------------------------------------------------
# Relevance functions of the built-in needs (module-level, so needs pickle for subprocess vector envs).


def interest_relevance(requests: RequestBatch) -> NDArray[np.int64]:
    """``interest_i``: the user's true interest grade."""
    return np.asarray(requests.interest, dtype=np.int64)


def filtered_relevance(requests: RequestBatch, *, signal: str, threshold: float, above: bool) -> NDArray[np.int64]:
    """``interest_i`` where the signal passes the threshold (``>=`` if ``above`` else ``<=``), else 0."""
    values = getattr(requests, signal)
    keep = values >= threshold if above else values <= threshold
    return np.where(keep, interest_relevance(requests), 0)


def _min_relevance(requests: RequestBatch, *, parts: tuple[RelevanceFn, ...]) -> NDArray[np.int64]:
    return np.minimum.reduce([np.asarray(fn(requests), dtype=np.int64) for fn in parts])


def all_of(*needs: Need, name: str | None = None, held_out: bool = True) -> Need:
    """The need that asks for all of ``needs`` at once: relevance is the minimum of theirs."""
    if len(needs) < 2:
        raise ValueError(f"all_of needs at least two needs, got {len(needs)}")
    names = [part for n in needs for part in (n.parts or (n.name,))]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"need {'+'.join(names)!r} repeats {repeated}; allowed: each part once")
    list_level = [n.metric for n in needs if n.is_list_level]
    instructions = tuple(
        " ".join([first, *(f"Also: {n.instructions[i % len(n.instructions)]}" for n in needs[1:])])
        for i, first in enumerate(needs[0].instructions)
    )
    return Need(
        name=name or "+".join(n.name for n in needs),
        instructions=instructions,
        relevance=partial(_min_relevance, parts=tuple(n.relevance for n in needs)),
        features=tuple(float(max(v)) for v in zip(*(n.features for n in needs), strict=True)),  # inside the parts' range
        metric=list_level[0] if list_level else ndcg,
        held_out=held_out,
        description="all of: " + ", ".join(n.name for n in needs),
        parts=tuple(names),
    )


# ---------------------------------------------------------------------------------------------------------------
# Registry and need ids.
#
# A need's id (``obs["need_id"]``) is the same in every process:
# - the five built-in needs hold 0-4 in the order of the table above;
# - compositions of built-ins hold fixed ids by the set of their parts, whatever their order: ``fresh+niche`` 5,
#   ``trending+fresh`` 6, and the other 24 sets of two to five built-ins 7-30 (:func:`composition_id`); a
#   composition written in another order is the same need (``niche+fresh`` is ``fresh+niche``);
# - any other need takes ``Need.need_id`` when set, else ``31 + sha256(name) mod 33`` (:func:`name_id`). Two such
#   names can meet on one id; registering the second is then an error that says how to give it a free id.

_REGISTRY: dict[str, Need] = {}
_IDS: dict[str, int] = {}
BASE_NEEDS = ("interest", "trending", "niche", "fresh", "diverse")
#: Ids of compositions of built-in needs, by their set of parts.
COMPOSITION_IDS: dict[frozenset[str], int] = {frozenset({"fresh", "niche"}): 5, frozenset({"trending", "fresh"}): 6}
for _size in range(2, len(BASE_NEEDS) + 1):
    for _parts in itertools.combinations(BASE_NEEDS, _size):
        COMPOSITION_IDS.setdefault(frozenset(_parts), len(COMPOSITION_IDS) + NUM_BASE_IDS)
#: The first id derived from a name.
FIRST_NAME_ID = NUM_BASE_IDS + len(COMPOSITION_IDS)


def composition_id(parts: Sequence[str]) -> int | None:
    """The fixed id of a composition of built-in needs (any order), else None."""
    return COMPOSITION_IDS.get(frozenset(parts))


def name_id(name: str) -> int:
    """The id a need gets from its name: ``31 + sha256(name) mod 33`` (the same in every process)."""
    digest = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big")
    return FIRST_NAME_ID + digest % (MAX_NEEDS - FIRST_NAME_ID)


def register_need(need: Need) -> Need:
    """Add a need to the registry (idempotent for the same need); returns the registered one."""
    if not isinstance(need, Need):
        raise TypeError(f"register_need expects a Need, got {type(need).__name__}")
    existing = _REGISTRY.get(need.name)
    if existing is not None:
        if existing != need:
            raise ValueError(f"a different need named {need.name!r} is already registered; choose another name")
        return existing
    ident = need.need_id if need.need_id is not None else composition_id(need.parts) or name_id(need.name)
    clash = next((name for name, i in _IDS.items() if i == ident), None)
    if clash is not None:
        free = sorted(set(range(FIRST_NAME_ID, MAX_NEEDS)) - set(_IDS.values()))
        raise ValueError(
            f"need {need.name!r} would take need_id {ident}, which need {clash!r} holds; rename it or build it with "
            f"need_id set to a free id (dataclasses.replace(need, need_id=...)), one of {free}"
        )
    _REGISTRY[need.name] = need
    _IDS[need.name] = ident
    return need


def get_need(spec: str | Need) -> Need:
    """A need from its name, a ``"a+b"`` composition of names, or a :class:`Need` (registered on first use)."""
    if isinstance(spec, Need):
        return register_need(spec)
    if not isinstance(spec, str):
        raise TypeError(f"need must be a name or a Need, got {type(spec).__name__}: {spec!r}")
    parts = [p.strip() for p in spec.split("+")]
    name = "+".join(parts)  # surrounding spaces are not part of a name
    if name in _REGISTRY:
        return _REGISTRY[name]
    unknown = [p for p in parts if p not in _REGISTRY]
    if unknown:
        raise ValueError(f"unknown need {unknown[0]!r} in {spec!r}; allowed: {sorted(_REGISTRY)} or 'a+b' compositions")
    need = all_of(*(_REGISTRY[p] for p in parts))
    same = next((n for n in _REGISTRY.values() if n.parts and set(n.parts) == set(need.parts)), None)
    return same if same is not None else register_need(need)  # the same parts in another order: the same need


def need_id(need: Need) -> int:
    """The need's id in observations (``obs["need_id"]``), the same in every process (see the registry notes)."""
    return _IDS[register_need(need).name]


def registered_needs() -> dict[str, Need]:
    """All registered needs, by name, in registration order."""
    return dict(_REGISTRY)


def resolve_needs(spec: str | Need | Sequence[str | Need]) -> tuple[Need, ...]:
    """One need or a sequence of them (a comma-separated string also works) as a tuple of needs."""
    if isinstance(spec, str) and "," in spec:
        spec = [s for s in spec.split(",") if s.strip()]
    if isinstance(spec, (str, Need)):
        return (get_need(spec),)
    needs = tuple(get_need(s.strip() if isinstance(s, str) else s) for s in spec)
    if not needs:
        raise ValueError("need must name at least one need; allowed: " + ", ".join(sorted(_REGISTRY)))
    return needs


def same_needs(a: tuple[Need, ...], b: tuple[Need, ...]) -> bool:
    """Whether ``a`` and ``b`` are the same needs (the same objects) in the same order."""
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


def union_needs(*groups: Sequence[Need]) -> tuple[Need, ...]:
    """The needs of ``groups`` in order, each once (by identity)."""
    out: list[Need] = []
    for need in (n for group in groups for n in group):
        if not any(need is m for m in out):
            out.append(need)
    return tuple(out)


def training_needs() -> tuple[Need, ...]:
    """Registered needs not held out: the default training mix."""
    return tuple(n for n in _REGISTRY.values() if not n.held_out)


def held_out_needs() -> tuple[Need, ...]:
    """Registered needs held out from training by default (unseen needs)."""
    return tuple(n for n in _REGISTRY.values() if n.held_out)


# ---------------------------------------------------------------------------------------------------------------
# Built-ins.

INTEREST = register_need(
    Need(
        name="interest",
        instructions=(
            "Recommend items that fit my taste.",
            "Show me what I would enjoy, based on what I have liked before.",
            "Pick the items closest to my personal interests.",
            "I want recommendations tailored to my preferences.",
        ),
        relevance=interest_relevance,
        features=need_features(interest=1.0),
        description="items that fit the user's taste",
        need_id=0,
    )
)
TRENDING = register_need(
    Need(
        name="trending",
        instructions=(
            "Show me what is trending right now.",
            "What is everyone watching these days? Recommend the current hits I would like.",
            "I want popular items of the moment that suit me.",
            "Recommend something that is buzzing lately.",
        ),
        relevance=partial(filtered_relevance, signal="recent_popularity", threshold=0.8, above=True),
        features=need_features(interest=1.0, trending=1.0),
        description="interesting items in the top 20% of recent popularity",
        need_id=1,
    )
)
NICHE = register_need(
    Need(
        name="niche",
        instructions=(
            "Help me discover niche items that few people know.",
            "Recommend hidden gems rather than blockbusters.",
            "I want something off the beaten path that I would still like.",
            "Show me lesser-known items that match my taste.",
        ),
        relevance=partial(filtered_relevance, signal="popularity", threshold=0.5, above=False),
        features=need_features(interest=1.0, niche=1.0),
        description="interesting items in the less popular half of the catalogue",
        need_id=2,
    )
)
FRESH = register_need(
    Need(
        name="fresh",
        instructions=(
            "Show me something new.",
            "Recommend recent releases I would like.",
            "I want the latest items, not old ones.",
            "What has just come out that fits me?",
        ),
        relevance=partial(filtered_relevance, signal="freshness", threshold=0.8, above=True),
        features=need_features(interest=1.0, fresh=1.0),
        description="interesting items among the 20% most recent releases",
        need_id=3,
    )
)
DIVERSE = register_need(
    Need(
        name="diverse",
        instructions=(
            "Give me a varied list across different genres.",
            "Recommend a diverse mix of things I would like.",
            "Surprise me with variety: do not repeat the same kind of item.",
            "I want a broad selection covering many categories.",
        ),
        relevance=interest_relevance,
        features=need_features(interest=1.0, diverse=1.0),
        metric=alpha_ndcg,
        description="interesting items, scored by category coverage (alpha-NDCG)",
        need_id=4,
    )
)
#: Unseen needs for generalisation tests: compositions never trained on by default.
FRESH_NICHE = register_need(all_of(FRESH, NICHE))
TRENDING_FRESH = register_need(all_of(TRENDING, FRESH))

_BUILT_IN = tuple(_REGISTRY.values())


def builtin_needs() -> tuple[Need, ...]:
    """The needs this module defines (every conforming scenario supports them)."""
    return _BUILT_IN


# ---------------------------------------------------------------------------------------------------------------
# Needs on a scenario: the environment's side of the scenario check.

logger = logging.getLogger(__name__)
_COVERED: WeakSet[Scenario] = WeakSet()


def scenario_needs(scenario: Scenario, register: bool = True) -> tuple[Need, ...]:
    """The needs a scenario defines (``Scenario.needs()``), registered unless ``register=False``.

    Raises :class:`ScenarioCheckError` if one is not a :class:`Need` or clashes with a registered need.
    """
    own = tuple(scenario.needs())
    wrong = [type(n).__name__ for n in own if not isinstance(n, Need)]
    if wrong:
        raise ScenarioCheckError(f"scenario {scenario!r}: needs() returned {wrong}; return flexrec_env.needs.Need objects")
    if not register:
        return own  # type: ignore[return-value]  # checked above
    try:
        return tuple(register_need(n) for n in own)  # type: ignore[arg-type]  # checked above
    except ValueError as error:
        raise ScenarioCheckError(f"scenario {scenario!r}: {error}") from error


def check_scenario_needs(
    scenario: Scenario, num_requests: int = 64, num_candidates: int = 20, seed: int = 0, min_fraction: float = 0.5
) -> tuple[Need, ...]:
    """Check that every need (built-in and the scenario's own) works on the scenario's requests.

    Each need must return relevance of the candidates' shape and find a relevant candidate in at least
    ``min_fraction`` of ``num_requests`` requests (held-out needs only warn). Raises :class:`ScenarioCheckError`
    listing every problem; returns the scenario's own needs, registered. Run :func:`scenarios.check_scenario` first
    (the data contract); the environment runs both on every scenario it has not seen.
    """
    own = scenario_needs(scenario, register=False)  # registered only once they pass
    num_candidates = min(num_candidates, scenario.max_candidates())  # the env checks its own size against the limit
    batch = scenario.sample_requests(np.random.default_rng(seed), num_requests, num_candidates)
    problems: list[str] = []
    for need in {n.name: n for n in (*builtin_needs(), *own)}.values():
        try:
            relevance = np.asarray(need.relevance(batch))
        except Exception as error:  # noqa: BLE001  (reported to the user with the need's name)
            problems.append(f"need {need.name!r} failed on this scenario's requests: {error!r}")
            continue
        if relevance.shape != batch.candidates.shape:
            expected = batch.candidates.shape
            problems.append(f"need {need.name!r} returned relevance of shape {relevance.shape}, expected {expected}")
            continue
        fraction = float((relevance > 0).any(axis=1).mean())
        if fraction < min_fraction:
            message = (
                f"need {need.name!r} has a relevant candidate in only {fraction:.0%} of requests (at least "
                f"{min_fraction:.0%} expected): put more items that are relevant for it into candidate sets"
            )
            if not need.held_out:
                problems.append(message)
            else:
                logger.warning("scenario %s: %s", scenario, message)
    if problems:
        raise ScenarioCheckError(f"scenario {scenario!r} fails the needs:\n" + "\n".join(f"  - {p}" for p in problems))
    return scenario_needs(scenario)


def covered_needs(scenario: Scenario) -> tuple[Need, ...]:
    """:func:`check_scenario_needs` once per scenario object (later calls only return its registered needs)."""
    if scenario in _COVERED:
        return scenario_needs(scenario)
    own = check_scenario_needs(scenario)
    _COVERED.add(scenario)
    return own
