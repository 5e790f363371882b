"""The rules of FlexRecSession-v0: a session of R requests by one user whose need may shift between requests.

Everything a request does is FlexRec-v0's (:mod:`flexrec_env.core`): a session is R of its episodes, materialised by
:func:`~flexrec_env.core.materialise` and run by :class:`~flexrec_env.core.RankingCore`, with the same rewards and
the same last info per request. This module adds only what a session adds (documented in
:class:`~flexrec_env.session_env.FlexRecSessionEnv`):

* the material (:func:`draw_session_noise`): one scenario request of R x N candidates per session, dealt at random
  into R requests of N, so the requests share the user and no item is a candidate twice in a session; a scenario
  needs nothing new;
* the need process (:func:`need_sequences`): a need-transition matrix (:func:`transition_matrix`) or a schedule;
* fatigue and the announcement of a switch (:func:`materialise_sessions`, :func:`session_instructions`);
* the session metrics (:func:`session_metrics`) and :class:`SessionCore`, the batched dynamics (a request that ends
  starts the next one of its session instead of ending the episode).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from flexrec_env.config import EnvConfig, SessionConfig
from flexrec_env.core import EpisodeBatch, EpisodeNoise, EpisodeStreams, RankingCore, episode_noise, materialise
from flexrec_env.metrics import EVALUATION_METRICS
from flexrec_env.needs import Need, get_need
from scenarios import RequestBatch, Scenario

#: The contract fields of a :class:`~scenarios.RequestBatch` with one value per candidate (dealt over requests).
CANDIDATE_FIELDS = ("candidates", "candidate_features", "category", "popularity", "recent_popularity", "freshness", "interest")
#: The session metric: NDCG@5 on the true relevance, per request.
SESSION_METRIC = "NDCG@5"
#: The words that announce a switch in the instruction.
SWITCH_PREFIX = "Now, "


def deal_requests(pooled: RequestBatch, order: NDArray[np.int64], num_requests: int) -> RequestBatch:
    """S requests of R x N candidates as S x R requests of N: candidates in ``order`` ``(S, R*N)``, N per request.

    The per-request fields (user, time, history, user features) repeat over a session's requests; extras whose
    second axis is R x N are per candidate and dealt too, the others repeat.
    """
    s, total = pooled.candidates.shape
    n = total // num_requests

    def deal(values: NDArray) -> NDArray:  # (S, R*N, ...) -> (S*R, N, ...)
        index = order.reshape(order.shape + (1,) * (values.ndim - 2))
        return np.take_along_axis(values, index, axis=1).reshape(s * num_requests, n, *values.shape[2:])

    def per_candidate(name: str, values: NDArray) -> bool:
        return name in CANDIDATE_FIELDS or (name not in {f.name for f in fields(RequestBatch)} and values.shape[1:2] == (total,))

    def split(name: str, values: NDArray) -> NDArray:
        return deal(values) if per_candidate(name, values) else np.repeat(values, num_requests, axis=0)

    arrays = {f.name: split(f.name, getattr(pooled, f.name)) for f in fields(RequestBatch) if f.name != "extras"}
    return RequestBatch(**arrays, extras={key: split(key, value) for key, value in pooled.extras.items()})


def draw_session_noise(
    rng: np.random.Generator, num: int, config: EnvConfig, session: SessionConfig, scenario: Scenario
) -> EpisodeNoise:
    """The material of ``num`` sessions: ``num * R`` rows of FlexRec-v0 material, session s at rows ``[s*R, (s+1)*R)``.

    One request of R x N candidates per session (:meth:`Scenario.sample_requests`), dealt at random into R requests
    (:func:`deal_requests`), then each request's uniforms (:func:`~flexrec_env.core.episode_noise`). A request's
    ``need_uniform`` drives the need process (:func:`need_sequences`).
    """
    r = session.session_length
    pooled = scenario.sample_requests(rng, num, r * config.num_candidates)  # (S,) requests of R*N candidates
    order = np.argsort(rng.random(pooled.candidates.shape), axis=1)  # (S, R*N), a random deal
    return episode_noise(deal_requests(pooled, order, r), rng, config)


def transition_matrix(session: SessionConfig, num_needs: int) -> NDArray[np.float64]:
    """The ``(M, M)`` need-transition matrix of a session's needs.

    ``need_transition`` if given; else stay with ``stay_probability`` and otherwise switch uniformly to another need
    (with one need: always stay).
    """
    if session.need_transition is not None:
        matrix = np.asarray(session.need_transition, dtype=np.float64)
        assert matrix.shape == (num_needs, num_needs), "checked by config.check_need_transition before any draw"
        return matrix
    if num_needs == 1:
        return np.ones((1, 1))
    s = session.stay_probability
    matrix = np.full((num_needs, num_needs), (1.0 - s) / (num_needs - 1))
    np.fill_diagonal(matrix, s)
    return matrix


def need_sequences(uniform: NDArray[np.float64], needs: tuple[Need, ...], session: SessionConfig) -> NDArray[np.int64]:
    """Each request's need, ``(S, R)`` indices into ``needs``, from one uniform per request ``(S, R)``.

    With ``need_schedule``: the schedule. Otherwise the first need is ``floor(u_0 M)`` (FlexRec-v0's draw) and need
    r is the first j with ``u_r < cumsum(P[need_(r-1)])_j`` (inverse CDF of the transition matrix's row).
    """
    s, r = uniform.shape
    if session.need_schedule is not None:
        slots = [next(i for i, n in enumerate(needs) if n is get_need(name)) for name in session.need_schedule]
        return np.tile(np.array(slots, dtype=np.int64), (s, 1))
    m = len(needs)
    cdf = np.cumsum(transition_matrix(session, m), axis=1)  # (M, M)
    index = np.empty((s, r), dtype=np.int64)
    index[:, 0] = np.minimum(np.floor(uniform[:, 0] * m), m - 1)
    for t in range(1, r):
        index[:, t] = np.minimum((cdf[index[:, t - 1]] <= uniform[:, t, None]).sum(axis=1), m - 1)
    return index


@dataclass(frozen=True)
class SessionBatch:
    """S sessions of R requests: request r of session s is episode ``s*R + r`` of ``episodes``."""

    episodes: EpisodeBatch
    switched: NDArray[np.bool_]  # (S, R), whether request r's need differs from request r-1's (False at r = 0)

    def __len__(self) -> int:
        return len(self.switched)

    @property
    def length(self) -> int:
        return int(self.switched.shape[1])

    def _rows(self, sessions: NDArray[np.int64]) -> NDArray[np.int64]:
        return (sessions[:, None] * self.length + np.arange(self.length)).ravel()

    def take(self, sessions: NDArray[np.int64]) -> SessionBatch:
        return SessionBatch(self.episodes.take(self._rows(sessions)), self.switched[sessions])

    def requests(self, sessions: NDArray[np.int64], index: NDArray[np.int64]) -> EpisodeBatch:
        """Request ``index[i]`` of session ``sessions[i]``, as FlexRec-v0 episodes."""
        return self.episodes.take(sessions * self.length + index)

    def replace_rows(self, sessions: NDArray[np.int64], new: SessionBatch) -> SessionBatch:
        switched = self.switched.copy()
        switched[sessions] = new.switched
        return SessionBatch(self.episodes.replace_rows(self._rows(sessions), new.episodes), switched)


def materialise_sessions(
    noise: EpisodeNoise, needs: tuple[Need, ...], config: EnvConfig, session: SessionConfig, scenario: Scenario
) -> SessionBatch:
    """Sessions for ``needs`` from their material: the need process, fatigue, then FlexRec-v0's :func:`materialise`."""
    r = session.session_length
    index = need_sequences(noise.need_uniform.reshape(-1, r), needs, session)  # (S, R)
    switched = np.zeros(index.shape, dtype=bool)
    switched[:, 1:] = index[:, 1:] != index[:, :-1]
    observe = noise.observe_uniform
    if session.fatigue:  # u / (1 - f)**r < p exactly when u < p (1 - f)**r
        observe = observe / fatigue_factor(session, np.tile(np.arange(r), len(index)))[:, None]
    # The need of each request as the uniform that materialise maps to it: floor(((i + 0.5) / M) M) = i.
    noise = replace(noise, need_uniform=((index + 0.5) / len(needs)).ravel(), observe_uniform=observe)
    return SessionBatch(materialise(noise, needs, config, scenario), switched)


class SessionStreams(EpisodeStreams):
    """:class:`~flexrec_env.core.EpisodeStreams` of sessions: env i's sessions from its own generator."""

    def __init__(self, rngs: list[np.random.Generator], config: EnvConfig, session: SessionConfig, scenario: Scenario) -> None:
        super().__init__(rngs, config, scenario)
        self.session, self.episode_rows = session, session.session_length

    def draw(self, rng: np.random.Generator, num: int) -> EpisodeNoise:
        return draw_session_noise(rng, num, self.config, self.session, self.scenario)

    def next_sessions(self, envs: NDArray[np.int64], needs: tuple[Need, ...]) -> SessionBatch:
        """The next session of each env in ``envs`` (distinct, ascending) for ``needs``."""
        return materialise_sessions(self.next_noise(envs), needs, self.config, self.session, self.scenario)


def fatigue_factor(session: SessionConfig, request_index: NDArray[np.integer]) -> NDArray[np.float64]:
    """``(1 - fatigue)**r``: how much request r's chance that a label is observed shrinks (``observe_prob`` times it)."""
    return (1.0 - session.fatigue) ** np.asarray(request_index, dtype=np.float64)


def session_instructions(instructions: NDArray[np.object_], switched: NDArray[np.bool_], announce: bool) -> NDArray[np.object_]:
    """The instructions as a session states them: ``"Now, ..."`` after a switch when ``announce``."""
    out = instructions.copy()
    if announce:
        for i in np.flatnonzero(switched):
            out[i] = SWITCH_PREFIX + _mid_sentence(str(out[i]))
    return out


def _mid_sentence(text: str) -> str:
    """``text`` as it reads after "Now, ": its first letter lowered, unless the first word is "I" or an acronym."""
    first = text.split(" ", 1)[0]
    if first == "I" or first.startswith("I'") or first[:2].isupper():
        return text
    return text[:1].lower() + text[1:]


def session_metrics(request_metric: NDArray[np.float64], switched: NDArray[np.bool_]) -> dict[str, NDArray]:
    """Session-level metrics of F finished sessions from their per-request NDCG@5 ``(F, R)`` and switches ``(F, R)``.

    ``NDCG@5``: the mean over the R requests; ``NDCG@5_after_switch``: the mean over the requests right after a
    switch (NaN if the session has none); ``switches``: their count; ``request_NDCG@5`` and ``switched`` per request.
    """
    count = switched.sum(axis=1)  # (F,)
    after = np.where(switched, request_metric, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        after_switch = np.where(count > 0, after / count, np.nan)
    return {
        SESSION_METRIC: request_metric.mean(axis=1),
        f"{SESSION_METRIC}_after_switch": after_switch,
        "switches": count.astype(np.int64),
        f"request_{SESSION_METRIC}": request_metric.copy(),
        "switched": switched.copy(),
    }


class SessionCore(RankingCore):
    """B sessions stepped together: FlexRec-v0's :class:`~flexrec_env.core.RankingCore` per request, plus the session.

    A step that finishes a request's list gives that list's last info (:meth:`list_infos`) and starts the session's
    next request in its row; the episode terminates when the last request's list is finished.
    """

    def __init__(self, config: EnvConfig, session: SessionConfig, scenario: Scenario, batch_size: int) -> None:
        super().__init__(config, scenario, batch_size)
        self.session = session
        self.sessions: SessionBatch | None = None
        self.request_index = np.zeros(batch_size, dtype=np.int64)  # (B,)
        self.request_metric = np.zeros((batch_size, session.session_length))  # (B, R), NDCG@5 of finished requests
        self._list_infos: list[tuple[NDArray[np.int64], dict[str, Any]]] = []

    def start(self, sessions: SessionBatch, rows: NDArray[np.int64]) -> None:
        """Start ``sessions`` (one per row) in ``rows``, at their first request."""
        full = self.sessions is None or len(rows) == self.batch_size
        self.sessions = sessions if full else self.sessions.replace_rows(rows, sessions)  # type: ignore[union-attr]
        self.request_index[rows] = 0
        self.request_metric[rows] = 0.0
        self.load(self.sessions.requests(rows, self.request_index[rows]), rows)

    def switched(self, rows: NDArray[np.int64]) -> NDArray[np.bool_]:
        """Whether the current request of each of ``rows`` follows a switch of need."""
        assert self.sessions is not None
        return self.sessions.switched[rows, self.request_index[rows]]

    def instructions(self, rows: NDArray[np.int64]) -> NDArray[np.object_]:
        """The current requests' instructions as the session states them (:func:`session_instructions`)."""
        assert self.episodes is not None
        return session_instructions(self.episodes.instructions(rows), self.switched(rows), self.session.announce_switch)

    def observation(self, copy: bool = True) -> dict[str, NDArray]:
        return {**super().observation(copy), "request_index": self.request_index.copy()}

    def step(self, actions: NDArray[np.int64], active: NDArray[np.bool_]) -> tuple[NDArray, NDArray, NDArray, dict[str, Any]]:
        """:meth:`RankingCore.step`, then each finished list's info and the next request of its session."""
        episodes, sessions = self.episodes, self.sessions
        assert episodes is not None and sessions is not None
        request_index = self.request_index.copy()
        rewards, list_done, truncated, info = super().step(actions, active)
        info["request_index"] = request_index
        self._list_infos = []
        finished = np.flatnonzero(list_done)
        if not len(finished):
            return rewards, list_done, truncated, info
        list_info = self.final_info(finished)
        self._list_infos.append((finished, list_info))
        if "metrics" in list_info:  # the full info has it already
            values = list_info["metrics"][SESSION_METRIC]
        else:
            metric, k = EVALUATION_METRICS[SESSION_METRIC]
            truth, categories = episodes.relevance[finished], episodes.requests.category[finished]
            values = metric(self.ranking[finished], truth, categories, k)
        self.request_metric[finished, request_index[finished]] = values
        last = request_index[finished] == self.session.session_length - 1
        ending, going_on = finished[last], finished[~last]
        if len(ending):
            metrics = session_metrics(self.request_metric[ending], sessions.switched[ending])
            self._list_infos.append((ending, {"session_metrics": metrics}))
        if len(going_on):
            self.request_index[going_on] += 1
            self.load(sessions.requests(going_on, self.request_index[going_on]), going_on)
        terminated = np.zeros_like(list_done)
        terminated[ending] = True
        return rewards, terminated, truncated, info

    def list_infos(self, terminated: NDArray[np.bool_]) -> list[tuple[NDArray[np.int64], dict[str, Any]]]:
        """``(rows, info)`` of the lists the last step finished (every request's), and of the sessions it ended."""
        return self._list_infos
