"""FlexRecSession-v0: sessions of several requests by one user whose need may shift between requests."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.error import ResetNeeded
from gymnasium.vector.utils import batch_space
from numpy.typing import NDArray

from flexrec_env.config import EnvConfig, SessionConfig, check_need_transition, resolve_session
from flexrec_env.core import build_request, episode_needs, invalid_action_message, observation_space, validate_action
from flexrec_env.env import unbatch
from flexrec_env.needs import Need
from flexrec_env.session import SessionCore, SessionStreams, draw_session_noise, materialise_sessions
from flexrec_env.vector_env import FlexRecVectorEnv, add_rows, reset_values
from scenarios import Request, Scenario

ObsType = dict[str, Any]


class FlexRecSessionEnv(gym.Env[ObsType, np.int64]):
    """A session of R ranking requests by one user, whose need may change from one request to the next.

    ## Description

    One episode is a session: R requests (``session_length``) by the same user, each a FlexRec-v0 episode (N
    candidates, K positions, one placement per step, the same rewards and the same last info). Between requests the
    need changes by a documented process, and the instruction says so. A request's list done, the next request
    starts in the same episode; the session ends with the last request's list. What carries across a session:

    * **the user**: one scenario request of R x N candidates is drawn per session and dealt at random into R requests
      of N (same user, time, history and user features), so *no item is a candidate twice in a session* (items
      placed in an earlier request are never shown again, nor are the others). A scenario needs nothing new; it
      must only be able to supply R x N candidates (``Scenario.max_candidates()``), which the env checks.
    * **the need**: request 0's need is drawn as in FlexRec-v0 (uniform over the env's M needs); request r's from
      row ``need_(r-1)`` of the need-transition matrix ``P``: ``need_transition`` if given, else
      ``P = s I + (1 - s) / (M - 1) (J - I)`` with ``s = stay_probability`` (stay with probability s, else switch
      uniformly to another need). ``need_schedule`` fixes every request's need instead. A request whose need differs
      from the previous one's *follows a switch*; its instruction is ``"Now, "`` + the need's instruction (first
      letter lowered) with ``announce_switch=True`` (default), the instruction alone otherwise. The need's features
      and id are in the observation either way.
    * **fatigue** (optional): at request r (0-based) a candidate's feedback label is observed with probability
      ``observe_prob * (1 - fatigue)**r`` (default ``fatigue=0``: no fatigue). The truth does not change.

    ## Action space

    ``Discrete(N)``, as FlexRec-v0 (invalid actions, ``action_masks()`` alike; ``invalid_action="penalize"`` truncates
    the session after N invalid actions within one request).

    ## Observation space

    FlexRec-v0's ``Dict`` (``candidates``, ``user``, ``need``, ``need_id``, ``placed``, ``position``,
    ``action_mask``: of the *current* request; ``position`` restarts at 0 with each request) plus

    =================  ===================  =======  ========================================================
    key                space                dtype    meaning
    =================  ===================  =======  ========================================================
    ``request_index``  ``Discrete(R)``      int64    the 0-based index of the current request in the session
    =================  ===================  =======  ========================================================

    ``env.unwrapped.request`` is the current request (its ``instruction`` as the session states it).

    ## Rewards

    FlexRec-v0's, per request (``reward_mode`` ``"swap"``, ``"marginal"`` or ``"list"``, from the request's own
    feedback labels): the session's return is the sum of its requests' returns.

    ## Info

    Every step: FlexRec-v0's per-step info plus ``request_index`` (the request the action was placed in). The step
    that finishes a request's list adds FlexRec-v0's last info of that request (``ranking``, ``swap_rewards``,
    ``list_reward``, the labels, ``clicks``, ``metrics`` and ``need``; only ``ranking`` and ``list_reward`` with
    ``info_level="lean"``); its observation is then the next request's first, and so are the two keys of that info
    that describe the current request rather than the finished list: ``action_mask`` and, with ``expose_truth``,
    ``relevance`` (``need`` is the finished request's: read the next one from the observation). The last step adds
    ``session_metrics``: ``NDCG@5`` (mean over the R requests of NDCG@5 on the true relevance),
    ``NDCG@5_after_switch`` (mean over the requests that follow a switch; NaN when none does), ``switches`` (their
    count), ``request_NDCG@5`` (R) and ``switched`` (R, bool). ``reset`` returns FlexRec-v0's reset info plus
    ``request_index`` (0).

    ## Episode end

    Terminated after the R-th request's K-th valid step; truncated as FlexRec-v0 (N invalid actions in a request).

    ## Arguments

    :class:`flexrec_env.config.SessionConfig`: ``session_length`` (R, 4), ``stay_probability`` (0.5),
    ``need_transition``, ``need_schedule``, ``announce_switch`` (True), ``fatigue`` (0); every other argument is
    FlexRec-v0's (:class:`flexrec_env.config.EnvConfig`) but ``render_mode`` (sessions have no text rendering: read
    ``env.unwrapped.request``). ``reset(options={"need": ...})`` draws one session from other needs (not with
    ``need_schedule``).

    >>> import gymnasium as gym
    >>> import flexrec_env
    >>> env = gym.make("FlexRecSession-v0", need_schedule=["trending", "niche"], session_length=2,
    ...                num_candidates=6, list_length=2)
    >>> obs, info = env.reset(seed=0)
    >>> int(obs["request_index"]), info["need"]
    (0, 'trending')
    >>> for step in range(4):
    ...     obs, reward, terminated, truncated, info = env.step(int(np.flatnonzero(obs["action_mask"])[0]))
    ...     if step == 1:
    ...         request = env.unwrapped.request
    ...         print(int(obs["request_index"]), request.need, request.instruction.startswith("Now, "))
    1 niche True
    >>> terminated, int(info["session_metrics"]["switches"])
    (True, 1)

    ## Version history

    * v0: initial version.
    """

    metadata = {"render_modes": []}

    def __init__(self, **kwargs: Any) -> None:
        self.session, env_kwargs = SessionConfig.split(kwargs)
        self.config = EnvConfig(**env_kwargs)
        if self.config.render_mode is not None:
            raise ValueError(f"render_mode={self.config.render_mode!r}; allowed: None (FlexRecSession-v0 renders no text)")
        self.scenario, self._needs = resolve_session(self.config, self.session)
        self.observation_space = session_observation_space(self.config, self.session, self.scenario)
        self.action_space = spaces.Discrete(self.config.num_candidates)
        self._core = SessionCore(self.config, self.session, self.scenario, batch_size=1)
        self._streams: SessionStreams | None = None
        self._row = np.zeros(1, dtype=np.int64)
        self._active = np.ones(1, dtype=bool)
        self._done = True

    # ------------------------------------------------------------------------------------------------------------
    # Gymnasium API: a batch of one of the vector env's core (the same code, the same infos).

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[ObsType, dict[str, Any]]:
        super().reset(seed=seed)
        if self._streams is None or self._streams.rngs[0] is not self.np_random:
            self._streams = SessionStreams([self.np_random], self.config, self.session, self.scenario)
        needs = session_needs(self._needs, self.session, options, allowed=("need",))
        self._core.start(self._streams.next_sessions(self._row, needs), self._row)
        self._done = False
        return self._observation(), unbatch(session_reset_values(self._core, self._row))

    def step(self, action: Any) -> tuple[ObsType, SupportsFloat, bool, bool, dict[str, Any]]:
        if self._done:
            raise ResetNeeded("the session is over: call reset() before step()")
        a = validate_action(action, self.config.num_candidates)
        if self.config.invalid_action == "raise" and self._core.placed[0, a]:
            raise ValueError(invalid_action_message(a, self.action_masks()))
        rewards, terminated, truncated, step_info = self._core.step(np.array([a]), self._active)
        obs = self._observation()
        info = unbatch(step_info)
        info["action_mask"] = obs["action_mask"]
        for _, values in self._core.list_infos(terminated):
            info.update(unbatch(values))
        if self.config.expose_truth:
            assert self._core.episodes is not None
            info["relevance"] = self._core.episodes.relevance[0].copy()
        self._done = bool(terminated[0] or truncated[0])
        return obs, float(rewards[0]), bool(terminated[0]), bool(truncated[0]), info

    # ------------------------------------------------------------------------------------------------------------
    # Extras.

    def action_masks(self) -> NDArray[np.bool_]:
        """Valid actions as a bool mask ``(N,)``."""
        return self._core.action_masks()[0]

    @property
    def request(self) -> Request:
        """The current request as text-reading agents see it (no ground truth), its instruction as the session says it."""
        if self._core.episodes is None:
            raise ResetNeeded("no request yet: call reset() first")
        return session_requests(self._core, self._row, self.scenario)[0]

    @property
    def needs(self) -> tuple[Need, ...]:
        return self._needs

    def _observation(self) -> ObsType:
        return {key: value[0] for key, value in self._core.observation().items()}


class FlexRecSessionVectorEnv(FlexRecVectorEnv):
    """B FlexRecSession-v0 sessions stepped together (``gym.make_vec("FlexRecSession-v0", ...)`` builds it).

    FlexRec-v0's vector env (autoreset modes, streams, groups, info layout) over
    :class:`~flexrec_env.session.SessionCore`.

    With ``group_size=G`` a group shares one session (the same requests, needs and labels in every request).
    """

    def __init__(self, num_envs: int = 1, **kwargs: Any) -> None:
        """Takes :class:`FlexRecVectorEnv`'s arguments and :class:`~flexrec_env.config.SessionConfig`'s."""
        self.session, env_kwargs = SessionConfig.split(kwargs)
        super().__init__(num_envs, **env_kwargs)
        self.scenario, self._needs = resolve_session(self.config, self.session)
        self._session_core = SessionCore(self.config, self.session, self.scenario, batch_size=num_envs)
        self._core = self._session_core
        self.single_observation_space = session_observation_space(self.config, self.session, self.scenario)
        self.observation_space = batch_space(self.single_observation_space, num_envs)

    def requests(self, rows: NDArray[np.int64] | list[int] | None = None) -> list[Request]:
        """The current requests of ``rows`` (default: all), their instructions as the session states them."""
        if self._core.episodes is None:
            raise ResetNeeded("no request yet: call reset() first")
        rows = self._all_rows if rows is None else np.asarray(rows, dtype=np.int64)
        return session_requests(self._session_core, rows, self.scenario)

    def _new_streams(self, rngs: list[np.random.Generator]) -> SessionStreams:
        return SessionStreams(rngs, self.config, self.session, self.scenario)

    def _episode_needs(self, options: dict[str, Any] | None) -> tuple[Need, ...]:
        return session_needs(self._needs, self.session, options, allowed=("need", "reset_mask"))

    def _start(self, rows: NDArray[np.int64], needs: tuple[Need, ...]) -> None:
        firsts, expand = self._group_firsts(rows)
        if self.shared_rng:
            noise = draw_session_noise(self.np_random, len(firsts), self.config, self.session, self.scenario)
            sessions = materialise_sessions(noise, needs, self.config, self.session, self.scenario)
        else:
            assert isinstance(self._streams, SessionStreams)
            sessions = self._streams.next_sessions(firsts, needs)
        self._session_core.start(sessions if expand is None else sessions.take(expand), rows)

    def _reset_info(self, rows: NDArray[np.int64], infos: dict[str, Any]) -> dict[str, Any]:
        return add_rows(infos, session_reset_values(self._session_core, rows), rows, self.num_envs)


# ----------------------------------------------------------------------------------------------------------------
# What both session envs share.


def session_observation_space(config: EnvConfig, session: SessionConfig, scenario: Scenario) -> spaces.Dict:
    """FlexRec-v0's observation space plus ``request_index``."""
    base = observation_space(config, scenario)
    return spaces.Dict({**base.spaces, "request_index": spaces.Discrete(session.session_length)})


def session_needs(
    default: tuple[Need, ...], session: SessionConfig, options: dict[str, Any] | None, allowed: tuple[str, ...]
) -> tuple[Need, ...]:
    """FlexRec-v0's per-reset needs (:func:`~flexrec_env.core.episode_needs`); none with a schedule."""
    if session.need_schedule is not None and options and options.get("need") is not None:
        raise ValueError(
            f"reset option need={options['need']!r} with need_schedule={list(session.need_schedule)}; allowed: no need "
            "option (the schedule fixes every request's need)"
        )
    needs = episode_needs(default, options, allowed)
    check_need_transition(session, needs)  # before anything is drawn: a refused reset uses up no episode
    return needs


def session_reset_values(core: SessionCore, rows: NDArray[np.int64]) -> dict[str, Any]:
    """FlexRec-v0's reset info of ``rows`` plus ``request_index``."""
    return {**reset_values(core, rows), "request_index": core.request_index[rows].copy()}


def session_requests(core: SessionCore, rows: NDArray[np.int64], scenario: Scenario) -> list[Request]:
    """The current requests of ``rows``, with the instructions as the session states them."""
    assert core.episodes is not None
    instructions = core.instructions(rows)
    return [
        replace(build_request(core.episodes, int(row), scenario), instruction=str(text))
        for row, text in zip(rows, instructions, strict=True)
    ]
